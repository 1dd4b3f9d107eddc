"""Uploaded files: their records and state changes (pending -> ready | failed, any -> deleted).

The bytes live in the blob store under `files/<id>`; this table says whose they are and whether
they may be referenced. A file leaves `pending` once, guarded by its state, so a retried or
repeated ingest cannot overwrite a decision.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from daguerre.store import idempotency
from daguerre.store.clock import utcnow
from daguerre.store.db import Database
from daguerre.store.idempotency import IdempotencyKey
from daguerre.store.ids import uuid7
from daguerre.store.schema import files as f
from daguerre.wire import FileState


@dataclass(frozen=True)
class FileRecord:
    id: str
    account_id: str
    state: FileState
    mime_type: str
    size_bytes: int
    purpose: str
    filename: str | None
    user_id: str | None
    failure_reason: str | None
    created_at: datetime
    uploaded_at: datetime | None
    expires_at: datetime | None
    deleted_at: datetime | None


@dataclass(frozen=True)
class NewFile:
    account_id: str
    mime_type: str
    size_bytes: int
    purpose: str = "input"
    filename: str | None = None
    user_id: str | None = None
    expires_at: datetime | None = None


@dataclass(frozen=True)
class FilePage:
    files: list[FileRecord]
    has_more: bool


_GET = sa.select(f).where(f.c.id == sa.bindparam("file_id"), f.c.account_id == sa.bindparam("account_id"))
_AWAITING_UPLOAD = sa.select(f.c.id).where(
    f.c.id == sa.bindparam("file_id"), f.c.state == FileState.PENDING.value, f.c.uploaded_at.is_(None)
)


class FileStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def create(
        self, new: NewFile, uploaded: bool = False, idempotency_key: IdempotencyKey | None = None
    ) -> FileRecord | None:
        """Insert the file; None, with nothing written, when `idempotency_key` was used already
        (store.idempotency.find says by which file)."""
        now = utcnow()
        values: dict[str, Any] = {
            "id": uuid7(),
            "account_id": new.account_id,
            "state": FileState.PENDING.value,
            "mime_type": new.mime_type,
            "size_bytes": new.size_bytes,
            "purpose": new.purpose,
            "filename": new.filename,
            "user_id": new.user_id,
            "failure_reason": None,
            "created_at": now,
            "uploaded_at": now if uploaded else None,
            "expires_at": new.expires_at,
            "deleted_at": None,
        }
        with self._db.write() as conn:
            if idempotency_key is not None and not idempotency.claim(
                conn, new.account_id, idempotency_key, values["id"], 201
            ):
                return None
            conn.execute(f.insert().values(**values))
        return _record(values)

    def get(self, file_id: str, account_id: str) -> FileRecord | None:
        row = self._db.fetch_one(_GET, {"file_id": file_id, "account_id": account_id})
        return None if row is None else _record(row)

    async def get_async(self, file_id: str, account_id: str) -> FileRecord | None:
        """`get` for an event loop: inline on a SQLite file, else in a thread (Database.reads_inline)."""
        if self._db.reads_inline:
            return self.get(file_id, account_id)
        return await asyncio.to_thread(self.get, file_id, account_id)

    def page(
        self,
        account_id: str,
        limit: int,
        after: tuple[datetime, str] | None = None,
        purpose: str | None = None,
        state: str | None = None,
    ) -> FilePage:
        """Newest first; `after` is the (created_at, id) of the last file of the previous page."""
        query = sa.select(f).where(f.c.account_id == account_id)
        if purpose is not None:
            query = query.where(f.c.purpose == purpose)
        if state is not None:
            query = query.where(f.c.state == state)
        else:
            query = query.where(f.c.state != FileState.DELETED.value)
        if after is not None:
            created, last_id = after
            query = query.where(
                sa.or_(f.c.created_at < created, sa.and_(f.c.created_at == created, f.c.id < last_id))
            )
        query = query.order_by(f.c.created_at.desc(), f.c.id.desc()).limit(limit + 1)
        with self._db.read() as conn:
            rows = conn.execute(query).mappings().all()
        return FilePage([_record(r) for r in rows[:limit]], has_more=len(rows) > limit)

    def mark_uploaded(self, file_id: str) -> None:
        with self._db.write() as conn:
            conn.execute(
                f.update()
                .where(f.c.id == file_id, f.c.state == FileState.PENDING.value, f.c.uploaded_at.is_(None))
                .values(uploaded_at=utcnow())
            )

    def awaiting_upload(self, file_id: str) -> bool:
        """Whether the file's bytes may still be PUT: it is pending and its upload not completed."""
        return self._db.fetch_one(_AWAITING_UPLOAD, {"file_id": file_id}) is not None

    def pending(self, file_ids: Collection[str]) -> set[str]:
        """Those of these files that exist and are still pending (their upload may still be used)."""
        ids = sorted(set(file_ids))
        found: set[str] = set()
        with self._db.read() as conn:
            for start in range(0, len(ids), 500):
                query = sa.select(f.c.id).where(
                    f.c.id.in_(ids[start : start + 500]), f.c.state == FileState.PENDING.value
                )
                found.update(row.id for row in conn.execute(query))
        return found

    def start_ingest(self, file_id: str) -> int | None:
        """Count one more ingest of a pending upload; its attempt number, or None when the file
        is no longer pending (another ingest decided it, or it was deleted)."""
        with self._db.write() as conn:
            row = conn.execute(
                f.update()
                .where(f.c.id == file_id, f.c.state == FileState.PENDING.value)
                .values(ingest_attempts=f.c.ingest_attempts + 1)
                .returning(f.c.ingest_attempts)
            ).first()
        return None if row is None else int(row.ingest_attempts)

    def finish(
        self, file_id: str, state: FileState, mime_type: str | None = None, reason: str | None = None
    ) -> bool:
        """pending -> ready or failed, once."""
        values: dict[str, Any] = {"state": state.value, "failure_reason": reason}
        if mime_type is not None:
            values["mime_type"] = mime_type
        with self._db.write() as conn:
            result = conn.execute(
                f.update().where(f.c.id == file_id, f.c.state == FileState.PENDING.value).values(**values)
            )
        return result.rowcount == 1

    def delete(self, file_id: str, account_id: str) -> FileRecord | None:
        """Soft delete (the record stays, state `deleted`); None for unknown or foreign files."""
        with self._db.write() as conn:
            conn.execute(
                f.update()
                .where(f.c.id == file_id, f.c.account_id == account_id, f.c.state != FileState.DELETED.value)
                .values(state=FileState.DELETED.value, deleted_at=utcnow())
            )
        return self.get(file_id, account_id)

    def expire(self) -> list[str]:
        """Soft-delete files past their `expires_at`; returns their ids (their bytes go next)."""
        now = utcnow()
        with self._db.write() as conn:
            rows = conn.execute(
                f.update()
                .where(
                    f.c.state != FileState.DELETED.value, f.c.expires_at.is_not(None), f.c.expires_at <= now
                )
                .values(state=FileState.DELETED.value, deleted_at=now)
                .returning(f.c.id)
            ).all()
        return [row.id for row in rows]

    def stalled(self, older_than_s: float) -> list[FileRecord]:
        """Uploaded files still pending after `older_than_s`: their ingest was interrupted."""
        cutoff = utcnow() - timedelta(seconds=older_than_s)
        with self._db.read() as conn:
            rows = (
                conn.execute(
                    sa.select(f).where(
                        f.c.state == FileState.PENDING.value,
                        f.c.uploaded_at.is_not(None),
                        f.c.uploaded_at < cutoff,
                    )
                )
                .mappings()
                .all()
            )
        return [_record(r) for r in rows]


def _record(row: Any) -> FileRecord:
    return FileRecord(
        id=row["id"],
        account_id=row["account_id"],
        state=FileState(row["state"]),
        mime_type=row["mime_type"],
        size_bytes=int(row["size_bytes"]),
        purpose=row["purpose"],
        filename=row["filename"],
        user_id=row["user_id"],
        failure_reason=row["failure_reason"],
        created_at=row["created_at"],
        uploaded_at=row["uploaded_at"],
        expires_at=row["expires_at"],
        deleted_at=row["deleted_at"],
    )
