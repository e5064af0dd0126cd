"""Stations: the scanner stations that post scans, each known by its key's SHA-256; keys
can be rotated (the old one valid for a grace period) and revoked (refused at once).

Every change logs the station's whole new state (``facts.station_fact_of``; the key hashes
as their SHA-256), so ``cargoscan audit verify`` finds a row edited behind the service's back
(a key hash swapped, a revocation undone)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select
from sqlalchemy.exc import IntegrityError

from inference.service import audit
from inference.service.db import Station, iso, utcnow
from inference.service.facts import station_fact_of
from inference.service.records.base import DuplicateName, Repository

MAX_GRACE_S = 30 * 24 * 3600
"""Longest grace period of a rotated key: an old key valid longer is a key never rotated."""


class StationRevoked(ValueError):
    """The station's keys were revoked: nothing more can be done with it."""


class StationRecords(Repository):
    """The scanner stations and their keys' hashes."""

    def add_station(self, name: str, key_hash: str, actor: str = "cli") -> Station:
        try:
            with self.session() as s:
                station = Station(name=name, key_hash=key_hash)
                s.add(station)
                s.flush()
                audit.append(
                    s,
                    "station.created",
                    actor,
                    name,
                    {"station_id": station.id, "row": station_fact_of(station)},
                )
                return station
        except IntegrityError:
            raise DuplicateName(f"a station named {name!r} exists already") from None

    def stations(self) -> list[Station]:
        with self.session() as s:
            return list(s.scalars(select(Station).order_by(Station.name)))

    def station_by_key_hash(self, key_hash: str, now: datetime | None = None) -> Station | None:
        """The station whose current key, or previous key within its grace period, this is;
        None for a revoked station (every request is looked up: revocation is immediate)."""
        now = now or utcnow()
        with self.session() as s:
            return s.scalars(
                select(Station).where(
                    Station.revoked_at.is_(None),
                    or_(
                        Station.key_hash == key_hash,
                        and_(
                            Station.previous_key_hash == key_hash,
                            Station.previous_key_expires_at > now,
                        ),
                    ),
                )
            ).first()

    def revoke_station(self, name: str, actor: str = "cli") -> Station | None:
        """Refuse the station's keys from now on (None: no such station; StationRevoked:
        revoked before). Its scans stay."""
        with self.session() as s:
            station = s.scalars(select(Station).where(Station.name == name)).first()
            if station is None:
                return None
            if station.revoked_at is not None:
                raise StationRevoked(f"station {name!r} was revoked at {iso(station.revoked_at)}")
            station.revoked_at = utcnow()
            station.previous_key_hash = None
            station.previous_key_expires_at = None
            s.flush()
            audit.append(
                s,
                "station.revoked",
                actor,
                name,
                {"station_id": station.id, "row": station_fact_of(station)},
            )
            return station

    def rotate_station_key(
        self, name: str, key_hash: str, grace_s: float, actor: str = "cli"
    ) -> Station | None:
        """Give the station a new key; the current one stays valid ``grace_s`` seconds (0:
        not at all), a key older than that is refused at once. None: no such station."""
        with self.session() as s:
            station = s.scalars(select(Station).where(Station.name == name)).first()
            if station is None:
                return None
            if station.revoked_at is not None:
                raise StationRevoked(
                    f"station {name!r} was revoked at {iso(station.revoked_at)}: add a new "
                    "station instead"
                )
            until = utcnow() + timedelta(seconds=grace_s) if grace_s > 0 else None
            station.previous_key_hash = station.key_hash if until is not None else None
            station.previous_key_expires_at = until
            station.key_hash = key_hash
            s.flush()
            audit.append(
                s,
                "station.key_rotated",
                actor,
                name,
                {
                    "station_id": station.id,
                    "grace_s": grace_s,
                    "old_key_valid_until": iso(until),
                    "row": station_fact_of(station),  # never the key: facts.py
                },
            )
            return station
