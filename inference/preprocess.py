"""THE pre-processing: a decoded :class:`~inference.scan.Scan` -> the model's input tensor.

Training and serving both call :func:`preprocess`; any difference between the two would
be a silent accuracy bug, so there is exactly one implementation and its behaviour is
versioned by :data:`PREPROCESS_VERSION` (recorded in the model card). Change the maths
here -> bump the version -> retrain.

Steps and why:

1. Air calibration per detector row (:func:`air_levels`), then per source pulse
   (column, :func:`column_gains`) from the air band above the vehicle. Each row is one detector
   element with its own gain, and the source output drifts between scanners, so raw
   counts are not comparable. Every scan contains air (before/after the vehicle and
   above it), so the brightest pixels of a row tell us that row's unattenuated level.
   Long 16-bit rows take these statistics on a sample of their columns
   (:data:`STAT_SAMPLES`).
2. Attenuation ``a = -ln(T)`` with ``T = I / air`` (:func:`attenuation`). Beer-Lambert
   makes ``a`` additive in material thickness, so a threat looks the same whatever it
   sits behind or in front of, and 8-bit and 16-bit inputs land on the same scale.
3. Two energy channels, ``a / ATTENUATION_SCALE``: channel 0 = high, channel 1 = low.
   Single-energy scans copy the high channel into channel 1; the model is trained with
   the low channel randomly dropped in exactly this way, so it works on both.
4. Optional resampling by ``scale`` (pixel pitch normalisation), then zero padding to a
   multiple of the network stride. Zero attenuation = air, so padding looks like the
   air around a vehicle, not like a wall.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import cv2
import numpy as np

from inference.concurrency import both
from inference.scan import PAD_MULTIPLE, Scan

__all__ = [
    "AIR_PERCENTILE",
    "ATTENUATION_SCALE",
    "COMPATIBLE_VERSIONS",
    "PREPROCESS_VERSION",
    "STAT_SAMPLES",
    "ModelInput",
    "air_levels",
    "attenuation",
    "column_gains",
    "preprocess",
]

PREPROCESS_VERSION = "3"
COMPATIBLE_VERSIONS = ("2", "3")
"""Model cards whose pre-processing this runtime serves. v3 is v2 with a long 16-bit row's
air statistics taken on a sample of its columns (:data:`STAT_SAMPLES`): the same
transform, inputs within 0.004 of v2's (model input units; 16-bit scans only, 8-bit exports
are bit for bit v2's), and the v2-trained default model's figures measured the
same under v3 (docs/benchmarks.md), so v2 models keep working."""
ATTENUATION_SCALE = 4.0
"""model input = (-ln T) / ATTENUATION_SCALE: typical cargo (a = 0..8) lands in 0..2."""

AIR_PERCENTILE = 99.5
"""High percentile of a row that is surely air, while ignoring a few hot pixels."""
AIR_BAND_SIGMAS = 5.0
AIR_BAND_RANGE = (0.005, 0.08)
"""The air level is the median of the pixels in a band under that percentile, 5 noise
sigmas wide (relative noise estimated over the whole scan from the spacing of the top
percentiles), kept within 0.5-8 %. Why: the percentile alone sits ~2.6 sigmas above the
mean air level (all air would look slightly attenuating); a wider band would let an
empty container's walls (T ~ 0.9), which fill most of a row, pull the median down."""
DENSE_ROW_FRACTION = 0.7
"""A row whose estimate is below this fraction of the median row saw no air at all
(fully covered by dense matter); its level is borrowed from neighbouring rows."""
NEIGHBOUR_ROWS = 8
"""How many valid rows on each side lend their air level to an invalid row."""
AIR_ROW_LEVEL = 0.97
MIN_AIR_ROWS = 8
MAX_PULSE_JITTER = 0.05
"""Column correction: rows whose 10th percentile transmission exceeds AIR_ROW_LEVEL are air
end to end; at least MIN_AIR_ROWS of them are needed, and a column reading further than
MAX_PULSE_JITTER from 1 is an obstruction, not a pulse, and is left uncorrected."""


