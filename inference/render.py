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
- ``window``: a contrast window (level, width) on attenuation; by default a histogram
  window on the densest cargo (:func:`auto_window`), so what is inside it shows.
- ``edge``: outlines (gradient magnitude) bright on dark, so wires and thin walls pop.
"""

from __future__ import annotations

import functools
import itertools
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
    "auto_window",
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
MATERIAL_REGION_SIGMA = 3.0
"""Sigma (px) of the neighbourhood the material index is averaged over (and its spread)."""
MATERIAL_SPREAD_OK, MATERIAL_SPREAD_MAX = 0.1, 0.22
"""Local spread of the material index (0 organic .. 2 metal, unclamped) below which the
colour is shown in full, and above which it is not shown at all (grey only)."""
WINDOW_MIN_ATTENUATION = 0.15
"""Pixels below this are air or thin walls: left out of the automatic window's histogram."""
WINDOW_BINS = 128
WINDOW_MODE_SHARE = 0.15
"""The automatic window's mode must hold this share of the non-air pixels (not a wheel)."""
WINDOW_MIN_WIDTH = 0.3
WINDOW_SIGMA = 1.0
EDGE_SIGMA = 1.0
"""Smoothing (px) before the gradient of the edge view: photon noise is not an edge."""
EDGE_CONTEXT = 0.3
EDGE_FLOOR = 0.01
"""Least local contrast (in grey units) drawn at full brightness: a flat scan stays dark."""
"""Share of the edge view given to the faint negative picture behind the outlines."""
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
    """(level, width) on the densest cargo: a histogram window, not the full range.

    A window from the 0.5..99.5 percentiles spans air-thin walls to saturated steel (on a
    loaded tanker: level 5.6, width 11), which shows nothing that the grey view does not.
    Instead the non-air histogram is smoothed, split into modes at its valleys, and the
    window covers the 2..98 percentiles of the densest mode that holds at least
    :data:`WINDOW_MODE_SHARE` of the non-air pixels: what is inside dense cargo gets the
    whole grey range. A subsample is plenty.
    """
    step = max(1, int(math.sqrt(a.size / 1_000_000)))
    sample = np.asarray(a[::step, ::step], dtype=np.float32)
    sample = sample[np.isfinite(sample) & (sample > WINDOW_MIN_ATTENUATION)]
    if sample.size < 16:
        return (0.5, 1.0)
    top = float(np.percentile(sample, 99.9)) + 1e-3
    hist, edges = np.histogram(sample, bins=WINDOW_BINS, range=(0.0, top))
    smooth = cv2.GaussianBlur(hist.astype(np.float32).reshape(1, -1), (0, 0), 2.0).reshape(-1)
    lo_bin, hi_bin = _densest_mode(smooth, hist.sum() * WINDOW_MODE_SHARE, hist)
    mode = sample[(sample >= edges[lo_bin]) & (sample < edges[hi_bin + 1])]
    if mode.size < 16:
        mode = sample
    lo, hi = (float(v) for v in np.percentile(mode, [2.0, 98.0]))
    if hi - lo < WINDOW_MIN_WIDTH:  # one uniform material: centred on it
        mid = float(np.median(mode))
        lo, hi = mid - WINDOW_MIN_WIDTH / 2.0, mid + WINDOW_MIN_WIDTH / 2.0
    lo = max(lo, 0.0)
    return ((lo + hi) / 2.0, hi - lo)


