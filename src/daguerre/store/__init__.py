"""Metadata and the job queue, in SQL: SQLite by default, PostgreSQL for scale-out.

store = open_store(settings.resolved_database_url)   # runs pending migrations
store.accounts.find_key(...); store.generations.claim(...)
await store.generations.summary_async(...)           # from an event loop: the store picks the thread

db.py is the database handle; commits.py, sqlite_commits.py, sqlite_fast.py and changes.py hold
what runs behind it (group commit, the event loop's commits and the checkpoint thread, the
precompiled statements, change notification), postgres.py what only PostgreSQL needs (the queue's
LISTEN/NOTIFY, the migrations' lock); accounts.py, generations.py, files.py, idempotency.py and money.py
the statements themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

from daguerre.store.accounts import AccountStore
from daguerre.store.db import Database
from daguerre.store.files import FileStore
from daguerre.store.generations import GenerationStore
from daguerre.store.idempotency import IdempotencyStore
from daguerre.store.migrate import upgrade
from daguerre.store.webhooks import WebhookStore


@dataclass(frozen=True)
class Store:
    db: Database
    accounts: AccountStore
    generations: GenerationStore
    files: FileStore
    idempotency: IdempotencyStore
    webhooks: WebhookStore

    def close(self) -> None:
        self.db.dispose()


def open_store(url: str, *, migrate: bool = True, key_cache_s: float = 2.0) -> Store:
    """Open the database at `url`, bringing its schema up to date first unless told not to."""
    if migrate:
        upgrade(url)
    db = Database(url)
    return Store(
        db=db,
        accounts=AccountStore(db, key_cache_s=key_cache_s),
        generations=GenerationStore(db),
        files=FileStore(db),
        idempotency=IdempotencyStore(db),
        webhooks=WebhookStore(db),
    )


__all__ = ["Store", "open_store"]
