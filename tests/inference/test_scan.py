"""Scan decoding on real files written by PIL, OpenCV and tifffile; bad input -> ScanError."""

from __future__ import annotations

import io
import json
import struct
import zlib
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image, ImageFile

from inference.scan import (
    DEFAULT_MAX_PIXELS,
    ManifestItem,
    Scan,
    ScanError,
    ScanMetadata,
    ScannerInfo,
    decode_image,
    decode_scan,
    load_scan,
)

H, W = 40, 64


def _ramp16() -> np.ndarray:
    """16-bit values that use the full range, including values > 255 and odd low bytes."""
    y, x = np.mgrid[0:H, 0:W]
    return ((x * 1021 + y * 7919) % 65536).astype(np.uint16)


def _ramp8() -> np.ndarray:
    y, x = np.mgrid[0:H, 0:W]
    return ((x * 3 + y * 5) % 256).astype(np.uint8)


def _smooth8() -> np.ndarray:
    """Smooth content that JPEG keeps within a few levels."""
    y, x = np.mgrid[0:H, 0:W]
    return (60 + 2 * x + y).astype(np.uint8)


def _pil_bytes(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _tiff_bytes(arr: np.ndarray, **kw: object) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, arr, **kw)
    return buf.getvalue()


def _cv2_bytes(arr: np.ndarray, ext: str) -> bytes:
    ok, enc = cv2.imencode(ext, arr)
    assert ok
    return enc.tobytes()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def _png_raw(width: int, height: int, depth: int, ctype: int, idat: bytes) -> bytes:
    """A PNG assembled by hand, so the header can claim anything."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, ctype, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def _png_manual(arr: np.ndarray, ctype: int) -> bytes:
    """Encode a 16-bit PNG of any colour type (OpenCV cannot write grey+alpha)."""
    h, w = arr.shape[:2]
    rows = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))
    return _png_raw(w, h, 16, ctype, zlib.compress(rows))


# --------------------------------------------------------------------------- good files


@pytest.mark.parametrize(
    ("name", "make", "expected"),
    [
        ("png8-pil", lambda: _pil_bytes(Image.fromarray(_ramp8()), "PNG"), _ramp8()),
        ("png16-pil", lambda: _pil_bytes(Image.fromarray(_ramp16()), "PNG"), _ramp16()),
        ("png16-cv2", lambda: _cv2_bytes(_ramp16(), ".png"), _ramp16()),
        ("png8-cv2", lambda: _cv2_bytes(_ramp8(), ".png"), _ramp8()),
        ("tiff16-tifffile", lambda: _tiff_bytes(_ramp16()), _ramp16()),
        ("tiff16-deflate", lambda: _tiff_bytes(_ramp16(), compression="zlib"), _ramp16()),
        ("tiff8-tifffile", lambda: _tiff_bytes(_ramp8()), _ramp8()),
        ("tiff16-cv2-lzw", lambda: _cv2_bytes(_ramp16(), ".tiff"), _ramp16()),
        ("tiff16-tiled", lambda: _tiff_bytes(_ramp16(), tile=(16, 16)), _ramp16()),
        (
            "tiff16-rgb-grey",
            lambda: _tiff_bytes(np.dstack([_ramp16()] * 3), photometric="rgb"),
            _ramp16(),
        ),
        (
            "png8-rgb-grey",
            lambda: _pil_bytes(Image.fromarray(np.dstack([_ramp8()] * 3)), "PNG"),
            _ramp8(),
        ),
        (
            "png8-rgba-opaque",
            lambda: _pil_bytes(
                Image.fromarray(np.dstack([_ramp8()] * 3 + [np.full((H, W), 255, np.uint8)])),
                "PNG",
            ),
            _ramp8(),
        ),
        ("png16-rgb-grey-cv2", lambda: _cv2_bytes(np.dstack([_ramp16()] * 3), ".png"), _ramp16()),
        (
            "png16-grey-alpha",
            lambda: _png_manual(np.dstack([_ramp16(), np.full((H, W), 65535, np.uint16)]), 4),
            _ramp16(),
        ),
    ],
)
def test_lossless_files_decode_exactly(
    name: str, make: Callable[[], bytes], expected: np.ndarray
) -> None:
    out = decode_image(make())
    assert out.dtype == expected.dtype, name
    assert out.shape == (H, W)
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_jpeg_grey_and_rgb_grey(mode: str) -> None:
    grey = _smooth8()
    img = Image.fromarray(grey) if mode == "L" else Image.fromarray(np.dstack([grey] * 3))
    out = decode_image(_pil_bytes(img, "JPEG", quality=95))
    assert out.dtype == np.uint8
    assert out.shape == (H, W)
    assert np.abs(out.astype(int) - grey).max() <= 4


def test_jpeg_written_by_opencv_as_bgr_grey() -> None:
    grey = _smooth8()
    out = decode_image(_cv2_bytes(np.dstack([grey] * 3), ".jpg"))
    assert out.shape == (H, W) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - grey).max() <= 4


def test_load_scan_keeps_16_bits_from_files(tmp_path: Path) -> None:
    high, low = _ramp16(), (_ramp16() // 2).astype(np.uint16)
    hp, lp = tmp_path / "high.scan", tmp_path / "low.bin"  # names do not decide the format
    Image.fromarray(high).save(hp, format="PNG")
    tifffile.imwrite(lp, low)
    scan = load_scan(hp, lp, {"station_id": "PORT-7"})
    assert scan.bit_depth == 16 and scan.max_value == 65535
    assert scan.has_low and scan.shape == (H, W)
    assert scan.high.dtype == np.uint16 and scan.low is not None and scan.low.dtype == np.uint16
    np.testing.assert_array_equal(scan.high, high)
    np.testing.assert_array_equal(scan.low, low)
    assert scan.metadata.station_id == "PORT-7"


def test_load_scan_8bit_single_energy(tmp_path: Path) -> None:
    path = tmp_path / "legacy.png"
    cv2.imwrite(str(path), _ramp8())
    scan = load_scan(path)
    assert scan.bit_depth == 8 and scan.max_value == 255 and not scan.has_low
    np.testing.assert_array_equal(scan.high, _ramp8())


def test_decode_scan_with_json_metadata() -> None:
    meta = json.dumps({"station_id": "S1", "pixel_pitch_mm": 5})
    scan = decode_scan(_cv2_bytes(_ramp16(), ".png"), metadata=meta.encode())
    assert scan.metadata.pixel_pitch_mm == 5.0
    assert scan.low is None


# --------------------------------------------------------------------------- bad input


def _truncate(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _noise_rgb() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (H, W, 3), dtype=np.uint8)


def _tiff_12bit() -> bytes:
    """A real uint16 TIFF whose BitsPerSample tag says 12 (tifffile cannot pack 12-bit)."""
    data = _tiff_bytes(_ramp16())
    entry = struct.pack("<HHIH", 258, 3, 1, 16)
    assert data.count(entry) == 1
    return data.replace(entry, struct.pack("<HHIH", 258, 3, 1, 12))


def _png16_big_file() -> bytes:
    rows = np.zeros((H, W), np.uint16)
    return _png_manual(rows, 0)


BAD_CASES: list[tuple[str, Callable[[], bytes], str]] = [
    ("empty", lambda: b"", "empty"),
    ("text", lambda: b"hello, this is not an image at all", "not an image"),
    ("gif", lambda: _pil_bytes(Image.fromarray(_ramp8()), "GIF"), "GIF"),
    ("bmp", lambda: _pil_bytes(Image.fromarray(_ramp8()), "BMP"), "BMP"),
    ("png-cut", lambda: _truncate(_pil_bytes(Image.fromarray(_ramp16()), "PNG")), "truncated"),
    ("png-cut-cv2", lambda: _truncate(_cv2_bytes(_ramp16(), ".png")), "truncated"),
    (
        "png16-rgb-cut",
        lambda: _truncate(_cv2_bytes(np.dstack([_ramp16()] * 3), ".png")),
        "truncated",
    ),
    ("png-header-only", lambda: _pil_bytes(Image.fromarray(_ramp8()), "PNG")[:20], "truncated"),
    ("jpeg-cut", lambda: _truncate(_pil_bytes(Image.fromarray(_smooth8()), "JPEG")), "truncated"),
    ("jpeg-magic-only", lambda: b"\xff\xd8\xff", "JPEG"),
    ("tiff-cut", lambda: _truncate(_tiff_bytes(_ramp16())), "TIFF"),
    ("tiff-cut-cv2", lambda: _truncate(_cv2_bytes(_ramp16(), ".tiff")), "TIFF"),
    ("png-1bit", lambda: _pil_bytes(Image.fromarray(_ramp8() > 100), "PNG"), "1-bit"),
    ("tiff-1bit", lambda: _tiff_bytes(_ramp8() > 100), "1-bit"),
    ("tiff-12bit", _tiff_12bit, "12-bit"),
    ("tiff-uint32", lambda: _tiff_bytes(_ramp16().astype(np.uint32)), "32-bit"),
    ("tiff-int16", lambda: _tiff_bytes(_ramp8().astype(np.int16)), "signed"),
    ("tiff-float", lambda: _tiff_bytes(_ramp8().astype(np.float32) / 255), "floating-point"),
    ("tiff-multipage", lambda: _tiff_bytes(np.stack([_ramp16(), _ramp16()])), "multi-page"),
    (
        "tiff-2sample",
        lambda: _tiff_bytes(
            np.dstack([_ramp16(), _ramp16()]), photometric="minisblack", planarconfig="contig"
        ),
        "one single-channel file per energy",
    ),
    (
        "tiff-colour",
        lambda: _tiff_bytes(_noise_rgb().astype(np.uint16) * 257, photometric="rgb"),
        "colour",
    ),
    ("png-colour", lambda: _pil_bytes(Image.fromarray(_noise_rgb()), "PNG"), "colour"),
    ("jpeg-colour", lambda: _pil_bytes(Image.fromarray(_noise_rgb()), "JPEG"), "colour"),
    (
        "png16-colour",
        lambda: _cv2_bytes(_noise_rgb().astype(np.uint16) * 257, ".png"),
        "colour",
    ),
    (
        "png-rgba-transparent",
        lambda: _pil_bytes(
            Image.fromarray(np.dstack([_ramp8()] * 3 + [np.full((H, W), 128, np.uint8)])), "PNG"
        ),
        "transparen",
    ),
    (
        "png16-grey-alpha-transparent",
        lambda: _png_manual(np.dstack([_ramp16(), np.zeros((H, W), np.uint16)]), 4),
        "transparen",
    ),
    ("png-tiny", lambda: _pil_bytes(Image.fromarray(np.zeros((8, 8), np.uint8)), "PNG"), "16x16"),
    ("tiff-tiny", lambda: _tiff_bytes(np.zeros((4, 100), np.uint16)), "16x16"),
    ("jpeg-tiny", lambda: _pil_bytes(Image.fromarray(np.zeros((8, 8), np.uint8)), "JPEG"), "16x16"),
    ("tiff-miniswhite", lambda: _tiff_bytes(_ramp16(), photometric="miniswhite"), "MinIsWhite"),
]


@pytest.mark.parametrize(("name", "make", "needle"), BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_input_raises_scan_error_naming_the_problem(
    name: str, make: Callable[[], bytes], needle: str
) -> None:
    with pytest.raises(ScanError) as info:
        decode_image(make(), channel="low")
    message = str(info.value)
    assert needle.lower() in message.lower(), message
    assert message.startswith("low"), message  # names the channel


def test_truncation_detected_even_if_pil_global_allows_truncated_images(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Some other library in the process may switch this PIL global on."""
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    for data in (
        _pil_bytes(Image.fromarray(_ramp16()), "PNG"),
        _pil_bytes(Image.fromarray(_smooth8()), "JPEG"),
    ):
        with pytest.raises(ScanError, match="truncated"):
            decode_image(_truncate(data))


