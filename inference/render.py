"""The views officers know, drawn from a scan as 8-bit RGB pictures (H, W, 3) uint8.

Every view starts from air-calibrated attenuation ``a = -ln T``
(:func:`inference.preprocess.attenuation`), not raw counts, so an 8-bit legacy export and
a 16-bit raw scan of the same truck look the same, and detector row gains do not show as
stripes.

- ``grey``: transmission the way the scanner's own console shows it (bright = air),
  with a power-law mapping of attenuation so thin walls and dense cargo are both readable.
  An 8-bit scan is already a scanner's export, drawn through its own display curve:
  it is shown as exported (air calibrated to white, grey levels otherwise kept), since
  the power law on top of that curve would wash the dense cargo out.
- ``inverse``: the negative of ``grey`` (some officers spot dense items better on white).
- ``material``: dual-energy pseudo-colour, orange = organic, green = mixed/inorganic,
  blue = metal, from the low/high attenuation ratio and a calibration file.
- ``window``: a contrast window (level, width) on attenuation, automatic by default.
- ``edge``: ``grey`` with edge enhancement, so wires and thin outlines pop.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from inference.preprocess import attenuation
from inference.scan import Scan

__all__ = [
    "AIR_ATTENUATION",
    "VIEWS",
    "MaterialCalibration",
    "material_index",
    "render",
    "render_to_file",
]

VIEWS = ("grey", "inverse", "material", "window", "edge")

AIR_ATTENUATION = 0.05
"""Below this attenuation a pixel is air (T > 95 %): white in the material view."""
GREY_A_MAX = 8.0
"""Attenuation drawn black in ``grey``: about the penetration limit of a 6 MV linac."""
GREY_A0 = 0.02
"""``grey = 1 - (sqrt(a + a0) - sqrt(a0)) / (sqrt(A + a0) - sqrt(a0))``, A = GREY_A_MAX.
The square root is steep at small ``a``, so a 2 mm steel wall (a ~ 0.1) is visibly grey
against air while a = 2..8 still spans most grey levels; the offset ``a0`` keeps the
slope finite at a = 0, where a bare square root would turn one count of noise in the air
into a visible speckle."""
MATERIAL_SMOOTH_SIGMA = 2.0
"""Gaussian (9x9) on both attenuations before their ratio: at MeV the classes differ by
~1 % in ratio, so per-pixel photon noise would otherwise dominate."""
MATERIAL_SATURATION_RAMP = 0.6
"""Colour fades in over a = 0.05..0.65, where the ratio is still mostly noise."""
_LUT_PER_UNIT = 256
_MATERIAL_HUES = (30.0, 120.0, 220.0)  # degrees: orange (organic), green (mixed), blue (metal)


# --------------------------------------------------------------------------- calibration


@dataclass(frozen=True, eq=False)
class MaterialCalibration:
    """Expected ``a_low / a_high`` of reference materials as a function of ``a_high``.

    At MeV energies pair production grows with Z and with energy, so high-Z matter
    attenuates the HIGH energy relatively more: the ratio DEcreases with Z (organic
    highest, metal lowest) and drifts with thickness (beam hardening), hence curves on an
    ``a_high`` grid instead of three constants.
    """

    energies_mv: tuple[float, float]
    a_high: np.ndarray
    organic: np.ndarray
    mixed: np.ndarray
    metal: np.ndarray
    source: str = ""

    def __post_init__(self) -> None:
        arrays = {}
        for name in ("a_high", "organic", "mixed", "metal"):
            arr = np.asarray(getattr(self, name), dtype=np.float64).reshape(-1)
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"material calibration: {name} has non-finite values")
            arr.setflags(write=False)
            arrays[name] = arr
            object.__setattr__(self, name, arr)
        n = arrays["a_high"].size
        if n < 2:
            raise ValueError("material calibration: a_high needs at least 2 grid points")
        for name in ("organic", "mixed", "metal"):
            if arrays[name].size != n:
                raise ValueError(
                    f"material calibration: {name} has {arrays[name].size} values, a_high has {n}"
                )
        if np.any(np.diff(arrays["a_high"]) <= 0):
            raise ValueError("material calibration: a_high must be strictly increasing")
        if np.any(arrays["organic"] < arrays["mixed"]) or np.any(arrays["mixed"] < arrays["metal"]):
            raise ValueError(
                "material calibration: expected ratio organic >= mixed >= metal at every "
                "a_high (the low/high ratio falls with Z at MeV energies)"
            )
        energies = tuple(float(e) for e in self.energies_mv)
        if len(energies) != 2:
            raise ValueError("material calibration: energies_mv must be [high, low]")
        object.__setattr__(self, "energies_mv", energies)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MaterialCalibration:
        try:
            return cls(
                energies_mv=tuple(data["energies_mv"]),
                a_high=np.asarray(data["a_high"], dtype=np.float64),
                organic=np.asarray(data["organic"], dtype=np.float64),
                mixed=np.asarray(data["mixed"], dtype=np.float64),
                metal=np.asarray(data["metal"], dtype=np.float64),
                source=str(data.get("source", "")),
            )
        except KeyError as exc:
            raise ValueError(f"material calibration: missing key {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        return {
            "energies_mv": list(self.energies_mv),
            "source": self.source,
            "a_high": self.a_high.tolist(),
            "organic": self.organic.tolist(),
            "mixed": self.mixed.tolist(),
            "metal": self.metal.tolist(),
        }

    @classmethod
    def load(cls, path: Path | str | None = None) -> MaterialCalibration:
        """Read a calibration JSON; default: ``inference/material_calibration.json`` (shipped)."""
        if path is None:
            from importlib import resources

            text = (
                resources.files("inference")
                .joinpath("material_calibration.json")
                .read_text(encoding="utf-8")
            )
        else:
            text = Path(path).read_text(encoding="utf-8")
        return cls.from_dict(json.loads(text))

    def material_index(self, a_high: np.ndarray, ratio: np.ndarray) -> np.ndarray:
        """Continuous material scale: 0 = organic, 1 = mixed, 2 = metal (clamped)."""
        return material_index(a_high, ratio, self)


@functools.lru_cache(maxsize=1)
def _default_calibration() -> MaterialCalibration:
    return MaterialCalibration.load()


def material_index(
    a_high: np.ndarray, ratio: np.ndarray, calibration: MaterialCalibration
) -> np.ndarray:
    """Place each pixel's ``a_low / a_high`` between the reference curves at its ``a_high``.

    Linear between organic (0) and mixed (1), and between mixed (1) and metal (2);
    beyond the organic or metal curve it is clamped to 0 or 2.
    """
    shape = np.shape(a_high)
    ah = np.asarray(a_high, dtype=np.float32).reshape(-1)
    r = np.asarray(ratio, dtype=np.float32).reshape(-1)
    # The curves are smooth: sample them once on a fine grid (1/256 of a unit of a) and
    # look pixels up, ~10x faster than np.interp on every pixel of a 9 Mpx scan.
    grid_top = float(max(calibration.a_high[-1], 16.0))
    n = int(grid_top * _LUT_PER_UNIT) + 2
    fine = np.arange(n, dtype=np.float64) / _LUT_PER_UNIT
    idx = np.multiply(ah, np.float32(_LUT_PER_UNIT))
    np.clip(idx, 0, n - 1, out=idx)
    idx = (idx + np.float32(0.5)).astype(np.intp)
    org, mix, met = (
        np.interp(fine, calibration.a_high, curve).astype(np.float32)[idx]
        for curve in (calibration.organic, calibration.mixed, calibration.metal)
    )
    eps = np.float32(1e-6)
    lower = (org - r) / np.maximum(org - mix, eps)
    upper = 1.0 + (mix - r) / np.maximum(mix - met, eps)
    z = np.where(r >= mix, lower, upper)
    np.clip(z, 0.0, 2.0, out=z)
    return z.reshape(shape)


# --------------------------------------------------------------------------- views


def _grey(a: np.ndarray) -> np.ndarray:
    """float32 in [0, 1], 1 = air, from attenuation (see GREY_A0)."""
    root_a0 = math.sqrt(GREY_A0)
    span = math.sqrt(GREY_A_MAX + GREY_A0) - root_a0
    x = np.clip(a, 0.0, GREY_A_MAX).astype(np.float32, copy=False)
    x = x + np.float32(GREY_A0)
    np.sqrt(x, out=x)
    x -= np.float32(root_a0)
    x *= np.float32(-1.0 / span)
    x += np.float32(1.0)
    return x


def _exported_grey(a: np.ndarray) -> np.ndarray:
    """float32 in [0, 1] of an 8-bit export: its air-calibrated transmission, linear, so
    the grey levels are those the scanner's export curve gave."""
    return np.exp(np.negative(a, dtype=np.float32))


