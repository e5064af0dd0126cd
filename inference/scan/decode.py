"""Scan decoding: bytes from a scanner station (or files) -> a validated :class:`Scan`.

Why so strict:
- Every bad input becomes one error type, :class:`ScanError` (a ``ValueError``), whose
  message says what is wrong and with which channel/file, so the service can turn it
  into a clear 4xx and the CLI into exit code 2, never a traceback or a 500.
- The format comes from the magic bytes, never the file name, and the pixel count is
  checked from the header before any pixel is decompressed (decompression bombs).
- A truncated file fails loudly instead of decoding to half a picture padded with
  black, which would look like a wall of dense cargo to the model.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from inference.concurrency import both
from inference.scan.channels import DEFAULT_MAX_PIXELS, ModelShape, Scan, check_pair
from inference.scan.errors import ScanError
from inference.scan.formats import ACCEPTED, sniff_format
from inference.scan.jpeg import decode_jpeg
from inference.scan.metadata import ScanMetadata
from inference.scan.png import decode_png
from inference.scan.tiff import decode_tiff

_OTHER_MAGICS = {
    b"GIF8": "GIF",
    b"BM": "BMP",
    b"RIFF": "RIFF/WebP",
    b"%PDF": "PDF",
    b"\x00\x00\x00\x0cjP": "JPEG 2000",
    b"\xff\x4f\xff\x51": "JPEG 2000 codestream",
    b"DICM": "DICOM",
    b"PK\x03\x04": "ZIP",
}


def decode_image(
    data: bytes,
    *,
    channel: str = "high",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    shape: ModelShape | None = None,
) -> np.ndarray:
    """Decode one channel's PNG/TIFF/JPEG bytes to a 2-D ``uint8`` or ``uint16`` array.

    ``channel`` only labels error messages. Raises :class:`ScanError` for anything that
    is not a complete single-channel 8/16-bit greyscale image within ``max_pixels`` (and,
    with ``shape``, within what the model will process; both from the header).
    """
    if isinstance(data, (bytearray, memoryview)):
        data = bytes(data)
    if not isinstance(data, bytes):
        raise ScanError(f"{channel}: expected image bytes, got {type(data).__name__}")
    if not data:
        raise ScanError(f"{channel}: empty file (0 bytes)")
    kind = sniff_format(data)
    try:
        if kind == "png":
            return decode_png(data, channel, max_pixels, shape)
        if kind == "tiff":
            return decode_tiff(data, channel, max_pixels, shape)
        if kind == "jpeg":
            return decode_jpeg(data, channel, max_pixels, shape)
    except ScanError:
        raise
    except Exception as exc:  # any decoder failure on hostile bytes is bad input, not a bug
        raise ScanError(
            f"{channel}: cannot decode {kind.upper()} ({type(exc).__name__}: {exc})"
        ) from None
    for magic, name in _OTHER_MAGICS.items():
        if data.startswith(magic):
            raise ScanError(f"{channel}: {name} files are not accepted; send {ACCEPTED}")
    raise ScanError(
        f"{channel}: not an image (unknown format, first bytes {data[:8]!r}); send {ACCEPTED}"
    )


def decode_scan(
    high: bytes,
    low: bytes | None = None,
    metadata: ScanMetadata | Mapping[str, Any] | str | bytes | None = None,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    require_station: bool = False,
    shape: ModelShape | None = None,
) -> Scan:
    """Decode a scan from the bytes a station sends (one file per energy) + metadata;
    ``shape``: refuse what the model should not be given (:class:`ModelShape`)."""
    meta = (
        metadata
        if isinstance(metadata, ScanMetadata)
        else ScanMetadata.from_dict(metadata, require_station=require_station)
    )
    if low is None:
        hi = decode_image(high, channel="high", max_pixels=max_pixels, shape=shape)
        return _assemble(hi, None, meta)
    # The two channels at once: libpng/zlib and libtiff release the GIL (a 16-bit PNG
    # channel of a 40 ft scan is ~40 ms of inflating). A bad high channel is still the
    # error reported when both are bad.
    hi, lo = both(
        lambda: decode_image(high, channel="high", max_pixels=max_pixels, shape=shape),
        lambda: decode_image(low, channel="low", max_pixels=max_pixels, shape=shape),
    )
    return _assemble(hi, lo, meta)


def _assemble(high: np.ndarray, low: np.ndarray | None, meta: ScanMetadata) -> Scan:
    if low is not None:
        check_pair(high, low)
    return Scan(high=high, low=low, metadata=meta)


def _read(path: str | Path, label: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ScanError(
            f"{label}: cannot read file {str(path)!r} ({exc.strerror or exc})"
        ) from None


def load_scan(
    high_path: str | Path,
    low_path: str | Path | None = None,
    metadata: ScanMetadata | Mapping[str, Any] | str | bytes | Path | None = None,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Scan:
    """Load a scan from files. ``metadata`` may also be a path to a JSON file."""
    if isinstance(metadata, Path):
        metadata = _read(metadata, "metadata")
    meta = metadata if isinstance(metadata, ScanMetadata) else ScanMetadata.from_dict(metadata)
    hi_label = f"high ({high_path})"
    hi = decode_image(_read(high_path, hi_label), channel=hi_label, max_pixels=max_pixels)
    lo = None
    if low_path is not None:
        lo_label = f"low ({low_path})"
        lo = decode_image(_read(low_path, lo_label), channel=lo_label, max_pixels=max_pixels)
    return _assemble(hi, lo, meta)