def test_scan_error_is_a_value_error() -> None:
    assert issubclass(ScanError, ValueError)


def test_pixel_limit_from_real_image() -> None:
    data = _cv2_bytes(_ramp16(), ".png")
    with pytest.raises(ScanError, match="too many pixels"):
        decode_image(data, max_pixels=H * W - 1)
    assert decode_image(data, max_pixels=H * W).shape == (H, W)
    for other in (_tiff_bytes(_ramp16()), _pil_bytes(Image.fromarray(_smooth8()), "JPEG")):
        with pytest.raises(ScanError, match="too many pixels"):
            decode_image(other, max_pixels=100)


def test_pixel_limit_checked_from_header_before_decoding() -> None:
    """A 100k x 100k PNG header over a few bytes of data: refused before decompressing."""
    bomb = _png_raw(100_000, 100_000, 16, 0, zlib.compress(b"\x00" * 1000))
    with pytest.raises(ScanError, match="too many pixels") as info:
        decode_image(bomb)
    assert "100000x100000" in str(info.value)
    assert DEFAULT_MAX_PIXELS < 100_000 * 100_000


def test_pixel_limit_jpeg_header_bomb() -> None:
    """Patch a real JPEG's frame header to claim 60000 x 60000 px."""
    data = bytearray(_pil_bytes(Image.fromarray(_smooth8()), "JPEG"))
    sof = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, 60000, 60000)
    with pytest.raises(ScanError, match="too many pixels"):
        decode_image(bytes(data))


