"""What is in a container and how much: empty or loaded, where, mass, fill and kind.

Per container, on the 4x smaller high-energy attenuation map (`a = -ln T`):

- The empty container's own structure is what spans its whole length at one height (side
  walls seen flat, roof and floor rails, a flatbed's side boards): each row's 10th
  percentile over the box's columns is that row's baseline. What spans less is goods,
  after an opening that drops structure narrower than 0.3 m (posts, corrugation, the
  floor's cross-members, door bars) and thinner than 60 mm. A tall run of rows that a
  gap-less load fills (bulk, a tank's liquid, a row of cartons) is measured against the
  walls' level instead.
- 16-bit scans, the box's floor and the trailer under it (`_drop_structure`): the window
  reaches under the found bottom to the floor line (`floor_row`); under it only a long,
  thin stretch counts (the floor cavity); columns dark well under the floor whose goods
  rise less than 0.4 m above it are the trailer's (stanchion boxes); a blob at an end
  reaching nearly to the roof is the box's (a reefer's machinery).
- 8-bit exports: empty or loaded against the box's own structure (`export_empty`).
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

import itertools
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
EXPORT_RAGGED = 0.087  # spread of the floor band's top over the columns above this: a load
FULL_LENGTH_ROWS = 0.12  # a gap-less load is at least this share of the box's height
BOTTOM_EXTEND = 0.12  # 16-bit: the window reaches this share further down, to the floor
FLOOR_BAND = 0.3  # rows this far above the walls even in their lightest columns: floor band
FLOOR_SEARCH_MM = 700.0  # the floor line is sought from this far above the found bottom
FLOOR_STEP = 0.3  # where the attenuation steps up by this much down a column
FLOOR_STEP_SHARE = 0.5  # in at least this share of the columns
FLOOR_LOAD_MM = 1000.0  # goods wholly under the floor line: at least this long (a cavity's)
CAVITY_MM = 300.0  # and within this of the floor line
STANCHION_MM = 400.0  # the trailer's structure rises at most this far above the floor line
UNDER_MM = 200.0  # and shows dark from this far under it to twice that
END_ZONE = 0.08  # share of the box's length at each end where end structure stands
END_HEIGHT = 0.8  # share of the height above the floor that end structure spans
MATERIAL_MIN_A = 0.1  # load pixels fainter than this carry too little for the ratio
MATERIAL_MIN_PX = 20  # fewer load pixels than this: no material class
SEGMENT_MM = 1000.0  # stretch of load along the box given its own material class
END_PROBE_MM = 500.0  # an empty-reading box's ends are searched this far in for a stack
END_OPEN_MM = (300.0, 60.0)  # there goods are at least this tall and wide (tall, narrow)
END_TOP_BAND = (0.05, 0.2)  # share of the height under the roof that gives each end column's level
END_WALL_STEP = 0.5  # an end column this far above the box's level under the roof is the wall's
END_MIN_KG = 50.0  # a stack lighter than this is the end's fittings (bare boxes on tune: <= 38)


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
    # Dual energy, measured on the load alone (each channel's excess over the empty box):
    # the low/high attenuation ratio and the high-energy attenuation it was read at; and
    # per stretch of the load along the box, (ratio, attenuation, share of the load).
    ratio: float | None = None
    a_load: float = 0.0
    segments: tuple[tuple[float, float, float], ...] = ()

    @property
    def p_loaded(self) -> float:
        """How likely the box holds a load, 0..1 (0.5 at the empty/loaded boundary)."""
        return self.score if not self.empty else 1.0 - self.score

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


def class_of_ratio(ratio: float, a_high: float) -> str:
    """The material class whose calibrated low/high ratio at `a_high` is nearest."""
    curves = _ratio_curves()
    at = {k: float(np.interp(a_high, curves["a_high"], curves[k])) for k in MU_EFF}
    return min(at, key=lambda k: abs(at[k] - ratio))


def class_curves(a_high: float) -> dict[str, float]:
    """Each class's calibrated low/high ratio at `a_high` (organic highest, metal lowest)."""
    curves = _ratio_curves()
    return {k: float(np.interp(a_high, curves["a_high"], curves[k])) for k in MU_EFF}


