"""Seal what access rests on: stations, users, live sessions, and the model activations and
re-openings that have no audit entry of their own.

Why: ``cargoscan audit verify`` held scans, results, reviews and re-openings against the
log, but not the rows that decide who gets in (a station's key hash and revocation, a
user's role, password hash and state, a session token) nor which model serves. Since this
revision every entry that changes one of them carries its new state (``facts.py``:
``row``; a login and a logout the SHA-256 of the token's hash; a model activation the
SHA-256 of its whole row). The rows stored before get one ``audit.sealed`` entry (subject
``revision 0006``) holding their state now:

- ``stations`` and ``users``: each row's fact (key and password hashes as their SHA-256);
- ``user_tokens``: the sessions live now (not revoked, not expired), as a login records them;
- ``model_activations`` and ``reopenings``: the SHA-256 of each row that has no entry (those
  stored before the log began at 0003).

A database with nothing to seal gets no entry. No table changes.

Revision ID: 0006
Revises: 0005
Create Date: 2027-01-20
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


class _Row:
    """A row's columns as attributes (what the fact functions read)."""

    def __init__(self, columns: Any) -> None:
        self.__dict__.update(dict(columns))


def _table(name: str, *columns: tuple[str, Any]) -> sa.TableClause:
    return sa.table(name, *(sa.column(c, t) for c, t in columns))


def upgrade() -> None:
    from inference.service.audit import HEAD_ID, entry_hash
    from inference.service.db import UTCDateTime, utcnow
    from inference.service.facts import (
        ACCESS_SEAL_SUBJECT,
        activation_fact_of,
        fact_sha256,
        reopening_fact_of,
        station_fact_of,
        token_fact_of,
        user_fact_of,
    )

    conn = op.get_bind()
    t, s, i = UTCDateTime(), sa.String(), sa.Integer()
    stations = _table(
        "stations",
        ("id", i),
        ("name", s),
        ("key_hash", s),
        ("created_at", t),
        ("revoked_at", t),
        ("previous_key_hash", s),
        ("previous_key_expires_at", t),
    )
    users = _table(
        "users",
        ("id", i),
        ("name", s),
        ("role", s),
        ("password_hash", s),
        ("active", sa.Boolean()),
        ("created_at", t),
    )
    tokens = _table(
        "user_tokens", ("user_id", i), ("token_hash", s), ("expires_at", t), ("revoked_at", t)
    )
    activations = _table(
        "model_activations",
        ("id", i),
        ("created_at", t),
        ("source", s),
        ("path", s),
        ("name", s),
        ("version", s),
        ("sha256", s),
        ("checks", sa.JSON()),
    )
    reopenings = _table(
        "reopenings",
        ("id", i),
        ("scan_id", s),
        ("user_id", i),
        ("created_at", t),
        ("reason", s),
    )
    log = _table(
        "audit_log",
        ("seq", i),
        ("created_at", t),
        ("kind", s),
        ("actor", s),
        ("subject", s),
        ("data", sa.JSON()),
        ("prev_hash", s),
        ("entry_hash", s),
    )

    def rows(table: sa.TableClause, *where: Any) -> list[_Row]:
        q = sa.select(table).where(*where)
        if "id" in table.c:
            q = q.order_by(table.c.id)
        return [_Row(r) for r in conn.execute(q).mappings()]

    def logged(kind: str, key: str) -> set[Any]:
        q = sa.select(log.c.data).where(log.c.kind == kind)
        return {(d or {}).get(key) for (d,) in conn.execute(q)}

    now = utcnow()
    live = rows(tokens, tokens.c.revoked_at.is_(None), tokens.c.expires_at > now)
    had_activation = logged("model.activated", "activation_id")
    had_reopening = logged("review.reopened", "reopening_id")
    data: dict[str, Any] = {
        "revision": revision,
        "stations": [station_fact_of(r) for r in rows(stations)],
        "users": [user_fact_of(r) for r in rows(users)],
        "user_tokens": sorted(
            (token_fact_of(r) for r in live), key=lambda f: str(f["token_sha256"])
        ),
        "model_activations": {
            str(r.id): fact_sha256(activation_fact_of(r))
            for r in rows(activations)
            if r.id not in had_activation
        },
        "reopenings": {
            str(r.id): fact_sha256(reopening_fact_of(r))
            for r in rows(reopenings)
            if r.id not in had_reopening
        },
    }
    if not any(data[k] for k in data if k != "revision"):
        return
    head = _table("audit_head", ("id", i), ("seq", i), ("entry_hash", s))
    seq, prev = conn.execute(sa.select(head.c.seq, head.c.entry_hash)).one()
    seq += 1
    kind, actor, subject = "audit.sealed", "migration", ACCESS_SEAL_SUBJECT
    digest = entry_hash(
        seq=seq, at=now, kind=kind, actor=actor, subject=subject, data=data, prev=prev
    )
    conn.execute(
        log.insert().values(
            seq=seq,
            created_at=now,
            kind=kind,
            actor=actor,
            subject=subject,
            data=data,
            prev_hash=prev,
            entry_hash=digest,
        )
    )
    conn.execute(head.update().where(head.c.id == HEAD_ID).values(seq=seq, entry_hash=digest))


def downgrade() -> None:
    """Nothing to undo: the seal is an audit entry, and the log is append-only."""
