"""generation deadlines

`generations.deadline_at`: set by a create with a `Cancel-After` header; a generation that has not
ended by then fails with "Deadline exceeded" (the worker's step check, or the reaper).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-15 11:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from daguerre.store.schema import UTCDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("generations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("deadline_at", UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("generations", schema=None) as batch_op:
        batch_op.drop_column("deadline_at")