def load_ratio(
    ex_high: np.ndarray, ex_low: np.ndarray, goods: np.ndarray
) -> tuple[float, float] | None:
    """(low/high ratio, high attenuation) of the load alone: each channel's excess over
    the empty box summed over the goods, because the box's steel walls lie in front of
    every load and would pull every ratio towards metal. None: too little load."""
    keep = goods & (ex_high > MATERIAL_MIN_A)
    if keep.sum() < MATERIAL_MIN_PX:
        return None
    high = float(ex_high[keep].sum())
    return float(ex_low[keep].sum()) / high, high / float(keep.sum())


def material_segments(
    ex_high: np.ndarray, ex_low: np.ndarray, goods: np.ndarray, band_px: int
) -> tuple[tuple[float, float, float], ...]:
    """The load's dual-energy reading per stretch along the box (bands of `band_px`
    columns): (low/high ratio, high attenuation, share of the load's high attenuation)
    each; a mixed load's foreign part shows here when the whole load's ratio averages
    it away."""
    parts: list[tuple[float, float, float]] = []
    total = 0.0
    for c in range(0, goods.shape[1], max(band_px, 1)):
        sl = slice(c, c + band_px)
        got = load_ratio(ex_high[:, sl], ex_low[:, sl], goods[:, sl])
        if got is None:
            continue
        w = float(np.where(goods[:, sl], ex_high[:, sl], 0).sum())
        parts.append((got[0], got[1], w))
        total += w
    if total <= 0:
        return ()
    return tuple((round(r, 5), round(a, 4), round(w / total, 4)) for r, a, w in parts)


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
    bottom = r1 - r0  # the box's bottom as found, in window rows
    if goods_level == GOODS:  # down to where the floor may lie (the box's bottom is a share)
        r1 = min(r1 + round(BOTTOM_EXTEND * (r1 - r0)), small_high.shape[0])
    window = small_high[r0:r1, c0:c1]
    none = Contents(True, 0.5, 0.0, 0.0, "unknown", "none", None)
    if window.shape[0] < 4 or window.shape[1] < 8:
        return none
    rows = np.percentile(window, 10, axis=1).astype(np.float32)
    floor = None
    if goods_level == GOODS:
        # A tank frame has no floor: its vessel and liquid fill the rows one is sought in.
        start = bottom - round(FLOOR_SEARCH_MM / py / fy)
        floor = min(bottom, window.shape[0]) if container.tank else floor_row(window, rows, start)
    base, full_rows = _baseline(window, floor, rows)
    excess = window - base[:, None]
    kh = max(round(OPEN_MM[0] / py / fy), 1)
    kw = max(round(OPEN_MM[1] / px / fx), 1)
    goods = cv2.morphologyEx(
        (excess > goods_level).astype(np.uint8), cv2.MORPH_OPEN, np.ones((kh, kw), np.uint8)
    ).astype(bool)
    if floor is not None:
        goods = _drop_structure(goods, floor, px * fx, py * fy)
    material, ratio, a_load, segments = "unknown", None, 0.0, ()
    if small_low is not None and goods.any():
        low = small_low[r0:r1, c0:c1]
        ex_low = low - _low_baseline(low, full_rows)[:, None]
        got = load_ratio(excess, ex_low, goods)
        if got is not None:
            ratio, a_load = got
            material = class_of_ratio(ratio, a_load)
            band = max(round(SEGMENT_MM / px / fx), 2)
            segments = material_segments(excess, ex_low, goods, band)
    curve = material if material != "unknown" else "organic"
    base_full = np.broadcast_to(base[:, None], window.shape)
    grams = mass_thickness(window[goods], curve) - mass_thickness(base_full[goods], curve)
    area_cm2 = (px * fx / 10.0) * (py * fy / 10.0)
    mass = float(np.clip(grams, 0, None).sum() * area_cm2 / 1000.0)
    if goods_level == GOODS:
        empty = mass < MIN_LOAD_KG
        if empty and floor is not None and not container.tank:
            stacked, stack_box = end_stacks(small_high, container, scale, (px, py), r0, floor, rows)
            if mass + stacked >= MIN_LOAD_KG and stack_box is not None:
                return _end_load(mass + stacked, stack_box, goods)
        score = _mass_score(mass)
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
        None if ratio is None else round(ratio, 5),
        round(a_load, 4),
        segments,
    )


