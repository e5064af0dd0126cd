"""Who is asking: station API keys and the admin key, as FastAPI dependencies.

A station key is 32 random bytes (``cs_`` + URL-safe base64); the database keeps only its
SHA-256. A slow password hash would add nothing: the key has 256 bits of entropy, so its
hash cannot be brute-forced, and a plain hash can be looked up by index in one query.

The admin key (``CARGOSCAN_ADMIN_KEY``) is for the operator and the ML engineer: model
roll-out, and reading every station's scans. It cannot post scans (a scan belongs to a
station). Without it configured, the admin API answers 403.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request

KEY_PREFIX = "cs_"


def new_key() -> str:
    """A fresh station API key (shown once, never stored)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: a station (``station_id`` set) or the admin."""

    name: str
    station_id: int | None = None

    @property
    def is_admin(self) -> bool:
        return self.station_id is None


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(401, message, headers={"WWW-Authenticate": 'Bearer realm="cargoscan"'})


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization")
    if not header:
        raise _unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise _unauthorized("malformed Authorization header: expected 'Bearer <key>'")
    return key.strip()


def _is_admin_key(request: Request, key: str) -> bool:
    admin = request.app.state.service.settings.admin_key
    if admin is None or not admin.get_secret_value():
        return False
    return hmac.compare_digest(hash_key(key), hash_key(admin.get_secret_value()))


def principal(request: Request) -> Principal:
    """Any valid key: a station's or the admin's (401 otherwise)."""
    key = _bearer(request)
    if _is_admin_key(request, key):
        return Principal(name="admin")
    station = request.app.state.service.records.station_by_key_hash(hash_key(key))
    if station is None:
        raise _unauthorized("unknown API key")
    return Principal(name=station.name, station_id=station.id)


def station(who: Annotated[Principal, Depends(principal)]) -> Principal:
    """A station's key (the admin key gets 403: scans belong to stations)."""
    if who.is_admin:
        raise HTTPException(403, "the admin key cannot post scans; use a station's key")
    return who


def admin(request: Request) -> Principal:
    """The admin key only (403 for station keys, or when no admin key is configured)."""
    key = _bearer(request)
    if _is_admin_key(request, key):
        return Principal(name="admin")
    if request.app.state.service.settings.admin_key is None:
        raise HTTPException(403, "the admin API is off: set CARGOSCAN_ADMIN_KEY on the server")
    if request.app.state.service.records.station_by_key_hash(hash_key(key)) is not None:
        raise HTTPException(403, "this endpoint needs the admin key, not a station's")
    raise _unauthorized("unknown API key")


AnyCaller = Annotated[Principal, Depends(principal)]
StationCaller = Annotated[Principal, Depends(station)]
AdminCaller = Annotated[Principal, Depends(admin)]
