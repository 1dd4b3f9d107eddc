"""The webhook outbox: notifications owed when generations end, kept until delivered or given up.

    enqueue(conn, generation_ids)                 # in the transaction that ended them
    store.webhooks.claim_due(lease_s=60)          # the deliveries due now, leased to this process
    store.webhooks.record(delivery, attempt, delivered=True | next_attempt_at=... | give_up=True)
    store.webhooks.for_generation(generation_id, account_id)
    store.webhooks.secret(account_id)             # the account's signing secret, made on first use

A generation that ends with a callback URL (its create's `callback_url`, else its account's
`webhook_url`) gets one delivery row in the same transaction as its end, so a notification is never
lost to a crash between the two. Deliverers (one task in every API process, api.webhooks) claim due
rows with a lease on `next_attempt_at` (FOR UPDATE SKIP LOCKED on PostgreSQL; SQLite has one writer),
so a crashed deliverer's rows come due again after the lease; a delivery is therefore made at least
once, always with the same `webhook-id` (the row's id).
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from daguerre.store.clock import utcnow
from daguerre.store.db import Database
from daguerre.store.ids import uuid7
from daguerre.store.schema import accounts, webhook_deliveries
from daguerre.store.schema import generations as g

w = webhook_deliveries
PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
LOG_KEEP = 20
"""Attempts kept in a delivery's log (the newest)."""
SECRET_PREFIX = "whsec_"  # noqa: S105 (the Standard Webhooks prefix, not a secret)


@dataclass(frozen=True)
class Delivery:
    id: str
    generation_id: str
    account_id: str
    url: str
    base_url: str | None
    """Where the create reached the API: output URLs in the payload are built on it."""
    state: str
    attempts: int
    next_attempt_at: datetime | None
    attempt_log: list[dict[str, Any]]
    created_at: datetime
    delivered_at: datetime | None


def enqueue(conn: Connection, generation_ids: Collection[str]) -> None:
    """Owe a notification for each of these (just ended) generations that has a callback URL."""
    url = sa.func.coalesce(g.c.callback_url, accounts.c.webhook_url)
    rows = conn.execute(
        sa.select(g.c.id, g.c.account_id, url.label("url"), g.c.callback_base_url)
        .select_from(g.join(accounts, accounts.c.id == g.c.account_id))
        .where(g.c.id.in_(list(generation_ids)), url.is_not(None))
    ).all()
    if rows:
        now = utcnow()
        conn.execute(
            w.insert(),
            [
                {
                    "id": uuid7(),
                    "generation_id": row.id,
                    "account_id": row.account_id,
                    "url": row.url,
                    "base_url": row.callback_base_url,
                    "state": PENDING,
                    "attempts": 0,
                    "next_attempt_at": now,
                    "attempt_log": [],
                    "created_at": now,
                }
                for row in rows
            ],
        )


class WebhookStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def claim_due(self, lease_s: float, limit: int = 20) -> list[Delivery]:
        """The pending deliveries due now, each leased to the caller for `lease_s` (its
        `next_attempt_at` moved past the lease, so no other deliverer takes it meanwhile)."""
        now = utcnow()
        with self._db.write() as conn:
            rows = conn.execute(
                sa.select(w)
                .where(w.c.state == PENDING, w.c.next_attempt_at <= now)
                .order_by(w.c.next_attempt_at)
                .limit(limit)
                .with_for_update(skip_locked=True)
            ).all()
            if rows:
                conn.execute(
                    w.update()
                    .where(w.c.id.in_([row.id for row in rows]))
                    .values(next_attempt_at=now + timedelta(seconds=lease_s))
                )
        return [_delivery(row._mapping) for row in rows]

    def next_due(self) -> datetime | None:
        """When the soonest pending delivery comes due (None: none is pending)."""
        with self._db.read() as conn:
            return conn.execute(
                sa.select(sa.func.min(w.c.next_attempt_at)).where(w.c.state == PENDING)
            ).scalar()

    def record(
        self,
        delivery: Delivery,
        attempt: dict[str, Any],
        *,
        delivered: bool = False,
        next_attempt_at: datetime | None = None,
        give_up: bool = False,
    ) -> None:
        """One attempt of a claimed delivery: it was delivered, or comes due again at
        `next_attempt_at`, or is given up (failed)."""
        state = DELIVERED if delivered else FAILED if give_up else PENDING
        with self._db.write() as conn:
            conn.execute(
                w.update()
                .where(w.c.id == delivery.id, w.c.state == PENDING)
                .values(
                    state=state,
                    attempts=w.c.attempts + 1,
                    attempt_log=[*delivery.attempt_log, attempt][-LOG_KEEP:],
                    next_attempt_at=next_attempt_at if state == PENDING else None,
                    delivered_at=utcnow() if delivered else None,
                )
            )

    def for_generation(self, generation_id: str, account_id: str) -> list[Delivery]:
        """The account's deliveries for the generation, oldest first."""
        query = (
            sa.select(w)
            .where(w.c.generation_id == generation_id, w.c.account_id == account_id)
            .order_by(w.c.created_at, w.c.id)
        )
        with self._db.read() as conn:
            return [_delivery(row._mapping) for row in conn.execute(query)]

    def secret(self, account_id: str, *, rotate: bool = False) -> str:
        """The account's signing secret (`whsec_` + base64 of 24 random bytes), made on first use;
        `rotate` replaces it (deliveries signed from then on use the new one)."""
        current = sa.select(accounts.c.webhook_secret).where(accounts.c.id == account_id)
        if not rotate:  # every delivery attempt asks: a read, not a write transaction
            with self._db.read() as conn:
                existing = conn.execute(current).scalar()
            if existing is not None:
                return str(existing)
        fresh = SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()
        with self._db.write() as conn:
            update = accounts.update().where(accounts.c.id == account_id)
            if not rotate:
                update = update.where(accounts.c.webhook_secret.is_(None))
            conn.execute(update.values(webhook_secret=fresh))  # unless another process made one first
            return str(conn.execute(current).scalar_one())

    def set_url(self, account_id: str, url: str | None) -> None:
        """The account's default webhook URL (None: none)."""
        with self._db.write() as conn:
            conn.execute(accounts.update().where(accounts.c.id == account_id).values(webhook_url=url))

    def account_url(self, account_id: str) -> str | None:
        with self._db.read() as conn:
            return conn.execute(sa.select(accounts.c.webhook_url).where(accounts.c.id == account_id)).scalar()


def _delivery(row: Any) -> Delivery:
    return Delivery(
        id=row["id"],
        generation_id=row["generation_id"],
        account_id=row["account_id"],
        url=row["url"],
        base_url=row["base_url"],
        state=row["state"],
        attempts=int(row["attempts"]),
        next_attempt_at=row["next_attempt_at"],
        attempt_log=list(row["attempt_log"] or []),
        created_at=row["created_at"],
        delivered_at=row["delivered_at"],
    )
