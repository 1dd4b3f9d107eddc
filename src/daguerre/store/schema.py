"""Tables. Storage names (tables, state values, blob key shapes) are defined here once.

The `generations` row is the job: request, state, lease and outputs live together, so there is no
queue table to keep in step. Timestamps are stored as naive UTC and returned timezone-aware.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """A datetime stored as naive UTC on every database and returned with `tzinfo=UTC`."""

    impl = sa.DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC)

    def result_processor(self, dialect: Dialect, coltype: Any) -> Any:
        if dialect.name != "sqlite":
            return super().result_processor(dialect, coltype)

        # SQLite keeps SQLAlchemy's fixed 'YYYY-MM-DD HH:MM:SS.ffffff' text; the C parser reads it
        # several times faster than the generic regular-expression one (this is on every poll).
        def process(value: str | None) -> datetime | None:
            return None if value is None else datetime.fromisoformat(value).replace(tzinfo=UTC)

        return process


ID = sa.String(36)

accounts = sa.Table(
    "accounts",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("name", sa.String(100), nullable=False, unique=True),
    sa.Column("status", sa.String(16), nullable=False, server_default="active"),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    # Money, in integer micro-dollars. Unmetered accounts have no balance and are never charged.
    sa.Column("metered", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("balance", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("reserved", sa.BigInteger(), nullable=False, server_default="0"),
    # The most the account may spend (captured) in a calendar month (UTC); None: no cap.
    sa.Column("spend_cap", sa.BigInteger(), nullable=True),
    # Limits; None: the deployment's defaults.
    sa.Column("rpm_limit", sa.Integer(), nullable=True),
    sa.Column("concurrency_limit", sa.Integer(), nullable=True),
    # Webhooks (an extension): the signing secret (`whsec_...`, made on first use) and the URL that
    # generations created without a `callback_url` report to; None: none.
    sa.Column("webhook_secret", sa.String(64), nullable=True),
    sa.Column("webhook_url", sa.Text(), nullable=True),
    sa.CheckConstraint("status IN ('active', 'suspended', 'deactivated')", name="status"),
    sa.CheckConstraint("reserved >= 0", name="reserved"),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("account_id", ID, sa.ForeignKey("accounts.id"), nullable=False, index=True),
    sa.Column("name", sa.String(100), nullable=True),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("key_prefix", sa.String(20), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=True),
    sa.Column("revoked_at", UTCDateTime(), nullable=True),
)

generations = sa.Table(
    "generations",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("account_id", ID, sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("model", sa.String(32), nullable=False),
    sa.Column("type", sa.String(16), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("request", sa.Text(), nullable=False),  # JSON text, parsed only when a worker needs it
    sa.Column("aspect_ratio", sa.String(8), nullable=True),
    sa.Column("output_format", sa.String(8), nullable=False),
    sa.Column("user_id", sa.String(256), nullable=True),
    sa.Column("input_keys", sa.JSON(), nullable=False),
    sa.Column("output_keys", sa.JSON(), nullable=False),
    sa.Column("failure_code", sa.String(32), nullable=True),
    sa.Column("failure_reason", sa.Text(), nullable=True),
    sa.Column("priority", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("price", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("max_attempts", sa.Integer(), nullable=False),
    sa.Column("lease_owner", sa.String(200), nullable=True),
    sa.Column("lease_token", ID, nullable=True),
    sa.Column("lease_expires_at", UTCDateTime(), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("started_at", UTCDateTime(), nullable=True),
    sa.Column("finished_at", UTCDateTime(), nullable=True),
    # When the retention policy deleted this generation's output and input blobs; None: not yet.
    sa.Column("purged_at", UTCDateTime(), nullable=True),
    # The outbox (execution = "temporal"): when the create committed a row whose workflow is not
    # started yet; cleared once it is. Embedded creates never set it.
    sa.Column("outbox_at", UTCDateTime(), nullable=True),
    # `Cancel-After` (an extension): a generation not ended by then fails, "Deadline exceeded".
    sa.Column("deadline_at", UTCDateTime(), nullable=True),
    # The running attempt's engine progress (steps done, of how many), written by embedded workers
    # every quarter second at most; the events stream (api.events) reads it.
    sa.Column("progress_step", sa.Integer(), nullable=True),
    sa.Column("progress_total", sa.Integer(), nullable=True),
    # The running attempt's latest preview (a small JPEG, worker.previews) and the step it shows,
    # written about every second at most and cleared when the generation ends.
    sa.Column("preview_step", sa.Integer(), nullable=True),
    sa.Column("preview", sa.LargeBinary(), nullable=True),
    # The create's `callback_url` (an extension): where the ended generation is POSTed, and the
    # address the create reached the API at (output URLs in the payload are built on it).
    sa.Column("callback_url", sa.Text(), nullable=True),
    sa.Column("callback_base_url", sa.Text(), nullable=True),
    sa.CheckConstraint("state IN ('queued', 'processing', 'completed', 'failed')", name="state"),
    # One index per account serves both the concurrency check (account, active states) and the
    # usage report (account, every state, a created_at range): each index keyed by account id is a
    # random B-tree insert on every create, the main cost of a create on SQLite.
    sa.Index("ix_generations_account_state_created", "account_id", "state", "created_at"),
    sa.Index("ix_generations_queue", "state", "priority", "created_at"),
    sa.Index("ix_generations_lease", "state", "lease_expires_at"),
    # Only the rows in the outbox: a create that writes no outbox_at adds no index entry.
    sa.Index(
        "ix_generations_outbox",
        "outbox_at",
        sqlite_where=sa.text("outbox_at IS NOT NULL"),
        postgresql_where=sa.text("outbox_at IS NOT NULL"),
    ),
)


ledger = sa.Table(
    "ledger",
    metadata,
    sa.Column("generation_id", ID, sa.ForeignKey("generations.id"), primary_key=True),
    sa.Column("kind", sa.String(8), primary_key=True),
    sa.Column("account_id", ID, sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("amount", sa.BigInteger(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.CheckConstraint("kind IN ('reserve', 'capture', 'release')", name="kind"),
    sa.Index("ix_ledger_account_kind_created", "account_id", "kind", "created_at"),
)
"""Two-phase holds: a reserve at create, then exactly one capture or release per generation.
The primary key (generation_id, kind) makes a second capture or release impossible."""

files = sa.Table(
    "files",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("account_id", ID, sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("mime_type", sa.String(100), nullable=False),
    sa.Column("size_bytes", sa.BigInteger(), nullable=False),
    sa.Column("purpose", sa.String(16), nullable=False),
    sa.Column("filename", sa.String(255), nullable=True),
    sa.Column("user_id", sa.String(256), nullable=True),
    sa.Column("failure_reason", sa.Text(), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("uploaded_at", UTCDateTime(), nullable=True),
    sa.Column("expires_at", UTCDateTime(), nullable=True),
    sa.Column("deleted_at", UTCDateTime(), nullable=True),
    # Ingests started for this upload; the maintenance task stops retrying after a few.
    sa.Column("ingest_attempts", sa.Integer(), nullable=False, server_default="0"),
    sa.CheckConstraint("state IN ('pending', 'ready', 'failed', 'deleted')", name="state"),
    sa.CheckConstraint("purpose IN ('input', 'reference')", name="purpose"),
    sa.Index("ix_files_account_created", "account_id", "created_at", "id"),
    sa.Index("ix_files_expiry", "state", "expires_at"),
)


# Webhooks (an extension): one row per notification owed, written in the transaction that ended the
# generation (a durable outbox); `id` is the `webhook-id` of every attempt. Delivered rows are kept
# (the account can see them); `attempt_log` holds the last attempts as JSON.
webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("generation_id", ID, nullable=False, index=True),
    sa.Column("account_id", ID, sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("url", sa.Text(), nullable=False),
    sa.Column("base_url", sa.Text(), nullable=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("next_attempt_at", UTCDateTime(), nullable=True),
    sa.Column("attempt_log", sa.JSON(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("delivered_at", UTCDateTime(), nullable=True),
    sa.CheckConstraint("state IN ('pending', 'delivered', 'failed')", name="state"),
    sa.Index("ix_webhook_deliveries_due", "state", "next_attempt_at"),
)


# Idempotency-Key (an extension): a create that carried a key records it in its own transaction; a
# repeat with the same key finds the resource it made. Kept 24 hours (the sweeper deletes older
# ones). `scope` is the endpoint ("generations" or "files"); `request_hash` the SHA-256 of what the
# request asked for, to tell a repeat from a different request reusing the key.
idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column("account_id", ID, sa.ForeignKey("accounts.id"), primary_key=True),
    sa.Column("scope", sa.String(16), primary_key=True),
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("request_hash", sa.String(64), nullable=False),
    sa.Column("resource_id", ID, nullable=False),
    sa.Column("status_code", sa.Integer(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Index("ix_idempotency_keys_created", "created_at"),
)


def file_key(file_id: str) -> str:
    """Blob key of an uploaded file's bytes."""
    return f"files/{file_id}"


