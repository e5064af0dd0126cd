"""Every database read and write of the service, each in its own short transaction.

The functions are synchronous (SQLAlchemy's ORM is) and are called from worker threads,
never on the event loop. Objects are returned detached (``expire_on_commit=False``) so
callers can read their columns after the session closed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from inference.service.db import ModelActivation, ResultRecord, ScanRecord, Station


class DuplicateName(ValueError):
    """A station of that name exists already."""


@dataclass
class Page:
    items: list[tuple[ScanRecord, ResultRecord | None]]
    total: int


class Records:
    """Data access over one SQLAlchemy engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions() as s, s.begin():
            yield s

    # ----------------------------------------------------------------- stations

    def add_station(self, name: str, key_hash: str) -> Station:
        try:
            with self.session() as s:
                station = Station(name=name, key_hash=key_hash)
                s.add(station)
                s.flush()
                return station
        except IntegrityError:
            raise DuplicateName(f"a station named {name!r} exists already") from None

    def stations(self) -> list[Station]:
        with self.session() as s:
            return list(s.scalars(select(Station).order_by(Station.name)))

    def station_by_key_hash(self, key_hash: str) -> Station | None:
        with self.session() as s:
            return s.scalars(select(Station).where(Station.key_hash == key_hash)).first()

    # ----------------------------------------------------------------- scans

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
                result.scan_id = scan.id
                s.add(result)
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
            return True
        except IntegrityError:
            return False

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

    # ----------------------------------------------------------------- models

    def add_activation(
        self, *, source: str, path: str, info: dict[str, str], checks: dict[str, Any]
    ) -> None:
        with self.session() as s:
            s.add(
                ModelActivation(
                    source=source,
                    path=path,
                    name=info["name"],
                    version=info["version"],
                    sha256=info["sha256"],
                    checks=checks,
                )
            )

    def latest_activation(self, source: str | None = None) -> ModelActivation | None:
        with self.session() as s:
            q = select(ModelActivation)
            if source is not None:
                q = q.where(ModelActivation.source == source)
            return s.scalars(q.order_by(ModelActivation.id.desc()).limit(1)).first()
