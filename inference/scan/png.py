"""PNG: depth, colour type and size come from the IHDR header, at a fixed place, before
any pixel is decompressed; every chunk must lie inside the file."""

from __future__ import annotations

import struct

import numpy as np

from inference.scan.channels import ModelShape, check_size
from inference.scan.errors import ScanError, ScanTooLarge
from inference.scan.formats import ACCEPTED, open_pil, pil_load, to_grey

_PNG_COLOUR = {0: "greyscale", 2: "RGB", 3: "palette", 4: "grey+alpha", 6: "RGBA"}
_LIBPNG_MAX_SIDE = 1_000_000
"""libpng's default user limit on width and height (PNG_USER_WIDTH_MAX): OpenCV's decoder
refuses anything larger with "Invalid IHDR data", which would read as a damaged file."""
_METADATA_ALLOWANCE = 1 << 20
"""Bytes a file may carry beyond its pixels (ICC profile, EXIF, text) before it is padded."""


def decode_png(
    data: bytes, label: str, max_pixels: int, shape: ModelShape | None = None
) -> np.ndarray:
    """One PNG channel -> 2-D uint8/uint16 (``label`` names it in errors)."""
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise ScanError(f"{label}: truncated or corrupt PNG (no IHDR header)")
    width, height, depth, ctype, _, _, _ = struct.unpack(">IIBBBBB", data[16:29])
    if ctype not in _PNG_COLOUR:
        raise ScanError(f"{label}: corrupt PNG (colour type {ctype})")
    check_size(height, width, label, max_pixels, shape)
    if max(width, height) > _LIBPNG_MAX_SIDE:
        raise ScanTooLarge(
            f"{label}: PNG is {width:,}x{height:,} px; PNGs of more than "
            f"{_LIBPNG_MAX_SIDE:,} px a side are not accepted (the PNG decoder's limit): "
            f"send a TIFF, or a smaller image"
        )
    if ctype != 3 and depth not in (8, 16):
        raise ScanError(
            f"{label}: {depth}-bit {_PNG_COLOUR[ctype]} PNG not accepted; send {ACCEPTED}"
        )
    # Hostile padding (millions of tiny chunks) costs parsing time that grows with the file,
    # not the pixels: a PNG can hold little more than its raw pixel rows (zlib and chunk
    # overhead are far below 2 %) plus metadata, so anything bigger is refused unread.
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[ctype]
    raw = height * ((width * channels * max(depth, 1) + 7) // 8 + 1)
    if len(data) > raw + raw // 50 + _METADATA_ALLOWANCE:
        raise ScanError(
            f"{label}: corrupt PNG ({len(data):,} bytes for a {width}x{height} image: far more "
            "than its pixels can take; extra or padded chunks?)"
        )
    # A cut-off PNG has no IEND chunk. Checking it ourselves does not depend on PIL's
    # global ImageFile.LOAD_TRUNCATED_IMAGES, which other code in the process may set.
    tail = data.rfind(b"IEND", max(0, len(data) - 4096))
    if tail < 0 or tail + 8 > len(data):
        raise ScanError(
            f"{label}: truncated PNG (no IEND chunk at the end); the file is incomplete"
        )
    _check_png_chunks(data, label, height)

    if ctype == 0:
        # Greyscale, the scanners' format: OpenCV's libpng decodes it about twice as fast
        # as PIL (a 3000x800 16-bit channel in ~40 ms), and the headers are checked above.
        import cv2

        pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        want = np.uint16 if depth == 16 else np.uint8
        if pixels is None:
            raise ScanError(f"{label}: truncated or corrupt PNG (the image data does not decode)")
        if pixels.dtype != want or pixels.shape != (height, width):
            raise ScanError(f"{label}: PNG decoded inconsistently; send a greyscale PNG")
        return np.ascontiguousarray(pixels)

    if depth == 16 and ctype != 0:
        # PIL reads 16-bit colour PNGs as 8-bit; OpenCV keeps 16 bits for these.
        import cv2

        pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if pixels is None:
            raise ScanError(f"{label}: truncated or corrupt 16-bit PNG")
        if pixels.dtype != np.uint16 or pixels.shape[:2] != (height, width):
            raise ScanError(f"{label}: 16-bit PNG decoded inconsistently; send a greyscale PNG")
        alpha = pixels.ndim == 3 and pixels.shape[2] in (2, 4)
        return to_grey(pixels, label, alpha=alpha, lossy=False)

    img = open_pil(data, label)
    pil_load(img, label, "PNG")
    mode = img.mode
    if mode == "P":
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        pixels = np.asarray(img)
        if pixels.dtype != np.uint16:
            if pixels.min() < 0 or pixels.max() > 65535:
                raise ScanError(f"{label}: PNG values outside 16-bit range")
            pixels = pixels.astype(np.uint16)
        return np.ascontiguousarray(pixels)
    if mode not in ("L", "LA", "RGB", "RGBA"):
        raise ScanError(f"{label}: PNG mode {mode} not accepted; send {ACCEPTED}")
    pixels = np.asarray(img)
    return to_grey(pixels, label, alpha=mode in ("LA", "RGBA"), lossy=False)


def _check_png_chunks(data: bytes, label: str, height: int) -> None:
    """Every chunk must lie inside the file, up to IEND. OpenCV allocates what a chunk's
    length field says before reading it: an 89-byte file claiming a 3 GB IDAT took 3 GB
    and 4 s (found by the fuzzer). Encoders write one IDAT per row at the finest, so more
    chunks than rows (plus some for metadata) is padding, refused before the walk is long."""
    n = len(data)
    limit = max(height, n // 1024) + 1000
    pos = 8
    for _ in range(limit):
        if pos + 12 > n:
            break
        (length,) = struct.unpack_from(">I", data, pos)
        end = pos + 12 + length
        if end > n:
            kind = data[pos + 4 : pos + 8].decode("latin-1")
            raise ScanError(
                f"{label}: truncated or corrupt PNG (chunk {kind!r} of {length:,} bytes "
                f"runs past the end of the file)"
            )
        if data[pos + 4 : pos + 8] == b"IEND":
            return
        pos = end
    else:
        raise ScanError(f"{label}: corrupt PNG (more than {limit:,} chunks)")
    raise ScanError(f"{label}: truncated PNG (no IEND chunk); the file is incomplete")
