"""The scan type and its decoding: bytes from a scanner station -> validated arrays.

A scan is one or two co-registered transmission images of the same size: ``high``
(always present) and ``low`` (dual-energy scanners only). Pixel value = transmitted
intensity (bright = air, dark = dense); x runs along the vehicle, y up the detector.

Why so strict:
- 16-bit data is kept 16-bit (``uint16``). Squashing raw scanner output to 8 bits
  throws away the dynamic range that dense cargo lives in.
- Every bad input becomes one error type, :class:`ScanError` (a ``ValueError``), whose
  message says what is wrong and with which channel/file, so the service can turn it
  into a clear 4xx and the CLI into exit code 2, never a traceback or a 500.
- The format comes from the magic bytes, never the file name, and the pixel count is
  checked from the header before any pixel is decompressed (decompression bombs).
- A truncated file fails loudly instead of decoding to half a picture padded with
  black, which would look like a wall of dense cargo to the model.
"""

from __future__ import annotations

import io
import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "MIN_SIDE",
    "ManifestItem",
    "Scan",
    "ScanError",
    "ScanMetadata",
    "ScannerInfo",
    "decode_image",
    "decode_scan",
    "load_scan",
]

DEFAULT_MAX_PIXELS = 40_000_000
"""Per channel. The largest real scans are about 6000 x 1500 = 9 Mpx; 40 Mpx leaves room."""

MIN_SIDE = 16
"""Smallest accepted width/height: anything smaller is a thumbnail or an error, not a scan."""

_ACCEPTED = "8- or 16-bit unsigned greyscale PNG/TIFF, or 8-bit JPEG"
_JPEG_GREY_TOLERANCE = 12
"""Lossy JPEG chroma can make R, G, B differ slightly on grey content; allow this much."""


class ScanError(ValueError):
    """The one error type for bad scan input (image bytes, arrays or metadata)."""


# --------------------------------------------------------------------------- metadata