def test_pixel_limit_tiff_header_bomb() -> None:
    data = _tiff_bytes(_ramp16())
    for tag in (256, 257):  # ImageWidth, ImageLength (tifffile writes LONG, inline)
        old = struct.pack("<HHII", tag, 4, 1, W if tag == 256 else H)
        assert data.count(old) == 1
        data = data.replace(old, struct.pack("<HHII", tag, 4, 1, 60000))
    with pytest.raises(ScanError, match="too many pixels"):
        decode_image(data)


def test_big_header_with_valid_small_body_is_fine() -> None:
    assert decode_image(_png16_big_file()).shape == (H, W)


def test_high_low_size_mismatch() -> None:
    high = _cv2_bytes(_ramp16(), ".png")
    low = _cv2_bytes(np.zeros((H, W + 1), np.uint16), ".png")
    with pytest.raises(ScanError, match="differ in size"):
        decode_scan(high, low)


def test_high_low_depth_mismatch() -> None:
    high = _cv2_bytes(_ramp16(), ".png")
    low = _cv2_bytes(_ramp8(), ".png")
    with pytest.raises(ScanError, match="bit depth"):
        decode_scan(high, low)


def test_load_scan_missing_file_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.png"
    with pytest.raises(ScanError, match=r"nope\.png"):
        load_scan(missing)


