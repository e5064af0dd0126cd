"""The stored facts a decision rests on, in the one form the audit log hashes: a scan record
(who sent what, when, with which metadata), a result row and a review.

Why a module of its own: the same dict must come out of a database row (when the entry is
written, and when ``cargoscan audit verify`` checks the row against it), out of an evidence
package's ``scan.json`` (when ``cargoscan verify`` checks the package against its audit
entries) and out of migration 0004 (which seals the rows stored before entries carried
these hashes). Change a field here and every stored hash stops matching: add a new kind of
fact instead.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

from inference.service.db import iso
from inference.service.signing import canonical, sha256_hex

SCAN_FIELDS = (
    "id",
    "station",
    "station_scan_id",
    "received_at",
    "scan_time",
    "width",
    "height",
    "bit_depth",
    "high_sha256",
    "low_sha256",
    "metadata",
)
"""What a scan's hash covers: the fields of the API's scan summary (``scan.json``) that are
the station's words or the stored bytes' names (not the URLs derived from them)."""

SCAN_ENTRY_FIELDS = (
    "station_scan_id",
    "high_sha256",
    "high_bytes",
    "low_sha256",
    "low_bytes",
    "width",
    "height",
    "bit_depth",
)
"""What a ``scan.received`` entry has said of the scan since the chain began (revision
0003): checked field by field, also for entries written before ``scan_sha256``."""


def scan_fact(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The hashed form of a scan from its summary (``api.scan_summary`` or ``scan.json``)."""
    return {k: summary.get(k) for k in SCAN_FIELDS}


def scan_fact_of(scan: Any, station_name: str) -> dict[str, Any]:
    """The hashed form of a ``db.ScanRecord`` sent by ``station_name``."""
    return {
        "id": scan.id,
        "station": station_name,
        "station_scan_id": scan.station_scan_id,
        "received_at": iso(scan.received_at),
        "scan_time": iso(scan.scan_time),
        "width": scan.width,
        "height": scan.height,
        "bit_depth": scan.bit_depth,
        "high_sha256": scan.high_sha256,
        "low_sha256": scan.low_sha256,
        "metadata": scan.meta,
    }


def result_fact_of(result: Any) -> dict[str, Any]:
    """The hashed form of a ``db.ResultRecord``: every column."""
    return {
        "id": result.id,
        "scan_id": result.scan_id,
        "model_name": result.model_name,
        "model_version": result.model_version,
        "model_sha256": result.model_sha256,
        "created_at": iso(result.created_at),
        "verdict": result.verdict,
        "risk": result.risk,
        "processing_ms": result.processing_ms,
        "anomaly_sha256": result.anomaly_sha256,
        "body": result.body,
    }


def fact_sha256(fact: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of a fact's canonical JSON."""
    return sha256_hex(canonical(dict(fact)))


def seal_digest(pairs: Iterable[tuple[Any, str]]) -> str:
    """One SHA-256 over ``(id, fact hash)`` pairs in the order given (ascending id): what
    migration 0004 logs for the rows stored before entries carried their own hash."""
    h = hashlib.sha256()
    for ident, digest in pairs:
        h.update(f"{ident}:{digest}\n".encode())
    return h.hexdigest()


# --------------------------------------------------------------------------- access facts
#
# Stations, users, their sessions and the model activations are what access and the
# serving model rest on: whoever edits a station's key hash, un-revokes it, raises a user's
# role or slips in a session token gets in without a trace in the chain, unless the rows
# are held against entries too. Revision 0006 seals their state at the upgrade; since then
# every entry that changes one carries its new state (``row``). Secrets (a key's or a
# password's hash) go in as their SHA-256 only: the log checks them without holding them.

ACCESS_SEAL_SUBJECT = "revision 0006"
"""The subject of the ``audit.sealed`` entry of migration 0006 (0004's has none)."""

STATION_FIELDS = {
    "id": "id",
    "name": "name",
    "key_hash_sha256": "key hash",
    "created_at": "creation time",
    "revoked_at": "revocation",
    "previous_key_hash_sha256": "previous key hash",
    "previous_key_expires_at": "previous key's grace period",
}
"""A station's fact: its column (or the SHA-256 of a key hash) -> how a report names it."""

USER_FIELDS = {
    "id": "id",
    "name": "name",
    "role": "role",
    "password_hash_sha256": "password hash",
    "active": "active",
    "created_at": "creation time",
}
"""A user's fact, as :data:`STATION_FIELDS`."""


def secret_sha256(value: str | None) -> str | None:
    """SHA-256 (hex) of a stored secret's hash (a key's, a password's, a token's)."""
    return None if value is None else sha256_hex(value.encode("utf-8"))


def station_fact_of(station: Any) -> dict[str, Any]:
    """The hashed form of a ``db.Station``: every column, the key hashes as their SHA-256."""
    return {
        "id": station.id,
        "name": station.name,
        "key_hash_sha256": secret_sha256(station.key_hash),
        "created_at": iso(station.created_at),
        "revoked_at": iso(station.revoked_at),
        "previous_key_hash_sha256": secret_sha256(station.previous_key_hash),
        "previous_key_expires_at": iso(station.previous_key_expires_at),
    }


def user_fact_of(user: Any) -> dict[str, Any]:
    """The hashed form of a ``db.User``: every column, the password hash as its SHA-256."""
    return {
        "id": user.id,
        "name": user.name,
        "role": user.role,
        "password_hash_sha256": secret_sha256(user.password_hash),
        "active": bool(user.active),
        "created_at": iso(user.created_at),
    }


def token_fact_of(token: Any) -> dict[str, Any]:
    """What a ``user.login`` entry (or the seal) says of a session token."""
    return {
        "token_sha256": secret_sha256(token.token_hash),
        "user_id": token.user_id,
        "expires_at": iso(token.expires_at),
    }


def activation_fact_of(row: Any) -> dict[str, Any]:
    """The hashed form of a ``db.ModelActivation``: every column."""
    return {
        "id": row.id,
        "created_at": iso(row.created_at),
        "source": row.source,
        "path": row.path,
        "name": row.name,
        "version": row.version,
        "sha256": row.sha256,
        "checks": row.checks,
    }


def reopening_fact_of(row: Any) -> dict[str, Any]:
    """The hashed form of a ``db.Reopening``: every column."""
    return {
        "id": row.id,
        "scan_id": row.scan_id,
        "user_id": row.user_id,
        "created_at": iso(row.created_at),
        "reason": row.reason,
    }
