"""TIFF: tifffile gives the page's shape, depth and sample format without reading data;
compressions it cannot decode alone go to OpenCV's libtiff."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from inference.scan.channels import ModelShape, check_size
from inference.scan.errors import ScanError
from inference.scan.formats import ACCEPTED, to_grey

_TIFF_SAMPLEFORMAT = {1: "unsigned integer", 2: "signed integer", 3: "floating point"}


def decode_tiff(
    data: bytes, label: str, max_pixels: int, shape: ModelShape | None = None
) -> np.ndarray:
    """One single-page TIFF channel -> 2-D uint8/uint16 (``label`` names it in errors)."""
    import tifffile

    try:
        tif = tifffile.TiffFile(io.BytesIO(data))
    except Exception as exc:
        raise ScanError(f"{label}: truncated or corrupt TIFF ({exc})") from None
    with tif:
        # Only the first two pages are looked at: counting them all would walk a chain of
        # millions of tiny IFDs that a hostile file can hold (seconds, hundreds of MB).
        try:
            n_pages = _tiff_pages_upto(tif, 2)
        except Exception as exc:
            raise ScanError(f"{label}: truncated or corrupt TIFF ({exc})") from None
        if n_pages == 0:
            raise ScanError(f"{label}: TIFF has no readable image (truncated or corrupt)")
        if n_pages > 1:
            raise ScanError(
                f"{label}: multi-page TIFF not accepted; "
                "send one single-page file per energy channel (high, low)"
            )
        page = tif.pages.first
        height, width = int(page.imagelength), int(page.imagewidth)
        depth = int(getattr(page, "imagedepth", 1) or 1)
        if depth > 1:
            raise ScanError(f"{label}: volumetric TIFF (depth {depth}) not accepted")
        check_size(height, width, label, max_pixels, shape)
        samples = int(page.samplesperpixel)
        fmt = int(page.sampleformat)
        bits = int(page.bitspersample)
        photometric = int(page.photometric)
        if fmt == 3:
            raise ScanError(
                f"{label}: {bits}-bit floating-point TIFF not accepted; send raw transmission "
                "counts as 8- or 16-bit unsigned integers (for T in [0, 1]: T x 65535 as uint16)"
            )
        if fmt != 1:
            what = _TIFF_SAMPLEFORMAT.get(fmt, f"sample format {fmt}")
            raise ScanError(f"{label}: {bits}-bit {what} TIFF not accepted; send {ACCEPTED}")
        if bits not in (8, 16):
            raise ScanError(f"{label}: {bits}-bit TIFF not accepted; send {ACCEPTED}")
        if samples == 2:
            raise ScanError(
                f"{label}: 2-sample TIFF not accepted; send one single-channel file per "
                "energy channel (high, low)"
            )
        if samples not in (1, 3, 4):
            raise ScanError(f"{label}: TIFF with {samples} samples per pixel not accepted")
        if photometric == 0:
            raise ScanError(
                f"{label}: MinIsWhite (inverted) TIFF not accepted; send MinIsBlack (bright = air)"
            )
        if photometric == 3:
            raise ScanError(f"{label}: palette TIFF not accepted; send greyscale")
        if photometric not in (1, 2):
            raise ScanError(
                f"{label}: TIFF photometric interpretation {photometric} not accepted; "
                "send greyscale"
            )
        offsets = np.asarray(page.dataoffsets, dtype=np.uint64)
        counts = np.asarray(page.databytecounts, dtype=np.uint64)
        if (
            offsets.size == 0
            or offsets.size != counts.size
            or int((offsets + counts).max()) > len(data)
            or not counts.all()
        ):
            raise ScanError(f"{label}: truncated TIFF (pixel data runs past the end of the file)")
        compression = int(page.compression)
        try:
            pixels = page.asarray()
            axes = page.axes
        except (KeyError, ValueError, ImportError, ModuleNotFoundError) as exc:
            if "imagecodecs" not in str(exc) and "compression" not in str(exc).lower():
                raise ScanError(f"{label}: corrupt TIFF ({exc})") from None
            if compression not in _TIFF_OPENCV_COMPRESSIONS:
                # OpenCV answers an unknown compression with an all-black picture, which
                # would pass for a wall of dense cargo: refuse instead.
                raise ScanError(
                    f"{label}: TIFF compression {compression} not accepted; send it "
                    "uncompressed, or with LZW, PackBits, Deflate or JPEG compression"
                ) from None
            pixels, axes = _tiff_via_opencv(data, label), "YXS"
    if pixels.dtype != (np.uint8 if bits == 8 else np.uint16):
        raise ScanError(f"{label}: TIFF decoded to {pixels.dtype}, expected {bits}-bit")
    if pixels.ndim == 3 and axes.startswith("S"):  # planar (separate) -> interleaved
        pixels = np.moveaxis(pixels, 0, -1)
    pixels = pixels.reshape(height, width, -1) if pixels.ndim != 2 else pixels
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    return to_grey(pixels, label, alpha=pixels.ndim == 3 and pixels.shape[2] == 4, lossy=False)


_TIFF_OPENCV_COMPRESSIONS = frozenset({5, 7, 8, 32773, 32946})
"""LZW, JPEG, Deflate (Adobe and old), PackBits: what OpenCV's libtiff always decodes."""


def _tiff_pages_upto(tif: Any, limit: int) -> int:
    """How many pages the TIFF has, counting no further than ``limit``."""
    for i in range(limit):
        try:
            tif.pages[i]
        except IndexError:
            return i
    return limit


def _tiff_via_opencv(data: bytes, label: str) -> np.ndarray:
    """Compressions tifffile needs ``imagecodecs`` for (LZW, PackBits: what OpenCV and many
    scanners write) are decoded by OpenCV's libtiff. Only for 1/3/4 samples, which
    OpenCV handles correctly (it mishandles 2-channel 16-bit)."""
    import cv2

    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels is None:
        raise ScanError(f"{label}: truncated or corrupt TIFF")
    return pixels
