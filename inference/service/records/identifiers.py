"""Container and vehicle ids of scans, and the earlier scans that share one with a scan.

Why a table of its own (``scan_identifiers``): the ids are in the scan's metadata JSON,
which neither SQLite nor PostgreSQL can index in one portable way, so finding a
container's earlier scans would read every scan. Each scan's ids are written, normalised,
in the transaction that stores the scan (``index_scan``); revision 0005 filled the table
for the scans stored before it.

Normalised: upper case, letters and digits only, so that "MSCU 123456-5" and
"mscu1234565" (ISO 6346 written two ways) or "AB-123-CD" and "AB 123 CD" match.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from inference.service.db import (
    Reopening,
    ResultRecord,
    Review,
    ScanIdentifier,
    ScanRecord,
    Station,
)
from inference.service.records.base import Repository

KINDS = ("container", "vehicle")
MAX_VALUE = 100  # the column's size: longer text is no container or vehicle id
MAX_PER_SCAN = 64  # a train's scan holds dozens of containers, never hundreds


def normalise(text: Any) -> str | None:
    """The id as compared: upper case, letters and digits only (None when nothing is left
    or it is too long to be an id)."""
    if not isinstance(text, (str, int)) or isinstance(text, bool):
        return None
    value = "".join(ch for ch in str(text).upper() if ch.isalnum())
    return value if 0 < len(value) <= MAX_VALUE else None


def identifiers_of(meta: dict[str, Any] | None) -> list[tuple[str, str]]:
    """(kind, value) of every container id and the vehicle id in a scan's metadata, each
    once, in the metadata's order."""
    meta = meta if isinstance(meta, dict) else {}
    containers = meta.get("container_ids")
    raw = [("container", c) for c in (containers if isinstance(containers, list) else [])]
    raw.append(("vehicle", meta.get("vehicle_id")))
    out: list[tuple[str, str]] = []
    for kind, text in raw:
        value = normalise(text)
        if value is not None and (kind, value) not in out:
            out.append((kind, value))
    return out[:MAX_PER_SCAN]


def index_scan(s: Session, scan: ScanRecord) -> None:
    """Write a new scan's ids (in the transaction that stores it)."""
    for kind, value in identifiers_of(scan.meta):
        s.add(ScanIdentifier(scan_id=scan.id, kind=kind, value=value))


@dataclass
class Related:
    """An earlier scan sharing an id with the scan asked about: its newest result, where
    its review stands (status and the latest review's verdict) and the ids it shares."""

    scan: ScanRecord
    station: str
    result: ResultRecord | None
    review_status: str
    review_verdict: str | None
    matched: list[tuple[str, str]]


@dataclass
class RelatedPage:
    items: list[Related]
    total: int


class IdentifierRecords(Repository):
    """The earlier scans of a scan's containers and vehicle."""

    def related_scans(
        self, scan: ScanRecord, *, station_id: int | None, limit: int = 20
    ) -> RelatedPage:
        """Scans received before ``scan`` (or at the same time) that share a container or
        vehicle id with it, newest first; ``station_id``: only that station's."""
        keys = identifiers_of(scan.meta)
        if not keys:
            return RelatedPage([], 0)
        shares = or_(*(and_(ScanIdentifier.kind == k, ScanIdentifier.value == v) for k, v in keys))
        matching = select(ScanIdentifier.scan_id).where(shares, ScanIdentifier.scan_id != scan.id)
        q = select(ScanRecord, Station.name).join(Station, Station.id == ScanRecord.station_id)
        q = q.where(ScanRecord.id.in_(matching), ScanRecord.received_at <= scan.received_at)
        if station_id is not None:
            q = q.where(ScanRecord.station_id == station_id)
        with self.session() as s:
            total = s.scalar(select(func.count()).select_from(q.subquery())) or 0
            rows = s.execute(
                q.order_by(ScanRecord.received_at.desc(), ScanRecord.id.desc()).limit(limit)
            ).all()
            ids = [r[0].id for r in rows]
            results = self._newest_results(s, ids)
            reviews = self._review_states(s, ids)
            matched: dict[str, list[tuple[str, str]]] = {}
            for sid, kind, value in s.execute(
                select(ScanIdentifier.scan_id, ScanIdentifier.kind, ScanIdentifier.value)
                .where(ScanIdentifier.scan_id.in_(ids), shares)
                .order_by(ScanIdentifier.id)
            ):
                matched.setdefault(sid, []).append((kind, value))
        items = [
            Related(
                scan=rec,
                station=name,
                result=results.get(rec.id),
                review_status=reviews.get(rec.id, ("pending", None))[0],
                review_verdict=reviews.get(rec.id, ("pending", None))[1],
                matched=matched.get(rec.id, []),
            )
            for rec, name in rows
        ]
        return RelatedPage(items, int(total))

    @staticmethod
    def _newest_results(s: Session, ids: list[str]) -> dict[str, ResultRecord]:
        newest = select(func.max(ResultRecord.id)).where(ResultRecord.scan_id.in_(ids))
        q = select(ResultRecord).where(ResultRecord.id.in_(newest.group_by(ResultRecord.scan_id)))
        return {r.scan_id: r for r in s.scalars(q)}

    @staticmethod
    def _review_states(s: Session, ids: list[str]) -> dict[str, tuple[str, str | None]]:
        """(status, the latest review's verdict) per reviewed scan, as ``review_state``
        decides it: re-opened when a re-opening came after the latest review."""
        latest = select(func.max(Review.id)).where(Review.scan_id.in_(ids))
        reviews = s.scalars(select(Review).where(Review.id.in_(latest.group_by(Review.scan_id))))
        reopened = dict(
            s.execute(
                select(Reopening.scan_id, func.max(Reopening.created_at))
                .where(Reopening.scan_id.in_(ids))
                .group_by(Reopening.scan_id)
            ).all()
        )
        out: dict[str, tuple[str, str | None]] = {}
        for review in reviews:
            again = reopened.get(review.scan_id)
            status = "reopened" if again is not None and again > review.created_at else "reviewed"
            out[review.scan_id] = (status, review.verdict)
        return out
