"""Scans' container and vehicle ids in a table of their own, indexed, for the viewer's
"earlier scans of this container or vehicle" (``records.identifiers``).

The ids live in the scans' metadata JSON, which cannot be indexed portably; this table
holds them normalised, one row per (scan, kind, id), with an index on (kind, value). It is
filled here for every scan stored before (the scans themselves are not touched: they are
append-only since 0004).

Revision ID: 0005
Revises: 0004
Create Date: 2027-01-14
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

BATCH = 500


def upgrade() -> None:
    op.create_table(
        "scan_identifiers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("scan_id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("value", sa.String(length=100), nullable=False),
        sa.ForeignKeyConstraint(["scan_id"], ["scans.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("scan_id", "kind", "value", name="uq_scan_identifiers"),
    )
    op.create_index("ix_scan_identifiers_kind_value", "scan_identifiers", ["kind", "value"])
    _fill()


def _fill() -> None:
    """One row per container and vehicle id of every scan stored so far."""
    from inference.service.records.identifiers import identifiers_of

    conn = op.get_bind()
    scans = sa.table("scans", sa.column("id", sa.String()), sa.column("metadata", sa.JSON()))
    target = sa.table(
        "scan_identifiers",
        sa.column("scan_id", sa.String()),
        sa.column("kind", sa.String()),
        sa.column("value", sa.String()),
    )
    last = ""
    while True:  # in pages of scans by id: the metadata of every scan at once could be large
        page = conn.execute(
            sa.select(scans.c.id, scans.c["metadata"])
            .where(scans.c.id > last)
            .order_by(scans.c.id)
            .limit(BATCH)
        ).all()
        if not page:
            return
        rows = [
            {"scan_id": scan_id, "kind": kind, "value": value}
            for scan_id, meta in page
            for kind, value in identifiers_of(meta)
        ]
        if rows:
            conn.execute(target.insert(), rows)
        last = page[-1][0]


def downgrade() -> None:
    op.drop_index("ix_scan_identifiers_kind_value", table_name="scan_identifiers")
    op.drop_table("scan_identifiers")
