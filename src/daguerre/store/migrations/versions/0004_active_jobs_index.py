"""active jobs index

An index on (account_id, state), so the concurrency check at create time counts an account's
queued and processing generations without scanning its history.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24 06:00:00
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("generations", schema=None) as batch_op:
        batch_op.create_index("ix_generations_account_state", ["account_id", "state"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("generations", schema=None) as batch_op:
        batch_op.drop_index("ix_generations_account_state")
