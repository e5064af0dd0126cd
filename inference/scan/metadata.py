"""What a station says about a scan (``ScanMetadata``), validated field by field.

Every problem is collected before anything is raised, so one :class:`ScanError` names all
bad fields at once (``manifest[2].hs_code: ...; scanner.low_mv: ...``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from inference.scan.errors import ScanError

MAX_LINE_WEIGHT_KG = 60_000.0
"""A manifest line heavier than this is a typo: a 40 ft box's gross limit is 30,480 kg and
no road vehicle a portal scans carries twice that."""
# HS chapters (the first two digits): 01-97 less 77, reserved by the WCO.
_HS_CHAPTERS = frozenset(f"{n:02d}" for n in range(1, 98) if n != 77)


def known_hs_chapter(chapter: str) -> bool:
    """Whether `chapter` (two digits) is an HS chapter: 98/99 are national, 00 is none."""
    return chapter in _HS_CHAPTERS


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
    """One declared line of the cargo manifest; ``container`` names the box it is in, by
    index (0 = the first from the image's left) or ISO id (one of ``container_ids``)."""

    hs_code: str
    description: str
    declared_weight_kg: float | None
    quantity: int | None = None
    container: int | str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "hs_code": self.hs_code,
            "description": self.description,
            "declared_weight_kg": self.declared_weight_kg,
            "quantity": self.quantity,
        }
        if self.container is not None:
            out["container"] = self.container
        return out

    @classmethod
    def _parse(cls, data: Any, path: str, chk: _Checker) -> ManifestItem | None:
        data = chk.mapping(data, path)
        if data is None:
            chk.fail(path, "must be an object with hs_code, description, declared_weight_kg")
            return None
        chk.unknown(
            data, {"hs_code", "description", "declared_weight_kg", "quantity", "container"}, path
        )
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
                elif not known_hs_chapter(digits[:2]):
                    chk.fail(hs_path, f"unknown HS code {hs!r}: no chapter {digits[:2]}")
                    hs = None
        desc = data.get("description", "")
        if desc is None:
            desc = ""
        if not isinstance(desc, str):
            chk.fail(_fmt_path(path, "description"), "must be a string")
            desc = ""
        weight_path = _fmt_path(path, "declared_weight_kg")
        weight = chk.number(data.get("declared_weight_kg"), weight_path)
        if weight is not None and weight > MAX_LINE_WEIGHT_KG:
            chk.fail(
                weight_path, f"{weight:g} kg is more than any road load ({MAX_LINE_WEIGHT_KG:g})"
            )
            weight = None
        qty = chk.integer(data.get("quantity"), _fmt_path(path, "quantity"))
        container = data.get("container")
        if container is not None:
            if isinstance(container, str):
                container = chk.string(container, _fmt_path(path, "container"))
            else:
                container = chk.integer(container, _fmt_path(path, "container"))
        if hs is None:
            return None
        return cls(
            hs_code=hs,
            description=desc.strip(),
            declared_weight_kg=weight,
            quantity=qty,
            container=container,
        )


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


def _check_container_ref(ref: int | str | None, ids: list[str], path: str, chk: _Checker) -> None:
    """A line's container must be one the station named: an ISO id of ``container_ids``,
    or an index below their number (any index when it named none: the image decides)."""
    where = _fmt_path(path, "container")
    if isinstance(ref, str) and ref not in ids:
        chk.fail(where, f"{ref!r} is not one of container_ids")
    elif isinstance(ref, int) and ids and ref >= len(ids):
        chk.fail(where, f"index {ref} but container_ids names {len(ids)} container(s)")
    elif isinstance(ref, int) and ref >= MAX_CONTAINERS:
        chk.fail(where, f"index {ref}: a vehicle carries at most {MAX_CONTAINERS} containers")


MAX_CONTAINERS = 4


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
    # A manifest was sent ([] declares the vehicle empty); absent, nothing is checked.
    manifest_declared: bool = False

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
                        _check_container_ref(parsed.container, containers, f"manifest[{i}]", chk)

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
            manifest_declared=raw_manifest is not None,
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
                "manifest": (
                    [item.to_dict() for item in self.manifest] if self.manifest_declared else None
                ),
            }
        )
        return out