def end_stacks(
    small_high: np.ndarray,
    container: Container,
    scale: tuple[float, float],
    pitch: tuple[float, float],
    r0: int,
    floor: int,
    rows: np.ndarray,
) -> tuple[float, tuple[int, int, int, int] | None]:
    """Goods stacked against either end wall of a box that reads empty (kg, and their box
    in scan pixels): the smuggler's few hundred kilos behind the front wall. The load's
    window leaves END_MM at each end out and its opening erases anything narrower than
    OPEN_MM, so a 200 mm stack there is never weighed. Here each end's columns are
    measured against themselves: the end wall seen edge-on, its door bars and posts are
    as dark under the roof as at the floor, so each column's level in the band under the
    roof (END_TOP_BAND) is its own structure, and the floor band's rise (every row's level
    over the box's length, `rows`, against the same band) is taken out too; columns far
    darker there than the box (END_WALL_STEP) are the wall itself and left out. What
    stands above both, at least END_OPEN_MM tall and wide and END_MIN_KG heavy, counts,
    unless most of its columns reach from the floor to END_HEIGHT of the box (a reefer's
    machinery, as `_drop_structure` says; the wall's own columns may join a stack and
    reach higher)."""
    fx, fy = scale
    px, py = pitch
    x0, _, x1, _ = container.box
    if floor < 8:
        return 0.0, None
    lo = int(END_TOP_BAND[0] * floor)
    hi = max(int(END_TOP_BAND[1] * floor), lo + 2)
    level = float(np.median(rows[lo:hi]))
    rise = rows[:floor] - level
    width = max(round(END_PROBE_MM / (px * fx)), 2)
    kh = max(round(END_OPEN_MM[0] / (py * fy)), 1)
    kw = max(round(END_OPEN_MM[1] / (px * fx)), 1)
    area_cm2 = (px * fx / 10.0) * (py * fy / 10.0)
    total, boxes = 0.0, []
    for c0 in (int(x0 / fx), math.ceil(x1 / fx) - width):
        c0 = max(c0, 0)
        strip = small_high[r0 : r0 + floor, c0 : c0 + width]
        if strip.shape[1] < kw or strip.shape[0] < kh:
            continue
        a = strip - rise[: strip.shape[0], None]
        base = np.median(a[lo:hi], axis=0)
        excess = a - base[None, :]
        excess[:, base > level + END_WALL_STEP] = 0.0  # the end wall's own columns
        goods = cv2.morphologyEx(
            (excess > GOODS).astype(np.uint8), cv2.MORPH_OPEN, np.ones((kh, kw), np.uint8)
        )
        count, labels, stats = _components(goods)
        for k in range(1, count):
            x, y, w, h, _area = stats[k]
            part = labels == k
            cover = part[:, x : x + w].sum(axis=0)
            if y + h >= strip.shape[0] - 1 and np.median(cover) >= END_HEIGHT * floor:
                continue  # floor to near the roof in most of its columns: the box's own
            base_full = np.broadcast_to(base[None, :], a.shape)[part]
            grams = mass_thickness(a[part], "organic") - mass_thickness(base_full, "organic")
            kg = float(np.clip(grams, 0, None).sum() * area_cm2 / 1000.0)
            if kg < END_MIN_KG:
                continue
            total += kg
            boxes.append(
                (
                    int((c0 + x) * fx),
                    int((r0 + y) * fy),
                    int((c0 + x + w) * fx),
                    int((r0 + y + h) * fy),
                )
            )
    if not boxes:
        return total, None
    xs0, ys0, xs1, ys1 = zip(*boxes, strict=True)
    return total, (min(xs0), min(ys0), max(xs1), max(ys1))


def _mass_score(mass: float) -> float:
    """How sure the empty/loaded call by mass is (0.5..1): how far, in log, the mass lies
    from MIN_LOAD_KG."""
    return 0.5 + 0.5 * abs(math.tanh(math.log(max(mass, 1.0) / MIN_LOAD_KG)))