STAT_SAMPLES = 1400
"""A 16-bit row's air statistics (its percentiles and air band, the 10th percentile that
finds the air rows) are taken on every k-th column, k = width // STAT_SAMPLES (at least 1,
so never fewer than STAT_SAMPLES samples): every other column of a 40 ft scan's 2,812. Why:
the two row sorts per channel were half of the pre-processing's work. Why not fewer: the
noise estimate reads the spacing of a row's 99.5th and 99.9th percentiles, which 700
samples do not resolve (their air levels came out ~0.9 noise sigmas high on pure noise,
against 0.03 with 1,400 and 0.06 with all 2,800). 8-bit rows keep every column: their
radix sort is one cheap pass, and 256 grey levels need every sample to place a median
between two of them."""


def _stat_step(channel: np.ndarray) -> int:
    """Every how many columns :data:`STAT_SAMPLES` takes a row's statistics."""
    if channel.dtype != np.uint16:
        return 1
    return max(1, channel.shape[1] // STAT_SAMPLES)


def _max_value(channel: np.ndarray) -> int:
    if channel.dtype == np.uint8:
        return 255
    if channel.dtype == np.uint16:
        return 65535
    raise ValueError(f"expected a uint8 or uint16 channel, got {channel.dtype}")


def air_levels(channel: np.ndarray) -> np.ndarray:
    """Per-row (H,) unattenuated intensity ("air") of a 2-D uint8/uint16 channel.

    Robust high percentile per row, refined to the median of the air band just under it
    (see AIR_BAND_SIGMAS), taken on the columns :data:`STAT_SAMPLES` picks. Rows that saw
    no air (estimate < 0.7 x the median row) take the median of their nearest valid rows,
    since a detector's gain differs little from its neighbours'. Returned as float64, at
    least 1 (no division by zero).
    """
    channel = np.asarray(channel)
    if channel.ndim != 2:
        raise ValueError(f"expected a 2-D channel, got shape {channel.shape}")
    _max_value(channel)
    # One sort per row gives the percentiles and the median of the air band.
    return _air_of_sorted(_sorted_rows(channel[:, :: _stat_step(channel)]))


def cpu_features() -> Mapping[str, bool]:
    """numpy's table of the SIMD extensions this CPU has and numpy uses (empty when a
    numpy release moves it: then the choices below take the paths that are never slow)."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__
    except ImportError:
        return {}
    return dict(__cpu_features__)


def simd_16bit_sort(features: Mapping[str, bool]) -> bool:
    """Whether numpy's default sort of 16-bit integers is x86-simd-sort's AVX-512 quicksort
    on this CPU: numpy dispatches it only to AVX512_ICL or AVX512_SPR (Ice Lake, Zen 4 and
    later). Elsewhere that sort is a scalar introsort, ~5x the radix sort's work (117
    against 24 ms for 800 rows of 3,694 on an AVX2-only EPYC)."""
    return bool(features.get("AVX512_ICL") or features.get("AVX512_SPR"))


def svml_log(features: Mapping[str, bool]) -> bool:
    """Whether numpy's float32 log is SVML's AVX-512 one here (AVX512_SKX). Elsewhere it
    is ~5x the work of OpenCV's (7.1 against 1.5 ms for 3 Mpx on an AVX2-only EPYC); the
    two differ in the last bit or so (at most 5e-7 on -ln T up to 11), as numpy's own
    paths on different CPUs already do."""
    return bool(features.get("AVX512_SKX"))


_FEATURES = cpu_features()
NUMPY_ROW_SORT = simd_16bit_sort(_FEATURES)
"""Which sort :func:`_sorted_rows` takes on this CPU: numpy's where its 16-bit sort is the
AVX-512 quicksort, else OpenCV's row sort (IPP's radix sort)."""
NUMPY_LOG = svml_log(_FEATURES)
"""Which float32 log the attenuation takes on this CPU: numpy's with AVX-512, else
OpenCV's. OpenCV's is also faster with AVX-512 (0.3 against 0.9 ms for 2.2 Mpx), but not
taken there: a last-bit change of the input moves a score by ~1e-7, and scores that sit on a
threshold calibrated on them (real clean scans at a review rate) would change verdict."""


def _sorted_rows(channel: np.ndarray) -> np.ndarray:
    """Each row of a 2-D uint8/uint16 channel sorted ascending (a new array). Sorted values
    are sorted values: the same array whichever sort makes it, so this is only speed.

    With AVX-512 (:data:`NUMPY_ROW_SORT`), 16-bit rows take numpy's default sort, the
    x86-simd-sort quicksort, ~30 % less work than its radix sort, and 8-bit rows numpy's
    radix ("stable") sort, one counting pass (its default sort has no SIMD path for them
    and is 6x slower). Without it, OpenCV's row sort: on an AVX2-only EPYC 12.5 ms of work
    for 800 rows of 3,694 16-bit values against numpy's 22 (radix) or 117 (default), and
    4.7 against 15 for 8-bit ones."""
    if NUMPY_ROW_SORT:
        return np.sort(channel, axis=1, kind="stable" if channel.dtype == np.uint8 else None)
    return cv2.sort(channel, cv2.SORT_EVERY_ROW | cv2.SORT_ASCENDING)


def _count_at_least(ordered: np.ndarray, threshold: np.ndarray) -> np.ndarray:
    """Per row of the row-sorted ``ordered``, how many values are ``>= threshold[row]``:
    a binary search in every row at once (~12 steps over H values, where counting reads
    all H x W)."""
    height, width = ordered.shape
    rows = np.arange(height)
    lo = np.zeros(height, dtype=np.intp)  # the first index >= threshold is in [lo, hi]
    hi = np.full(height, width, dtype=np.intp)
    for _ in range(width.bit_length()):
        mid = (lo + hi) >> 1
        below = (ordered[rows, np.minimum(mid, width - 1)] < threshold) & (mid < hi)
        lo = np.where(below, mid + 1, lo)
        hi = np.where(below, hi, mid)
    return width - lo


def _air_of_sorted(ordered: np.ndarray) -> np.ndarray:
    """:func:`air_levels` from the channel's rows already sorted (the sort is shared with
    the column correction's 10th percentile)."""
    width = ordered.shape[1]
    top = ordered[:, round(AIR_PERCENTILE / 100.0 * (width - 1))].astype(np.float64)
    upper = ordered[:, round(0.999 * (width - 1))].astype(np.float64)
    lit = top > 0
    # p99.9 - p99.5 is 0.5-0.7 sigma of the air noise whatever the share of air in a row
    sigma = float(np.median((upper[lit] - top[lit]) / top[lit])) / 0.5 if lit.any() else 0.0
    band = min(max(AIR_BAND_SIGMAS * sigma, AIR_BAND_RANGE[0]), AIR_BAND_RANGE[1])
    # A whole number in [0, top]: comparing in the channel's own dtype is exact and spares
    # a float64 copy of the channel.
    threshold = np.ceil((1.0 - band) * top).astype(ordered.dtype)
    counts = _count_at_least(ordered, threshold)
    mid = width - (np.maximum(counts, 1) + 1) // 2
    air = np.take_along_axis(ordered, mid[:, None], axis=1)[:, 0].astype(np.float64)

    median = float(np.median(air))
    bad = air < DENSE_ROW_FRACTION * median
    if bad.any():
        valid_rows = np.flatnonzero(~bad)  # never empty: the median row is valid
        fixed = air.copy()
        for row in np.flatnonzero(bad):
            pos = int(np.searchsorted(valid_rows, row))
            near = valid_rows[max(0, pos - NEIGHBOUR_ROWS) : pos + NEIGHBOUR_ROWS]
            fixed[row] = float(np.median(air[near]))
        air = fixed
    return np.maximum(air, 1.0)


