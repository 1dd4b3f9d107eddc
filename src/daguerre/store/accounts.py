"""Accounts and their API keys. Keys are stored only as SHA-256 hashes."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa

from daguerre.store.clock import utcnow
from daguerre.store.db import Database
from daguerre.store.schema import accounts, api_keys, ledger
from daguerre.wire import KEY_PREFIX

KEY_RANDOM_BYTES = 32

UNLIMITED = 0
"""An account's `rpm_limit` or `concurrency_limit` when it has no such limit at all. NULL (None)
stands for the deployment's default (`default_rpm`, `default_concurrency`); a positive number is the
account's own limit. The first account of a self-hosted server (the owner's) is created with
UNLIMITED for both."""


class AccountStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    DEACTIVATED = "deactivated"


@dataclass(frozen=True)
class Account:
    id: str
    name: str
    status: AccountStatus
    created_at: datetime
    metered: bool = False
    balance: int = 0
    """Micro-dollars; only meaningful when metered."""
    reserved: int = 0
    """Micro-dollars held for generations not yet settled."""
    spend_cap: int | None = None
    """Most the account may spend per calendar month (UTC), in micro-dollars; None: no cap."""
    rpm_limit: int | None = None
    """Creates per minute: None for the deployment's default, UNLIMITED (0) for none, or N."""
    concurrency_limit: int | None = None
    """Generations not yet terminal: None for the deployment's default, UNLIMITED (0), or N."""

    @property
    def available(self) -> int:
        return self.balance - self.reserved


@dataclass(frozen=True)
class ApiKey:
    """A key as stored: never the key itself."""

    id: str
    account_id: str
    account_name: str
    name: str | None
    key_prefix: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True)
class KeyMatch:
    """What a key lookup finds: the key's hash and state, its account's status and limits."""

    key_id: str
    key_hash: str
    account_id: str
    account_status: AccountStatus
    expires_at: datetime | None
    revoked_at: datetime | None
    metered: bool = False
    rpm_limit: int | None = None
    concurrency_limit: int | None = None


class AccountNotFound(LookupError):
    pass


class AccountExists(ValueError):
    pass


def applied_limit(own: int | None, default: int) -> int | None:
    """The limit an account is held to: its own, else the deployment's default; None when the
    account is unlimited. On the create path: no database access, a comparison or two."""
    if own is None:
        return default
    return None if own == UNLIMITED else own


def _check_limits(limits: dict[str, int | None]) -> None:
    for name, value in limits.items():
        if value is not None and value < 0:
            raise ValueError(f"{name} must be at least 0, got {value}")


def _stored_limit(value: int | None) -> int | None:
    """A limit as read: a negative one, which only older versions could write (they let
    `set-limits --rpm -5` through), counts as the deployment's default rather than breaking every
    create of the account."""
    return None if value is None or value < 0 else int(value)


