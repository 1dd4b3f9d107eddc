"""Generations: the rows that are both the API's resources and the workers' queue.

Every state change is one guarded statement. A worker's claim gives it a fresh `lease_token` (the
fencing token); renew, complete, fail and hand-back all go through `_transition`, whose UPDATE
requires `state = 'processing' AND lease_token = :token`, so a worker whose lease lapsed (crashed,
paused, or reaped) changes nothing: zero rows means someone else decided, and the worker drops its
result.

On SQLite every write transaction holds the database's one write lock. On PostgreSQL, where writers
run side by side, three things differ: a claim locks its candidate row and skips rows another claim
has locked (`FOR UPDATE SKIP LOCKED`); a create of a limited or metered account locks the account's
row first (money.lock_account), so that its concurrency count and its hold see every earlier
create; and creates and hand-backs notify idle workers (postgres.notify_queue). Transactions that
lock rows of both tables lock generations before accounts (a create locks only its account, and
inserts rows nobody else can see yet), so no two of them can wait on each other.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from enum import StrEnum
from functools import cached_property
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from daguerre import metrics
from daguerre.store import idempotency, money, postgres, webhooks
from daguerre.store.clock import utcnow
from daguerre.store.db import Database
from daguerre.store.idempotency import IdempotencyKey
from daguerre.store.schema import accounts, ledger
from daguerre.store.schema import generations as g
from daguerre.wire import FailureCode, GenerationCreate, GenerationType, Progress, Reason, State


@dataclass(frozen=True)
class GenerationRecord:
    id: str
    account_id: str
    model: str
    type: GenerationType
    state: State
    request_text: str
    aspect_ratio: str | None
    output_format: str
    user_id: str | None
    input_keys: tuple[str, ...]
    output_keys: tuple[str, ...]
    failure_code: FailureCode | None
    failure_reason: str | None
    attempts: int
    max_attempts: int
    price: int
    lease_owner: str | None
    lease_token: str | None
    lease_expires_at: datetime | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    purged_at: datetime | None = None
    """When the retention policy deleted its blobs (then `output_keys` is empty); None: not yet."""
    deadline_at: datetime | None = None
    """`Cancel-After`: it fails with "Deadline exceeded" if it has not ended by then."""

    @cached_property
    def request(self) -> GenerationCreate:
        """The stored request, validated again on read (parsed only when someone needs it)."""
        return GenerationCreate.model_validate_json(self.request_text)


@dataclass(frozen=True)
class GenerationSummary:
    """What the API shows of a generation: the columns a polling GET needs, and no more."""

    id: str
    model: str
    type: GenerationType
    state: State
    output_keys: tuple[str, ...]
    failure_code: FailureCode | None
    failure_reason: str | None
    created_at: datetime


@dataclass(frozen=True)
class GenerationPage:
    generations: list[GenerationSummary]
    has_more: bool


@dataclass(frozen=True)
class NewGeneration:
    """What the API hands the store to create a generation."""

    id: str
    account_id: str
    request: GenerationCreate
    aspect_ratio: str | None
    input_keys: tuple[str, ...]
    max_attempts: int
    price: int = 0
    """Micro-dollars held at create and captured at completion (metered accounts only)."""
    metered: bool = False
    concurrency_limit: int | None = None
    """Refuse the create when the account already has this many generations not yet terminal."""
    outbox: bool = False
    """Put the row in the outbox (`outbox_at`) in the same transaction (execution = "temporal")."""
    idempotency: IdempotencyKey | None = None
    """The request's Idempotency-Key: recorded in the same transaction, or the create is refused
    with Refusal.DUPLICATE when the account used it already."""
    deadline_at: datetime | None = None
    """`Cancel-After`: when it fails with "Deadline exceeded" unless it has ended."""
    callback_url: str | None = None
    """Where the ended generation is POSTed (else the account's webhook URL, if any)."""
    callback_base_url: str | None = None
    """Where the create reached the API (output URLs in webhook payloads are built on it)."""


class Refusal(StrEnum):
    """Why a create was refused inside its transaction (nothing was written)."""

    CONCURRENCY = "concurrency"
    BALANCE = "balance"
    DUPLICATE = "duplicate"
    """The Idempotency-Key was used already (store.idempotency.find says by what)."""


T = TypeVar("T")


@dataclass(frozen=True)
class Reaped:
    id: str
    reason: str


@dataclass(frozen=True)
class Expired:
    """A generation past the retention period: terminal, finished before the cutoff, not purged."""

    id: str
    input_keys: tuple[str, ...]
    output_keys: tuple[str, ...]


@dataclass(frozen=True)
class BlobOwner:
    """What decides whether the blobs of a generation can still be needed (see worker.sweep)."""

    state: State
    lease_token: str | None
    output_keys: tuple[str, ...]
    purged: bool


# Hot-path statements are built once: constructing and cache-keying a select costs more than
# running it on SQLite.
_INSERT = g.insert()
_ACTIVE = sa.or_(g.c.state == State.QUEUED.value, g.c.state == State.PROCESSING.value)
# The account's active generations, counted up to the limit only (index on account, state and
# created_at): a create costs the same however many generations the account has had or has waiting.
# Selecting a constant rather than a column lets the database answer from the index alone.
_ACTIVE_UP_TO_LIMIT = (
    sa.select(sa.literal_column("1").label("one"))
    .where(g.c.account_id == sa.bindparam("account_id"), _ACTIVE)
    .limit(sa.bindparam("limit"))
    .subquery()
)
_COUNT_ACTIVE = sa.select(sa.func.count().label("active")).select_from(_ACTIVE_UP_TO_LIMIT)
# A record is every column but the preview (a JPEG the events stream alone reads).
_GET = sa.select(*(column for column in g.c if column.name != "preview")).where(
    g.c.id == sa.bindparam("generation_id")
)
_GET_OWNED = _GET.where(g.c.account_id == sa.bindparam("account_id"))
# A poll reads only what the API shows (the fields of GenerationSummary).
_SUMMARY_OWNED = sa.select(*(g.c[field.name] for field in fields(GenerationSummary))).where(
    g.c.id == sa.bindparam("generation_id"), g.c.account_id == sa.bindparam("account_id")
)
_PROGRESS = sa.select(g.c.progress_step, g.c.progress_total, g.c.preview_step).where(
    g.c.id == sa.bindparam("generation_id")
)
_PREVIEW = sa.select(g.c.preview_step, g.c.preview).where(g.c.id == sa.bindparam("generation_id"))
_NO_PREVIEW: dict[str, Any] = {"preview_step": None, "preview": None}
_QUEUED_AHEAD = (
    sa.select(sa.func.count())
    .select_from(g)
    .where(
        g.c.state == State.QUEUED.value,
        g.c.id != sa.bindparam("generation_id"),
        g.c.created_at < sa.bindparam("created_at"),
    )
)
_TERMINAL_STATES = (State.COMPLETED.value, State.FAILED.value)
_TERMINAL = sa.or_(g.c.state == State.COMPLETED.value, g.c.state == State.FAILED.value)


class GenerationStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    # API side --------------------------------------------------------------------------------

    def create(self, new: NewGeneration) -> GenerationRecord | Refusal:
        """In one transaction (shared with other creates, see `Database.submit`): check the
        account's concurrent jobs, hold the price on a metered account's balance, insert the row.
        Answers after the commit, with the record or with why nothing was written."""
        return self.submit_create(new).result()

    def submit_create(self, new: NewGeneration) -> Future[GenerationRecord | Refusal]:
        """`create` on the committer thread; the future resolves after the commit."""
        return self._db.submit(self._insert(new, _record))

    async def create_async(self, new: NewGeneration) -> GenerationSummary | Refusal:
        """`create` for the API's event loop (see `Database.run`); answers what the API shows."""
        return await self._db.run(self._insert(new, _summary))

    def _insert(
        self, new: NewGeneration, shown: Callable[[dict[str, Any]], T]
    ) -> Callable[[Connection], T | Refusal]:
        """The operation that inserts `new` unless a limit refuses it; `shown` makes its answer."""
        values: dict[str, Any] = {
            "id": new.id,
            "account_id": new.account_id,
            "model": new.request.model,
            "type": new.request.type.value,
            "state": State.QUEUED.value,
            # Input bytes live in blobs (input_keys), never in the row: base64 `data` is left out.
            "request": new.request.model_dump_json(
                exclude_none=True, exclude={"source": {"data"}, "image_ref": {"__all__": {"data"}}}
            ),
            "aspect_ratio": new.aspect_ratio,
            "output_format": new.request.output_format or "png",
            "user_id": new.request.user_id,
            "input_keys": list(new.input_keys),
            "output_keys": [],
            "attempts": 0,
            "max_attempts": new.max_attempts,
            "priority": 0,
            "price": new.price,
            "created_at": utcnow(),
        }
        if new.outbox:  # embedded creates write nothing more (the column stays NULL)
            values["outbox_at"] = values["created_at"]
        if new.deadline_at is not None:
            values["deadline_at"] = new.deadline_at
        if new.callback_url is not None:
            values["callback_url"] = new.callback_url
        if new.callback_base_url is not None:
            values["callback_base_url"] = new.callback_base_url

        db = self._db
        charged = new.metered and new.price > 0
        # The write transaction holds SQLite's write lock: no other create counts or holds at once.
        # On PostgreSQL the account's row lock does that, and the insert wakes idle workers (those
        # that claim rows: none when the outbox hands the job to Temporal instead).
        on_server = not db.is_sqlite
        lock = on_server and (charged or new.concurrency_limit is not None)
        notify = on_server and not new.outbox

        key = new.idempotency

        def refuse(conn: Connection, why: Refusal) -> Refusal:
            if key is not None:  # a refused create does not use up its key
                idempotency.unclaim(conn, new.account_id, key)
            return why

        def insert(conn: Connection) -> T | Refusal:
            if key is not None and not idempotency.claim(conn, new.account_id, key, new.id, 201):
                return Refusal.DUPLICATE
            if lock:
                money.lock_account(conn, new.account_id)
            if new.concurrency_limit is not None:
                active = db.scalar(
                    _COUNT_ACTIVE, {"account_id": new.account_id, "limit": new.concurrency_limit}, conn
                )
                if active >= new.concurrency_limit:
                    return refuse(conn, Refusal.CONCURRENCY)
            if charged and not money.hold(conn, new.account_id, new.price):
                return refuse(conn, Refusal.BALANCE)
            db.execute(conn, _INSERT, values)
            if charged:
                money.record_reserve(conn, new.account_id, new.id, new.price)
            if notify:
                postgres.notify_queue(conn)
            return shown(values)

        return insert

    def get(self, generation_id: str, account_id: str | None = None) -> GenerationRecord | None:
        """The generation, or None when it is unknown or (with `account_id`) another account's."""
        query, params = (
            (_GET, {"generation_id": generation_id})
            if account_id is None
            else (_GET_OWNED, {"generation_id": generation_id, "account_id": account_id})
        )
        row = self._db.fetch_one(query, params)
        return None if row is None else _record(row)

    async def get_async(self, generation_id: str, account_id: str | None = None) -> GenerationRecord | None:
        """`get` for an event loop: inline on a SQLite file, else in a thread (Database.reads_inline)."""
        if self._db.reads_inline:
            return self.get(generation_id, account_id)
        return await asyncio.to_thread(self.get, generation_id, account_id)

    def summary(self, generation_id: str, account_id: str) -> GenerationSummary | None:
        """What the API shows of the account's generation (a narrower, cheaper read than `get`:
        this is what every poll costs), or None when it is unknown or another account's."""
        row = self._db.fetch_one(_SUMMARY_OWNED, {"generation_id": generation_id, "account_id": account_id})
        return None if row is None else _summary(row)

    async def summary_async(self, generation_id: str, account_id: str) -> GenerationSummary | None:
        """`summary` for an event loop: inline on a SQLite file, else in a thread (see `get_async`)."""
        if self._db.reads_inline:
            return self.summary(generation_id, account_id)
        return await asyncio.to_thread(self.summary, generation_id, account_id)

    def page(
        self,
        account_id: str,
        limit: int,
        before: tuple[datetime, str] | None = None,
        *,
        state: State | None = None,
        model: str | None = None,
        type: GenerationType | None = None,
        user_id: str | None = None,
    ) -> GenerationPage:
        """The account's generations, newest first (created_at, then id, descending), `limit` of
        them after `before` (the (created_at, id) of the previous page's last one), those the
        retention policy purged left out (GET answers 404 for them).

        Each state is read through the account index (account_id, state, created_at) in index
        order, at most limit + 1 rows, and the four are merged: no new index (each one keyed by
        account is a random B-tree insert on every create) and no sort of the account's history.
        `model`, `type` and `user_id` filter the rows as they are read."""
        conditions = [g.c.account_id == account_id, g.c.purged_at.is_(None)]
        for column, value in ((g.c.model, model), (g.c.type, type), (g.c.user_id, user_id)):
            if value is not None:
                conditions.append(column == value)
        if before is not None:
            created_at, generation_id = before
            conditions.append(
                sa.or_(
                    g.c.created_at < created_at, sa.and_(g.c.created_at == created_at, g.c.id < generation_id)
                )
            )
        columns = [g.c[field.name] for field in fields(GenerationSummary)]
        newest = (g.c.created_at.desc(), g.c.id.desc())
        per_state = [
            sa.select(*columns)
            .where(*conditions, g.c.state == one.value)
            .order_by(*newest)
            .limit(limit + 1)
            .subquery()
            for one in ([state] if state is not None else list(State))
        ]
        merged = sa.union_all(*(sa.select(part) for part in per_state)).subquery()
        query = sa.select(merged).order_by(merged.c.created_at.desc(), merged.c.id.desc()).limit(limit + 1)
        with self._db.read() as conn:
            rows = conn.execute(query).mappings().all()
        return GenerationPage([_summary(row) for row in rows[:limit]], has_more=len(rows) > limit)

    def count_active(self, account_id: str, up_to: int) -> int:
        """Generations of the account not yet completed or failed (its concurrency slots), counted
        up to `up_to` (the limit they are compared with)."""
        return int(self._db.scalar(_COUNT_ACTIVE, {"account_id": account_id, "limit": up_to}))

    async def count_active_async(self, account_id: str, up_to: int) -> int:
        """`count_active` for an event loop: inline on a SQLite file, else in a thread (see `get_async`)."""
        if self._db.reads_inline:
            return self.count_active(account_id, up_to)
        return await asyncio.to_thread(self.count_active, account_id, up_to)

    def usage(
        self, account_id: str, start: datetime, end: datetime, group_by: str
    ) -> list[tuple[str | None, str, int, int]]:
        """(group, state, generations, captured micro-dollars) for the account's generations
        created in [start, end), grouped by `model`, `user_id` or `day` (UTC)."""
        key: sa.ColumnElement[Any]
        if group_by == "day" and self._db.is_sqlite:
            key = sa.func.strftime("%Y-%m-%d", g.c.created_at)
        elif group_by == "day":
            # A literal, not a parameter: GROUP BY must repeat the SELECT's expression exactly.
            key = sa.func.to_char(g.c.created_at, sa.literal_column("'YYYY-MM-DD'"))
        else:
            key = g.c.model if group_by == "model" else g.c.user_id
        captured = ledger.alias("captured")
        query = (
            sa.select(
                key.label("group"),
                g.c.state,
                sa.func.count().label("generations"),
                sa.func.coalesce(sa.func.sum(captured.c.amount), 0).label("spend"),
            )
            .select_from(
                g.outerjoin(
                    captured, sa.and_(captured.c.generation_id == g.c.id, captured.c.kind == "capture")
                )
            )
            .where(
                g.c.account_id == account_id,
                g.c.state.in_([state.value for state in State]),  # so the account index covers the range
                g.c.created_at >= start,
                g.c.created_at < end,
            )
            .group_by(key, g.c.state)
            .order_by(key)
        )
        with self._db.read() as conn:
            return [
                (row.group, row.state, int(row.generations), int(row.spend)) for row in conn.execute(query)
            ]

    async def usage_async(
        self, account_id: str, start: datetime, end: datetime, group_by: str
    ) -> list[tuple[str | None, str, int, int]]:
        """`usage` for an event loop: inline on a SQLite file, else in a thread (see `get_async`)."""
        if self._db.reads_inline:
            return self.usage(account_id, start, end, group_by)
        return await asyncio.to_thread(self.usage, account_id, start, end, group_by)

    # Worker side -----------------------------------------------------------------------------

    def _claimable(self, now: datetime) -> sa.ColumnElement[bool]:
        return sa.and_(
            sa.or_(
                g.c.state == State.QUEUED.value,
                sa.and_(g.c.state == State.PROCESSING.value, g.c.lease_expires_at < now),
            ),
            g.c.attempts < g.c.max_attempts,
        )

    def has_claimable(self) -> bool:
        """A cheap read that lets idle workers skip taking the write lock."""
        with self._db.read() as conn:
            return (
                conn.execute(sa.select(g.c.id).where(self._claimable(utcnow())).limit(1)).first() is not None
            )

    def claim(self, worker_id: str, lease_s: float) -> GenerationRecord | None:
        """Take the next job: highest priority, then the account with the fewest running jobs, then
        the oldest. A job whose lease lapsed (its worker died) is claimable again until its attempts
        run out. One guarded UPDATE; the returned record carries the new lease token."""
        if not self.has_claimable():
            return None
        now = utcnow()
        live = (
            sa.select(g.c.account_id, sa.func.count().label("n"))
            .where(g.c.state == State.PROCESSING.value, g.c.lease_expires_at >= now)
            .group_by(g.c.account_id)
            .subquery("live")
        )
        candidate = (
            sa.select(g.c.id)
            .select_from(g.outerjoin(live, live.c.account_id == g.c.account_id))
            .where(self._claimable(now))
            .order_by(g.c.priority.desc(), sa.func.coalesce(live.c.n, 0), g.c.created_at)
            .limit(1)
        )
        if not self._db.is_sqlite:
            # Concurrent claims each lock a different row: one that another claim has locked is
            # skipped (it is being taken), never waited for, and never taken twice.
            candidate = candidate.with_for_update(of=g, skip_locked=True)
        token = str(uuid.uuid4())
        statement = (
            g.update()
            .where(g.c.id == candidate.scalar_subquery(), self._claimable(now))
            .values(_taken(worker_id, token, now, lease_s))
            .returning(*g.c)
        )
        with self._db.write() as conn:
            row = conn.execute(statement).mappings().first()
        return None if row is None else _record(row)

    def start(self, generation_id: str, owner: str, lease_s: float) -> GenerationRecord | None:
        """Take the generation for a run that an execution engine (Temporal) has scheduled: queued
        or processing becomes processing under a new fencing token (an earlier run's token stops
        counting), one more attempt; None when it is already completed or failed (or unknown)."""
        now = utcnow()
        statement = (
            g.update()
            .where(g.c.id == generation_id, _ACTIVE)
            .values(_taken(owner, str(uuid.uuid4()), now, lease_s))
            .returning(*g.c)
        )
        with self._db.write() as conn:
            row = conn.execute(statement).mappings().first()
        return None if row is None else _record(row)

    def undispatched(self, created_before: datetime, limit: int = 100) -> list[tuple[str, str, str]]:
        """(id, account_id, model) of the rows still in the outbox, committed before `created_before`,
        oldest first (the outbox index: only such rows are read)."""
        query = (
            sa.select(g.c.id, g.c.account_id, g.c.model)
            .where(g.c.outbox_at.is_not(None), g.c.outbox_at < created_before)
            .order_by(g.c.outbox_at)
            .limit(limit)
        )
        with self._db.read() as conn:
            return [(row.id, row.account_id, row.model) for row in conn.execute(query)]

    def mark_dispatched(self, generation_ids: Collection[str]) -> None:
        """Take these rows out of the outbox: their workflows are started."""
        if generation_ids:
            with self._db.write() as conn:
                conn.execute(
                    g.update()
                    .where(g.c.id.in_(list(generation_ids)), g.c.outbox_at.is_not(None))
                    .values(outbox_at=None)
                )

    def unstarted(self, created_before: datetime, limit: int = 100) -> list[str]:
        """Ids of the rows created before `created_before` that are still queued although their
        start was handed over (not in the outbox), oldest first."""
        query = (
            sa.select(g.c.id)
            .where(g.c.state == State.QUEUED.value, g.c.outbox_at.is_(None), g.c.created_at < created_before)
            .order_by(g.c.created_at)
            .limit(limit)
        )
        with self._db.read() as conn:
            return [row.id for row in conn.execute(query)]

    def fail_unstarted(self, generation_id: str, code: FailureCode, reason: str) -> bool:
        """Fail a generation that is still queued (nobody ever started it), releasing its hold;
        False when it is no longer queued."""
        with self._db.write() as conn:
            result = conn.execute(
                g.update()
                .where(g.c.id == generation_id, g.c.state == State.QUEUED.value)
                .values(**_failed(code, reason))
            )
            if result.rowcount != 1:
                return False
            money.settle(conn, generation_id, money.Settlement.RELEASE)
            self._ended(conn, [generation_id])
        return True

    def cancel(self, generation_id: str, account_id: str, reason: str) -> bool:
        """Fail the account's generation with `generation_failed` and `reason` if it is still queued
        or processing, releasing its hold, in one guarded UPDATE; False when it was already decided
        (or is unknown). A worker running it loses its lease: its step hook stops the engine, and
        no result of it is ever written (`complete` needs the lease)."""
        with self._db.write() as conn:
            changed = conn.execute(
                g.update()
                .where(g.c.id == generation_id, g.c.account_id == account_id, _ACTIVE)
                .values(**_failed(FailureCode.GENERATION_FAILED, reason))
            ).rowcount
            if changed == 1:
                money.settle(conn, generation_id, money.Settlement.RELEASE)
                self._ended(conn, [generation_id])
        return changed == 1

    def report_progress(
        self, generation_id: str, token: str, step: int, total: int, preview: bytes | None = None
    ) -> bool:
        """Record the running attempt's engine progress, and `preview` (a JPEG of the picture at
        `step`) when given; False when `token` no longer holds the lease (cancelled, reaped, taken
        over): nothing was written."""
        values: dict[str, Any] = {"progress_step": step, "progress_total": total}
        if preview is not None:
            values |= {"preview_step": step, "preview": preview}
        return self._transition(generation_id, token, **values)

    def progress(self, generation_id: str) -> Progress | None:
        """What an embedded worker last recorded of the generation's engine run, or None; the
        preview itself is read with `preview`."""
        row = self._db.fetch_one(_PROGRESS, {"generation_id": generation_id})
        if row is None or row["progress_total"] is None:
            return None
        return Progress(int(row["progress_step"]), int(row["progress_total"]), row["preview_step"])

    def preview(self, generation_id: str) -> tuple[int, bytes] | None:
        """The running attempt's latest preview: (the step it shows, the JPEG), or None."""
        row = self._db.fetch_one(_PREVIEW, {"generation_id": generation_id})
        if row is None or row["preview"] is None:
            return None
        return int(row["preview_step"]), bytes(row["preview"])

    def queue_summary(self) -> dict[str, tuple[int, float]]:
        """model -> (queued generations, age in seconds of the oldest), for the metrics."""
        query = (
            sa.select(g.c.model, sa.func.count(), sa.func.min(g.c.created_at))
            .where(g.c.state == State.QUEUED.value)
            .group_by(g.c.model)
        )
        now = utcnow()
        with self._db.read() as conn:
            return {
                row[0]: (int(row[1]), max((now - row[2]).total_seconds(), 0.0)) for row in conn.execute(query)
            }

    def queue_position(self, generation_id: str, created_at: datetime) -> int:
        """How many queued generations were created before this one (the claim order), plus one."""
        ahead = self._db.scalar(_QUEUED_AHEAD, {"created_at": created_at, "generation_id": generation_id})
        return int(ahead) + 1

    def renew(self, generation_id: str, token: str, lease_s: float) -> bool:
        """Extend the lease; False when the lease is lost (then the worker must stop)."""
        return self._transition(generation_id, token, lease_expires_at=utcnow() + timedelta(seconds=lease_s))

    def complete(self, generation_id: str, token: str, output_keys: tuple[str, ...]) -> bool:
        return self._transition(
            generation_id,
            token,
            settle=money.Settlement.CAPTURE,
            state=State.COMPLETED.value,
            output_keys=list(output_keys),
            lease_token=None,
            lease_expires_at=None,
            finished_at=utcnow(),
            **_NO_PREVIEW,
        )

    def fail(self, generation_id: str, token: str, code: FailureCode, reason: str) -> bool:
        """Failed generations are refunded, except budget_exhausted, which is charged for the engine
        work already done: none, since it is decided when a worker claims the job."""
        if code == FailureCode.BUDGET_EXHAUSTED:
            settle, charge = money.Settlement.CAPTURE, 0
        else:
            settle, charge = money.Settlement.RELEASE, None
        return self._transition(generation_id, token, settle=settle, charge=charge, **_failed(code, reason))

    def hand_back(self, generation_id: str, token: str, *, count_attempt: bool) -> bool:
        """Put a claimed job back in the queue. A shutdown hands back without using up an attempt;
        a transient failure counts as one."""
        return self._transition(
            generation_id,
            token,
            requeued=True,
            state=State.QUEUED.value,
            attempts=g.c.attempts if count_attempt else g.c.attempts - 1,
            lease_owner=None,
            lease_token=None,
            lease_expires_at=None,
        )

    def _transition(
        self,
        generation_id: str,
        token: str,
        *,
        settle: money.Settlement | None = None,
        charge: int | None = None,
        requeued: bool = False,
        **values: Any,
    ) -> bool:
        """Set `values` on the generation while `token` holds its lease: one UPDATE guarded by
        `id`, `lease_token` and `state = 'processing'`. When it changed the row, the generation's
        hold is settled (`settle`, capturing `charge` or all of it) in the same transaction, and
        when it put the job back in the queue (`requeued`) idle workers are notified (PostgreSQL).
        False when the lease is lost: nothing was changed."""
        with self._db.write() as conn:
            result = conn.execute(
                g.update()
                .where(g.c.id == generation_id, g.c.lease_token == token, g.c.state == State.PROCESSING.value)
                .values(**values)
            )
            changed = result.rowcount == 1
            if changed and settle is not None:
                money.settle(conn, generation_id, settle, charge=charge)
            if changed and requeued and not self._db.is_sqlite:
                postgres.notify_queue(conn)
            if changed and values.get("state") in _TERMINAL_STATES:
                self._ended(conn, [generation_id])
        return changed

    def _ended(self, conn: Connection, generation_ids: Collection[str]) -> None:
        """These generations ended in this transaction: owe their webhooks (store.webhooks), on
        PostgreSQL tell the other processes (api.waiting; on SQLite it reads `PRAGMA data_version`),
        and count in this process's metrics."""
        webhooks.enqueue(conn, generation_ids)
        if not self._db.is_sqlite:
            postgres.notify_done(conn)
        ended = sa.select(
            g.c.model, g.c.state, g.c.failure_code, g.c.created_at, g.c.started_at, g.c.finished_at
        )
        for row in conn.execute(ended.where(g.c.id.in_(list(generation_ids)))):
            metrics.generation_ended(*row)

    def states(self, generation_ids: Collection[str]) -> dict[str, State]:
        """The state of each of these generations (unknown ones are left out), in one query."""
        if not generation_ids:
            return {}
        query = sa.select(g.c.id, g.c.state).where(g.c.id.in_(list(generation_ids)))
        with self._db.read() as conn:
            return {row.id: State(row.state) for row in conn.execute(query)}

    def reap(self, active_job_ttl_s: float) -> list[Reaped]:
        """Fail jobs that can no longer finish: those past their `Cancel-After` deadline, those whose
        lease lapsed with no attempt left (their workers kept dying) and those running past the
        active-job TTL, counted from first start."""
        now = utcnow()
        exhausted = sa.and_(
            g.c.state == State.PROCESSING.value,
            g.c.lease_expires_at < now,
            g.c.attempts >= g.c.max_attempts,
        )
        over_ttl = sa.and_(_ACTIVE, g.c.started_at < now - timedelta(seconds=active_job_ttl_s))
        past_deadline = sa.and_(_ACTIVE, g.c.deadline_at < now)
        reasons = (
            (past_deadline, Reason.DEADLINE_EXCEEDED),
            (
                exhausted,
                "Generation failed: the worker running it stopped responding and no attempt is left",
            ),
            (
                over_ttl,
                f"Generation failed: it ran longer than the active-job limit of {active_job_ttl_s:g} s",
            ),
        )
        reaped: list[Reaped] = []
        with self._db.write() as conn:
            ended: list[tuple[str, str]] = []
            for condition, reason in reasons:
                rows = conn.execute(
                    g.update()
                    .where(condition)
                    .values(**_failed(FailureCode.GENERATION_FAILED, reason))
                    .returning(g.c.id, g.c.account_id)
                ).all()
                ended.extend((row.account_id, row.id) for row in rows)
                reaped.extend(Reaped(id=row.id, reason=reason) for row in rows)
            # Every reaped row is locked before any account is, and accounts are taken in one order
            # (see the module's docstring): a reaper never holds an account another writer waits for
            # while it waits for that writer's generation.
            for _account_id, generation_id in sorted(ended):
                money.settle(conn, generation_id, money.Settlement.RELEASE)
            if ended:
                self._ended(conn, [generation_id for _, generation_id in ended])
        return reaped

    # Retention and the blob sweep ------------------------------------------------------------

    def expired(
        self, finished_before: datetime, created_from: datetime | None = None, batch: int = 200
    ) -> Iterator[list[Expired]]:
        """Completed and failed generations finished before `finished_before` and not purged yet,
        in batches, each read afresh (the caller may purge a batch before asking for the next).

        Rows are kept for ever, so a pass must not read them all: they are sought account by account
        and state by state through the account index (account_id, state, created_at), created
        before `finished_before` (nothing finishes before it is created) and, when given, at or
        after `created_from`."""
        with self._db.read() as conn:
            account_ids = [row.id for row in conn.execute(sa.select(accounts.c.id).order_by(accounts.c.id))]
        for account_id in account_ids:
            for state in (State.COMPLETED, State.FAILED):
                query = (
                    sa.select(g.c.id, g.c.created_at, g.c.input_keys, g.c.output_keys)
                    .where(
                        g.c.account_id == account_id,
                        g.c.state == state.value,
                        g.c.created_at < finished_before,
                        g.c.purged_at.is_(None),
                        g.c.finished_at < finished_before,
                    )
                    .order_by(g.c.created_at, g.c.id)
                    .limit(batch)
                )
                if created_from is not None:
                    query = query.where(g.c.created_at >= created_from)
                page = query
                while True:
                    with self._db.read() as conn:
                        rows = conn.execute(page).all()
                    if not rows:
                        break
                    yield [Expired(row.id, tuple(row.input_keys), tuple(row.output_keys)) for row in rows]
                    last = rows[-1]
                    page = query.where(
                        sa.or_(
                            g.c.created_at > last.created_at,
                            sa.and_(g.c.created_at == last.created_at, g.c.id > last.id),
                        )
                    )

    def mark_purged(self, generation_ids: Collection[str], now: datetime) -> set[str]:
        """Record that the retention policy deletes these terminal generations' blobs: `purged_at`
        is set and `output_keys` emptied (a completed generation without output keys is what the
        API answers 404 for). Answers the ids this call marked; one that another process marked
        first is left out, and its blobs are that process's to delete."""
        if not generation_ids:
            return set()
        statement = (
            g.update()
            .where(g.c.id.in_(list(generation_ids)), g.c.purged_at.is_(None), _TERMINAL)
            .values(output_keys=[], purged_at=now)
            .returning(g.c.id)
        )
        with self._db.write() as conn:
            return {row.id for row in conn.execute(statement)}

    def active_input_keys(self) -> set[str]:
        """The input keys of the generations not yet terminal: among them the outputs of other
        generations that they reuse as inputs, which the retention policy must not delete yet."""
        with self._db.read() as conn:
            rows = conn.execute(sa.select(g.c.input_keys).where(_ACTIVE))
            return {key for row in rows for key in row.input_keys}

    def blob_owners(self, generation_ids: Collection[str]) -> dict[str, BlobOwner]:
        """For each of these generations that exists, what its blobs' fate depends on."""
        ids = sorted(set(generation_ids))
        owners: dict[str, BlobOwner] = {}
        with self._db.read() as conn:
            for start in range(0, len(ids), 500):
                query = sa.select(g.c.id, g.c.state, g.c.lease_token, g.c.output_keys, g.c.purged_at).where(
                    g.c.id.in_(ids[start : start + 500])
                )
                for row in conn.execute(query):
                    owners[row.id] = BlobOwner(
                        state=State(row.state),
                        lease_token=row.lease_token,
                        output_keys=tuple(row.output_keys),
                        purged=row.purged_at is not None,
                    )
        return owners


def _taken(owner: str, token: str, now: datetime, lease_s: float) -> dict[str, Any]:
    """The values of a row taken to run: processing under a new fencing token, one more attempt."""
    return {
        "state": State.PROCESSING.value,
        "lease_owner": owner,
        "lease_token": token,
        "lease_expires_at": now + timedelta(seconds=lease_s),
        "attempts": g.c.attempts + 1,
        "started_at": sa.func.coalesce(g.c.started_at, now),
        "progress_step": None,  # a new attempt starts from nothing
        "progress_total": None,
        **_NO_PREVIEW,
    }


def _failed(code: FailureCode, reason: str) -> dict[str, Any]:
    return {
        "state": State.FAILED.value,
        "failure_code": code.value,
        "failure_reason": reason,
        "output_keys": [],
        "lease_token": None,
        "lease_expires_at": None,
        "finished_at": utcnow(),
        **_NO_PREVIEW,
    }


def _shown(row: Any) -> dict[str, Any]:
    """The fields of GenerationSummary from a row (or from the values of an insert)."""
    return {
        "id": row["id"],
        "model": row["model"],
        "type": GenerationType(row["type"]),
        "state": State(row["state"]),
        "output_keys": tuple(row["output_keys"]),
        "failure_code": FailureCode(row["failure_code"]) if row.get("failure_code") else None,
        "failure_reason": row.get("failure_reason"),
        "created_at": row["created_at"],
    }


def _summary(row: Any) -> GenerationSummary:
    return GenerationSummary(**_shown(row))


def _record(row: Any) -> GenerationRecord:
    return GenerationRecord(
        **_shown(row),
        account_id=row["account_id"],
        request_text=row["request"],
        aspect_ratio=row["aspect_ratio"],
        output_format=row["output_format"],
        user_id=row["user_id"],
        input_keys=tuple(row["input_keys"]),
        attempts=row["attempts"],
        max_attempts=row["max_attempts"],
        price=int(row.get("price") or 0),
        lease_owner=row.get("lease_owner"),
        lease_token=row.get("lease_token"),
        lease_expires_at=row.get("lease_expires_at"),
        started_at=row.get("started_at"),
        finished_at=row.get("finished_at"),
        purged_at=row.get("purged_at"),
        deadline_at=row.get("deadline_at"),
    )