def _end_load(mass: float, box: tuple[int, int, int, int], goods: np.ndarray) -> Contents:
    """A box that is empty but for goods stacked at an end (`end_stacks`)."""
    return Contents(False, round(_mass_score(mass), 3), round(mass, 1),
                    round(float(goods.mean()), 3), "unknown", "packaged", box)  # fmt: skip


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
      EXPORT_BLOB_KG: a part load;
    - the floor band's top, column by column, is one straight edge in an empty box; a
      low load lying along the floor (cartons, a car, bicycles), which the row levels
      absorb, gives it a ragged top: its spread over the columns (interquartile, share
      of the box's height) above EXPORT_RAGGED is a load."""
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
    ragged = _band_top_spread(window, wall, top)
    # How far past (or short of) the nearest threshold, in the units of each test.
    margins = (
        (EXPORT_FLOOR_MIN - share) / 0.1,
        math.log(max(blob, 1.0) / EXPORT_BLOB_KG),
        (full - EXPORT_FULL_ROWS) / 0.1,
        (ragged - EXPORT_RAGGED) / 0.02,
    )
    worst = max(margins)
    return worst <= 0, round(0.5 + 0.5 * abs(math.tanh(worst)), 3)


def _band_top_spread(window: np.ndarray, wall: float, top: int) -> float:
    """Interquartile spread over the columns of the floor band's top (share of the box's
    height): per column (3 rows smoothed), the dark run up from 0.97 of the height."""
    m = window.shape[0]
    start = int(0.97 * m)
    if start <= top:
        return 0.0
    smooth = cv2.blur(window, (1, 3))
    dark = smooth[top : start + 1][::-1] > wall + EXPORT_BAND
    run = np.where(dark.all(axis=0), dark.shape[0], np.argmin(dark, axis=0))
    tops = median_filter_1d((start + 1 - run) / m, 5)
    q1, q3 = np.percentile(tops, [25, 75])
    return float(q3 - q1)


def floor_row(window: np.ndarray, base: np.ndarray, start: int) -> int:
    """The container's floor line: going down from `start` (above where the box's floor
    is expected), the first row that steps up (by FLOOR_STEP) in most columns, loaded or
    not (the floor boards edge-on darken every column), and from which even the
    lightest columns stay dark for two rows (the boards, the bottom rails, under them
    cross-members and the trailer). A load's top steps up in its own columns only, and
    inside a load spanning the length nothing steps. The window's height when there is
    none (a tank frame, a load hiding the floor)."""
    n = base.size
    wall = float(np.percentile(base[int(0.08 * n) : int(0.6 * n)], 5))
    dark = base > wall + FLOOR_BAND
    y0 = max(start, 1)
    if y0 >= n - 1:
        return n
    steps = (window[y0 : n - 1] - window[y0 - 1 : n - 2] > FLOOR_STEP).mean(axis=1)
    for y in range(y0, n - 1):
        if dark[y] and dark[y + 1] and steps[y - y0] >= FLOOR_STEP_SHARE:
            return y
    return n


def _drop_structure(goods: np.ndarray, floor: int, px_mm: float, py_mm: float) -> np.ndarray:
    """Goods less what belongs to the box or the trailer, not to a load:

    - nothing lower than CAVITY_MM under the floor line (`floor_row`) counts (wheels,
      the chassis), and wholly under the floor line only a long stretch (FLOOR_LOAD_MM)
      that ends there (goods in the floor cavity); cross-members are short;
    - in columns that stay dark from UNDER_MM to twice that under the floor line, what
      rises less than STANCHION_MM above it is the trailer's: a stanchion box bolted to
      the side rail (a load stands on the floor, and nothing of it shows under the floor
      band; what stands higher in those columns is kept);
    - a blob at either end of the box (END_ZONE) reaching from the floor nearly to the
      roof is the box's end structure (a reefer's machinery, a door's bars).

    A tank frame has no floor: its found bottom stands for the floor line."""
    m, n = goods.shape
    cavity = min(floor + max(round(CAVITY_MM / py_mm), 1), m)
    goods = goods.copy()
    u0 = min(floor + round(UNDER_MM / py_mm), m)
    u1 = min(floor + round(2 * UNDER_MM / py_mm) + 1, m)
    if 0 < floor < m and u1 > u0:
        # Columns dark well under the floor line whose goods rise little above it: the
        # trailer's (a stanchion box); what stands higher in them is kept.
        under = goods[u0:u1].mean(axis=0) > 0.5
        rise = np.argmin(goods[floor - 1 :: -1], axis=0)  # goods rows up from the floor
        rise = np.where(goods[:floor].all(axis=0), floor, rise)
        for c in np.flatnonzero(under & (rise * py_mm <= STANCHION_MM)):
            goods[floor - rise[c] : cavity, c] = False
    past = goods[cavity] if cavity < m else np.zeros(n, bool)  # goods going on down
    count, labels, stats = _components(goods[:cavity])
    keep = np.zeros(count, bool)
    for k in range(1, count):
        x, y, w, h, _area = stats[k]
        if y >= floor - 1:  # wholly under the floor line: a long, thin stretch close to it
            keep[k] = w * px_mm >= FLOOR_LOAD_MM and float(past[x : x + w].mean()) < 0.5
            continue
        at_end = x + w <= END_ZONE * n or x >= (1 - END_ZONE) * n
        if at_end and y + h >= floor - 1 and h >= END_HEIGHT * floor:
            continue
        keep[k] = True
    out = np.zeros_like(goods)
    out[:cavity] = keep[labels]
    return out


def _components(mask: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """8-connected blobs of a mask: (count with the background, labels, stats)."""
    if mask.size == 0:
        return 1, np.zeros(mask.shape, np.int32), np.zeros((1, 5), np.int32)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), 8)
    return count, labels, stats


