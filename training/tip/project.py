"""Projecting one threat into a scan: physics, not alpha blending.

The threat is drawn by the synthetic generator's own draw functions on a canvas
of its own, at the scan's pixel pitch, so its shape, pose and materials are those
of synthetic scans. What it does to the image:

    delta_a = ln blur(T(bg)) - ln blur(T(bg + threat - displaced cargo))

per energy, with T the spectrum-integrated Beer-Lambert transmission
(`physics.polychromatic_transmission`) and `blur` the detector's point spread
(`DetectorModel.optics`, without its scatter haze: under 1 % of the signal, and
already in the background). The background enters as the steel thickness that
attenuates as much as the image shows there, so a threat behind dense cargo adds
less attenuation than in air, as the hardened beam does (beam hardening). Inside
goods the threat displaces cargo: the host is taken as packed organic goods
(`HOST_MATERIAL`), its density the local cargo attenuation spread over the
container's inner width; what the threat displaces is that density times its
own path, never more than the cargo that is there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from training.synth.geometry import Canvas
from training.synth.physics import DetectorModel, Spectrum, polychromatic_transmission
from training.synth.threats import DRAW, DrawnThreat, Placement
from training.tip.cargo_space import INNER_WIDTH_MM

HOST_MATERIAL = "food"  # mixed packed goods: water, carbohydrate, salt
SOURCE_DISTANCE_MM = 11_000.0  # source to the vehicle's centre plane (fan-beam magnification)
_DETECTOR = DetectorModel(scatter_fraction=0.0)
_MARGIN_PX = 4  # room for the detector blur around a threat's patch


@dataclass
class ThreatPatch:
    """A drawn threat on the scan's pixel grid: mass thickness per material (g/cm^2)."""

    category: str
    subtype: str
    maps: dict[str, np.ndarray]
    mass: np.ndarray  # total g/cm^2
    path_cm: np.ndarray  # path length through the threat, for the cargo it displaces
    mass_kg: float


def draw_threat(
    category: str,
    placement: Placement,
    pitch_x_mm: float,
    pitch_y_mm: float,
    magnification: float,
    rng: np.random.Generator,
    draw: Callable[[Canvas, Placement, np.random.Generator], DrawnThreat] | None = None,
) -> ThreatPatch | None:
    """Draw a threat with the synthetic generator, then put it on the scan's grid.
    `draw`: another draw function (a decoy's) in the category's room.

    The canvas is square at the vertical pitch; the patch is then resampled to the
    horizontal pitch (the vehicle's speed sets it) and stretched vertically by the
    fan beam's magnification at the threat's depth. Mass thickness is intensive, so
    resampling keeps it.
    """
    pitch = pitch_y_mm
    side_mm = max(placement.max_w, placement.max_h, 2400.0 if category == "person" else 1500.0)
    side_mm += 400.0
    n = int(np.ceil(side_mm / pitch))
    canvas = Canvas(n, n, pitch, top_mm=n * pitch, fan=None)
    placement.cx = placement.cy = n * pitch / 2
    drawn = (draw or DRAW[category])(canvas, placement, rng)
    mass = np.clip(drawn.mass, 0, None)
    rows = np.flatnonzero(mass.max(axis=1) > 1e-4)
    cols = np.flatnonzero(mass.max(axis=0) > 1e-4)
    if rows.size == 0:
        return None
    r0, r1 = max(rows[0] - 2, 0), min(rows[-1] + 3, n)
    c0, c1 = max(cols[0] - 2, 0), min(cols[-1] + 3, n)
    h, w = r1 - r0, c1 - c0
    size = (max(round(w * pitch / pitch_x_mm), 1), max(round(h * magnification), 1))

    def fit(image: np.ndarray) -> np.ndarray:
        crop = np.ascontiguousarray(image[r0:r1, c0:c1], np.float32)
        shrink = size[0] * size[1] < w * h
        return cv2.resize(crop, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)

    maps = {k: fit(v) for k, v in canvas.maps.items() if np.any(v)}
    total = fit(mass)
    path = fit(mass / max(drawn.mean_density, 1e-3))  # cm: g/cm^2 over g/cm^3
    return ThreatPatch(category, drawn.subtype, maps, total, path, canvas.last_recorded_kg)


def magnification_at(z_mm: float) -> float:
    """Vertical fan-beam magnification of an object z mm beyond the centre plane."""
    return SOURCE_DISTANCE_MM / (SOURCE_DISTANCE_MM + z_mm)


def _key(spectrum: Spectrum) -> tuple[float, bytes, bytes]:
    """Spectra hold arrays (unhashable): cache by their contents."""
    return spectrum.endpoint_mv, spectrum.energies_mev.tobytes(), spectrum.weights.tobytes()


