"""The decoded scan: one or two co-registered transmission images of the same size.

``high`` is always present, ``low`` only from dual-energy scanners. Pixel value =
transmitted intensity (bright = air, dark = dense); x runs along the vehicle, y up the
detector. 16-bit data stays 16-bit (``uint16``): squashing raw scanner output to 8 bits
throws away the dynamic range that dense cargo lives in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from inference.scan.errors import ScanError, ScanTooLarge
from inference.scan.metadata import ScanMetadata

DEFAULT_MAX_PIXELS = 40_000_000
"""Per channel. The largest real scans are about 6000 x 1500 = 9 Mpx; 40 Mpx leaves room."""

MIN_SIDE = 16
"""Smallest accepted width/height: anything smaller is a thumbnail or an error, not a scan."""

PAD_MULTIPLE = 32
"""The engine pads each side of a scan to a multiple of this (the network's largest stride)
before the model sees it (``inference.preprocess``)."""


@dataclass(frozen=True)
class ModelShape:
    """Bounds on what the model will be given, checked from a header before decoding.

    Why apart from ``max_pixels``: the model does not see the pixels a station sent but
    the scan padded to a multiple of :data:`PAD_MULTIPLE` on each side, and its time and
    memory follow that. A 999,000x40 PNG (76 KB, 40 Mpx) is padded to 999,008x64 = 64 Mpx:
    20 s of inference and 4 GB. Real scans are a few thousand pixels long and about four
    times longer than high; a side or an aspect ratio far beyond that is no scan.
    """

    max_padded_pixels: int
    max_side: int = 30_000
    max_aspect: float = 25.0
    pad_multiple: int = PAD_MULTIPLE

    def padded(self, height: int, width: int) -> tuple[int, int]:
        """(H, W) as the model gets it."""
        m = self.pad_multiple
        return -(-height // m) * m, -(-width // m) * m

    def problems(self, height: int, width: int) -> tuple[list[str], bool]:
        """What is wrong with a ``width`` x ``height`` scan for the model, and whether any
        of it is a matter of size (413) rather than shape (422)."""
        found: list[str] = []
        too_large = False
        if max(height, width) > self.max_side:
            side = "wide" if width >= height else "high"
            found.append(
                f"{max(height, width):,} px {side}, over the limit of {self.max_side:,} px a side"
            )
            too_large = True
        ratio = max(height, width) / max(1, min(height, width))
        if ratio > self.max_aspect:
            found.append(
                f"{ratio:,.0f}:1 long side to short, over {self.max_aspect:g}:1 (no scan is "
                "that elongated)"
            )
        ph, pw = self.padded(height, width)
        if ph * pw > self.max_padded_pixels:
            found.append(
                f"padded to {pw:,}x{ph:,} = {pw * ph:,} px for the model, over its limit of "
                f"{self.max_padded_pixels:,}"
            )
            too_large = True
        return found, too_large


def _check_array(arr: Any, label: str, max_pixels: int | None) -> np.ndarray:
    """Validate one channel array: 2-D, uint8/uint16, big enough, not too big."""
    if not isinstance(arr, np.ndarray):
        raise ScanError(f"{label}: expected a numpy array, got {type(arr).__name__}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim != 2:
        raise ScanError(
            f"{label}: expected a 2-D greyscale image (H, W), got shape {tuple(arr.shape)}"
        )
    if arr.dtype not in (np.uint8, np.uint16):
        raise ScanError(f"{label}: sample type {arr.dtype} not accepted; expected uint8 or uint16")
    check_size(arr.shape[0], arr.shape[1], label, max_pixels)
    return np.ascontiguousarray(arr)


def check_size(
    height: int,
    width: int,
    label: str,
    max_pixels: int | None,
    shape: ModelShape | None = None,
) -> None:
    """A channel's size within bounds, checked from a header before any pixel is decoded;
    with ``shape``, also what the model would be given (:class:`ModelShape`)."""
    if max_pixels is not None and height * width > max_pixels:
        raise ScanTooLarge(
            f"{label}: too many pixels: {width}x{height} = {width * height:,} "
            f"exceeds the limit of {max_pixels:,}"
        )
    if height < MIN_SIDE or width < MIN_SIDE:
        raise ScanError(
            f"{label}: image is {width}x{height} px; at least {MIN_SIDE}x{MIN_SIDE} expected"
        )
    if shape is not None:
        found, too_large = shape.problems(height, width)
        if found:
            error = ScanTooLarge if too_large else ScanError
            what = "; ".join(found)
            raise error(f"{label}: a {width}x{height} px image cannot be analysed: {what}")


@dataclass
class Scan:
    """A decoded, validated scan: ``high`` and optional ``low`` as native-depth 2-D arrays.

    ``bit_depth`` may be left out (``None``); it is then taken from ``high.dtype``.
    Construction validates (shape, dtype, same size and depth for both channels), so a
    ``Scan`` in hand is always consistent.
    """

    high: np.ndarray
    low: np.ndarray | None = None
    bit_depth: int | None = None  # type: ignore[assignment]  # always int after __post_init__
    metadata: ScanMetadata = field(default_factory=ScanMetadata)

    def __post_init__(self) -> None:
        self.high = _check_array(self.high, "high", None)
        depth = 8 if self.high.dtype == np.uint8 else 16
        if self.bit_depth is None:
            self.bit_depth = depth
        elif self.bit_depth != depth:
            raise ScanError(
                f"bit_depth {self.bit_depth} does not match high dtype {self.high.dtype}"
            )
        if self.low is not None:
            self.low = _check_array(self.low, "low", None)
            check_pair(self.high, self.low)
        if self.metadata is None:
            self.metadata = ScanMetadata()
        elif not isinstance(self.metadata, ScanMetadata):
            self.metadata = ScanMetadata.from_dict(self.metadata)

    @classmethod
    def from_arrays(
        cls,
        high: np.ndarray,
        low: np.ndarray | None = None,
        metadata: ScanMetadata | Mapping[str, Any] | str | bytes | None = None,
        *,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
    ) -> Scan:
        """Build a scan from in-memory arrays (generator, tests), validated like decoded files."""
        high = _check_array(high, "high", max_pixels)
        if low is not None:
            low = _check_array(low, "low", max_pixels)
        meta = metadata if isinstance(metadata, ScanMetadata) else ScanMetadata.from_dict(metadata)
        return cls(high=high, low=low, metadata=meta)

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W): detector height x length along the vehicle."""
        return (int(self.high.shape[0]), int(self.high.shape[1]))

    @property
    def has_low(self) -> bool:
        return self.low is not None

    @property
    def max_value(self) -> int:
        """Full-scale pixel value of the native depth: 255 or 65535."""
        return 255 if self.bit_depth == 8 else 65535


def check_pair(high: np.ndarray, low: np.ndarray) -> None:
    """Both energies co-registered: the same size and bit depth."""
    if high.shape != low.shape:
        raise ScanError(
            f"high and low differ in size: high is {high.shape[1]}x{high.shape[0]} px, "
            f"low is {low.shape[1]}x{low.shape[0]} px; both energies must be co-registered"
        )
    if high.dtype != low.dtype:
        hb = 8 if high.dtype == np.uint8 else 16
        lb = 8 if low.dtype == np.uint8 else 16
        raise ScanError(
            f"high and low differ in bit depth: high is {hb}-bit, low is {lb}-bit; "
            "send both energies at the same depth"
        )
