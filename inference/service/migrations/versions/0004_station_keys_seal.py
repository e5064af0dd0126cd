"""Station keys that can be revoked and rotated; scans append-only; the rows stored before
audit entries carried a hash of each record sealed in one entry.

- ``stations``: ``revoked_at``, and the previous key's hash with the end of its grace period.
- ``scans``: the database refuses UPDATE and DELETE, as for results (0003).
- ``audit.sealed``: since this revision ``scan.received`` entries hold the SHA-256 of the
  whole scan record and ``result`` entries that of the whole result row
  (``inference.service.facts``). Rows stored before had less of them in the chain (or,
  before 0003, nothing): one entry now logs, per table, how many there are and one digest
  over all their hashes, so ``cargoscan audit verify`` finds an edit of any of them too.
  A database with nothing to seal gets no entry.

Revision ID: 0004
Revises: 0003
Create Date: 2027-01-12
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    # Plain ADD COLUMN and a unique index: SQLite's batch mode would copy the table, and
    # dropping the old one trips the scans' foreign keys.
    op.add_column("stations", sa.Column("revoked_at", _TIME, nullable=True))
    op.add_column("stations", sa.Column("previous_key_hash", sa.String(length=64), nullable=True))
    op.add_column("stations", sa.Column("previous_key_expires_at", _TIME, nullable=True))
    op.create_index("ix_stations_previous_key_hash", "stations", ["previous_key_hash"], unique=True)
    _seal()
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER scans_no_{action.lower()} BEFORE {action} ON scans "
                f"BEGIN SELECT RAISE(ABORT, 'scans is append-only: {action} refused'); END"
            )
    elif dialect == "postgresql":
        op.execute(
            "CREATE TRIGGER scans_append_only BEFORE UPDATE OR DELETE ON scans "
            "FOR EACH ROW EXECUTE FUNCTION cargoscan_append_only()"
        )
        op.execute(
            "CREATE TRIGGER scans_no_truncate BEFORE TRUNCATE ON scans "
            "FOR EACH STATEMENT EXECUTE FUNCTION cargoscan_append_only()"
        )


def _seal() -> None:
    """Append ``audit.sealed`` for every scan, result and review row stored so far."""
    from inference.service.audit import HEAD_ID, entry_hash
    from inference.service.db import UTCDateTime, utcnow
    from inference.service.evidence import review_dict
    from inference.service.facts import (
        fact_sha256,
        result_fact_of,
        scan_fact_of,
        seal_digest,
    )

    conn = op.get_bind()
    t = UTCDateTime()
    stations = sa.table("stations", sa.column("id", sa.Integer()), sa.column("name", sa.String()))
    names = {r.id: r.name for r in conn.execute(sa.select(stations.c.id, stations.c.name))}
    scans = sa.table(
        "scans",
        *(sa.column(c, sa.String()) for c in ("id", "station_scan_id", "high_sha256")),
        *(sa.column(c, sa.String()) for c in ("low_sha256",)),
        *(sa.column(c, sa.Integer()) for c in ("station_id", "width", "height", "bit_depth")),
        sa.column("received_at", t),
        sa.column("scan_time", t),
        sa.column("metadata", sa.JSON()),
    )
    scan_pairs = []
    for r in conn.execute(sa.select(scans).order_by(scans.c.id)).mappings():
        row = _Row(**r, meta=r["metadata"])
        scan_pairs.append((row.id, fact_sha256(scan_fact_of(row, names[row.station_id]))))
    results = sa.table(
        "results",
        sa.column("id", sa.Integer()),
        *(sa.column(c, sa.String()) for c in ("scan_id", "model_name", "model_version")),
        *(sa.column(c, sa.String()) for c in ("model_sha256", "verdict", "anomaly_sha256")),
        sa.column("created_at", t),
        sa.column("risk", sa.Float()),
        sa.column("processing_ms", sa.Float()),
        sa.column("body", sa.JSON()),
    )
    result_pairs = [
        (r["id"], fact_sha256(result_fact_of(_Row(**r))))
        for r in conn.execute(sa.select(results).order_by(results.c.id)).mappings()
    ]
    log = sa.table(
        "audit_log",
        sa.column("seq", sa.Integer()),
        sa.column("created_at", t),
        sa.column("kind", sa.String()),
        sa.column("actor", sa.String()),
        sa.column("subject", sa.String()),
        sa.column("data", sa.JSON()),
        sa.column("prev_hash", sa.String()),
        sa.column("entry_hash", sa.String()),
    )
    logged_reviews = {
        (data or {}).get("review_id")
        for (data,) in conn.execute(sa.select(log.c.data).where(log.c.kind == "review"))
    }
    reviews = sa.table(
        "reviews",
        *(sa.column(c, sa.Integer()) for c in ("id", "result_id", "user_id")),
        *(sa.column(c, sa.String()) for c in ("scan_id", "user_role", "model_version")),
        *(sa.column(c, sa.String()) for c in ("verdict", "comment")),
        sa.column("created_at", t),
        sa.column("findings", sa.JSON()),
        sa.column("added", sa.JSON()),
    )
    users = sa.table("users", sa.column("id", sa.Integer()), sa.column("name", sa.String()))
    user_names = {r.id: r.name for r in conn.execute(sa.select(users.c.id, users.c.name))}
    review_pairs = [
        (r["id"], fact_sha256(review_dict(_Row(**r, user=_Row(name=user_names[r["user_id"]])))))
        for r in conn.execute(sa.select(reviews).order_by(reviews.c.id)).mappings()
        if r["id"] not in logged_reviews
    ]
    if not (scan_pairs or result_pairs or review_pairs):
        return
    data: dict[str, Any] = {"revision": revision}
    for name, pairs in (("scans", scan_pairs), ("results", result_pairs)):
        data[name] = {"count": len(pairs), "sha256": seal_digest(pairs)}
    data["reviews"] = {"count": len(review_pairs), "sha256": seal_digest(review_pairs)}
    head = sa.table(
        "audit_head",
        sa.column("id", sa.Integer()),
        sa.column("seq", sa.Integer()),
        sa.column("entry_hash", sa.String()),
    )
    seq, prev = conn.execute(sa.select(head.c.seq, head.c.entry_hash)).one()
    seq += 1
    at = utcnow()
    kind, actor = "audit.sealed", "migration"
    digest = entry_hash(seq=seq, at=at, kind=kind, actor=actor, subject=None, data=data, prev=prev)
    conn.execute(
        log.insert().values(
            seq=seq,
            created_at=at,
            kind=kind,
            actor=actor,
            subject=None,
            data=data,
            prev_hash=prev,
            entry_hash=digest,
        )
    )
    conn.execute(head.update().where(head.c.id == HEAD_ID).values(seq=seq, entry_hash=digest))


class _Row:
    """A row's columns as attributes (what the fact functions read)."""

    def __init__(self, **columns: Any) -> None:
        self.__dict__.update(columns)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for action in ("update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS scans_no_{action}")
    elif dialect == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS scans_append_only ON scans")
        op.execute("DROP TRIGGER IF EXISTS scans_no_truncate ON scans")
    op.drop_index("ix_stations_previous_key_hash", table_name="stations")
    for column in ("previous_key_expires_at", "previous_key_hash", "revoked_at"):
        op.drop_column("stations", column)
