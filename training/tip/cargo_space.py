"""Where the cargo is in a real scan, how big a pixel is, and where smugglers hide things.

Found from the image alone (no labels needed), on a 4x smaller attenuation map:

- Container(s): the vehicle's roof line. Per column, the first row with matter; the
  container is the longest run of columns whose roof lies at one height (a tank's
  curved top changes slowly enough to pass). Runs at the same height separated by
  a short gap of air are the boxes of a 2x20 ft load and count as one cargo region.
- Floor line: the roof-to-image-bottom distance times FLOOR_SHARE. The floor has no
  edge of its own that survives a loaded container above a flatbed's comb of
  cross-members (edge and profile searches were tried and were worse); the share
  was measured on the reference scans, whose detector column ends near the wheel
  hubs. A scanner that images the whole wheel (the synthetic one) puts the floor
  higher than this finds: the boxes are then too tall.
- Pitch: vertical from the container's outside height (2591 mm); horizontal from
  its length, 20 ft (6058 mm) or 40 ft (12192 mm). The vehicle's speed sets the
  horizontal pitch, so pixels are not square (the reference scans stretch up to
  2:1); the length class is the one whose pitch ratio is plausible (0.75-2.1) and
  nearest 1.4, the middle of what is seen.
- Cab: the tall structure beyond the container's front end; wheels: the dense
  columns in the band under the floor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from inference.cargo.containers import median_filter_1d, roof_runs
from training.synth.threats import CATEGORIES

CONTAINER_HEIGHT_MM = 2591.0
CONTAINER_LENGTHS_MM = {"20ft": 6058.0, "40ft": 12192.0}
INNER_WIDTH_MM = 2350.0
FLOOR_SHARE = 0.817  # container height / (image bottom - roof), median of the reference scans
PITCH_RATIO_RANGE = (0.75, 2.1)
PITCH_RATIO_PRIOR = 1.4
DEFAULT_PITCH_MM = 5.0
DOWNSAMPLE = 4
MATTER = 0.1  # attenuation above which a pixel is not air (container walls: 0.2-0.4)
GOODS = 0.25  # attenuation above the walls' that shows goods in the container
TYRE = 1.0  # attenuation of a tyre's tread and belt seen edge-on
FLOOR_MM = 250.0  # floor structure and bottom side rail as the reference scans show them
WALL_MM = 60.0


@dataclass(frozen=True)
class Spot:
    """A place a threat can go: its centre lies in `region` (pixels x0, y0, x1, y1),
    or on one of `centres` (pixels, N x 2) when given; `room_mm` bounds its size."""

    where: str
    categories: tuple[str, ...]
    region: tuple[float, float, float, float]
    room_mm: tuple[float, float]
    depth_mm: float
    centres: np.ndarray | None = None
    z_mm: float = 0.0
    host: bool = False  # inside goods: the threat displaces cargo
    floor_row: float | None = None  # sits on this row (pixels), for `floor`
    bounds: tuple[float, float, float, float] | None = None  # the threat must stay inside


@dataclass
class CargoSpace:
    """What the projection knows about a scan's geometry, in pixels of the full image."""

    box: tuple[int, int, int, int] | None  # x0, y0, x1, y1 of all containers
    containers: list[tuple[int, int]]  # column range of each container
    pitch_x_mm: float
    pitch_y_mm: float
    pitch_source: str  # "20ft", "40ft" or "default"
    front: str  # "left" or "right": the cab's end
    cab: tuple[int, int, int, int] | None = None
    wheels: list[tuple[int, int]] = field(default_factory=list)  # (column, tyre top row)
    wall_level: float = 0.0  # attenuation of an empty container's walls

    def to_dict(self) -> dict[str, Any]:
        return {
            "cargo_box": list(self.box) if self.box else None,
            "containers": [list(c) for c in self.containers],
            "pitch_mm": {"x": round(self.pitch_x_mm, 3), "y": round(self.pitch_y_mm, 3)},
            "pitch_source": self.pitch_source,
            "front": self.front,
            "cab": list(self.cab) if self.cab else None,
        }