def column_gains(t: np.ndarray) -> np.ndarray | None:
    """Per-column source output (x = one linac pulse) relative to the mean, or None.

    Row calibration cannot remove pulse-to-pulse dose jitter: it shows as faint
    vertical stripes and, worse, as false material colour, because the two
    energies jitter independently. Rows that are air from end to end (the band
    above the vehicle) see each pulse unattenuated, so their median per column
    is that pulse's output. Columns where something blocks that band, or whose
    reading is implausible for jitter, are left alone.
    """
    p10 = np.partition(t, t.shape[1] // 10, axis=1)[:, t.shape[1] // 10]
    rows = np.flatnonzero(p10 > AIR_ROW_LEVEL)
    if rows.size < MIN_AIR_ROWS:
        return None
    return _gains_of_air_rows(t[rows])


def _gains_of_air_rows(t_rows: np.ndarray) -> np.ndarray:
    # np.median along axis 0 partitions every column on its own (2 ms for 36 x 2812);
    # sorting the columns all at once and taking np.median of the middle one or two
    # rows gives the same values (the same mean of the same two) in a third of the time.
    n = t_rows.shape[0]
    ordered = np.sort(t_rows, axis=0)
    gains = np.median(ordered[(n - 1) // 2 : n // 2 + 1], axis=0)
    gains[np.abs(gains - 1.0) > MAX_PULSE_JITTER] = 1.0
    return gains.astype(np.float32)


def _column_gains_of_sorted(
    channel: np.ndarray, ordered: np.ndarray, air: np.ndarray
) -> np.ndarray | None:
    """:func:`column_gains` of ``channel / air`` without dividing the whole channel: a
    row's 10th percentile of ``T`` is its sorted counts' 10th over its air level (division
    by a positive number keeps the order, so the float32 values are the same; ``ordered``
    holds the sampled columns, :data:`STAT_SAMPLES`), and only the air rows are divided out,
    at every column, for the median."""
    air32 = air.astype(np.float32)
    k = ordered.shape[1] // 10
    p10 = ordered[:, k].astype(np.float32) / air32
    rows = np.flatnonzero(p10 > AIR_ROW_LEVEL)
    if rows.size < MIN_AIR_ROWS:
        return None
    return _gains_of_air_rows(channel[rows].astype(np.float32) / air32[rows][:, None])


def _round_to_uint16(values: np.ndarray) -> np.ndarray:
    """``np.clip(np.rint(values), 0, 65535).astype(np.uint16)`` of a float32 array in one
    pass instead of three: OpenCV's saturating conversion rounds half to even as
    ``np.rint`` does and clamps to 0..65535 as the clip does. OpenCV reads row-strided
    arrays (a slice of the padded tensor) in place and copies other layouts itself, so no
    contiguous copy is made here (it cost more than the conversion)."""
    return cv2.add(values, 0.0, dtype=cv2.CV_16U)


def attenuation(channel: np.ndarray, air: np.ndarray | float | None = None) -> np.ndarray:
    """float32 ``a = -ln(T)``, ``T = I / air`` per row, clipped to ``[T_min, 1]``.

    ``T_min = 1 / (max_value + 1)``: the smallest transmission the bit depth can express
    (zero counts would be infinite attenuation). ``air`` defaults to :func:`air_levels`,
    followed by the per-column source correction of :func:`column_gains`; pass ``air`` to
    calibrate with a known flat field instead (then no column correction is made).
    """
    channel = np.asarray(channel)
    if channel.ndim != 2:
        raise ValueError(f"expected a 2-D channel, got shape {channel.shape}")
    out = np.empty(channel.shape, dtype=np.float32)  # the caller's array is never touched
    _attenuation_into(channel, air, out, 1.0)
    return out


def _attenuation_into(
    channel: np.ndarray, air: np.ndarray | float | None, out: np.ndarray, factor: float
) -> None:
    """Write ``factor * attenuation(channel, air)`` into ``out`` (float32, the channel's
    shape, rows may be strided: a slice of the padded model tensor), with the same float32
    operations in the same order as the plain formula, so the values are bit for bit those
    of ``attenuation(channel) * factor``; only copies and repeated work are left out."""
    if out.strides[-1] != out.itemsize:  # not a layout OpenCV writes into: via a copy
        dense = np.empty(out.shape, dtype=np.float32)
        _attenuation_into(channel, air, dense, factor)
        out[...] = dense
        return
    max_value = _max_value(channel)
    # The counts as float32, straight into ``out`` (exact for 8/16-bit integers; OpenCV's
    # conversion is ~3x faster than numpy's casting inside a multiply).
    counts = cv2.add(channel, 0.0, dst=out, dtype=cv2.CV_32F)
    if air is None:
        step = _stat_step(channel)
        ordered = _sorted_rows(channel[:, ::step])
        air = _air_of_sorted(ordered)
        # Pulse jitter also biases the row levels of rows that see little air, so
        # take it out of the counts first and estimate the rows again.
        gains = _column_gains_of_sorted(channel, ordered, air)
        del ordered
        if gains is not None:
            # Sort the corrected counts (the sampled columns) rounded to uint16 (SIMD
            # sort, ~5x faster than floats); 8-bit counts are scaled up first so no
            # precision is lost.
            up = 128.0 if channel.dtype == np.uint8 else 1.0
            np.multiply(counts, (np.float32(up) / gains)[None, :], out=counts)
            air = _air_of_sorted(_sorted_rows(_round_to_uint16(counts[:, ::step]))) / up
            if up != 1.0:
                counts /= np.float32(up)
    air_arr = np.asarray(air, dtype=np.float64)
    if air_arr.ndim == 0:
        air_arr = np.full(channel.shape[0], float(air_arr))
    if air_arr.shape != (channel.shape[0],):
        raise ValueError(
            f"air must have one value per row ({channel.shape[0]}), got {air_arr.shape}"
        )
    inv = (1.0 / np.maximum(air_arr, 1e-6)).astype(np.float32)
    t = np.multiply(counts, inv[:, None], out=out)
    np.clip(t, np.float32(1.0 / (max_value + 1)), np.float32(1.0), out=t)
    if NUMPY_LOG:
        np.log(t, out=t)
    else:
        cv2.log(t, t)
    if factor == 1.0:
        np.negative(t, out=t)
    else:  # -(x) * f == x * (-f) exactly: one pass instead of two
        np.multiply(t, np.float32(-factor), out=t)


PARALLEL_PIXELS = 250_000
"""From this many pixels a channel the two energies are pre-processed on two threads
(numpy releases the GIL); below it the thread costs more than it saves."""


def _both_channels(scan: Scan, high: np.ndarray, low: np.ndarray, factor: float) -> None:
    """``factor * attenuation`` of the high and low channels into ``high`` and ``low``;
    a single-energy scan's high channel is copied into ``low``."""
    if scan.low is None:
        _attenuation_into(scan.high, None, high, factor)
        low[...] = high
        return
    scan_low = scan.low

    def do_high() -> None:
        _attenuation_into(scan.high, None, high, factor)

    def do_low() -> None:
        _attenuation_into(scan_low, None, low, factor)

    if scan.high.size >= PARALLEL_PIXELS:
        both(do_high, do_low)
    else:
        do_high()
        do_low()


@dataclass
class ModelInput:
    """The tensor a detector consumes plus what is needed to map its output back.

    ``tensor`` is float32 (1, 2, Hp, Wp), C-contiguous; rows/columns beyond ``scaled_hw``
    are zero padding. ``scale`` = model pixels per original pixel (as requested).
    """

    tensor: np.ndarray
    original_hw: tuple[int, int]
    scaled_hw: tuple[int, int]
    scale: float
    has_low: bool

    def _factors(self) -> tuple[float, float]:
        """Exact model px per original px along x and y (rounding of the resize)."""
        return (
            self.scaled_hw[1] / self.original_hw[1],
            self.scaled_hw[0] / self.original_hw[0],
        )

    def to_original(self, boxes: np.ndarray) -> np.ndarray:
        """(N, 4) x0, y0, x1, y1 boxes in model pixels -> original scan pixels, clipped.

        Boxes that reach into the padding are clipped to the scan's edge.
        """
        b = _as_boxes(boxes)
        fx, fy = self._factors()
        out = b / np.array([fx, fy, fx, fy])
        h, w = self.original_hw
        np.clip(out[:, 0::2], 0.0, float(w), out=out[:, 0::2])
        np.clip(out[:, 1::2], 0.0, float(h), out=out[:, 1::2])
        return out

    def to_model(self, boxes: np.ndarray) -> np.ndarray:
        """(N, 4) boxes in original scan pixels -> model pixels (for training labels)."""
        b = _as_boxes(boxes)
        fx, fy = self._factors()
        out = b * np.array([fx, fy, fx, fy])
        h, w = self.scaled_hw
        np.clip(out[:, 0::2], 0.0, float(w), out=out[:, 0::2])
        np.clip(out[:, 1::2], 0.0, float(h), out=out[:, 1::2])
        return out


def _as_boxes(boxes: np.ndarray) -> np.ndarray:
    b = np.asarray(boxes, dtype=np.float64)
    if b.size == 0:
        return np.zeros((0, 4), dtype=np.float64)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"boxes must be (N, 4) x0, y0, x1, y1; got shape {b.shape}")
    return b.copy()


def _padded_tensor(h: int, w: int, hp: int, wp: int) -> np.ndarray:
    """A (1, 2, hp, wp) float32 tensor whose padding (rows from ``h``, columns from
    ``w``) is zero and whose (h, w) corner is left for the caller to fill: ``np.zeros``
    would clear all 18 MB of a 40 ft scan's tensor only to have it overwritten (0.7 ms
    where the allocator hands back memory it had)."""
    tensor = np.empty((1, 2, hp, wp), dtype=np.float32)
    tensor[0, :, h:, :] = 0.0
    tensor[0, :, :h, w:] = 0.0
    return tensor


def preprocess(scan: Scan, *, pad_multiple: int = PAD_MULTIPLE, scale: float = 1.0) -> ModelInput:
    """Turn a scan into the model input. The ONE function used by training and serving."""
    if not isinstance(pad_multiple, int) or pad_multiple < 1:
        raise ValueError(f"pad_multiple must be a positive integer, got {pad_multiple!r}")
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive finite number, got {scale!r}")

    h, w = scan.shape
    inv_scale = 1.0 / ATTENUATION_SCALE
    if scale == 1.0:
        sh, sw = h, w
        hp = -(-sh // pad_multiple) * pad_multiple
        wp = -(-sw // pad_multiple) * pad_multiple
        # Each channel's attenuation goes straight into its slice of the padded tensor,
        # the two channels at once; only the padding is zeroed.
        tensor = _padded_tensor(h, w, hp, wp)
        _both_channels(scan, tensor[0, 0, :h, :w], tensor[0, 1, :h, :w], inv_scale)
    else:
        planes = np.empty((2, h, w), dtype=np.float32)
        _both_channels(scan, planes[0], planes[1], inv_scale)
        hwc = cv2.merge([planes[0], planes[1]])
        del planes
        sh, sw = max(1, round(h * scale)), max(1, round(w * scale))
        # INTER_AREA averages attenuation over the footprint when shrinking (no aliasing
        # of thin wires into dashes); for enlarging OpenCV falls back to bilinear.
        hwc = cv2.resize(hwc, (sw, sh), interpolation=cv2.INTER_AREA)
        if hwc.ndim == 2:  # cv2 drops a trailing channel axis of size 1 only; be safe
            hwc = hwc[:, :, None]
        hp = -(-sh // pad_multiple) * pad_multiple
        wp = -(-sw // pad_multiple) * pad_multiple
        tensor = _padded_tensor(sh, sw, hp, wp)
        tensor[0, :, :sh, :sw] = hwc.transpose(2, 0, 1)
    return ModelInput(
        tensor=tensor,
        original_hw=(h, w),
        scaled_hw=(sh, sw),
        scale=float(scale),
        has_low=scan.low is not None,
    )