def test_load_scan_error_names_the_file(tmp_path: Path) -> None:
    good = tmp_path / "high.png"
    cv2.imwrite(str(good), _ramp16())
    bad = tmp_path / "low.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ScanError) as info:
        load_scan(good, bad)
    assert "low" in str(info.value) and "low.png" in str(info.value)


# --------------------------------------------------------------------------- from_arrays


def test_from_arrays_ok_and_properties() -> None:
    scan = Scan.from_arrays(_ramp16(), _ramp16(), {"station_id": "X"})
    assert scan.shape == (H, W) and scan.has_low and scan.bit_depth == 16
    scan8 = Scan.from_arrays(_ramp8()[:, :, None])
    assert scan8.high.shape == (H, W) and scan8.bit_depth == 8 and scan8.max_value == 255


@pytest.mark.parametrize(
    ("high", "low", "needle"),
    [
        (_ramp16().astype(np.float32), None, "float32"),
        (_ramp16().astype(np.int16), None, "int16"),
        (np.zeros((H, W, 3), np.uint8), None, "2-D"),
        (np.zeros((8, 8), np.uint16), None, "16x16"),
        (_ramp16(), _ramp8(), "bit depth"),
        (_ramp16(), np.zeros((H + 1, W), np.uint16), "differ in size"),
        ([[1, 2], [3, 4]], None, "numpy array"),
    ],
)
def test_from_arrays_rejects(high: object, low: object, needle: str) -> None:
    with pytest.raises(ScanError, match=needle):
        Scan.from_arrays(high, low)  # type: ignore[arg-type]


def test_from_arrays_pixel_limit() -> None:
    with pytest.raises(ScanError, match="too many pixels"):
        Scan.from_arrays(_ramp16(), max_pixels=100)


def test_scan_constructor_checks_bit_depth() -> None:
    with pytest.raises(ScanError, match="bit_depth"):
        Scan(high=_ramp16(), low=None, bit_depth=8, metadata=ScanMetadata())
    assert Scan(high=_ramp8(), low=None, bit_depth=8, metadata=ScanMetadata()).bit_depth == 8


# --------------------------------------------------------------------------- metadata

