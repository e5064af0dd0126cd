"""The audit log (hash-chained, append-only), its head, result and review signatures; the
database refuses UPDATE and DELETE on the append-only tables.

The chain starts here: its first entry (``audit.start``) counts the rows stored before
it, which have no entries of their own.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_TIME = sa.DateTime(timezone=True)
# Kept in step with inference.service.audit.APPEND_ONLY_TABLES.
APPEND_ONLY = ("audit_log", "signatures", "results", "reviews", "reopenings")
COUNTED = ("stations", "scans", "results", "model_activations", "users", "reviews", "reopenings")


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=True),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("entry_hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("prev_hash"),
        sa.UniqueConstraint("entry_hash"),
    )
    op.create_index("ix_audit_log_kind", "audit_log", ["kind"])
    op.create_index("ix_audit_log_subject", "audit_log", ["subject"])
    op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("entry_hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "signatures",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("subject", sa.String(length=20), nullable=False),
        sa.Column("subject_id", sa.Integer(), nullable=False),
        sa.Column("key_sha256", sa.String(length=64), nullable=False),
        sa.Column("statement", sa.Text(), nullable=False),
        sa.Column("signature", sa.String(length=100), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_signatures_subject", "signatures", ["subject", "subject_id"])

    _start_chain()
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        _sqlite_triggers()
    elif dialect == "postgresql":
        _postgres_triggers()


def _start_chain() -> None:
    """The first entry and the head row pointing at it."""
    from inference.service.audit import GENESIS_PREV, HEAD_ID, entry_hash
    from inference.service.db import utcnow

    conn = op.get_bind()
    counts = {
        t: int(conn.execute(sa.text(f"SELECT COUNT(*) FROM {t}")).scalar() or 0) for t in COUNTED
    }
    at = utcnow()
    data = {"revision": revision, "rows_before": counts}
    actor, kind = "migration", "audit.start"
    digest = entry_hash(
        seq=1, at=at, kind=kind, actor=actor, subject=None, data=data, prev=GENESIS_PREV
    )
    log = sa.table(
        "audit_log",
        sa.column("seq", sa.Integer()),
        sa.column("created_at", _TIME),
        sa.column("kind", sa.String()),
        sa.column("actor", sa.String()),
        sa.column("subject", sa.String()),
        sa.column("data", sa.JSON()),
        sa.column("prev_hash", sa.String()),
        sa.column("entry_hash", sa.String()),
    )
    # Naive UTC on SQLite (as db.UTCDateTime stores it), aware elsewhere.
    stored_at = at.replace(tzinfo=None) if conn.dialect.name == "sqlite" else at
    op.bulk_insert(
        log,
        [
            {
                "seq": 1,
                "created_at": stored_at,
                "kind": kind,
                "actor": actor,
                "subject": None,
                "data": data,
                "prev_hash": GENESIS_PREV,
                "entry_hash": digest,
            }
        ],
    )
    head = sa.table(
        "audit_head",
        sa.column("id", sa.Integer()),
        sa.column("seq", sa.Integer()),
        sa.column("entry_hash", sa.String()),
    )
    op.bulk_insert(head, [{"id": HEAD_ID, "seq": 1, "entry_hash": digest}])


def _sqlite_triggers() -> None:
    for table in APPEND_ONLY:
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: {action} refused'); END"
            )
    op.execute(
        "CREATE TRIGGER audit_head_no_delete BEFORE DELETE ON audit_head "
        "BEGIN SELECT RAISE(ABORT, 'audit_head: DELETE refused'); END"
    )
    # The head only stays (the appender's lock) or moves to the entry just appended.
    op.execute(
        "CREATE TRIGGER audit_head_forward BEFORE UPDATE ON audit_head WHEN NOT ("
        "NEW.id = OLD.id AND ((NEW.seq = OLD.seq AND NEW.entry_hash = OLD.entry_hash) OR "
        "(NEW.seq = OLD.seq + 1 AND NEW.entry_hash = "
        "(SELECT entry_hash FROM audit_log WHERE seq = NEW.seq)))) "
        "BEGIN SELECT RAISE(ABORT, 'audit_head only moves to the newest audit_log entry'); END"
    )


def _postgres_triggers() -> None:
    op.execute(
        "CREATE FUNCTION cargoscan_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP; END $$"
    )
    for table in APPEND_ONLY:
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION cargoscan_append_only()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION cargoscan_append_only()"
        )
    op.execute(
        "CREATE FUNCTION cargoscan_audit_head_forward() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN "
        "IF TG_OP <> 'UPDATE' THEN RAISE EXCEPTION 'audit_head: % refused', TG_OP; END IF; "
        "IF NEW.id = OLD.id AND ((NEW.seq = OLD.seq AND NEW.entry_hash = OLD.entry_hash) OR "
        "(NEW.seq = OLD.seq + 1 AND NEW.entry_hash = "
        "(SELECT entry_hash FROM audit_log WHERE seq = NEW.seq))) THEN RETURN NEW; END IF; "
        "RAISE EXCEPTION 'audit_head only moves to the newest audit_log entry'; END $$"
    )
    op.execute(
        "CREATE TRIGGER audit_head_forward BEFORE UPDATE OR DELETE ON audit_head "
        "FOR EACH ROW EXECUTE FUNCTION cargoscan_audit_head_forward()"
    )
    op.execute(
        "CREATE TRIGGER audit_head_no_truncate BEFORE TRUNCATE ON audit_head "
        "FOR EACH STATEMENT EXECUTE FUNCTION cargoscan_append_only()"
    )


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for table in APPEND_ONLY:
            for action in ("update", "delete"):
                op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{action}")
    elif dialect == "postgresql":
        for table in APPEND_ONLY:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
        op.execute("DROP FUNCTION IF EXISTS cargoscan_append_only() CASCADE")
        op.execute("DROP FUNCTION IF EXISTS cargoscan_audit_head_forward() CASCADE")
    op.drop_index("ix_signatures_subject", table_name="signatures")
    op.drop_table("signatures")
    op.drop_table("audit_head")
    op.drop_index("ix_audit_log_subject", table_name="audit_log")
    op.drop_index("ix_audit_log_kind", table_name="audit_log")
    op.drop_table("audit_log")
