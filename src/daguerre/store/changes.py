"""Change notification: this process's commits, counted, and a watcher that waits for the next change.

`ChangeSignal` is all a committer, the checkpoint thread (sqlite_commits.Checkpointer) or a watcher
needs to share: the commit count and a condition to wait on. `Database` owns one and bumps it
after every write transaction it commits.
"""

from __future__ import annotations

import sqlite3
import threading
import time


class ChangeSignal:
    """Counts the write transactions this process has committed; waiters wake at the next one."""

    def __init__(self) -> None:
        self._count = 0
        self._changed = threading.Condition()

    @property
    def count(self) -> int:
        """Commits so far; compare it with an earlier count to know whether anything changed."""
        return self._count

    def notify(self) -> None:
        """A write transaction has committed: count it and wake every waiter."""
        with self._changed:
            self._count += 1
            self._changed.notify_all()

    def wake(self) -> None:
        """Wake every waiter without counting a commit (so that one can see it is asked to stop)."""
        with self._changed:
            self._changed.notify_all()

    def wait(self, seen: int, timeout: float | None = None, stop: threading.Event | None = None) -> int:
        """Block until the count is no longer `seen`, `timeout` seconds pass (None: no limit) or
        `stop` is set (then call `wake`); the count then, which is `seen` when nothing changed."""
        with self._changed:
            if timeout is None:
                while self._count == seen and not (stop is not None and stop.is_set()):
                    self._changed.wait()
            elif self._count == seen:
                self._changed.wait(timeout)
            return self._count


class ChangeWatcher:
    """Lets an idle worker sleep until the database may hold new work, without slow polling.

    Commits made through the same `Database` wake it at once (its ChangeSignal). Commits by other
    processes are seen through SQLite's `PRAGMA data_version`, a counter in shared memory that costs
    microseconds to read, checked every `poll_s`. On PostgreSQL the other processes' new jobs arrive
    as notifications, which the Database's QueueListener turns into ChangeSignal wake-ups
    (store.postgres); nothing is polled.
    """

    def __init__(self, changes: ChangeSignal, sqlite_path: str | None) -> None:
        self._changes = changes
        self._seen_commits = changes.count
        self._sqlite: sqlite3.Connection | None = None
        self._data_version = -1
        if sqlite_path is not None:
            self._sqlite = sqlite3.connect(sqlite_path, check_same_thread=False)
            self._data_version = self._read_data_version()

    def _read_data_version(self) -> int:
        assert self._sqlite is not None
        row = self._sqlite.execute("PRAGMA data_version").fetchone()
        return int(row[0])

    def _external_change(self) -> bool:
        if self._sqlite is None:
            return False
        version = self._read_data_version()
        changed = version != self._data_version
        self._data_version = version
        return changed

    def wait(self, timeout: float, poll_s: float) -> bool:
        """Block up to `timeout` seconds; True as soon as a change may have happened."""
        deadline = time.monotonic() + timeout
        while True:
            if self._changes.count != self._seen_commits:
                self._seen_commits = self._changes.count
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            step = min(poll_s, remaining) if self._sqlite is not None else remaining
            count = self._changes.wait(self._seen_commits, step)
            if count != self._seen_commits:
                self._seen_commits = count
                return True
            if self._external_change():
                return True

    def close(self) -> None:
        if self._sqlite is not None:
            self._sqlite.close()
            self._sqlite = None