FULL_META = {
    "station_id": "SANTOS-P3",
    "station_scan_id": "2024-000123",
    "scan_time": "2024-05-01T12:30:05Z",
    "scanner": {"kind": "portal", "high_mv": 6, "low_mv": 4.0},
    "pixel_pitch_mm": 5.0,
    "vehicle_id": "ABC1D23",
    "container_ids": ["MSCU1234565"],
    "manifest": [
        {"hs_code": "0901.21", "description": "roasted coffee", "declared_weight_kg": 18000},
        {"hs_code": "8703", "description": "cars", "declared_weight_kg": None, "quantity": 2},
    ],
    "operator_note": "lane 2",
}


def test_metadata_round_trip() -> None:
    meta = ScanMetadata.from_dict(FULL_META, require_station=True)
    assert meta.scan_time == datetime(2024, 5, 1, 12, 30, 5, tzinfo=timezone.utc)
    assert meta.scanner == ScannerInfo(kind="portal", high_mv=6.0, low_mv=4.0)
    assert meta.manifest[0] == ManifestItem("0901.21", "roasted coffee", 18000.0, None)
    assert meta.manifest[1].quantity == 2
    assert meta.extra == {"operator_note": "lane 2"}
    as_json = json.dumps(meta.to_dict())  # JSON-safe
    again = ScanMetadata.from_dict(as_json)
    assert again == meta
    assert again.to_dict() == meta.to_dict()


def test_metadata_empty_and_defaults() -> None:
    for empty in (None, {}, "", b"  "):
        meta = ScanMetadata.from_dict(empty)
        assert meta.station_id is None and meta.manifest == [] and meta.container_ids == []
    assert ScanMetadata.from_dict(ScanMetadata().to_dict()) == ScanMetadata()


def test_metadata_time_with_offset() -> None:
    meta = ScanMetadata.from_dict({"scan_time": "2024-05-01T09:30:05-03:00"})
    assert meta.scan_time is not None
    assert meta.scan_time.utcoffset() == timedelta(hours=-3)


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({}, "station_id: is required"),
        ({"station_id": 3.5}, "station_id: must be a string"),
        ({"station_id": "S", "scan_time": "yesterday"}, "scan_time"),
        ({"station_id": "S", "scan_time": 1714560000}, "scan_time"),
        ({"station_id": "S", "pixel_pitch_mm": -1}, "pixel_pitch_mm"),
        ({"station_id": "S", "pixel_pitch_mm": "5"}, "pixel_pitch_mm: must be a number"),
        ({"station_id": "S", "pixel_pitch_mm": True}, "pixel_pitch_mm"),
        ({"station_id": "S", "scanner": {"high_mv": 4, "low_mv": 6}}, "scanner.low_mv"),
        ({"station_id": "S", "scanner": {"kind": "portal", "engery": 6}}, "scanner"),
        ({"station_id": "S", "scanner": "portal"}, "scanner: must be an object"),
        ({"station_id": "S", "container_ids": "MSCU1234565"}, "container_ids"),
        ({"station_id": "S", "container_ids": ["A", 7]}, "container_ids[1]"),
        ({"station_id": "S", "manifest": {"hs_code": "1"}}, "manifest: must be a list"),
        ({"station_id": "S", "manifest": [{"description": "x"}]}, "manifest[0].hs_code"),
        ({"station_id": "S", "manifest": [{"hs_code": 901}]}, "leading zeros"),
        ({"station_id": "S", "manifest": [{"hs_code": "coffee"}]}, "manifest[0].hs_code"),
        (
            {"station_id": "S", "manifest": [{"hs_code": "0901", "declared_weight_kg": -5}]},
            "manifest[0].declared_weight_kg",
        ),
        (
            {"station_id": "S", "manifest": [{"hs_code": "0901", "quantity": 1.5}]},
            "manifest[0].quantity",
        ),
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
    ],
)
def test_bad_metadata(data: object, needle: str) -> None:
    with pytest.raises(ScanError) as info:
        ScanMetadata.from_dict(data, require_station=True)  # type: ignore[arg-type]
    assert needle in str(info.value)
    assert str(info.value).startswith("metadata")


def test_bad_metadata_lists_every_field() -> None:
    with pytest.raises(ScanError) as info:
        ScanMetadata.from_dict({"pixel_pitch_mm": 0, "vehicle_id": []})
    assert "pixel_pitch_mm" in str(info.value) and "vehicle_id" in str(info.value)


def test_decode_scan_bad_metadata_is_scan_error() -> None:
    with pytest.raises(ScanError, match="metadata"):
        decode_scan(_cv2_bytes(_ramp16(), ".png"), metadata="{oops")
