"""previews

`generations.preview_step` / `preview`: the running attempt's latest preview (a small JPEG), written
by embedded workers about every second at most, read by the events stream, cleared at the end.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01 23:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("generations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("preview_step", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("preview", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("generations", schema=None) as batch_op:
        batch_op.drop_column("preview")
        batch_op.drop_column("preview_step")
