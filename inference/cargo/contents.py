"""What is in a container and how much: empty or loaded, where, mass, fill and kind.

Per container, on the 4x smaller high-energy attenuation map (`a = -ln T`):

- The empty container's own structure is what spans its whole length at one height (side
  walls seen flat, roof and floor rails, a flatbed's side boards): each row's 10th
  percentile over the box's columns is that row's baseline. What spans less is goods,
  after an opening that drops structure narrower than 0.3 m (posts, corrugation, the
  floor's cross-members, door bars) and thinner than 60 mm. Goods in the floor cavity or
  behind a false front wall stand above that baseline as any load does.
- Mass: each pixel's excess is turned into mass thickness (g/cm^2) through the 6 MV
  attenuation curve of the material class (food, aluminium, steel slabs through the
  simulated linac spectrum, NIST SRD 126 coefficients; thick loads harden the beam, so
  the curve is not a constant), net of the walls' share, times the pixel's area.
- Empty when the load's mass is under MIN_LOAD_KG: a few hundred kilos weigh over it.
- Kind: dual energy gives the material class (the low/high attenuation ratio against
  `inference/material_calibration.json`); a tank's load is liquid; otherwise packaged
  when the load is broken into blocks along the box, bulk when it is one even mass.

The method and its measured error are in docs/cargo.md.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import cv2
import numpy as np

from inference.cargo.containers import Container, median_filter_1d

MIN_LOAD_KG = 80.0  # below this the box is empty (dunnage, a strap, a forgotten pallet)
GOODS = 0.06  # excess attenuation over the row's baseline that counts as goods
GOODS_8BIT = 0.3  # the same on 8-bit exports: JPEG blocks and panel seams stand higher
OPEN_MM = (60.0, 300.0)  # structure thinner / narrower than this is the box's, not goods
END_MM = 150.0  # end frames and doors: kept out of the load
A_GRID = (0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0)
# Effective mass attenuation (cm^2/g) at 6 MV against the attenuation a slab gives, from
# training.synth.calibration's slabs (food, aluminium, steel) through its linac spectrum.
MU_EFF = {
    "organic": (0.05776, 0.05748, 0.05691, 0.05608, 0.05527, 0.05399, 0.05279, 0.05062,
                0.04876, 0.04716, 0.04578, 0.04356, 0.04186, 0.0405, 0.0394, 0.03849),
    "mixed": (0.0523, 0.05204, 0.05155, 0.05082, 0.05013, 0.04902, 0.048, 0.04616,
              0.04461, 0.04328, 0.04215, 0.04033, 0.03894, 0.03784, 0.03695, 0.03621),
    "metal": (0.05338, 0.05308, 0.0525, 0.05167, 0.05089, 0.0497, 0.04865, 0.04687,
              0.04545, 0.04429, 0.04332, 0.0418, 0.04065, 0.03975, 0.03902, 0.03843),
}  # fmt: skip
EXPORT_A_MAX = 3.3  # 8-bit exports: grey linear in attenuation, black at 3.3 (bench/realism)
DEFAULT_PITCH_MM = 5.0
CONTAINER_HEIGHT_MM = 2591.0 * 1.12  # as seen: the fan beam spreads near and far sides
CONTAINER_LENGTHS_MM = (6058.0, 12192.0)
FULL_LENGTH = 0.3  # a row this far above the walls over the whole length is loaded or boards
STRAIGHT_PX = 3.0  # a load top straighter than this (small px, std) is structure
PACKED_SPREAD = 0.35  # column-to-column spread of the load's mass above which it is packaged
# 8-bit exports (docs/cargo.md, chosen on the half of the real scans whose id's SHA-256
# fraction is below 0.5, reported on both halves): the empty box against itself.
EXPORT_BAND = 0.3  # a row this far above the walls' level is floor, chassis or load
EXPORT_FLOOR_MIN = 0.6  # floor band reaching above this share of the box height: a load
EXPORT_BLOB_KG = 400.0  # one compact blob over its rows' level heavier than this: a load
EXPORT_FULL_ROWS = 0.3  # share of the rows above the floor far above the walls: a load
EXPORT_OPEN_MM = (100.0, 400.0)  # blobs thinner / narrower than this are seams and posts


@dataclass(frozen=True)
class Contents:
    """One container's load as the image shows it (boxes in scan pixels)."""

    empty: bool
    score: float  # how sure the empty/loaded call is, 0.5..1
    mass_kg: float
    fill: float  # share of the box's inside the load covers
    material: str  # organic | mixed | metal | unknown (single energy)
    packing: str  # bulk | packaged | liquid | none
    load_box: tuple[int, int, int, int] | None

    @property
    def kind(self) -> str:
        """Material and packing in words: "organic, packaged"; "empty"."""
        if self.empty:
            return "empty"
        return f"{self.material}, {self.packing}" if self.material != "unknown" else self.packing


