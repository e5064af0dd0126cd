"""Stations: the scanners that post scans, each known by its key's SHA-256."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from inference.service import audit
from inference.service.db import Station
from inference.service.records.base import DuplicateName, Repository


class StationRecords(Repository):
    """The scanner stations and their keys' hashes."""

    def add_station(self, name: str, key_hash: str, actor: str = "cli") -> Station:
        try:
            with self.session() as s:
                station = Station(name=name, key_hash=key_hash)
                s.add(station)
                s.flush()
                audit.append(s, "station.created", actor, name, {"station_id": station.id})
                return station
        except IntegrityError:
            raise DuplicateName(f"a station named {name!r} exists already") from None

    def stations(self) -> list[Station]:
        with self.session() as s:
            return list(s.scalars(select(Station).order_by(Station.name)))

    def station_by_key_hash(self, key_hash: str) -> Station | None:
        with self.session() as s:
            return s.scalars(select(Station).where(Station.key_hash == key_hash)).first()
