"""Reviews decide the manifest check's discrepancies too (issue 26): a nullable JSON column.

Each review of a result with manifest discrepancies stores, per discrepancy, its index,
the officer's decision (confirm | reject) and a snapshot of it (``cargo_review``). Reviews
stored before have NULL there and hash as before (``evidence.review_dict`` leaves the key
out when there is nothing), so their audit entries and signatures still match. Adding a
column is no UPDATE: the append-only triggers of 0003 stay as they are.

Revision ID: 0007
Revises: 0006
Create Date: 2027-01-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("reviews", sa.Column("discrepancies", sa.JSON(), nullable=True))


def downgrade() -> None:
    # ALTER TABLE DROP COLUMN in place (SQLite 3.35+ and PostgreSQL): a batch copy of the
    # table would drop its append-only triggers with the old table.
    op.execute("ALTER TABLE reviews DROP COLUMN discrepancies")
