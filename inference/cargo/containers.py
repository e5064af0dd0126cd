"""Where the containers are in a scan: boxes in scan pixels, from the image alone.

Classical image analysis on a 4x smaller high-energy attenuation map (no model, no
labels), because a container is the strongest straight structure in a scan:

- Roof line: per column, the first row with matter. A container (or a tank, whose
  curved top changes slowly enough) is a long run of columns whose roof lies at one
  height; runs at one height with a short gap of air are one load (2x20 ft, a broken
  roof line). The cab and the tyres make no such run.
- Boxes in a load: two 20 ft boxes end to end show a pair of end frames near the middle
  (dark, narrow, full height) that a 40 ft box does not; a gap of air down to the floor
  separates them too.
- Bottom: a share of the roof-to-image-bottom distance, measured on real portal scans,
  whose detector column is set for the tallest box and ends near the wheel hubs
  (training.tip found the same; the synthetic scanner agrees). Not the floor's own edge,
  which a loaded box over a flatbed's deck does not show, nor the roof plus an ISO
  box's height at the station's pitch: the fan beam magnifies the box by 10-25 %.

Measured against labelled real scans and the generator's truth in docs/cargo.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

DOWNSAMPLE = 4
MATTER = 0.1  # attenuation above which a pixel is not air (container walls: 0.15-0.4)
PAD_LEVEL = 3.0  # a column this dark nearly everywhere is an exporter's black bar
FLOOR_SHARE = 0.81  # box height / (image bottom - roof) on real portal scans (median)
MIN_LENGTH_SHARE = 0.05  # a roof run shorter than this share of the scan is no container
MIN_CONTAINER_MM = 2500.0  # shorter than a 10 ft box: not a container (with a pitch)
SPLIT_CONTRAST = 0.45  # a middle frame at least this share of the end frames' contrast
SPLIT_MIN = 0.5  # and at least this much attenuation above its surroundings
AIR_ROWS = 0.03  # share of the image's top rows read as air above the vehicle
AIR_MAX = 0.25  # a column's air level above this is matter, not grey air


@dataclass(frozen=True)
class Container:
    """One container (trailer bed, tank) in scan pixels; `tank` when its top is curved."""

    box: tuple[int, int, int, int]  # x0, y0, x1, y1
    tank: bool = False


def median_filter_1d(values: np.ndarray, size: int) -> np.ndarray:
    """Running median (edges padded): drops spikes one or two samples wide."""
    if values.size < size:
        return values
    padded = np.pad(values, size // 2, mode="edge")
    return np.median(np.lib.stride_tricks.sliding_window_view(padded, size), axis=1)


def roof_runs(top: np.ndarray, height: int) -> list[tuple[int, int, float, float]]:
    """Runs of columns whose roof row changes slowly: (start, end (exclusive), low roof,
    median roof); shared with threat projection's cargo-space finder."""
    width = top.size
    runs = []
    c = 0
    while c < width:
        if top[c] >= 0.6 * height:
            c += 1
            continue
        start, ref, end, gap = c, float(top[c]), c, 0
        rows = []
        while c < width:
            if abs(top[c] - ref) <= 3:
                rows.append(top[c])
                ref, end, gap = 0.8 * ref + 0.2 * top[c], c, 0
            else:
                gap += 1
                if gap > width * 0.01 + 2:
                    break
            c += 1
        runs.append((start, end + 1, float(np.percentile(rows, 20)), float(np.median(rows))))
        c = end + 1
    return [r for r in runs if r[1] - r[0] >= MIN_LENGTH_SHARE * width]


