"""JPEG: the frame header (SOFn) gives precision, size and components; it is read directly
so that a 12-bit or oversized JPEG is refused before any decoding."""

from __future__ import annotations

import struct

import numpy as np

from inference.scan.channels import ModelShape, check_size
from inference.scan.errors import ScanError
from inference.scan.formats import ACCEPTED, open_pil, pil_load, to_grey

_JPEG_MAX_SCANS = 100
"""Progressive encoders write about 10 scans (libjpeg: 6 for grey, 10 for colour)."""
_JPEG_MAX_SEGMENTS = 1000
"""Marker segments before the frame header: real files have about a dozen."""
_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_frame(data: bytes, label: str) -> tuple[int, int, int, int]:
    """(precision, height, width, components) from the first SOFn segment.

    The walk goes on to the first scan (SOS), counting segments on the way: PIL parses
    the same headers in Python, so a file padded with a million tiny segments or fill
    bytes is refused here, in microseconds, instead of there, in minutes."""
    pos = 2
    n = len(data)
    segments = 0
    frame: tuple[int, int, int, int] | None = None
    while pos + 4 <= n:
        segments += 1
        if segments > _JPEG_MAX_SEGMENTS:
            raise ScanError(f"{label}: corrupt JPEG (over {_JPEG_MAX_SEGMENTS} header segments)")
        if data[pos] != 0xFF:
            if frame is not None:
                break  # PIL and libjpeg judge what follows a frame header
            raise ScanError(f"{label}: corrupt JPEG (bad marker at byte {pos})")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if marker in _SOF_MARKERS and frame is None:
            if pos + 10 > n:
                break
            precision, height, width, comps = struct.unpack(">BHHB", data[pos + 4 : pos + 10])
            frame = (precision, height, width, comps)
        if marker in (0xDA, 0xD9):  # scan data or end (before a frame header: corrupt)
            break
        pos += 2 + length
    if frame is None:
        raise ScanError(f"{label}: truncated or corrupt JPEG (no frame header)")
    return frame


def decode_jpeg(
    data: bytes, label: str, max_pixels: int, shape: ModelShape | None = None
) -> np.ndarray:
    """One 8-bit JPEG channel -> 2-D uint8 (``label`` names it in errors)."""
    precision, height, width, comps = _jpeg_frame(data, label)
    check_size(height, width, label, max_pixels, shape)
    # Each scan of a progressive JPEG is a pass over the whole image: thousands of scans
    # in a small file keep a thread busy for minutes. Entropy-coded data stuffs every FF
    # byte (FF 00), so FF DA occurs only as a real start-of-scan marker.
    scans = data.count(b"\xff\xda")
    if scans > _JPEG_MAX_SCANS:
        raise ScanError(
            f"{label}: corrupt JPEG ({scans} scans; at most {_JPEG_MAX_SCANS} are accepted)"
        )
    if precision != 8:
        raise ScanError(f"{label}: {precision}-bit JPEG not accepted; send {ACCEPTED}")
    if comps not in (1, 3):
        raise ScanError(
            f"{label}: JPEG with {comps} components (CMYK?) not accepted; send greyscale"
        )
    # Entropy-coded data cannot contain FF D9 (FF is byte-stuffed), so a JPEG cut short
    # has no EOI near its end. Independent of PIL's LOAD_TRUNCATED_IMAGES global.
    if data.rfind(b"\xff\xd9", max(0, len(data) - 4096)) < 0:
        raise ScanError(f"{label}: truncated JPEG (no end-of-image marker); the file is incomplete")
    img = open_pil(data, label)
    pil_load(img, label, "JPEG")
    if img.mode not in ("L", "RGB"):
        raise ScanError(f"{label}: JPEG mode {img.mode} not accepted; send greyscale")
    pixels = np.asarray(img)
    if pixels.shape[:2] != (height, width):
        raise ScanError(f"{label}: JPEG decoded to an unexpected size")
    return to_grey(pixels, label, alpha=False, lossy=True)
