"""the outbox of scale-out execution

`generations.outbox_at`: set by a create when execution is "temporal" (the row is committed, its
workflow not started yet), cleared once the workflow is started; the relay starts whatever is still
set after a few seconds. A partial index holds only those rows, so embedded creates (which leave
the column NULL) add no index entry.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from daguerre.store.schema import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_PENDING = sa.text("outbox_at IS NOT NULL")


def upgrade() -> None:
    with op.batch_alter_table("generations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("outbox_at", UTCDateTime(), nullable=True))
    op.create_index(
        "ix_generations_outbox",
        "generations",
        ["outbox_at"],
        unique=False,
        sqlite_where=_PENDING,
        postgresql_where=_PENDING,
    )


def downgrade() -> None:
    op.drop_index("ix_generations_outbox", table_name="generations")
    with op.batch_alter_table("generations", schema=None) as batch_op:
        batch_op.drop_column("outbox_at")
