"""What the format decoders share: the format from the magic bytes, colour -> grey, PIL."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from inference.scan.errors import ScanError, ScanTooLarge

ACCEPTED = "8- or 16-bit unsigned greyscale PNG/TIFF, or 8-bit JPEG"
"""What the error messages tell a station to send instead."""
_JPEG_GREY_TOLERANCE = 12
"""Lossy JPEG chroma can make R, G, B differ slightly on grey content; allow this much."""


_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_JPEG_MAGIC = b"\xff\xd8\xff"


def sniff_format(data: bytes) -> str:
    """ "png", "tiff", "jpeg" or "unknown", from the magic bytes (never a file name)."""
    if data.startswith(_PNG_MAGIC):
        return "png"
    if data[:4] in _TIFF_MAGICS:
        return "tiff"
    if data.startswith(_JPEG_MAGIC):
        return "jpeg"
    return "unknown"


def to_grey(pixels: np.ndarray, label: str, *, alpha: bool, lossy: bool) -> np.ndarray:
    """Reduce (H, W, C) grey-content colour data to (H, W); reject real colour.

    Legacy exports and many JPEG tools store grey scans as RGB(A). R == G == B (within
    JPEG noise for lossy files) and a fully opaque alpha mean "grey"; anything else is a
    photo or a pseudo-colour rendering, which the model cannot read as transmission.
    """
    if pixels.ndim == 2:
        return pixels
    n = pixels.shape[2]
    if alpha:
        a = pixels[:, :, n - 1]
        full = np.iinfo(pixels.dtype).max
        if int(a.min()) != full:
            share = float(np.mean(a != full))
            raise ScanError(
                f"{label}: image has transparency ({share:.1%} of pixels not opaque); "
                "send an opaque greyscale image"
            )
        pixels = pixels[:, :, : n - 1]
        n -= 1
    if n == 1:
        return np.ascontiguousarray(pixels[:, :, 0])
    lo = pixels.min(axis=2)
    hi = pixels.max(axis=2)
    spread = hi - lo  # unsigned, hi >= lo
    worst = int(spread.max())
    tolerance = _JPEG_GREY_TOLERANCE if lossy else 0
    if worst > tolerance:
        raise ScanError(
            f"{label}: colour image (colour channels differ by up to {worst}); "
            "send a greyscale transmission image (R = G = B is accepted)"
        )
    if lossy and worst > 0:
        # average out the chroma noise rather than trusting one channel
        mean = pixels.astype(np.uint32).sum(axis=2) + n // 2
        return (mean // n).astype(pixels.dtype)
    return np.ascontiguousarray(pixels[:, :, 0])


def open_pil(data: bytes, label: str) -> Any:
    from PIL import Image

    try:
        return Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ScanTooLarge(f"{label}: too many pixels ({exc})") from None
    except Exception as exc:
        raise ScanError(f"{label}: cannot read image header ({exc})") from None


def pil_load(img: Any, label: str, fmt: str) -> None:
    """Decode all pixels; a truncated or corrupt stream raises instead of padding with black."""
    try:
        img.load()
    except Exception as exc:
        raise ScanError(
            f"{label}: truncated or corrupt {fmt} ({exc}); the file is incomplete"
        ) from None