@lru_cache(maxsize=1)
def _ratio_curves() -> dict[str, np.ndarray]:
    text = resources.files("inference").joinpath("material_calibration.json").read_text()
    data = json.loads(text)
    return {k: np.asarray(data[k]) for k in ("a_high", "organic", "mixed", "metal")}


def mass_thickness(a: np.ndarray, material: str) -> np.ndarray:
    """g/cm^2 of `material` class that gives high-energy attenuation `a`."""
    grid = np.asarray(A_GRID)
    mu = np.interp(a, grid, MU_EFF.get(material, MU_EFF["organic"]))
    return a / mu


def pitches(box: tuple[int, int, int, int], pitch_mm: float | None) -> tuple[float, float]:
    """(x, y) pixel pitch in mm: the station's, else from the box's size in pixels (its
    height an ISO box's, its length 20 or 40 ft, whichever gives a plausible stretch:
    a portal's pitch along the vehicle follows its speed)."""
    if pitch_mm:
        return pitch_mm, pitch_mm
    x0, y0, x1, y1 = box
    py = CONTAINER_HEIGHT_MM / max(y1 - y0, 1)
    ratios = [(abs(math.log(n / max(x1 - x0, 1) / py / 1.4)), n) for n in CONTAINER_LENGTHS_MM]
    return min(ratios)[1] / max(x1 - x0, 1), py


def material_class(a_high: np.ndarray, a_low: np.ndarray) -> str:
    """Nearest class by the low/high ratio at the load's attenuation (dual energy)."""
    keep = a_high > 0.3
    if keep.sum() < 20:
        return "unknown"
    ah = float(np.median(a_high[keep]))
    ratio = float(np.median(a_low[keep] / a_high[keep]))
    curves = _ratio_curves()
    at = {k: float(np.interp(ah, curves["a_high"], curves[k])) for k in MU_EFF}
    return min(at, key=lambda k: abs(at[k] - ratio))


def describe(
    small_high: np.ndarray,
    small_low: np.ndarray | None,
    container: Container,
    scale: tuple[float, float],
    pitch_mm: float | None,
    goods_level: float = GOODS,
) -> Contents:
    """The load of one container (see the module). `scale` is full-scan pixels per small
    pixel along (x, y)."""
    fx, fy = scale
    x0, y0, x1, y1 = container.box
    px, py = pitches(container.box, pitch_mm)
    end = int(END_MM / px / fx) + 1
    c0, c1 = int(x0 / fx) + end, int(x1 / fx) - end
    r0, r1 = int(y0 / fy) + 1, math.ceil(y1 / fy)
    window = small_high[r0:r1, c0:c1]
    none = Contents(True, 0.5, 0.0, 0.0, "unknown", "none", None)
    if window.shape[0] < 4 or window.shape[1] < 8:
        return none
    base = _baseline(window)
    excess = window - base[:, None]
    kh = max(round(OPEN_MM[0] / py / fy), 1)
    kw = max(round(OPEN_MM[1] / px / fx), 1)
    goods = cv2.morphologyEx(
        (excess > goods_level).astype(np.uint8), cv2.MORPH_OPEN, np.ones((kh, kw), np.uint8)
    ).astype(bool)
    material = "unknown"
    if small_low is not None and goods.any():
        material = material_class(window[goods], small_low[r0:r1, c0:c1][goods])
    curve = material if material != "unknown" else "organic"
    base_full = np.broadcast_to(base[:, None], window.shape)
    grams = mass_thickness(window[goods], curve) - mass_thickness(base_full[goods], curve)
    area_cm2 = (px * fx / 10.0) * (py * fy / 10.0)
    mass = float(np.clip(grams, 0, None).sum() * area_cm2 / 1000.0)
    if goods_level == GOODS:
        empty = mass < MIN_LOAD_KG
        score = 0.5 + 0.5 * abs(math.tanh(math.log(max(mass, 1.0) / MIN_LOAD_KG)))
    else:
        empty, score = export_empty(window, px * fx, py * fy)
    if empty:
        return Contents(True, round(score, 3), round(mass, 1), 0.0, "unknown", "none", None)
    if not goods.any():  # an export's load the row levels absorb (full length): all of it
        goods = np.ones_like(goods)
    rows, cols = np.flatnonzero(goods.any(axis=1)), np.flatnonzero(goods.any(axis=0))
    load_box = (
        int((c0 + cols[0]) * fx),
        int((r0 + rows[0]) * fy),
        min(int((c0 + cols[-1] + 1) * fx), x1),
        min(int((r0 + rows[-1] + 1) * fy), y1),
    )
    per_col = np.where(goods, excess, 0).sum(axis=0)[cols[0] : cols[-1] + 1]
    spread = float(np.std(per_col) / max(float(np.mean(per_col)), 1e-6))
    packing = "liquid" if container.tank else ("packaged" if spread > PACKED_SPREAD else "bulk")
    return Contents(
        False,
        round(score, 3),
        round(mass, 1),
        round(float(goods.mean()), 3),
        material,
        packing,
        load_box,
    )