def _to_u8(x: np.ndarray) -> np.ndarray:
    """[0, 1] float -> uint8 with rounding."""
    y = np.multiply(x, np.float32(255.0))
    np.clip(y, 0.0, 255.0, out=y)
    return (y + np.float32(0.5)).astype(np.uint8)


def _grey_rgb(g: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(_to_u8(g), cv2.COLOR_GRAY2RGB)


def auto_window(a: np.ndarray) -> tuple[float, float]:
    """(level, width) from robust percentiles of the non-air pixels (a subsample is plenty)."""
    step = max(1, int(math.sqrt(a.size / 1_000_000)))
    sample = a[::step, ::step]
    sample = sample[sample > AIR_ATTENUATION]
    if sample.size < 16:
        return (0.5, 1.0)
    lo, hi = np.percentile(sample, [0.5, 99.5])
    lo = max(float(lo), 0.0)
    hi = max(float(hi), lo + 0.05)
    return ((lo + hi) / 2.0, hi - lo)


def _window(a: np.ndarray, window: tuple[float, float] | None) -> np.ndarray:
    if window is None:
        level, width = auto_window(a)
    else:
        try:
            level, width = (float(v) for v in window)
        except (TypeError, ValueError):
            raise ValueError(f"window must be (level, width), got {window!r}") from None
        if not (math.isfinite(level) and math.isfinite(width) and width > 0):
            raise ValueError(f"window width must be > 0 and finite, got {window!r}")
    x = np.subtract(a, np.float32(level - width / 2.0))
    x *= np.float32(1.0 / width)
    np.clip(x, 0.0, 1.0, out=x)
    return np.subtract(np.float32(1.0), x)  # bright = little attenuation, like grey


def _edge(g: np.ndarray) -> np.ndarray:
    """Unsharp mask on the grey view: adds back 2x the detail finer than ~2 px sigma."""
    blur = cv2.GaussianBlur(g, (0, 0), sigmaX=2.0)
    out = g + np.float32(2.0) * (g - blur)
    np.clip(out, 0.0, 1.0, out=out)
    return out


def _material(
    scan: Scan, a_high: np.ndarray, calibration: MaterialCalibration | None
) -> np.ndarray:
    assert scan.low is not None
    cal = calibration or _default_calibration()
    a_low = attenuation(scan.low)
    ks = (9, 9)
    ah = cv2.GaussianBlur(a_high, ks, MATERIAL_SMOOTH_SIGMA)
    al = cv2.GaussianBlur(a_low, ks, MATERIAL_SMOOTH_SIGMA)
    ratio = al / np.maximum(ah, np.float32(1e-3))
    z = material_index(ah, ratio, cal)

    h0, h1, h2 = _MATERIAL_HUES
    hue = np.where(z <= 1.0, h0 + (h1 - h0) * z, h1 + (h2 - h1) * (z - 1.0)).astype(np.float32)
    sat = np.subtract(ah, np.float32(AIR_ATTENUATION))
    sat *= np.float32(1.0 / MATERIAL_SATURATION_RAMP)
    np.clip(sat, 0.0, 1.0, out=sat)
    # Brightness from transmission (dense = dark) but never fully black, so the hue
    # of dense cargo stays visible.
    val = np.float32(0.12) + np.float32(0.88) * _grey(a_high)
    hsv = np.dstack([hue, sat, val])
    rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    out = _to_u8(rgb)
    out[ah < AIR_ATTENUATION] = 255
    return out


def render(
    scan: Scan,
    view: str = "grey",
    *,
    window: tuple[float, float] | None = None,
    calibration: MaterialCalibration | None = None,
) -> np.ndarray:
    """Draw ``scan`` as ``view``: (H, W, 3) uint8 RGB.

    ``window`` = (level, width) in units of attenuation, used by the ``window`` view only
    (default: automatic from the non-air pixels). ``material`` needs a low channel; a
    single-energy scan falls back to ``grey`` (there is no material information to show).
    ``calibration`` overrides the shipped material calibration (other energies).
    """
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}; expected one of {', '.join(VIEWS)}")
    a_high = attenuation(scan.high)
    if view == "material" and scan.low is not None:
        return _material(scan, a_high, calibration)
    if view == "window":
        return _grey_rgb(_window(a_high, window))
    g = _exported_grey(a_high) if scan.bit_depth == 8 else _grey(a_high)
    if view == "inverse":
        np.subtract(np.float32(1.0), g, out=g)
    elif view == "edge":
        g = _edge(g)
    return _grey_rgb(g)


def render_to_file(
    scan: Scan,
    path: Path | str,
    *,
    view: str = "grey",
    window: tuple[float, float] | None = None,
) -> None:
    """Render and write a PNG (lossless; default) or JPEG, chosen by the file suffix."""
    from PIL import Image

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".png", ".jpg", ".jpeg"):
        raise ValueError(f"output must end in .png, .jpg or .jpeg, got {path.name!r}")
    rgb = render(scan, view, window=window)
    img = Image.fromarray(rgb, mode="RGB")
    if suffix == ".png":
        img.save(path, format="PNG", compress_level=3)
    else:
        img.save(path, format="JPEG", quality=92)