_STEEL_TABLES: dict[tuple[float, bytes, bytes], tuple[np.ndarray, np.ndarray]] = {}
_HOST_MU: dict[tuple[float, bytes, bytes], float] = {}


def _steel_table(spectrum: Spectrum) -> tuple[np.ndarray, np.ndarray]:
    """(attenuation, steel g/cm^2) pairs, attenuation rising: to invert by interpolation."""
    key = _key(spectrum)
    if key in _STEEL_TABLES:
        return _STEEL_TABLES[key]
    steel = np.linspace(0.0, 400.0, 801, dtype=np.float32)
    t = polychromatic_transmission({"steel": steel[None, :]}, spectrum)[0]
    table = -np.log(np.maximum(t, 1e-30)).astype(np.float64), steel.astype(np.float64)
    _STEEL_TABLES[key] = table
    return table


def steel_equivalent(a: np.ndarray, spectrum: Spectrum) -> np.ndarray:
    """Steel mass thickness (g/cm^2) that attenuates the beam as much as `a` shows."""
    table_a, table_steel = _steel_table(spectrum)
    return np.interp(a, table_a, table_steel).astype(np.float32)


def host_attenuation_coefficient(spectrum: Spectrum) -> float:
    """Effective mu/rho (cm^2/g) of the host goods: attenuation per g/cm^2 of 50 g/cm^2."""
    key = _key(spectrum)
    if key not in _HOST_MU:
        slab = {HOST_MATERIAL: np.full((1, 1), 50.0, np.float32)}
        _HOST_MU[key] = float(-np.log(polychromatic_transmission(slab, spectrum)[0, 0]) / 50.0)
    return _HOST_MU[key]


def displaced_host(patch: ThreatPatch, a_goods: np.ndarray, spectrum: Spectrum) -> np.ndarray:
    """Mass thickness (g/cm^2) of host goods the threat takes the place of.

    `a_goods`: the goods' attenuation over the patch (the background less the empty
    container's walls), from which the goods' mean density along the ray follows.
    """
    mu = host_attenuation_coefficient(spectrum)
    goods_g_cm2 = np.maximum(a_goods, 0.0) / mu
    density = goods_g_cm2 / (INNER_WIDTH_MM / 10.0)
    return np.minimum(patch.path_cm * density, goods_g_cm2).astype(np.float32)


def attenuation_change(
    patch: ThreatPatch,
    a_background: np.ndarray,
    spectrum: Spectrum,
    displaced: np.ndarray | None = None,
) -> np.ndarray:
    """What the threat adds to the image's attenuation (-ln T) at one energy, blurred
    by the detector, over the patch plus a margin (`a_background` covers that window,
    the patch sits at offset _MARGIN_PX)."""
    h, w = a_background.shape
    m = _MARGIN_PX
    ph, pw = patch.mass.shape

    def placed(values: np.ndarray) -> np.ndarray:
        full = np.zeros((h, w), np.float32)
        full[m : m + ph, m : m + pw] = values
        return full

    steel = steel_equivalent(a_background, spectrum)
    with_threat = {name: placed(values) for name, values in patch.maps.items()}
    with_threat["steel"] = with_threat.get("steel", 0.0) + steel
    if displaced is not None:
        with_threat[HOST_MATERIAL] = with_threat.get(HOST_MATERIAL, 0.0) - placed(displaced)
    t_background = _DETECTOR.optics(polychromatic_transmission({"steel": steel}, spectrum))
    t_with = _DETECTOR.optics(polychromatic_transmission(with_threat, spectrum))
    return (np.log(np.maximum(t_background, 1e-30)) - np.log(np.maximum(t_with, 1e-30))).astype(
        np.float32
    )


def patch_window(
    centre_xy: tuple[float, float], patch: ThreatPatch, shape: tuple[int, int]
) -> tuple[int, int, int, int] | None:
    """Window (x0, y0, x1, y1) of the patch plus margin, centred on `centre_xy`, or None
    when it does not lie wholly inside the image (a threat is never cut by the edge)."""
    ph, pw = patch.mass.shape
    m = _MARGIN_PX
    x0 = round(centre_xy[0] - pw / 2) - m
    y0 = round(centre_xy[1] - ph / 2) - m
    x1, y1 = x0 + pw + 2 * m, y0 + ph + 2 * m
    if x0 < 0 or y0 < 0 or x1 > shape[1] or y1 > shape[0]:
        return None
    return x0, y0, x1, y1


def placed_mass(patch: ThreatPatch) -> np.ndarray:
    """The patch's total mass thickness on its window (with the margin)."""
    m = _MARGIN_PX
    ph, pw = patch.mass.shape
    out = np.zeros((ph + 2 * m, pw + 2 * m), np.float32)
    out[m : m + ph, m : m + pw] = patch.mass
    return out
