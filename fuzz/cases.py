"""Hand-made hostile scan files and small valid seeds, built in code (no real scans).

Each case is what a broken or malicious station could send: truncated PNG and TIFF, sizes
in the header far beyond the pixel limit, zero-size images, a 1 x 1,000,000 strip, colour
and wrong channel counts, JPEGs with bad markers, a ZIP posted as a PNG, decompression and
scan-count bombs. The expectation for every one: :class:`inference.scan.ScanError` (or a
clean decode when the file is in fact a valid scan), fast and in little memory; never
another exception, a hang or a crash. ``valid_seeds`` are the starting points of the fuzzer.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from collections.abc import Callable

import cv2
import numpy as np

__all__ = ["hostile_cases", "valid_seeds"]

# --------------------------------------------------------------------------- PNG


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    """One PNG chunk with its CRC."""
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def png_raw(
    width: int,
    height: int,
    *,
    depth: int = 8,
    ctype: int = 0,
    idat: bytes | None = None,
    iend: bool = True,
) -> bytes:
    """A PNG written chunk by chunk, so its header can say anything."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, ctype, 0, 0, 0)
    out = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
    if idat is not None:
        out += png_chunk(b"IDAT", idat)
    if iend:
        out += png_chunk(b"IEND", b"")
    return out


