"""Dispatch latency across processes: a job created in one process, claimed by an idle worker in
another, on SQLite and on PostgreSQL.

Command:

    .venv/bin/python bench/dispatch_bench.py [--jobs 100] [--gap 0.05] [--postgres URL] [--no-write]

A worker process (the store and the worker loop's wait: `ChangeWatcher.wait(timeout=1,
poll_s=idle_poll_s)`, then a claim) sits idle; this process creates one job at a time, `--gap`
seconds apart, so the worker is idle before each. Latency is the row's `started_at` (set by the
claim) minus its `created_at` (set just before the create's commit), both read from the same
host's clock. On SQLite the worker learns of another process's commit by reading `PRAGMA
data_version` every `idle_poll_s` (5 ms); on PostgreSQL from a NOTIFY sent by the create, which the
process's listener thread receives. Without `--postgres` a throwaway PostgreSQL 15 cluster is
started (tests/support/postgres.py). Figures are appended to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import multiprocessing
import platform
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).with_name("RESULTS.md")
IDLE_POLL_S = 0.005


def worker(
    url: str, ready: multiprocessing.synchronize.Event, stop: multiprocessing.synchronize.Event
) -> None:
    from daguerre.store import open_store

    store = open_store(url, migrate=False)
    watcher = store.db.watcher()
    ready.set()
    while not stop.is_set():
        record = store.generations.claim("bench", 30)
        if record is None:
            watcher.wait(timeout=1.0, poll_s=IDLE_POLL_S)
            continue
        assert record.lease_token is not None
        store.generations.complete(record.id, record.lease_token, ())
    watcher.close()
    store.close()


def measure(url: str, jobs: int, gap: float) -> list[float]:
    from daguerre.store import open_store
    from daguerre.store.generations import NewGeneration
    from daguerre.wire import GenerationCreate

    store = open_store(url)
    account = store.accounts.create(f"bench-{uuid.uuid4().hex[:8]}")
    context = multiprocessing.get_context("spawn")
    ready, stop = context.Event(), context.Event()
    process = context.Process(target=worker, args=(url, ready, stop))
    process.start()
    ready.wait(60)
    time.sleep(0.5)
    ids = []
    for _ in range(jobs):
        new = NewGeneration(str(uuid.uuid4()), account.id, GenerationCreate(prompt="x"), "1:1", (), 3)
        ids.append(store.generations.create(new).id)  # type: ignore[union-attr]
        time.sleep(gap)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        records = [store.generations.get(generation_id) for generation_id in ids]
        if all(record is not None and record.started_at is not None for record in records):
            break
        time.sleep(0.05)
    stop.set()
    process.join(10)
    store.close()
    return [
        (record.started_at - record.created_at).total_seconds() * 1000
        for record in records
        if record is not None and record.started_at is not None
    ]


def summary(delays: list[float]) -> str:
    ordered = sorted(delays)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return f"p50 {statistics.median(ordered):.1f} ms, p99 {p99:.1f} ms, max {ordered[-1]:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--gap", type=float, default=0.05)
    parser.add_argument("--postgres", help="a PostgreSQL server URL (postgresql+psycopg://...)")
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to RESULTS.md")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    from support.postgres import drop_database, fresh_database, postgres_server

    figures: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as directory:
        figures["SQLite (data_version every 5 ms)"] = measure(
            f"sqlite:///{directory}/bench.db", args.jobs, args.gap
        )

    def on_postgres(server: str) -> None:
        url = fresh_database(server)
        try:
            figures["PostgreSQL 15 (LISTEN/NOTIFY)"] = measure(url, args.jobs, args.gap)
        finally:
            drop_database(url)

    if args.postgres:
        on_postgres(args.postgres)
    else:
        with postgres_server() as server:
            on_postgres(server)
    lines = [
        f"### Dispatch across processes — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: {platform.machine()}, {multiprocessing.cpu_count()} cores, "
        f"Python {platform.python_version()}. Command: `python bench/dispatch_bench.py --jobs {args.jobs} "
        f"--gap {args.gap}` (created in one process, claimed by an idle worker loop in another; "
        "started_at - created_at).",
        "",
        "| database | dispatch latency |",
        "|---|---|",
        *(f"| {name} | {summary(delays)} |" for name, delays in figures.items()),
    ]
    print("\n".join(lines))
    if not args.no_write:
        existing = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
        RESULTS.write_text(existing.rstrip("\n") + "\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
