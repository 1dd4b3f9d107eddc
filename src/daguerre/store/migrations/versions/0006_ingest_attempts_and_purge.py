"""ingest attempts and retention purge

`files.ingest_attempts`: how many times an upload's ingest has started; the maintenance task
gives up (the file fails with a reason) after a few, so an upload that kills its ingest is not
decoded again for ever. `generations.purged_at`: when the retention policy deleted the
generation's output and input blobs (the row itself is kept for usage and billing).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 15:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from daguerre.store.schema import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("files", schema=None) as batch_op:
        batch_op.add_column(sa.Column("ingest_attempts", sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("generations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("purged_at", UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("generations", schema=None) as batch_op:
        batch_op.drop_column("purged_at")
    with op.batch_alter_table("files", schema=None) as batch_op:
        batch_op.drop_column("ingest_attempts")
