"""one account index

`(account_id, state, created_at)` replaces `(account_id, created_at)` and `(account_id, state)`:
the concurrency check reads its first two columns, the usage report all three (with every state
listed). One fewer random B-tree insert per create.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24 10:00:00
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("generations", schema=None) as batch_op:
        batch_op.create_index(
            "ix_generations_account_state_created", ["account_id", "state", "created_at"], unique=False
        )
        batch_op.drop_index("ix_generations_account_state")
        batch_op.drop_index("ix_generations_account_created")


def downgrade() -> None:
    with op.batch_alter_table("generations", schema=None) as batch_op:
        batch_op.create_index("ix_generations_account_created", ["account_id", "created_at"], unique=False)
        batch_op.create_index("ix_generations_account_state", ["account_id", "state"], unique=False)
        batch_op.drop_index("ix_generations_account_state_created")
