"""engine progress

`generations.progress_step` / `progress_total`: the running attempt's engine steps, written by
embedded workers at most every quarter second, read by the events stream.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-15 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("generations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("progress_step", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("progress_total", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("generations", schema=None) as batch_op:
        batch_op.drop_column("progress_total")
        batch_op.drop_column("progress_step")