def _fmt_path(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


class _Checker:
    """Collects every metadata problem so one error names all bad fields at once."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def fail(self, path: str, msg: str) -> None:
        self.errors.append(f"{path}: {msg}")

    def string(self, value: Any, path: str, *, allow_int: bool = False) -> str | None:
        if value is None:
            return None
        if allow_int and isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str):
            self.fail(path, f"must be a string, got {type(value).__name__}")
            return None
        value = value.strip()
        if not value:
            self.fail(path, "must not be empty")
            return None
        return value

    def number(self, value: Any, path: str, *, positive: bool = False) -> float | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(path, f"must be a number, got {type(value).__name__}")
            return None
        value = float(value)
        if not math.isfinite(value):
            self.fail(path, "must be a finite number")
            return None
        if positive and value <= 0:
            self.fail(path, f"must be > 0, got {value:g}")
            return None
        if value < 0:
            self.fail(path, f"must be >= 0, got {value:g}")
            return None
        return value

    def integer(self, value: Any, path: str) -> int | None:
        if value is None:
            return None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(path, f"must be an integer, got {type(value).__name__}")
            return None
        if value < 0:
            self.fail(path, f"must be >= 0, got {value}")
            return None
        return value

    def mapping(self, value: Any, path: str) -> Mapping[str, Any] | None:
        if value is None:
            return None
        if not isinstance(value, Mapping):
            self.fail(path, f"must be an object, got {type(value).__name__}")
            return None
        return value

    def unknown(self, data: Mapping[str, Any], known: set[str], path: str) -> None:
        extra = sorted(str(k) for k in data if k not in known)
        if extra:
            self.fail(path or "metadata", f"unknown field(s) {', '.join(extra)}")


@dataclass
class ManifestItem:
    """One declared line of the cargo manifest."""

    hs_code: str
    description: str
    declared_weight_kg: float | None
    quantity: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "hs_code": self.hs_code,
            "description": self.description,
            "declared_weight_kg": self.declared_weight_kg,
            "quantity": self.quantity,
        }

    @classmethod
    def _parse(cls, data: Any, path: str, chk: _Checker) -> ManifestItem | None:
        data = chk.mapping(data, path)
        if data is None:
            chk.fail(path, "must be an object with hs_code, description, declared_weight_kg")
            return None
        chk.unknown(data, {"hs_code", "description", "declared_weight_kg", "quantity"}, path)
        hs = data.get("hs_code")
        hs_path = _fmt_path(path, "hs_code")
        if hs is None:
            chk.fail(hs_path, "is required")
        elif isinstance(hs, (int, float)) and not isinstance(hs, bool):
            # A number loses leading zeros (0901 coffee -> 901): insist on text.
            chk.fail(hs_path, 'must be a string (leading zeros matter), e.g. "0901.21"')
            hs = None
        else:
            hs = chk.string(hs, hs_path)
            if hs is not None:
                digits = hs.replace(".", "").replace(" ", "")
                if not digits.isdigit() or not 2 <= len(digits) <= 12:
                    chk.fail(hs_path, f"must be 2-12 digits (dots allowed), got {hs!r}")
                    hs = None
        desc = data.get("description", "")
        if desc is None:
            desc = ""
        if not isinstance(desc, str):
            chk.fail(_fmt_path(path, "description"), "must be a string")
            desc = ""
        weight = chk.number(data.get("declared_weight_kg"), _fmt_path(path, "declared_weight_kg"))
        qty = chk.integer(data.get("quantity"), _fmt_path(path, "quantity"))
        if hs is None:
            return None
        return cls(hs_code=hs, description=desc.strip(), declared_weight_kg=weight, quantity=qty)


@dataclass
class ScannerInfo:
    """What kind of machine took the scan; energies are linac end-points in MV."""

    kind: str | None = None
    high_mv: float | None = None
    low_mv: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "high_mv": self.high_mv, "low_mv": self.low_mv}

    @classmethod
    def _parse(cls, data: Any, path: str, chk: _Checker) -> ScannerInfo:
        data = chk.mapping(data, path)
        if data is None:
            return cls()
        chk.unknown(data, {"kind", "high_mv", "low_mv"}, path)
        kind = chk.string(data.get("kind"), _fmt_path(path, "kind"))
        high = chk.number(data.get("high_mv"), _fmt_path(path, "high_mv"), positive=True)
        low = chk.number(data.get("low_mv"), _fmt_path(path, "low_mv"), positive=True)
        if high is not None and low is not None and low >= high:
            chk.fail(_fmt_path(path, "low_mv"), f"must be below high_mv ({low:g} >= {high:g})")
        return cls(kind=kind.lower() if kind else None, high_mv=high, low_mv=low)


def _parse_time(value: Any, path: str, chk: _Checker) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    if not isinstance(value, str):
        chk.fail(path, f"must be an ISO 8601 string, got {type(value).__name__}")
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):  # Python 3.10's fromisoformat does not take "Z"
        text = text[:-1] + "+00:00"
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        chk.fail(path, f"must be an ISO 8601 time like 2024-05-01T12:30:00Z, got {value!r}")
        return None


_METADATA_KEYS = {
    "station_id",
    "station_scan_id",
    "scan_time",
    "scanner",
    "pixel_pitch_mm",
    "vehicle_id",
    "container_ids",
    "manifest",
}


@dataclass
class ScanMetadata:
    """What the station says about a scan. All optional except the station (when required).

    Unknown top-level keys are kept in ``extra`` (not rejected) so a station that sends
    more than we know about still gets its scans through, and nothing it said is lost.
    Unknown keys inside ``scanner`` and manifest items are rejected: those are typos.
    """

    station_id: str | None = None
    station_scan_id: str | None = None
    scan_time: datetime | None = None
    scanner: ScannerInfo = field(default_factory=ScannerInfo)
    pixel_pitch_mm: float | None = None
    vehicle_id: str | None = None
    container_ids: list[str] = field(default_factory=list)
    manifest: list[ManifestItem] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any] | str | bytes | None, *, require_station: bool = False
    ) -> ScanMetadata:
        """Validate and convert station metadata (a mapping or JSON text).

        Raises :class:`ScanError` naming every bad field (e.g. ``manifest[2].hs_code``).
        """
        if isinstance(data, (bytes, bytearray, memoryview)):
            try:
                data = bytes(data).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ScanError(f"metadata: not UTF-8 text ({exc})") from None
        if isinstance(data, str):
            if not data.strip():
                data = None
            else:
                try:
                    data = json.loads(data)
                except json.JSONDecodeError as exc:
                    raise ScanError(f"metadata: not valid JSON ({exc})") from None
                except RecursionError:  # "[[[[..." a few thousand deep: was a 500
                    raise ScanError("metadata: JSON nested too deeply") from None
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise ScanError(f"metadata: must be a JSON object, got {type(data).__name__}")
        try:  # JSON lets "\ud800" through; the database and every answer would choke on it
            json.dumps(data, ensure_ascii=False, default=str).encode("utf-8")
        except UnicodeEncodeError:
            raise ScanError(
                "metadata: text with an unpaired UTF-16 surrogate (\\ud800-\\udfff) "
                "is not valid Unicode"
            ) from None
        except (TypeError, ValueError, RecursionError):
            pass  # named field by field below

        chk = _Checker()
        station = chk.string(data.get("station_id"), "station_id", allow_int=True)
        if require_station and data.get("station_id") is None:
            chk.fail("station_id", "is required")
        station_scan_id = chk.string(data.get("station_scan_id"), "station_scan_id", allow_int=True)
        scan_time = _parse_time(data.get("scan_time"), "scan_time", chk)
        scanner = ScannerInfo._parse(data.get("scanner"), "scanner", chk)
        pitch = chk.number(data.get("pixel_pitch_mm"), "pixel_pitch_mm", positive=True)
        vehicle = chk.string(data.get("vehicle_id"), "vehicle_id", allow_int=True)

        containers: list[str] = []
        raw_containers = data.get("container_ids")
        if raw_containers is not None:
            if isinstance(raw_containers, (str, bytes)) or not isinstance(
                raw_containers, (list, tuple)
            ):
                chk.fail("container_ids", "must be a list of strings")
            else:
                for i, cid in enumerate(raw_containers):
                    value = chk.string(cid, f"container_ids[{i}]")
                    if value is not None:
                        containers.append(value)

        manifest: list[ManifestItem] = []
        raw_manifest = data.get("manifest")
        if raw_manifest is not None:
            if isinstance(raw_manifest, (str, bytes, Mapping)) or not isinstance(
                raw_manifest, (list, tuple)
            ):
                chk.fail("manifest", "must be a list of items")
            else:
                for i, item in enumerate(raw_manifest):
                    parsed = ManifestItem._parse(item, f"manifest[{i}]", chk)
                    if parsed is not None:
                        manifest.append(parsed)

        extra = {str(k): v for k, v in data.items() if k not in _METADATA_KEYS}
        try:
            json.dumps(extra, allow_nan=False)
        except (TypeError, ValueError):
            chk.fail("metadata", f"extra field(s) {', '.join(sorted(extra))} are not JSON values")

        if chk.errors:
            raise ScanError("metadata: " + "; ".join(chk.errors))
        return cls(
            station_id=station,
            station_scan_id=station_scan_id,
            scan_time=scan_time,
            scanner=scanner,
            pixel_pitch_mm=pitch,
            vehicle_id=vehicle,
            container_ids=containers,
            manifest=manifest,
            extra=extra,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (ISO 8601 time) that :meth:`from_dict` reads back to an equal object."""
        out: dict[str, Any] = dict(self.extra)
        out.update(
            {
                "station_id": self.station_id,
                "station_scan_id": self.station_scan_id,
                "scan_time": self.scan_time.isoformat() if self.scan_time else None,
                "scanner": self.scanner.to_dict(),
                "pixel_pitch_mm": self.pixel_pitch_mm,
                "vehicle_id": self.vehicle_id,
                "container_ids": list(self.container_ids),
                "manifest": [item.to_dict() for item in self.manifest],
            }
        )
        return out


# --------------------------------------------------------------------------- the scan


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
    _check_size(arr.shape[0], arr.shape[1], label, max_pixels)
    return np.ascontiguousarray(arr)


def _check_size(height: int, width: int, label: str, max_pixels: int | None) -> None:
    if max_pixels is not None and height * width > max_pixels:
        raise ScanError(
            f"{label}: too many pixels: {width}x{height} = {width * height:,} "
            f"exceeds the limit of {max_pixels:,}"
        )
    if height < MIN_SIDE or width < MIN_SIDE:
        raise ScanError(
            f"{label}: image is {width}x{height} px; at least {MIN_SIDE}x{MIN_SIDE} expected"
        )


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
            _check_pair(self.high, self.low)
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


def _check_pair(high: np.ndarray, low: np.ndarray) -> None:
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


# --------------------------------------------------------------------------- decoding

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_JPEG_MAGIC = b"\xff\xd8\xff"
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


def _sniff(data: bytes) -> str:
    if data.startswith(_PNG_MAGIC):
        return "png"
    if data[:4] in _TIFF_MAGICS:
        return "tiff"
    if data.startswith(_JPEG_MAGIC):
        return "jpeg"
    return "unknown"


def decode_image(
    data: bytes, *, channel: str = "high", max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Decode one channel's PNG/TIFF/JPEG bytes to a 2-D ``uint8`` or ``uint16`` array.

    ``channel`` only labels error messages. Raises :class:`ScanError` for anything that
    is not a complete single-channel 8/16-bit greyscale image within ``max_pixels``.
    """
    if isinstance(data, (bytearray, memoryview)):
        data = bytes(data)
    if not isinstance(data, bytes):
        raise ScanError(f"{channel}: expected image bytes, got {type(data).__name__}")
    if not data:
        raise ScanError(f"{channel}: empty file (0 bytes)")
    kind = _sniff(data)
    try:
        if kind == "png":
            return _decode_png(data, channel, max_pixels)
        if kind == "tiff":
            return _decode_tiff(data, channel, max_pixels)
        if kind == "jpeg":
            return _decode_jpeg(data, channel, max_pixels)
    except ScanError:
        raise
    except Exception as exc:  # any decoder failure on hostile bytes is bad input, not a bug
        raise ScanError(
            f"{channel}: cannot decode {kind.upper()} ({type(exc).__name__}: {exc})"
        ) from None
    for magic, name in _OTHER_MAGICS.items():
        if data.startswith(magic):
            raise ScanError(f"{channel}: {name} files are not accepted; send {_ACCEPTED}")
    raise ScanError(
        f"{channel}: not an image (unknown format, first bytes {data[:8]!r}); send {_ACCEPTED}"
    )


def _to_grey(pixels: np.ndarray, label: str, *, alpha: bool, lossy: bool) -> np.ndarray:
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


def _open_pil(data: bytes, label: str) -> Any:
    from PIL import Image

    try:
        return Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ScanError(f"{label}: too many pixels ({exc})") from None
    except Exception as exc:
        raise ScanError(f"{label}: cannot read image header ({exc})") from None


def _pil_load(img: Any, label: str, fmt: str) -> None:
    """Decode all pixels; a truncated or corrupt stream raises instead of padding with black."""
    try:
        img.load()
    except Exception as exc:
        raise ScanError(
            f"{label}: truncated or corrupt {fmt} ({exc}); the file is incomplete"
        ) from None


# PNG: IHDR is at a fixed place, so depth, colour type and size are known without
# decompressing anything.
_PNG_COLOUR = {0: "greyscale", 2: "RGB", 3: "palette", 4: "grey+alpha", 6: "RGBA"}
_METADATA_ALLOWANCE = 1 << 20
"""Bytes a file may carry beyond its pixels (ICC profile, EXIF, text) before it is padded."""


def _decode_png(data: bytes, label: str, max_pixels: int) -> np.ndarray:
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise ScanError(f"{label}: truncated or corrupt PNG (no IHDR header)")
    width, height, depth, ctype, _, _, _ = struct.unpack(">IIBBBBB", data[16:29])
    if ctype not in _PNG_COLOUR:
        raise ScanError(f"{label}: corrupt PNG (colour type {ctype})")
    _check_size(height, width, label, max_pixels)
    if ctype != 3 and depth not in (8, 16):
        raise ScanError(
            f"{label}: {depth}-bit {_PNG_COLOUR[ctype]} PNG not accepted; send {_ACCEPTED}"
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
        return _to_grey(pixels, label, alpha=alpha, lossy=False)

    img = _open_pil(data, label)
    _pil_load(img, label, "PNG")
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
        raise ScanError(f"{label}: PNG mode {mode} not accepted; send {_ACCEPTED}")
    pixels = np.asarray(img)
    return _to_grey(pixels, label, alpha=mode in ("LA", "RGBA"), lossy=False)


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


# JPEG: the frame header (SOFn) gives precision, size and components; read it directly
# so a 12-bit or oversized JPEG is refused before any decoding.
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


def _decode_jpeg(data: bytes, label: str, max_pixels: int) -> np.ndarray:
    precision, height, width, comps = _jpeg_frame(data, label)
    _check_size(height, width, label, max_pixels)
    # Each scan of a progressive JPEG is a pass over the whole image: thousands of scans
    # in a small file keep a thread busy for minutes. Entropy-coded data stuffs every FF
    # byte (FF 00), so FF DA occurs only as a real start-of-scan marker.
    scans = data.count(b"\xff\xda")
    if scans > _JPEG_MAX_SCANS:
        raise ScanError(
            f"{label}: corrupt JPEG ({scans} scans; at most {_JPEG_MAX_SCANS} are accepted)"
        )
    if precision != 8:
        raise ScanError(f"{label}: {precision}-bit JPEG not accepted; send {_ACCEPTED}")
    if comps not in (1, 3):
        raise ScanError(
            f"{label}: JPEG with {comps} components (CMYK?) not accepted; send greyscale"
        )
    # Entropy-coded data cannot contain FF D9 (FF is byte-stuffed), so a JPEG cut short
    # has no EOI near its end. Independent of PIL's LOAD_TRUNCATED_IMAGES global.
    if data.rfind(b"\xff\xd9", max(0, len(data) - 4096)) < 0:
        raise ScanError(f"{label}: truncated JPEG (no end-of-image marker); the file is incomplete")
    img = _open_pil(data, label)
    _pil_load(img, label, "JPEG")
    if img.mode not in ("L", "RGB"):
        raise ScanError(f"{label}: JPEG mode {img.mode} not accepted; send greyscale")
    pixels = np.asarray(img)
    if pixels.shape[:2] != (height, width):
        raise ScanError(f"{label}: JPEG decoded to an unexpected size")
    return _to_grey(pixels, label, alpha=False, lossy=True)


# TIFF: tifffile gives the page's shape, depth and sample format without reading data.
_TIFF_SAMPLEFORMAT = {1: "unsigned integer", 2: "signed integer", 3: "floating point"}


def _decode_tiff(data: bytes, label: str, max_pixels: int) -> np.ndarray:
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
        _check_size(height, width, label, max_pixels)
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
            raise ScanError(f"{label}: {bits}-bit {what} TIFF not accepted; send {_ACCEPTED}")
        if bits not in (8, 16):
            raise ScanError(f"{label}: {bits}-bit TIFF not accepted; send {_ACCEPTED}")
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
    return _to_grey(pixels, label, alpha=pixels.ndim == 3 and pixels.shape[2] == 4, lossy=False)


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


def decode_scan(
    high: bytes,
    low: bytes | None = None,
    metadata: ScanMetadata | Mapping[str, Any] | str | bytes | None = None,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    require_station: bool = False,
) -> Scan:
    """Decode a scan from the bytes a station sends (one file per energy) + metadata."""
    meta = (
        metadata
        if isinstance(metadata, ScanMetadata)
        else ScanMetadata.from_dict(metadata, require_station=require_station)
    )
    hi = decode_image(high, channel="high", max_pixels=max_pixels)
    lo = None if low is None else decode_image(low, channel="low", max_pixels=max_pixels)
    return _assemble(hi, lo, meta)


def _assemble(high: np.ndarray, low: np.ndarray | None, meta: ScanMetadata) -> Scan:
    if low is not None:
        _check_pair(high, low)
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