def _roof_segments(top: np.ndarray, height: int) -> list[list[float]]:
    """Runs of columns whose roof row changes slowly: [start, last, roof, median roof]."""
    return [[s, e - 1, low, med] for s, e, low, med in roof_runs(top, height)]


def _pitch(length_px: float, height_px: float) -> tuple[float, float, str]:
    """(x, y) pitch in mm and the length class, from the container's size in pixels."""
    pitch_y = CONTAINER_HEIGHT_MM / max(height_px, 1.0)
    if not 2.0 <= pitch_y <= 12.0:
        return DEFAULT_PITCH_MM, DEFAULT_PITCH_MM, "default"
    choices = []
    for name, length_mm in CONTAINER_LENGTHS_MM.items():
        ratio = length_mm / max(length_px, 1.0) / pitch_y
        plausible = PITCH_RATIO_RANGE[0] <= ratio <= PITCH_RATIO_RANGE[1]
        choices.append((not plausible, abs(np.log(ratio / PITCH_RATIO_PRIOR)), name, length_mm))
    _, _, name, length_mm = min(choices)
    return length_mm / length_px, pitch_y, name


def find_cargo_space(a: np.ndarray, pad_columns: np.ndarray | None = None) -> CargoSpace:
    """Containers, pitch, cab and wheels of a scan from its attenuation map (see module)."""
    h, w = a.shape
    f = DOWNSAMPLE
    small = cv2.resize(a, (max(w // f, 1), max(h // f, 1)), interpolation=cv2.INTER_AREA)
    sh, sw = small.shape
    if pad_columns is not None and pad_columns.any():
        pad_small = cv2.resize(
            pad_columns.astype(np.float32)[None, :], (sw, 1), interpolation=cv2.INTER_AREA
        )[0]
        small[:, pad_small > 0.5] = 0.0
    matter = small > MATTER
    run = matter[:-1] & matter[1:]
    top = np.where(run.any(axis=0), np.argmax(run, axis=0), sh)
    top = median_filter_1d(top, 5).astype(np.int64) if sw >= 5 else top
    segments = _roof_segments(top, sh)
    default = CargoSpace(None, [], DEFAULT_PITCH_MM, DEFAULT_PITCH_MM, "default", "left")
    if not segments or sh < 8:
        return default
    # Join boxes at one roof height with a short gap (2x20 ft, a broken roof line).
    groups: list[list[list[float]]] = [[segments[0]]]
    for seg in segments[1:]:
        last = groups[-1][-1]
        if seg[0] - last[1] <= 0.08 * sw and abs(seg[3] - last[3]) <= 4:
            groups[-1].append(seg)
        else:
            groups.append([seg])
    group = max(groups, key=lambda g: g[-1][1] - g[0][0])
    x0, x1 = int(group[0][0]), int(group[-1][1]) + 1
    roof = min(s[2] for s in group)
    floor = roof + FLOOR_SHARE * (sh - roof)
    # Separate containers where the gap between two runs shows air down to the floor.
    containers = [[int(group[0][0]), int(group[0][1]) + 1]]
    for seg in group[1:]:
        gap = top[containers[-1][1] : int(seg[0])]
        if gap.size and np.median(gap) > roof + 0.5 * (floor - roof):
            containers.append([int(seg[0]), int(seg[1]) + 1])
        else:
            containers[-1][1] = int(seg[1]) + 1
    longest = max(c[1] - c[0] for c in containers)
    pitch_x, pitch_y, source = _pitch(longest * f, (floor - roof) * f)
    box = (x0 * f, round(roof * f), min(x1 * f, w), min(round(floor * f), h))
    # The cab's end: where the vehicle runs into the image's edge (portals start the
    # scan on the tractor and end it in air behind the trailer); failing that, the
    # side with more dense vehicle beyond the boxes (the tractor's wheels and fifth
    # wheel show where its cab is cut off; a trailer's rear overhang is light).
    vehicle = top < floor
    scan_cols = np.flatnonzero(small.any(axis=0))
    lower = matter[sh // 2 :].any(axis=0)
    at_left = scan_cols.size > 0 and bool(lower[scan_cols[0] : scan_cols[0] + 2].any())
    at_right = scan_cols.size > 0 and bool(lower[max(scan_cols[-1] - 1, 0) :].any())
    dense = (small > TYRE).any(axis=0)
    left, right = int(dense[:x0].sum()), int(dense[x1:].sum())
    if at_left != at_right:
        front = "left" if at_left else "right"
    else:
        front = "left" if left >= right else "right"
    cab = _find_cab(top, vehicle, x0, x1, roof, floor, front, pitch_x / f)
    interior = small[int(roof + 0.1 * (floor - roof)) : int(floor - 0.05 * (floor - roof)), x0:x1]
    wall_level = float(np.percentile(interior, 10)) if interior.size else 0.0
    return CargoSpace(
        box=box,
        containers=[(c0 * f, min(c1 * f, w)) for c0, c1 in containers],
        pitch_x_mm=pitch_x,
        pitch_y_mm=pitch_y,
        pitch_source=source,
        front=front,
        cab=None if cab is None else tuple(int(v * f) for v in cab),  # type: ignore[arg-type]
        wheels=_wheels(small, x0, x1, floor, f),
        wall_level=min(wall_level, 1.0),
    )


def _find_cab(
    top: np.ndarray,
    vehicle: np.ndarray,
    x0: int,
    x1: int,
    roof: float,
    floor: float,
    front: str,
    pitch_small_mm: float,
) -> tuple[int, int, int, int] | None:
    """The tractor's cab: a run of tall columns (at least 0.6 m: most portals cut the
    cab off, its back shows) beyond the front end."""
    tall = vehicle & (top < roof + 0.75 * (floor - roof))
    side = np.arange(0, max(x0 - 1, 0)) if front == "left" else np.arange(x1 + 1, top.size)
    cols = side[tall[side]] if side.size else side
    if cols.size * pitch_small_mm < 600:
        return None
    # The run nearest the container: that is the cab, not a second vehicle.
    breaks = np.flatnonzero(np.diff(cols) > 3)
    runs = np.split(cols, breaks + 1)
    run = runs[-1] if front == "left" else runs[0]
    if run.size * pitch_small_mm < 600:
        return None
    cab_top = float(np.median(top[run]))
    return int(run[0]), int(cab_top), int(run[-1]) + 1, int(floor)


def _wheels(small: np.ndarray, x0: int, x1: int, floor: float, f: int) -> list[tuple[int, int]]:
    """(column, tyre top row) in the full image where the band under the floor is dense:
    the trailer's tyres. The top is the first tyre-dense row under the floor."""
    sh, sw = small.shape
    r0 = int(floor + 0.15 * (sh - floor))
    if sh - r0 < 3:
        return []
    margin = int(0.1 * (x1 - x0))
    c0, c1 = max(x0 - margin, 0), min(x1 + margin, sw)
    band = small[r0:, c0:c1]
    if band.size == 0:
        return []
    means = band.mean(axis=0)
    dense = np.flatnonzero(means > max(0.8, float(np.percentile(means, 80))))
    tops = np.argmax(band[:, dense] > TYRE, axis=0)
    found = band[:, dense].max(axis=0) > TYRE
    return [
        ((c0 + c) * f + f // 2, (r0 + t) * f)
        for c, t, ok in zip(dense, tops, found, strict=True)
        if ok
    ]


def floor_top(a_smooth: np.ndarray, c0: int, c1: int, box_bottom: float, pitch_y: float) -> float:
    """Row of the floor's top over columns c0:c1: the strongest step up in attenuation,
    going down, in the lowest 0.45 m of the box (into the floor structure and bottom
    side rail, seen edge-on). The box's bottom comes from a share of the image
    height; this puts what stands on the floor on it. Falls back to FLOOR_MM above
    the bottom where no clear step shows (goods down to the floor)."""
    fallback = box_bottom - FLOOR_MM / pitch_y
    h = a_smooth.shape[0]
    r0, r1 = max(int(box_bottom - 450 / pitch_y), 0), min(int(box_bottom + 100 / pitch_y), h)
    if r1 - r0 < 5 or c1 <= c0:
        return fallback
    profile = np.median(a_smooth[r0:r1, c0:c1], axis=1)
    s = max(1, round(60 / pitch_y))
    step = profile[2 * s :] - profile[: -2 * s]
    if step.size == 0 or step.max() < 0.15:
        return fallback
    return float(r0 + s + int(np.argmax(step)))


def cargo_mask(a_smooth: np.ndarray, space: CargoSpace) -> np.ndarray:
    """Pixels (full image) inside a container where the attenuation shows goods."""
    mask = np.zeros(a_smooth.shape, bool)
    if space.box is None:
        return mask
    _, y0, _, y1 = space.box
    py = space.pitch_y_mm
    wall = int(WALL_MM / py) + 1
    # End walls, doors and corner posts are dense but not goods: keep 0.3 m clear of
    # the ends; structure that crosses the whole box in a thin band (rails, the floor's
    # cross-members, posts, door bars) is taken as the baseline where it lies; and
    # only blobs wider and taller than 0.3 m count (an opening drops what is left).
    end = int(300 / space.pitch_x_mm) + 1
    kernel = np.ones((int(300 / space.pitch_y_mm) + 1, end), np.uint8)
    for c0, c1 in space.containers:
        floor_row = floor_top(a_smooth, c0 + (c1 - c0) // 5, c1 - (c1 - c0) // 5, y1, py)
        rows = slice(y0 + wall, max(int(floor_row), y0 + wall))
        cols = slice(c0 + end, max(c1 - end, c0 + end))
        window = a_smooth[rows, cols]
        if window.size == 0:
            continue
        row_base = _thin_band_baseline(
            np.percentile(window, 10, axis=1), space.wall_level, 400 / space.pitch_y_mm
        )
        col_base = _thin_band_baseline(
            np.percentile(window, 10, axis=0), space.wall_level, 400 / space.pitch_x_mm
        )
        baseline = np.maximum(row_base[:, None], col_base[None, :])
        goods = (window - baseline > GOODS).astype(np.uint8)
        mask[rows, cols] = cv2.morphologyEx(goods, cv2.MORPH_OPEN, kernel).astype(bool)
    return mask


def _thin_band_baseline(profile: np.ndarray, wall_level: float, max_run_px: float) -> np.ndarray:
    """The profile where it rises above the walls in runs shorter than `max_run_px`
    (structure seen edge-on), the walls' level elsewhere (goods fill wide runs)."""
    high = profile - wall_level > GOODS
    base = np.full(profile.shape, wall_level, np.float32)
    edges = np.flatnonzero(np.diff(np.r_[0, high.astype(np.int8), 0]))
    for start, stop in zip(edges[::2], edges[1::2], strict=True):
        if stop - start < max_run_px:
            base[start:stop] = profile[start:stop]
    return base


def find_spots(
    space: CargoSpace, goods: np.ndarray, a_smooth: np.ndarray, rng: np.random.Generator
) -> list[Spot]:
    """Hiding places in this scan, with the categories that make sense there
    (the table of `training.synth.scene._spots`)."""
    h, w = a_smooth.shape
    px, py = space.pitch_x_mm, space.pitch_y_mm
    spots: list[Spot] = []
    if space.box is None:
        # No container found: anywhere goods show, away from the image's border.
        ys, xs = np.nonzero(goods[::8, ::8])
        if ys.size:
            centres = np.stack([xs * 8.0, ys * 8.0], axis=1)
            spots.append(
                Spot("load", CATEGORIES, (0, 0, w, h), (2000, 2000), 2000, centres, host=True)
            )
        return spots
    _, y0, _, y1 = space.box
    ceiling = y0 + WALL_MM / py
    for c0, c1 in space.containers:
        length_mm = (c1 - c0) * px
        floor_row = floor_top(a_smooth, c0 + (c1 - c0) // 5, c1 - (c1 - c0) // 5, y1, py)
        inner_h_mm = (floor_row - ceiling) * py
        box_goods = goods[:, c0:c1]
        ys, xs = np.nonzero(box_goods[::4, ::4])
        if ys.size:
            centres = np.stack([c0 + xs * 4.0, ys * 4.0], axis=1)
            spots.append(
                Spot(
                    "load",
                    CATEGORIES,
                    (c0, y0, c1, y1),
                    (2000, min(2000, inner_h_mm)),
                    INNER_WIDTH_MM,
                    centres,
                    host=True,
                    bounds=(c0, y0, c1, floor_row + 1),
                )
            )
        # Free floor: columns with no goods, in runs of at least 0.7 m.
        free = box_goods[int(ceiling) : int(floor_row)].mean(axis=0) < 0.05
        for run in np.split(
            np.flatnonzero(free), np.flatnonzero(np.diff(np.flatnonzero(free)) > 1) + 1
        ):
            if run.size * px > 700:
                x_lo, x_hi = c0 + run[0], c0 + run[-1] + 1
                on = floor_top(a_smooth, x_lo, x_hi, y1, py)
                spots.append(
                    Spot(
                        "floor",
                        CATEGORIES,
                        (x_lo, on - 1000 / py, x_hi, on),
                        ((x_hi - x_lo) * px - 100, 1000),
                        2000,
                        floor_row=on,
                        bounds=(c0, y0, c1, on + 1),
                    )
                )
        # In the floor structure, and behind a false front wall.
        cx = c0 + (c1 - c0) * rng.uniform(0.2, 0.8)
        cavity_y = (floor_row + y1) / 2  # inside the floor structure
        spots.append(
            Spot(
                "floor_cavity",
                ("narcotics", "currency"),
                (cx - 0.25 * length_mm / px, cavity_y, cx + 0.25 * length_mm / px, cavity_y),
                (0.5 * length_mm, 110),
                2000,
                bounds=(c0, y0, c1, y1),
            )
        )
        # Each box of a 2x20 ft load has its own front wall, at the cab's end.
        front_x = c0 + 170 / px if space.front == "left" else c1 - 170 / px
        spots.append(
            Spot(
                "front_wall",
                ("narcotics", "currency", "cigarettes", "firearm"),
                (front_x, ceiling + 50 / py, front_x, floor_row - 50 / py),
                (220, inner_h_mm - 100),
                2200,
                bounds=(c0, y0, c1, floor_row + 1),
            )
        )
    if space.cab is not None:
        x0, cab_top, x1, cab_bottom = space.cab
        room_w = min((x1 - x0) * px, 1200.0)
        room_h = min((cab_bottom - cab_top) * py, 1200.0)
        cy = (cab_top + cab_bottom) / 2
        cx = (x0 + x1) / 2
        spots.append(
            Spot(
                "cab",
                ("firearm", "currency", "narcotics", "cigarettes"),
                (
                    cx - room_w / 2 / px,
                    cy - room_h / 2 / py,
                    cx + room_w / 2 / px,
                    cy + room_h / 2 / py,
                ),
                (room_w, room_h),
                1800,
                bounds=(x0, cab_top, x1, cab_bottom),
            )
        )
    if space.wheels:
        # Bricks in the tyre cavity, seen inside the wheel ring: just under the tread
        # of a tyre's upper part, in the near or the far wheels.
        xc, top = space.wheels[int(rng.integers(len(space.wheels)))]
        yc = top + 160 / py
        if yc + 80 / py < h:
            side = float(rng.choice([-1.0, 1.0])) * (1219 - 250)
            spots.append(Spot("tyre", ("narcotics",), (xc, yc, xc, yc), (300, 160), 250, z_mm=side))
    return spots