def _densest_mode(smooth: np.ndarray, min_count: float, hist: np.ndarray) -> tuple[int, int]:
    """(first, last) bin of the highest-attenuation mode of ``smooth`` holding at least
    ``min_count`` pixels; modes are split at the valleys (local minima) between peaks."""
    n = smooth.size
    valleys = [0]
    for i in range(1, n - 1):
        if smooth[i] < smooth[i - 1] and smooth[i] <= smooth[i + 1]:
            valleys.append(i)
    valleys.append(n - 1)
    spans = list(itertools.pairwise(valleys))
    for first, last in reversed(spans):
        if hist[first : last + 1].sum() >= min_count:
            return first, last
    return 0, n - 1


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
    """Outlines, not grey: local contrast (difference of Gaussians) of the grey view as
    bright lines on black, over a faint negative of the picture for context.

    An unsharp mask on grey still looked like grey; outlines of wires, walls and hidden
    compartments read best as bright lines on black. A wire is one bright line, a wall's
    edge a bright pair. Scaled by the 99.9th percentile of the picture's local contrast (at
    least :data:`EDGE_FLOOR`), so faint and strong scans alike use the range.
    """
    fine = cv2.GaussianBlur(g, (0, 0), sigmaX=EDGE_SIGMA)
    coarse = cv2.GaussianBlur(g, (0, 0), sigmaX=3.0 * EDGE_SIGMA)
    detail = np.abs(fine - coarse)
    sub = detail[:: max(1, detail.shape[0] // 512), :: max(1, detail.shape[1] // 1024)]
    detail *= np.float32(1.0 / max(float(np.percentile(sub, 99.9)), EDGE_FLOOR))
    np.clip(detail, 0.0, 1.0, out=detail)
    out = np.float32(EDGE_CONTEXT) * (np.float32(1.0) - g)
    out += np.float32(1.0 - EDGE_CONTEXT) * detail
    np.clip(out, 0.0, 1.0, out=out)
    return out


def _smoothed_material(
    a_high: np.ndarray, ratio: np.ndarray, cal: MaterialCalibration
) -> tuple[np.ndarray, np.ndarray]:
    """The material index averaged over a neighbourhood, and how far to trust it (0..1).

    Where photon noise dominates (dense or thick cargo) the per-pixel index jumps between
    organic and metal from one pixel to the next: drawn as is, that speckle hid a person
    the grey view showed plainly. The index is averaged (Gaussian, sigma
    :data:`MATERIAL_REGION_SIGMA`), and the colour fades out where the ratio's local
    spread, in units of the organic-to-metal gap (not clamped to it, so that noise beyond
    the metal curve still counts as noise), is large: there the view shows grey.
    """
    sigma = MATERIAL_REGION_SIGMA
    z = material_index(a_high, ratio, cal)
    mean = cv2.GaussianBlur(z, (0, 0), sigma)
    organic = np.interp(a_high, cal.a_high, cal.organic).astype(np.float32)
    gap = organic - np.interp(a_high, cal.a_high, cal.metal).astype(np.float32)
    unclamped = np.float32(2.0) * (organic - ratio) / np.maximum(gap, np.float32(1e-4))
    m = cv2.GaussianBlur(unclamped, (0, 0), sigma)
    sq = cv2.GaussianBlur(unclamped * unclamped, (0, 0), sigma)
    spread = np.sqrt(np.maximum(sq - m * m, np.float32(0.0)))
    trust = np.subtract(np.float32(MATERIAL_SPREAD_MAX), spread)
    trust *= np.float32(1.0 / (MATERIAL_SPREAD_MAX - MATERIAL_SPREAD_OK))
    np.clip(trust, 0.0, 1.0, out=trust)
    return mean, trust


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
    z, significance = _smoothed_material(ah, ratio, cal)

    h0, h1, h2 = _MATERIAL_HUES
    hue = np.where(z <= 1.0, h0 + (h1 - h0) * z, h1 + (h2 - h1) * (z - 1.0)).astype(np.float32)
    sat = np.subtract(ah, np.float32(AIR_ATTENUATION))
    sat *= np.float32(1.0 / MATERIAL_SATURATION_RAMP)
    np.clip(sat, 0.0, 1.0, out=sat)
    sat *= significance
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
        # A narrow window magnifies photon noise as much as detail: a light smoothing
        # (sigma WINDOW_SIGMA px) keeps what is inside dense cargo from drowning in it.
        soft = cv2.GaussianBlur(a_high, (0, 0), WINDOW_SIGMA)
        return _grey_rgb(_window(soft, window))
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