def _baseline(
    window: np.ndarray, floor: int | None = None, rows: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Each row's attenuation of the empty box: its 10th percentile over the columns,
    except where a load spans the whole length without a gap (bulk, a tank's liquid):
    there the walls' level of the rows above. Told from a flatbed's side boards, which
    also span it, by the load's top: boards end on one straight row, bulk slopes and
    a tank's liquid curves. Also which rows were so replaced (for the low channel).
    `floor`: the floor line's row, when found (the rows down to it are the box's
    inside; without it, the upper 85 % of the window). `rows`: the rows' 10th
    percentiles when already taken."""
    base = (rows if rows is not None else np.percentile(window, 10, axis=1)).astype(np.float32)
    n = base.size
    replaced = np.zeros(n, bool)
    lo, hi = (int(0.08 * floor), floor) if floor else (int(0.08 * n), int(0.85 * n))
    wall = float(np.percentile(base[lo:hi], 5))
    band = np.zeros(n, bool)
    band[lo:hi] = base[lo:hi] > wall + FULL_LENGTH
    # Runs of such rows (gaps of two rows closed): a gap-less load is tall; a rail or a
    # logistic track that spans the length too is a few rows.
    closed = band.copy()
    idx = np.flatnonzero(band)
    for a, b in itertools.pairwise(idx):
        if b - a <= 3:
            closed[a:b] = True
    tall = np.zeros(n, bool)
    y = 0
    while y < n:
        if not closed[y]:
            y += 1
            continue
        end = y
        while end < n and closed[end]:
            end += 1
        if end - y >= FULL_LENGTH_ROWS * (floor or n):
            tall[y:end] = band[y:end]
        y = end
    if not tall.any():
        return base, replaced
    heavy = window[lo:hi] > wall + FULL_LENGTH
    heavy[(band & ~tall)[lo:hi]] = False  # a thin full-length line is no load's top
    tops = np.argmax(heavy, axis=0)[heavy.any(axis=0)]
    if tops.size and float(np.std(tops)) > STRAIGHT_PX:
        base[tall] = wall
        replaced[tall] = True
    return base, replaced


def _low_baseline(low: np.ndarray, replaced: np.ndarray) -> np.ndarray:
    """The low channel's empty-box rows, taken as the high channel's were."""
    base = np.percentile(low, 10, axis=1).astype(np.float32)
    if replaced.any():
        n = base.size
        base[replaced] = float(np.percentile(base[int(0.08 * n) : int(0.85 * n)], 5))
    return base


def export_attenuation(a8: np.ndarray) -> np.ndarray:
    """An 8-bit export's -ln(grey / air) back to attenuation: the export's grey is linear
    in attenuation up to EXPORT_A_MAX (bench/realism.py fits it on real scans)."""
    return (EXPORT_A_MAX * (1.0 - np.exp(-a8))).astype(np.float32)
