"""The stores' async reads decide where they run: on the caller's event loop for a SQLite file (a
thread hand-off costs more than the read), in a worker thread otherwise (Database.reads_inline)."""

from __future__ import annotations

import asyncio
import threading
import uuid
from datetime import timedelta

import pytest

from daguerre.store.accounts import hash_key
from daguerre.store.clock import utcnow
from daguerre.store.files import NewFile
from daguerre.store.generations import NewGeneration
from daguerre.wire import GenerationCreate

pytestmark = pytest.mark.both_databases


@pytest.mark.parametrize("inline", [True, False])
def test_async_reads_answer_what_the_sync_ones_do_on_the_loop_or_in_a_thread(
    store, key, monkeypatch, inline, database
):
    generation = store.generations.create(
        NewGeneration(str(uuid.uuid4()), key.account_id, GenerationCreate(prompt="x"), "1:1", (), 3)
    )
    file = store.files.create(NewFile(key.account_id, "image/png", 10))
    assert store.db.reads_inline == (database == "sqlite")  # a SQLite file: inline; a server: not
    monkeypatch.setattr(store.db, "reads_inline", inline)
    threads: set[int] = set()
    for name in ("get", "summary", "count_active", "usage"):
        monkeypatch.setattr(store.generations, name, _recording(getattr(store.generations, name), threads))
    for name in ("get", "find_key"):
        monkeypatch.setattr(store.accounts, name, _recording(getattr(store.accounts, name), threads))
    monkeypatch.setattr(store.files, "get", _recording(store.files.get, threads))
    now = utcnow()
    hour = timedelta(hours=1)

    async def reads() -> tuple[list[object], int]:
        answers = [
            await store.generations.get_async(generation.id, key.account_id),
            await store.generations.summary_async(generation.id, key.account_id),
            await store.generations.count_active_async(key.account_id, 10),
            await store.generations.usage_async(key.account_id, now - hour, now + hour, "model"),
            await store.accounts.get_async(key.account_id),
            await store.accounts.find_key_async(hash_key(key.token)),
            await store.files.get_async(file.id, key.account_id),
        ]
        return answers, threading.get_ident()

    answers, loop_thread = asyncio.run(reads())
    ran_on = set(threads)  # where the sync reads behind the async ones ran
    assert ran_on and ((ran_on == {loop_thread}) if inline else (loop_thread not in ran_on))
    assert answers == [
        store.generations.get(generation.id, key.account_id),
        store.generations.summary(generation.id, key.account_id),
        1,
        [("uni-1", "queued", 1, 0)],
        store.accounts.get(key.account_id),
        store.accounts.find_key(hash_key(key.token)),
        store.files.get(file.id, key.account_id),
    ]


def _recording(function, threads):
    def recorded(*args, **kwargs):
        threads.add(threading.get_ident())
        return function(*args, **kwargs)

    return recorded