def hash_key(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_key() -> str:
    """`luma-api-` followed by 32 random bytes, URL-safe base64 (43 characters)."""
    return KEY_PREFIX + secrets.token_urlsafe(KEY_RANDOM_BYTES)


class AccountStore:
    """Accounts and keys. Successful key lookups are cached for `key_cache_s` seconds (default 2),
    so a busy API does not query the database for every request: revoking a key or suspending an
    account takes effect at once in this process and within `key_cache_s` in other processes."""

    def __init__(self, db: Database, key_cache_s: float = 2.0, key_cache_size: int = 10_000) -> None:
        self._db = db
        self._key_cache_s = key_cache_s
        self._key_cache_size = key_cache_size
        self._key_cache: dict[str, tuple[float, KeyMatch]] = {}

    def _forget_keys(self) -> None:
        self._key_cache.clear()

    # Accounts --------------------------------------------------------------------------------

    def create(
        self,
        name: str,
        balance: int | None = None,
        *,
        rpm_limit: int | None = None,
        concurrency_limit: int | None = None,
    ) -> Account:
        """A new active account: metered with `balance` micro-dollars, or unmetered when None; held
        to the deployment's default limits unless given its own (UNLIMITED: none).
        AccountExists when the name is taken."""
        _check_limits({"balance": balance, "rpm_limit": rpm_limit, "concurrency_limit": concurrency_limit})
        account = Account(
            id=str(uuid.uuid4()),
            name=name,
            status=AccountStatus.ACTIVE,
            created_at=utcnow(),
            metered=balance is not None,
            balance=balance or 0,
            rpm_limit=rpm_limit,
            concurrency_limit=concurrency_limit,
        )
        try:
            with self._db.write() as conn:
                conn.execute(
                    accounts.insert().values(
                        id=account.id,
                        name=account.name,
                        status=account.status,
                        created_at=account.created_at,
                        metered=account.metered,
                        balance=account.balance,
                        rpm_limit=account.rpm_limit,
                        concurrency_limit=account.concurrency_limit,
                    )
                )
        except sa.exc.IntegrityError as exc:  # the unique name (ids are random UUIDs)
            raise AccountExists(name) from exc
        return account

    def get(self, id_or_name: str) -> Account:
        with self._db.read() as conn:
            row = conn.execute(
                sa.select(accounts).where(sa.or_(accounts.c.id == id_or_name, accounts.c.name == id_or_name))
            ).first()
        if row is None:
            raise AccountNotFound(id_or_name)
        return _account(row)

    async def get_async(self, id_or_name: str) -> Account:
        """`get` for an event loop: inline on a SQLite file, else in a thread (Database.reads_inline)."""
        if self._db.reads_inline:
            return self.get(id_or_name)
        return await asyncio.to_thread(self.get, id_or_name)

    def all(self) -> list[Account]:
        with self._db.read() as conn:
            rows = conn.execute(sa.select(accounts).order_by(accounts.c.created_at)).all()
        return [_account(row) for row in rows]

    def count(self) -> int:
        with self._db.read() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(accounts)).scalar_one())

    def set_status(self, account_id: str, status: AccountStatus) -> None:
        self._update(account_id, status=status)

    def set_balance(self, account_id: str, balance: int | None) -> None:
        """Make the account metered with this balance (micro-dollars), or unmetered with None.
        Money held for running generations stays held."""
        _check_limits({"balance": balance})
        if balance is None:
            self._update(account_id, metered=False)
        else:
            self._update(account_id, metered=True, balance=balance)

    def set_limits(self, account_id: str, **limits: int | None) -> None:
        """Set rpm_limit and concurrency_limit (None: the deployment's default, UNLIMITED: none)
        and spend_cap (None: no cap). ValueError for a negative value."""
        unknown = set(limits) - {"rpm_limit", "concurrency_limit", "spend_cap"}
        if unknown:
            raise TypeError(f"unknown limits: {', '.join(sorted(unknown))}")
        _check_limits(limits)
        self._update(account_id, **limits)

    def _update(self, account_id: str, **values: object) -> None:
        self._forget_keys()
        with self._db.write() as conn:
            result = conn.execute(accounts.update().where(accounts.c.id == account_id).values(**values))
        if result.rowcount == 0:
            raise AccountNotFound(account_id)

    def within_spend_cap(self, account_id: str, price: int) -> bool:
        """Whether charging `price` keeps the account within its monthly spending cap (if it has
        one). Checked when a worker claims a job: captures made while the job waited, or a cap an
        admin lowered meanwhile, turn it into budget_exhausted."""
        with self._db.read() as conn:
            cap = conn.execute(sa.select(accounts.c.spend_cap).where(accounts.c.id == account_id)).scalar()
            if cap is None:
                return True
            return spent_since(conn, account_id, month_start()) + price <= int(cap)

    def spent_this_month(self, account_id: str) -> int:
        """Captured micro-dollars since the start of the current calendar month (UTC)."""
        with self._db.read() as conn:
            return spent_since(conn, account_id, month_start())

    # Keys ------------------------------------------------------------------------------------

    def create_key(
        self, account_id: str, name: str | None = None, expires_at: datetime | None = None
    ) -> tuple[ApiKey, str]:
        """A new key; returns the stored record and the key itself, which is never stored."""
        account = self.get(account_id)
        token = new_key()
        record = ApiKey(
            id=str(uuid.uuid4()),
            account_id=account.id,
            account_name=account.name,
            name=name,
            key_prefix=token[: len(KEY_PREFIX) + 6],
            created_at=utcnow(),
            expires_at=expires_at,
            revoked_at=None,
        )
        with self._db.write() as conn:
            conn.execute(
                api_keys.insert().values(
                    id=record.id,
                    account_id=record.account_id,
                    name=record.name,
                    key_hash=hash_key(token),
                    key_prefix=record.key_prefix,
                    created_at=record.created_at,
                    expires_at=record.expires_at,
                )
            )
        return record, token

    def list_keys(self, account_id: str | None = None) -> list[ApiKey]:
        query = sa.select(api_keys, accounts.c.name.label("account_name")).join(accounts)
        if account_id is not None:
            query = query.where(api_keys.c.account_id == account_id)
        with self._db.read() as conn:
            rows = conn.execute(query.order_by(api_keys.c.created_at)).all()
        return [
            ApiKey(
                id=row.id,
                account_id=row.account_id,
                account_name=row.account_name,
                name=row.name,
                key_prefix=row.key_prefix,
                created_at=row.created_at,
                expires_at=row.expires_at,
                revoked_at=row.revoked_at,
            )
            for row in rows
        ]

    def revoke_key(self, key_id_or_prefix: str) -> bool:
        """Revoke by key id (or by the displayed prefix when it is unique). False if none matched."""
        self._forget_keys()
        with self._db.write() as conn:
            matches = conn.execute(
                sa.select(api_keys.c.id).where(
                    sa.or_(api_keys.c.id == key_id_or_prefix, api_keys.c.key_prefix == key_id_or_prefix)
                )
            ).all()
            if len(matches) != 1:
                return False
            conn.execute(
                api_keys.update()
                .where(api_keys.c.id == matches[0].id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
        return True

    def cached_key(self, key_hash: str) -> KeyMatch | None:
        """A recent successful lookup of this key, if there is one (no database access)."""
        entry = self._key_cache.get(key_hash)
        if entry is None or time.monotonic() - entry[0] > self._key_cache_s:
            return None
        return entry[1]

    def find_key(self, key_hash: str) -> KeyMatch | None:
        """The key whose hash is `key_hash`, with its account's status; one indexed query."""
        match = self._lookup_key(key_hash)
        if match is not None and self._key_cache_s > 0:
            if len(self._key_cache) >= self._key_cache_size:
                self._key_cache.clear()
            self._key_cache[key_hash] = (time.monotonic(), match)
        return match

    async def find_key_async(self, key_hash: str) -> KeyMatch | None:
        """`find_key` for an event loop: inline on a SQLite file, else in a thread (see `get_async`)."""
        if self._db.reads_inline:
            return self.find_key(key_hash)
        return await asyncio.to_thread(self.find_key, key_hash)

    def _lookup_key(self, key_hash: str) -> KeyMatch | None:
        row = self._db.fetch_one(_FIND_KEY, {"key_hash": key_hash})
        if row is None:
            return None
        return KeyMatch(
            key_id=row["id"],
            key_hash=row["key_hash"],
            account_id=row["account_id"],
            account_status=AccountStatus(row["status"]),
            expires_at=row["expires_at"],
            revoked_at=row["revoked_at"],
            metered=bool(row["metered"]),
            rpm_limit=_stored_limit(row["rpm_limit"]),
            concurrency_limit=_stored_limit(row["concurrency_limit"]),
        )


def month_start(moment: datetime | None = None) -> datetime:
    moment = moment or utcnow()
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def spent_since(conn: sa.Connection, account_id: str, since: datetime) -> int:
    query = sa.select(sa.func.coalesce(sa.func.sum(ledger.c.amount), 0)).where(
        ledger.c.account_id == account_id, ledger.c.kind == "capture", ledger.c.created_at >= since
    )
    return int(conn.execute(query).scalar_one())


_FIND_KEY = (
    sa.select(
        api_keys.c.id,
        api_keys.c.key_hash,
        api_keys.c.account_id,
        api_keys.c.expires_at,
        api_keys.c.revoked_at,
        accounts.c.status,
        accounts.c.metered,
        accounts.c.rpm_limit,
        accounts.c.concurrency_limit,
    )
    .join(accounts)
    .where(api_keys.c.key_hash == sa.bindparam("key_hash"))
)


def _account(row: sa.Row[tuple[object, ...]]) -> Account:
    return Account(
        id=str(row.id),
        name=str(row.name),
        status=AccountStatus(row.status),
        created_at=row.created_at,
        metered=bool(row.metered),
        balance=int(row.balance),
        reserved=int(row.reserved),
        spend_cap=row.spend_cap,
        rpm_limit=_stored_limit(row.rpm_limit),
        concurrency_limit=_stored_limit(row.concurrency_limit),
    )