def _split_pair(small: np.ndarray, x0: int, x1: int, roof: int, bottom: int) -> int | None:
    """The column between two boxes of one load (2x20 ft), or None: a narrow dark frame
    near the middle of the upper band, as strong as the load's end frames."""
    h = bottom - roof
    n = x1 - x0
    if n < 40 or h < 10:
        return None
    win = max(n // 20, 3)
    edge = max(n // 20, 2)
    lo, hi = int(0.4 * n), int(0.6 * n)
    local = []
    for r0, r1 in (
        (roof + 1, roof + max(int(0.08 * h), 2)),
        (roof + int(0.08 * h), roof + int(0.3 * h)),
    ):
        q = small[r0:r1, x0:x1].mean(axis=0)
        local.append(q - median_filter_1d(q, 2 * win + 1))
    k = lo + int(np.argmax(local[1][lo:hi]))
    under_roof, upper = (float(v[max(k - 1, 0) : k + 2].max()) for v in local)
    ends = max(local[1][:edge].max(), local[1][-edge:].max())
    if (
        upper >= SPLIT_MIN
        and upper >= SPLIT_CONTRAST * max(float(ends), 1e-6)
        and under_roof >= 0.5 * SPLIT_MIN
    ):
        return x0 + k
    return None


def find_containers(
    a_small: np.ndarray, full_hw: tuple[int, int], pitch_mm: float | None = None
) -> list[Container]:
    """Containers in a scan from its 4x smaller attenuation map (see the module).

    `full_hw` is the scan's size in pixels; boxes come back in its pixels, left to right.
    An empty list means no container was found (a bare chassis, a car, no vehicle).
    """
    small = a_small.copy()
    sh, sw = small.shape
    h, w = full_hw
    fy, fx = h / sh, w / sw
    if sh < 8 or sw < 8:
        return []
    pad = (small > PAD_LEVEL).mean(axis=0) > 0.97
    small[:, pad] = 0.0
    # Some exporters leave the air grey (a = 0.1-0.2, drifting along the scan): the top
    # rows are air above the vehicle in a portal scan, so each column's own air level
    # is taken from them (bounded: a roof that reaches the top row stays matter).
    air = np.clip(np.median(small[: max(2, round(AIR_ROWS * sh))], axis=0), 0.0, AIR_MAX)
    small = np.clip(small - air[None, :], 0.0, None)
    matter = small > MATTER
    run = matter[:-1] & matter[1:]
    top = np.where(run.any(axis=0), np.argmax(run, axis=0), sh)
    top = median_filter_1d(top.astype(np.float64), 5)
    runs = roof_runs(top, sh)
    if not runs:
        return []
    groups: list[list[tuple[int, int, float, float]]] = [[runs[0]]]
    for r in runs[1:]:
        last = groups[-1][-1]
        if r[0] - last[1] <= 0.08 * sw and abs(r[3] - last[3]) <= 4:
            groups[-1].append(r)
        else:
            groups.append([r])
    group = max(groups, key=lambda g: g[-1][1] - g[0][0])
    x0, x1 = group[0][0], group[-1][1]
    roof = min(r[2] for r in group)
    bottom = roof + FLOOR_SHARE * (sh - roof)
    if pitch_mm and (x1 - x0) * fx * pitch_mm < MIN_CONTAINER_MM:
        return []
    r0, r1 = int(roof), round(bottom)
    # Boxes of the load: a gap of air down to the floor, or a pair of frames in the middle.
    spans = [[group[0][0], group[0][1]]]
    for r in group[1:]:
        gap = top[spans[-1][1] : r[0]]
        if gap.size and np.median(gap) > roof + 0.5 * (bottom - roof):
            spans.append([r[0], r[1]])
        else:
            spans[-1][1] = r[1]
    if len(spans) == 1:
        cut = _split_pair(small, x0, x1, r0, r1)
        if cut is not None:
            spans = [[x0, cut], [cut, x1]]
    found = []
    for c0, c1 in spans:
        # A tank's roof rises to a crown: its roof rows spread, a box's do not.
        rows = top[c0:c1]
        tank = float(np.percentile(rows, 90) - np.percentile(rows, 10)) > 0.06 * (r1 - r0)
        found.append(
            Container(
                (
                    round(c0 * fx),
                    round(r0 * fy),
                    min(round(c1 * fx), w),
                    min(round(r1 * fy), h),
                ),
                tank=tank,
            )
        )
    return found


def small_attenuation(a: np.ndarray) -> np.ndarray:
    """The 4x smaller map the finders work on (area average: thin walls keep their mass)."""
    h, w = a.shape
    return cv2.resize(
        a, (max(w // DOWNSAMPLE, 1), max(h // DOWNSAMPLE, 1)), interpolation=cv2.INTER_AREA
    )