def export_empty(window: np.ndarray, px_mm: float, py_mm: float) -> tuple[bool, float]:
    """Empty or loaded on an 8-bit export, and how sure (0.5..1), measuring the empty box
    against itself, because its own structure (seams, posts, corrugation, floor band,
    chassis) weighs hundreds of kilos on these exports:

    - the walls' level is the lowest row levels (each row's 25th percentile over x) in
      the upper 60 %: the rows above any load, or the free length of a part load;
    - the floor band is the dark run of rows up from the box's bottom (floor, chassis):
      an empty box's ends in its lowest third; a load on the floor raises it;
    - rows above the floor band far above the walls' level over the length: a full-length
      load; and a compact blob over its rows' level (seams and posts are thinner than
      EXPORT_OPEN_MM, the floor's rails are part of the rows' level) heavier than
      EXPORT_BLOB_KG: a part load."""
    m = window.shape[0]
    level = median_filter_1d(np.percentile(window, 25, axis=1), 5)
    top = int(0.04 * m) + 1
    wall = float(np.percentile(level[top : max(int(0.6 * m), top + 1)], 10))
    y = int(0.97 * m)
    while y > top and level[y] > wall + EXPORT_BAND:
        y -= 1
    floor = y + 1
    share = floor / m
    inner, base = window[top:floor], level[top:floor]
    full = float((base > wall + 0.5).mean()) if floor > top else 1.0
    blob = 0.0
    if inner.shape[0] >= 2:
        kh = max(round(EXPORT_OPEN_MM[0] / py_mm), 1)
        kw = max(round(EXPORT_OPEN_MM[1] / px_mm), 1)
        excess = (inner - base[:, None]).astype(np.float32)
        mask = cv2.morphologyEx(
            (excess > GOODS_8BIT).astype(np.uint8), cv2.MORPH_OPEN, np.ones((kh, kw), np.uint8)
        )
        n, labels = cv2.connectedComponents(mask, connectivity=8)
        grams = mass_thickness(inner, "organic") - mass_thickness(
            np.broadcast_to(base[:, None], inner.shape), "organic"
        )
        per = np.bincount(labels.ravel(), np.clip(grams, 0, None).ravel(), minlength=n)
        blob = float(per[1:].max(initial=0.0)) * (px_mm / 10.0) * (py_mm / 10.0) / 1000.0
    # How far past (or short of) the nearest threshold, in the units of each test.
    margins = (
        (EXPORT_FLOOR_MIN - share) / 0.1,
        math.log(max(blob, 1.0) / EXPORT_BLOB_KG),
        (full - EXPORT_FULL_ROWS) / 0.1,
    )
    worst = max(margins)
    return worst <= 0, round(0.5 + 0.5 * abs(math.tanh(worst)), 3)


def _baseline(window: np.ndarray) -> np.ndarray:
    """Each row's attenuation of the empty box: its 10th percentile over the columns,
    except where a load spans the whole length without a gap (bulk, a tank's liquid):
    there the walls' level of the rows above. Told from a flatbed's side boards, which
    also span it, by the load's top: boards end on one straight row, bulk slopes and
    a tank's liquid curves."""
    base = np.percentile(window, 10, axis=1).astype(np.float32)
    n = base.size
    inner = slice(int(0.08 * n), int(0.85 * n))
    wall = float(np.percentile(base[inner], 5))
    band = base[inner] > wall + FULL_LENGTH
    if not band.any():
        return base
    heavy = window[inner] > wall + FULL_LENGTH
    tops = np.argmax(heavy, axis=0)[heavy.any(axis=0)]
    if tops.size and float(np.std(tops)) > STRAIGHT_PX:
        rows = base[inner]
        rows[band] = wall
    return base


def export_attenuation(a8: np.ndarray) -> np.ndarray:
    """An 8-bit export's -ln(grey / air) back to attenuation: the export's grey is linear
    in attenuation up to EXPORT_A_MAX (bench/realism.py fits it on real scans)."""
    return (EXPORT_A_MAX * (1.0 - np.exp(-a8))).astype(np.float32)
