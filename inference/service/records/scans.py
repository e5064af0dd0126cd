"""Scans and their results: a scan is stored with its first result, each result signed and
logged in the transaction that stores it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from inference.service import audit
from inference.service.db import ResultRecord, ScanRecord, Station
from inference.service.facts import fact_sha256, result_fact_of, scan_fact_of
from inference.service.records.base import Repository, signature_fields
from inference.service.records.identifiers import index_scan
from inference.service.signing import Signer, canonical, sha256_hex


@dataclass
class Page:
    """One page of scans (each with its newest result) and how many match in all."""

    items: list[tuple[ScanRecord, ResultRecord | None]]
    total: int


def statement_for_result(
    signer: Signer, scan: ScanRecord, result: ResultRecord, *, later: bool
) -> dict[str, Any]:
    """What the service key signs for a result (``later``: signed after it was stored)."""
    from inference.preprocess import PREPROCESS_VERSION
    from inference.service.evidence import result_statement

    return result_statement(
        result_id=result.id,
        created_at=result.created_at,
        high_sha256=scan.high_sha256,
        low_sha256=scan.low_sha256,
        body=result.body,
        preprocess_version=PREPROCESS_VERSION,
        key_sha256=signer.key_sha256,
        signed_later=later,
    )


class ScanRecords(Repository):
    """Scans and their results; every lookup can be limited to one station."""

    def scan_by_station_scan_id(
        self, station_id: int, station_scan_id: str
    ) -> tuple[ScanRecord, ResultRecord | None] | None:
        with self.session() as s:
            scan = s.scalars(
                select(ScanRecord).where(
                    ScanRecord.station_id == station_id,
                    ScanRecord.station_scan_id == station_scan_id,
                )
            ).first()
            return None if scan is None else (scan, self._latest(s, scan.id))

    def add_scan(self, scan: ScanRecord, result: ResultRecord) -> tuple[ScanRecord, bool]:
        """Store a scan with its first result in one transaction.

        Returns (the stored scan, True), or (the scan stored before under the same station
        scan id, False) when a concurrent retry won the race: nothing new is stored.
        """
        try:
            with self.session() as s:
                s.add(scan)
                s.flush()
                index_scan(s, scan)  # its container and vehicle ids, for related scans
                station = s.get(Station, scan.station_id)
                assert station is not None  # the foreign key
                actor = f"station:{station.name}"
                audit.append(
                    s,
                    "scan.received",
                    actor,
                    scan.id,
                    {
                        "station_scan_id": scan.station_scan_id,
                        "high_sha256": scan.high_sha256,
                        "high_bytes": scan.high_bytes,
                        "low_sha256": scan.low_sha256,
                        "low_bytes": scan.low_bytes,
                        "width": scan.width,
                        "height": scan.height,
                        "bit_depth": scan.bit_depth,
                        # the whole record (station, times, metadata): facts.py
                        "scan_sha256": fact_sha256(scan_fact_of(scan, station.name)),
                    },
                )
                result.scan_id = scan.id
                s.add(result)
                s.flush()
                self._record_result(s, scan, result, "service")
            return scan, True
        except IntegrityError:
            if scan.station_scan_id is None:
                raise
            found = self.scan_by_station_scan_id(scan.station_id, scan.station_scan_id)
            if found is None:
                raise
            return found[0], False

    def add_result(self, result: ResultRecord) -> bool:
        """Append a result (False: this model version already has one for the scan)."""
        try:
            with self.session() as s:
                s.add(result)
                s.flush()
                scan = s.get(ScanRecord, result.scan_id)
                assert scan is not None  # the foreign key
                self._record_result(s, scan, result, "service")
            return True
        except IntegrityError:
            return False

    def _record_result(
        self, s: Session, scan: ScanRecord, result: ResultRecord, actor: str
    ) -> None:
        """Sign a new result and log it (in the transaction that stores it; flushed, so
        its id and time are set)."""
        sig = None
        if self.signer is not None:
            sig = self.sign_statement(
                s, "result", result.id, statement_for_result(self.signer, scan, result, later=False)
            )
        audit.append(
            s,
            "result",
            actor,
            scan.id,
            {
                "result_id": result.id,
                "model": {
                    "name": result.model_name,
                    "version": result.model_version,
                    "sha256": result.model_sha256,
                },
                "verdict": result.verdict,
                "risk": result.risk,
                "findings": len(result.body.get("findings", [])),
                "result_sha256": sha256_hex(canonical(result.body)),
                "anomaly_sha256": result.anomaly_sha256,
                "row_sha256": fact_sha256(result_fact_of(result)),  # every column: facts.py
                **signature_fields(sig),
            },
        )

    def get_scan(
        self, scan_id: str, station_id: int | None
    ) -> tuple[ScanRecord, ResultRecord | None] | None:
        """The scan and its newest result; ``station_id`` None = any station (admin)."""
        with self.session() as s:
            q = select(ScanRecord).where(ScanRecord.id == scan_id)
            if station_id is not None:
                q = q.where(ScanRecord.station_id == station_id)
            scan = s.scalars(q).first()
            return None if scan is None else (scan, self._latest(s, scan.id))

    def results(self, scan_id: str) -> list[ResultRecord]:
        with self.session() as s:
            q = select(ResultRecord).where(ResultRecord.scan_id == scan_id)
            return list(s.scalars(q.order_by(ResultRecord.id)))

    def result_for(self, scan_id: str, model_version: str) -> ResultRecord | None:
        with self.session() as s:
            q = select(ResultRecord).where(
                ResultRecord.scan_id == scan_id, ResultRecord.model_version == model_version
            )
            return s.scalars(q).first()

    @staticmethod
    def _latest(s: Session, scan_id: str) -> ResultRecord | None:
        q = select(ResultRecord).where(ResultRecord.scan_id == scan_id)
        return s.scalars(q.order_by(ResultRecord.id.desc()).limit(1)).first()

    def list_scans(
        self,
        *,
        station_id: int | None,
        station_name: str | None = None,
        verdict: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> Page:
        """Newest first, with each scan's newest result; filters combine with AND."""
        newest = (
            select(ResultRecord.scan_id, func.max(ResultRecord.id).label("rid"))
            .group_by(ResultRecord.scan_id)
            .subquery()
        )
        q = (
            select(ScanRecord, ResultRecord)
            .join(newest, newest.c.scan_id == ScanRecord.id, isouter=True)
            .join(ResultRecord, ResultRecord.id == newest.c.rid, isouter=True)
        )
        if station_id is not None:
            q = q.where(ScanRecord.station_id == station_id)
        if station_name is not None:
            q = q.join(Station, Station.id == ScanRecord.station_id).where(
                Station.name == station_name
            )
        if verdict is not None:
            q = q.where(ResultRecord.verdict == verdict)
        if since is not None:
            q = q.where(ScanRecord.received_at >= since)
        if until is not None:
            q = q.where(ScanRecord.received_at < until)
        with self.session() as s:
            total = s.scalar(select(func.count()).select_from(q.subquery())) or 0
            rows = s.execute(
                q.order_by(ScanRecord.received_at.desc(), ScanRecord.id.desc())
                .limit(limit)
                .offset(offset)
            ).all()
            return Page(items=[(r[0], r[1]) for r in rows], total=int(total))

    def recent_scans(self, n: int) -> list[ScanRecord]:
        with self.session() as s:
            q = select(ScanRecord).order_by(ScanRecord.received_at.desc()).limit(n)
            return list(s.scalars(q))