def upload_key(file_id: str) -> str:
    """Blob key a presigned PUT writes an upload's bytes to. Completing the upload moves them to
    `file_key`, so the bytes that were checked can no longer be replaced through the URL."""
    return f"uploads/{file_id}"


def input_key(generation_id: str, index: int) -> str:
    """Blob key of a generation's n-th input image (the source of an edit is input 0)."""
    return f"inputs/{generation_id}/{index}"


def input_prefix(generation_id: str) -> str:
    """The prefix of every input key of a generation."""
    return f"inputs/{generation_id}/"


def output_prefix(generation_id: str) -> str:
    """The prefix of every output key of a generation, of every attempt."""
    return f"outputs/{generation_id}/"


def output_key(generation_id: str, lease_token: str, index: int, extension: str) -> str:
    """Blob key of an output. The lease token in the key keeps a stale worker from overwriting the
    output of the worker that owns the job now."""
    return f"outputs/{generation_id}/{lease_token}/{index}.{extension}"


_UUID_TEXT = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_OUTPUT_KEY = re.compile(f"outputs/({_UUID_TEXT})/({_UUID_TEXT})/[0-9]+\\.[a-z]+")
_INPUT_KEY = re.compile(f"inputs/({_UUID_TEXT})/[0-9]+")


def parse_output_key(key: str) -> tuple[str, str] | None:
    """(generation id, lease token) of a key made by `output_key`; None for any other text."""
    match = _OUTPUT_KEY.fullmatch(key)
    return None if match is None else (match[1], match[2])


def parse_input_key(key: str) -> str | None:
    """The generation id of a key made by `input_key`; None for any other text."""
    match = _INPUT_KEY.fullmatch(key)
    return None if match is None else match[1]


_UPLOAD_KEY = re.compile(f"uploads/({_UUID_TEXT})")


def parse_upload_key(key: str) -> str | None:
    """The file id of a key made by `upload_key`; None for any other text."""
    match = _UPLOAD_KEY.fullmatch(key)
    return None if match is None else match[1]