def _png(arr: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", arr)
    assert ok
    return buf.tobytes()


def _grey(h: int, w: int, dtype: type = np.uint16, seed: int = 0) -> np.ndarray:
    """A tiny scan-like picture: bright air, a darker block."""
    rng = np.random.default_rng(seed)
    top = 255 if dtype == np.uint8 else 60000
    arr = np.full((h, w), top * 0.95)
    arr[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = top * 0.3
    return rng.normal(arr, top * 0.01).clip(0, top).astype(dtype)


def fix_png_crcs(data: bytes) -> bytes:
    """Recompute every chunk's CRC (the fuzzer's mutations would otherwise stop at the
    first CRC check and never reach the decoder)."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return data
    out = bytearray(data)
    pos = 8
    while pos + 12 <= len(out):
        (length,) = struct.unpack(">I", out[pos : pos + 4])
        end = pos + 8 + length
        if end + 4 > len(out):
            break
        crc = zlib.crc32(bytes(out[pos + 4 : end])) & 0xFFFFFFFF
        out[end : end + 4] = struct.pack(">I", crc)
        pos = end + 4
    return bytes(out)


# --------------------------------------------------------------------------- TIFF


def tiff_raw(
    entries: list[tuple[int, int, int, int]],
    data: bytes = b"",
    *,
    next_ifd: int | None = 0,
) -> bytes:
    """A little-endian TIFF with one IFD of (tag, type, count, value) entries (values that
    fit in 4 bytes) and ``data`` after it; ``next_ifd`` None points the IFD at itself."""
    ifd_at = 8
    n = len(entries)
    data_at = ifd_at + 2 + 12 * n + 4
    out = b"II*\x00" + struct.pack("<I", ifd_at) + struct.pack("<H", n)
    for tag, typ, count, value in sorted(entries):
        if value == -1:  # "the data offset"
            value = data_at
        fmt = "<HHIHH" if typ == 3 and count == 1 else "<HHII"
        out += (
            struct.pack(fmt, tag, typ, count, value, 0)
            if fmt == "<HHIHH"
            else struct.pack(fmt, tag, typ, count, value)
        )
    out += struct.pack("<I", ifd_at if next_ifd is None else next_ifd)
    return out + data


def _tiff_header_only(width: int, height: int, bits: int = 16, samples: int = 1) -> bytes:
    nbytes = width * height * samples * bits // 8
    return tiff_raw(
        [
            (256, 4, 1, width),  # ImageWidth
            (257, 4, 1, height),  # ImageLength
            (258, 3, 1, bits),  # BitsPerSample
            (259, 3, 1, 1),  # no compression
            (262, 3, 1, 1),  # MinIsBlack
            (273, 4, 1, -1),  # StripOffsets
            (277, 3, 1, samples),
            (278, 4, 1, height),  # RowsPerStrip
            (279, 4, 1, min(nbytes, 0xFFFFFFFF)),  # StripByteCounts
        ],
        b"\x00" * 64,
    )


def _tiff(arr: np.ndarray, **kw: object) -> bytes:
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, arr, **kw)
    return buf.getvalue()


def _tiff_chain(n: int) -> bytes:
    """``n`` tiny IFDs one after another (a page-count bomb)."""
    out = bytearray(b"II*\x00" + struct.pack("<I", 8))
    for i in range(n):
        at = len(out)
        nxt = at + 2 + 12 + 4 if i + 1 < n else 0
        out += struct.pack("<H", 1) + struct.pack("<HHII", 256, 4, 1, 16) + struct.pack("<I", nxt)
    return bytes(out)


# --------------------------------------------------------------------------- JPEG


def _jpeg(arr: np.ndarray, progressive: bool = False) -> bytes:
    params = [cv2.IMWRITE_JPEG_QUALITY, 90]
    if progressive:
        params += [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]
    ok, buf = cv2.imencode(".jpg", arr, params)
    assert ok
    return buf.tobytes()


def _jpeg_set_sof(
    data: bytes,
    *,
    height: int | None = None,
    width: int | None = None,
    precision: int | None = None,
    comps: int | None = None,
) -> bytes:
    out = bytearray(data)
    for marker in (b"\xff\xc0", b"\xff\xc2"):
        pos = out.find(marker)
        if pos > 0:
            if precision is not None:
                out[pos + 4] = precision
            if height is not None:
                out[pos + 5 : pos + 7] = struct.pack(">H", height)
            if width is not None:
                out[pos + 7 : pos + 9] = struct.pack(">H", width)
            if comps is not None:
                out[pos + 9] = comps
            break
    return bytes(out)


def _jpeg_scan_bomb(scans: int) -> bytes:
    """A progressive JPEG whose last scan is repeated ``scans`` times: each repeat makes the
    decoder pass over the whole coefficient buffer again (CPU, not memory)."""
    data = _jpeg(_grey(64, 64, np.uint8), progressive=True)
    last = data.rfind(b"\xff\xda")
    body = data[last:-2]
    return data[:-2] + body * scans + b"\xff\xd9"


def _png_padded(chunk: bytes, n: int, rgb: bool = False) -> bytes:
    """A small valid PNG with ``n`` copies of ``chunk`` after its header (parse-time bomb)."""
    g = _grey(32, 32, np.uint8)
    data = _png(np.dstack([g, g, g]) if rgb else g)
    return data[:33] + chunk * n + data[33:]


def _zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("high.png", _png(_grey(32, 32)))
        z.writestr("readme.txt", "not a scan")
    return buf.getvalue()


# --------------------------------------------------------------------------- the cases


def _cases() -> dict[str, Callable[[], bytes]]:
    png16 = lambda: _png(_grey(48, 64))  # noqa: E731
    tif16 = lambda: _tiff(_grey(48, 64))  # noqa: E731
    jpg = lambda: _jpeg(_grey(48, 64, np.uint8))  # noqa: E731
    return {
        # nothing or not an image
        "empty": lambda: b"",
        "one_byte": lambda: b"\x89",
        "text": lambda: b"hello, this is not a scan\n" * 10,
        "zip_posted_as_png": _zip,
        "pdf": lambda: b"%PDF-1.4\n" + b"0" * 100,
        "gif": lambda: b"GIF89a" + b"\x00" * 100,
        "random_bytes": lambda: np.random.default_rng(1).bytes(4096),
        # station metadata (the fuzz entry point reads input starting with [ or { as JSON)
        "metadata_nested_deep": lambda: b"[" * 100_000,
        "metadata_object_nested_deep": lambda: b'{"a":' * 50_000,
        # PNG
        "png_magic_only": lambda: b"\x89PNG\r\n\x1a\n",
        "png_truncated_header": lambda: png16()[:20],
        "png_truncated_half": lambda: (lambda d: d[: len(d) // 2])(png16()),
        "png_no_iend": lambda: (lambda d: d[: d.rfind(b"IEND") - 4])(png16()),
        "png_bad_crc": lambda: (lambda d: d[:30] + bytes([d[30] ^ 0xFF]) + d[31:])(png16()),
        "png_corrupt_idat": lambda: (lambda d: d[:60] + b"\x00" * 40 + d[100:])(png16()),
        "png_huge_declared": lambda: png_raw(100_000, 100_000, depth=16, idat=zlib.compress(b"")),
        "png_max_declared": lambda: png_raw(0x7FFFFFFF, 0x7FFFFFFF, idat=b""),
        "png_zero_size": lambda: png_raw(0, 0, idat=zlib.compress(b"")),
        "png_zero_width": lambda: png_raw(0, 100, idat=zlib.compress(b"\x00" * 100)),
        "png_1x1000000": lambda: _png(np.full((1, 1_000_000), 200, np.uint8)),
        "png_1000000x1": lambda: _png(np.full((1_000_000, 1), 200, np.uint8)),
        "png_16x1000000_declared": lambda: png_raw(1_000_000, 16, idat=zlib.compress(b"")),
        "png_bomb_over_limit": lambda: png_raw(
            8000, 8000, depth=16, idat=zlib.compress(b"\x00" * (8000 * 2 + 1) * 64, 9)
        ),
        "png_idat_short": lambda: png_raw(
            4000, 4000, depth=16, idat=zlib.compress(b"\x00" * 1000, 9)
        ),
        "png_chunk_length_lie": lambda: (lambda d: d[:33] + b"\xb8\x00\x00\x20" + d[37:])(png16()),
        "png_rgb_colour": lambda: _png(
            np.dstack(
                [_grey(32, 32, np.uint8), _grey(32, 32, np.uint8, 5), _grey(32, 32, np.uint8)]
            )
        ),
        "png_rgba_transparent": lambda: _png(np.zeros((32, 32, 4), np.uint8)),
        "png_grey_alpha": lambda: png_raw(
            32, 32, depth=8, ctype=4, idat=zlib.compress((b"\x00" + b"\x80\x10" * 32) * 32)
        ),
        "png_palette": lambda: png_raw(
            32, 32, depth=8, ctype=3, idat=zlib.compress(b"\x00" * 33 * 32)
        ),
        "png_1bit": lambda: png_raw(32, 32, depth=1, idat=zlib.compress(b"\x00" * 5 * 32)),
        "png_bad_colour_type": lambda: png_raw(32, 32, depth=8, ctype=7, idat=b""),
        "png_bad_depth": lambda: png_raw(32, 32, depth=3, idat=b""),
        "png_tiny_8x8": lambda: _png(_grey(8, 8)),
        "png_padded_text_chunks": lambda: _png_padded(png_chunk(b"tEXt", b"a\x00b"), 200_000),
        "png_rgb_padded_text_chunks": lambda: _png_padded(
            png_chunk(b"tEXt", b"a\x00b"), 200_000, rgb=True
        ),
        # TIFF
        "tiff_magic_only": lambda: b"II*\x00",
        "tiff_truncated_ifd": lambda: tif16()[:12],
        "tiff_truncated_half": lambda: (lambda d: d[: len(d) // 2])(tif16()),
        "tiff_huge_declared": lambda: _tiff_header_only(1_000_000, 1_000_000),
        "tiff_max_declared": lambda: _tiff_header_only(0xFFFFFFFF, 0xFFFFFFFF),
        "tiff_zero_size": lambda: _tiff_header_only(0, 0),
        "tiff_1x1000000": lambda: _tiff(np.full((1, 1_000_000), 200, np.uint8)),
        "tiff_strips_past_end": lambda: _tiff_header_only(256, 256),
        "tiff_ifd_loop": lambda: tiff_raw([(256, 4, 1, 16), (257, 4, 1, 16)], next_ifd=None),
        "tiff_ifd_chain_200000": lambda: _tiff_chain(200_000),
        "tiff_float32": lambda: _tiff(_grey(32, 32).astype(np.float32)),
        "tiff_int16": lambda: _tiff(_grey(32, 32).astype(np.int16)),
        "tiff_2_samples": lambda: _tiff(
            np.zeros((32, 32, 2), np.uint16), photometric="minisblack", planarconfig="contig"
        ),
        "tiff_5_samples": lambda: _tiff(
            np.zeros((32, 32, 5), np.uint8), photometric="minisblack", planarconfig="contig"
        ),
        "tiff_rgb_colour": lambda: _tiff(
            np.dstack(
                [_grey(32, 32, np.uint8), _grey(32, 32, np.uint8, 5), _grey(32, 32, np.uint8)]
            )
        ),
        "tiff_multipage": lambda: _tiff(np.zeros((3, 32, 32), np.uint16), photometric="minisblack"),
        "tiff_volumetric": lambda: _tiff(
            np.zeros((4, 32, 32), np.uint8),
            photometric="minisblack",
            volumetric=True,
            tile=(2, 16, 16),
        ),
        "tiff_12bit": lambda: tiff_raw(
            [
                (256, 4, 1, 32),
                (257, 4, 1, 32),
                (258, 3, 1, 12),
                (262, 3, 1, 1),
                (273, 4, 1, -1),
                (277, 3, 1, 1),
                (279, 4, 1, 1536),
            ],
            b"\x00" * 1536,
        ),
        "tiff_bad_compression": lambda: tiff_raw(
            [
                (256, 4, 1, 32),
                (257, 4, 1, 32),
                (258, 3, 1, 8),
                (259, 3, 1, 60000),
                (262, 3, 1, 1),
                (273, 4, 1, -1),
                (277, 3, 1, 1),
                (279, 4, 1, 1024),
            ],
            b"\x00" * 1024,
        ),
        "tiff_deflate_garbage": lambda: tiff_raw(
            [
                (256, 4, 1, 32),
                (257, 4, 1, 32),
                (258, 3, 1, 8),
                (259, 3, 1, 8),
                (262, 3, 1, 1),
                (273, 4, 1, -1),
                (277, 3, 1, 1),
                (279, 4, 1, 64),
            ],
            b"\x78\x9c" + b"\xff" * 62,
        ),
        # JPEG
        "jpeg_soi_only": lambda: b"\xff\xd8\xff",
        "jpeg_bad_marker": lambda: (
            b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x12\x34" * 50 + b"\xff\xd9"
        ),
        "jpeg_marker_length_zero": lambda: b"\xff\xd8\xff\xe0\x00\x00" + b"\x00" * 64 + b"\xff\xd9",
        "jpeg_garbage_after_soi": lambda: b"\xff\xd8\xff" + np.random.default_rng(2).bytes(2000),
        "jpeg_truncated": lambda: (lambda d: d[: len(d) // 2])(jpg()),
        "jpeg_no_eoi": lambda: jpg()[:-2],
        "jpeg_huge_declared": lambda: _jpeg_set_sof(jpg(), height=65535, width=65535),
        "jpeg_zero_size": lambda: _jpeg_set_sof(jpg(), height=0, width=0),
        "jpeg_1x1000000_declared": lambda: _jpeg_set_sof(jpg(), height=1, width=65535),
        "jpeg_12bit_declared": lambda: _jpeg_set_sof(jpg(), precision=12),
        "jpeg_cmyk_declared": lambda: _jpeg_set_sof(jpg(), comps=4),
        "jpeg_corrupt_scan": lambda: (lambda d: d[:-200] + b"\xff\x00" * 90 + d[-20:])(jpg()),
        "jpeg_colour": lambda: _jpeg(
            np.dstack(
                [_grey(32, 32, np.uint8), np.zeros((32, 32), np.uint8), _grey(32, 32, np.uint8)]
            )
        ),
        "jpeg_scan_bomb": lambda: _jpeg_scan_bomb(2000),
        "jpeg_fill_bytes": lambda: b"\xff\xd8" + b"\xff" * 3_000_000 + b"\xd9",
        "jpeg_padded_after_sof": lambda: (
            lambda d: (
                d[: d.find(b"\xff\xc4")] + b"\xff\xe1\x00\x02" * 200_000 + d[d.find(b"\xff\xc4") :]
            )
        )(jpg()),
        "jpeg_padded_segments": lambda: (lambda d: d[:2] + b"\xff\xe1\x00\x02" * 200_000 + d[2:])(
            jpg()
        ),
    }


def hostile_cases() -> dict[str, bytes]:
    """name -> file bytes (about 13 MB in all, made in about 0.3 s; the largest are the
    padded files and bombs, which must be refused before they are parsed)."""
    return {name: make() for name, make in _cases().items()}


def valid_seeds() -> dict[str, bytes]:
    """Small valid scans of every accepted kind: where mutations start from."""
    g16, g8 = _grey(24, 32), _grey(24, 32, np.uint8)
    rgb = np.dstack([g8, g8, g8])
    return {
        "seed_png16.png": _png(g16),
        "seed_png8.png": _png(g8),
        "seed_png_rgb_grey.png": _png(rgb),
        "seed_tiff16.tif": _tiff(g16),
        "seed_tiff8_deflate.tif": _tiff(g8, compression="zlib"),
        "seed_tiff16_planar_rgb.tif": _tiff(
            np.stack([g16, g16, g16]), photometric="rgb", planarconfig="separate"
        ),
        "seed_jpeg.jpg": _jpeg(g8),
        "seed_jpeg_progressive.jpg": _jpeg(g8, progressive=True),
        "seed_jpeg_rgb.jpg": _jpeg(rgb),
    }
