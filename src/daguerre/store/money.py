"""The ledger: two-phase holds on account balances, in the transactions that change generations.

At create, `reserve` holds the generation's price (`reserved += price`, guarded so that a balance
never goes below what is held); when the generation ends, `settle` either captures it (`balance -=
price`) or releases it. The ledger's primary key (generation_id, kind) and the check for an earlier
settlement make a second capture or release impossible, however often a settlement is attempted.
Unmetered accounts have no reserve row, so settling their generations changes nothing.
"""

from __future__ import annotations

from enum import StrEnum

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from daguerre.store.clock import utcnow
from daguerre.store.schema import accounts, ledger


class Settlement(StrEnum):
    CAPTURE = "capture"
    RELEASE = "release"


def lock_account(conn: Connection, account_id: str) -> None:
    """Lock the account's row until `conn`'s transaction ends (PostgreSQL: SELECT ... FOR NO KEY
    UPDATE): creates of one account then count its active generations and hold its money one at a
    time. On SQLite the write transaction already holds the database's single write lock.

    FOR NO KEY UPDATE, not FOR UPDATE: every insert of a row that references the account (a ledger
    entry, a generation, a webhook) takes a KEY SHARE lock on it, which FOR UPDATE waits for. A
    settlement inserts its ledger entry and then updates the account; a create's FOR UPDATE queued
    between the two made each wait for the other (a deadlock seen once in ten runs of the
    concurrent ledger test, tests/store/test_postgres.py)."""
    conn.execute(_LOCK_ACCOUNT, {"account_id": account_id})


_LOCK_ACCOUNT = (
    sa.select(accounts.c.id)
    .where(accounts.c.id == sa.bindparam("account_id"))
    .with_for_update(key_share=True)  # FOR NO KEY UPDATE
)


def hold(conn: Connection, account_id: str, amount: int) -> bool:
    """Hold `amount` on the account if its balance covers it (and everything already held)."""
    result = conn.execute(
        accounts.update()
        .where(accounts.c.id == account_id, accounts.c.balance - accounts.c.reserved >= amount)
        .values(reserved=accounts.c.reserved + amount)
    )
    return result.rowcount == 1


def record_reserve(conn: Connection, account_id: str, generation_id: str, amount: int) -> None:
    conn.execute(
        ledger.insert().values(
            generation_id=generation_id,
            kind="reserve",
            account_id=account_id,
            amount=amount,
            created_at=utcnow(),
        )
    )


def settle(conn: Connection, generation_id: str, how: Settlement, charge: int | None = None) -> None:
    """End a generation's hold: capture it (`charge` micro-dollars, default all of it) or release it."""
    reserve = conn.execute(
        sa.select(ledger.c.account_id, ledger.c.amount).where(
            ledger.c.generation_id == generation_id, ledger.c.kind == "reserve"
        )
    ).first()
    if reserve is None:
        return
    settled = conn.execute(
        sa.select(ledger.c.kind).where(
            ledger.c.generation_id == generation_id,
            ledger.c.kind.in_((Settlement.CAPTURE, Settlement.RELEASE)),
        )
    ).first()
    if settled is not None:
        return
    held = int(reserve.amount)
    amount = 0 if how == Settlement.RELEASE else held if charge is None else min(charge, held)
    conn.execute(
        ledger.insert().values(
            generation_id=generation_id,
            kind=how.value,
            account_id=reserve.account_id,
            amount=amount if how == Settlement.CAPTURE else held,
            created_at=utcnow(),
        )
    )
    conn.execute(
        accounts.update()
        .where(accounts.c.id == reserve.account_id)
        .values(reserved=accounts.c.reserved - held, balance=accounts.c.balance - amount)
    )
