"""X-ray physics of a dual-energy linac cargo scanner.

Three steps turn per-material mass-thickness maps into the 16-bit images a
scanner exports:

1. `linac_spectrum`: the detector-weighted bremsstrahlung spectrum of one
   linac energy (e.g. 6 MV or 4 MV end point).
2. `polychromatic_transmission`: Beer-Lambert along each ray, integrated over
   that spectrum, T = sum_k w_k exp(-sum_j (mu/rho)_j(E_k) * m_j), with
   mu/rho from the NIST tables in `materials` and m_j the mass thickness of
   material j in g/cm^2. Because the low-energy components die first, thick
   objects harden the beam; the dual-energy ratio then depends on thickness
   as it does on a real scanner.
3. `DetectorModel.expose`: detector blur, scatter haze, per-column source
   pulse fluctuation, per-row gain error, Poisson photon noise, read noise and
   16-bit quantisation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from training.synth.materials import mass_attenuation

# The NIST tables start at 0.1 MeV; below that the target, its backing and the
# collimator absorb everything anyway.
MIN_ENERGY_MEV = 0.1


@dataclass(frozen=True)
class Spectrum:
    """Energy bins and their share of the detector signal in air (weights sum to 1)."""

    endpoint_mv: float
    energies_mev: np.ndarray
    weights: np.ndarray

    @classmethod
    def monoenergetic(cls, energy_mev: float) -> Spectrum:
        """A single line: for checks against hand-worked Beer-Lambert numbers."""
        return cls(energy_mev, np.array([energy_mev]), np.array([1.0]))

    @property
    def mean_energy_mev(self) -> float:
        return float(np.sum(self.weights * self.energies_mev))


@lru_cache(maxsize=16)
def linac_spectrum(
    endpoint_mv: float,
    n_bins: int = 24,
    filter_material: str = "steel",
    filter_g_cm2: float = 8.0,
    detector_material: str = "lead",
    detector_g_cm2: float = 24.0,
) -> Spectrum:
    """Detector-weighted thick-target bremsstrahlung spectrum of a linac.

    Photon number per energy follows Kramers' thick-target law
    N(E) ~ (E0 - E) / E, hardened by the target backing and collimator window
    (`filter_*`, about 1 cm of steel). The detectors integrate energy: each
    photon contributes E times the probability of being absorbed in the
    scintillator. A 30 mm CdWO4 crystal (~24 g/cm^2, high Z) is modelled by
    the same mass thickness of lead, the closest tabulated element.
    """
    if endpoint_mv <= MIN_ENERGY_MEV * 2:
        raise ValueError(
            f"linac end point {endpoint_mv} MV is too low for this model (MeV scanners)"
        )
    edges = np.linspace(MIN_ENERGY_MEV, endpoint_mv, n_bins + 1)
    energies = 0.5 * (edges[:-1] + edges[1:])
    photons = (endpoint_mv - energies) / energies * np.diff(edges)
    photons *= np.exp(-mass_attenuation(filter_material, energies) * filter_g_cm2)
    absorbed = 1.0 - np.exp(-mass_attenuation(detector_material, energies) * detector_g_cm2)
    signal = photons * energies * absorbed
    return Spectrum(float(endpoint_mv), energies, signal / signal.sum())


def attenuation_table(materials: list[str], spectrum: Spectrum) -> np.ndarray:
    """(K energies, M materials) mu/rho in cm^2/g, float32, for the matrix product."""
    return np.stack([mass_attenuation(m, spectrum.energies_mev) for m in materials], axis=1).astype(
        np.float32
    )


def polychromatic_transmission(
    mass_maps: Mapping[str, np.ndarray], spectrum: Spectrum, chunk_px: int = 1 << 18
) -> np.ndarray:
    """Spectrum-integrated transmission of each ray through the given materials.

    `mass_maps` holds, per material name, the mass thickness in g/cm^2 of
    every pixel (all maps the same shape). Returns float32 T in (0, 1].
    Computed in chunks of pixels so a 3000x800 scan never holds the whole
    (energies x pixels) exponent at once.
    """
    names = [n for n, m in mass_maps.items() if np.any(m)]
    first = next(iter(mass_maps.values()))
    shape = first.shape
    out = np.ones(first.size, np.float32)
    if not names:
        return out.reshape(shape)
    mu = attenuation_table(names, spectrum)  # (K, M)
    w = spectrum.weights.astype(np.float32)
    stacked = np.stack([mass_maps[n].reshape(-1) for n in names], axis=0)  # (M, P)
    # Only rays that cross matter need the exponentials.
    hit = np.flatnonzero(stacked.any(axis=0))
    for start in range(0, hit.size, chunk_px):
        idx = hit[start : start + chunk_px]
        exponent = mu @ stacked[:, idx]  # (K, n)
        np.negative(exponent, out=exponent)
        np.exp(exponent, out=exponent)
        out[idx] = w @ exponent
    return out.reshape(shape)


def dual_energy_log_ratio(material: str, mass_g_cm2: float, high: Spectrum, low: Spectrum) -> float:
    """ln T_low / ln T_high for a slab: the quantity dual-energy material sorting uses.

    At MeV energies it falls with atomic number (pair production lifts the high
    energy's attenuation of heavy elements), so organic > steel > lead.
    """
    maps = {material: np.full((1, 1), mass_g_cm2, np.float32)}
    t_high = float(polychromatic_transmission(maps, high)[0, 0])
    t_low = float(polychromatic_transmission(maps, low)[0, 0])
    return float(np.log(t_low) / np.log(t_high))


@dataclass(frozen=True)
class DetectorModel:
    """How the detector array and the source turn transmission into 16-bit counts.

    Figures are typical of 4-6 MV container portals: tens of thousands of
    effective quanta per pixel in air (energy-integrating detectors count
    fewer effective quanta than photons), a PSF under a pixel, well under a
    per cent of broad scatter (the detectors are collimated), the residual of
    the 1-2 % pulse-to-pulse dose jitter after reference-detector
    normalisation, and a residual per-row gain error after calibration.
    """

    air_quanta: float = 40_000.0
    air_level_dn: float = 60_000.0
    blur_sigma_px: float = 1.0
    scatter_fraction: float = 0.006
    scatter_sigma_px: float = 30.0
    pulse_sigma: float = 0.003
    row_gain_sigma: float = 0.015
    read_noise_dn: float = 4.0

    def optics(self, transmission: np.ndarray) -> np.ndarray:
        """The noise-free image the detectors see: transmission after blur and scatter haze.

        Split from `expose` so a threat's visible contrast can be measured without noise
        (`scene.threat_contrast`); `expose` adds the source, gain and photon noise to it.
        """
        h, w = transmission.shape
        t = transmission.astype(np.float32)
        if self.blur_sigma_px > 0:
            t = cv2.GaussianBlur(t, (0, 0), self.blur_sigma_px, borderType=cv2.BORDER_REPLICATE)
        if self.scatter_fraction > 0:
            # Energy-conserving broad kernel: a share of the primary signal is
            # redistributed over tens of pixels (veiling haze behind dense cargo).
            small = cv2.resize(t, (max(w // 8, 1), max(h // 8, 1)), interpolation=cv2.INTER_AREA)
            halo = cv2.GaussianBlur(
                small, (0, 0), self.scatter_sigma_px / 8, borderType=cv2.BORDER_REPLICATE
            )
            halo = cv2.resize(halo, (w, h), interpolation=cv2.INTER_LINEAR)
            t = (1.0 - self.scatter_fraction) * t + self.scatter_fraction * halo
        return t

    def expose(
        self,
        transmission: np.ndarray,
        rng: np.random.Generator,
        *,
        pulse: np.ndarray | None = None,
        row_gain: np.ndarray | None = None,
        quanta_scale: float = 1.0,
    ) -> np.ndarray:
        """Detector image (uint16) of a transmission map.

        `pulse` (per column) and `row_gain` (per row) can be passed in so two
        energy channels share what they physically share; otherwise they are
        drawn here.
        """
        h, w = transmission.shape
        t = self.optics(transmission)
        if pulse is None:
            pulse = 1.0 + self.pulse_sigma * rng.standard_normal(w)
        if row_gain is None:
            row_gain = 1.0 + self.row_gain_sigma * rng.standard_normal(h)
        quanta = self.air_quanta * quanta_scale
        expected = np.clip(t * pulse[None, :].astype(np.float32), 0, None) * np.float32(quanta)
        counts = rng.poisson(expected).astype(np.float32)
        signal = (
            counts * np.float32(self.air_level_dn / quanta) * row_gain[:, None].astype(np.float32)
        )
        signal += np.float32(self.read_noise_dn) * rng.standard_normal((h, w), dtype=np.float32)
        return np.clip(np.rint(signal), 0, 65535).astype(np.uint16)
