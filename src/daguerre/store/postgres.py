"""What only PostgreSQL needs: the queue's notifications, and the migrations' lock.

On SQLite an idle worker learns of other processes' commits from `PRAGMA data_version` (see
changes.ChangeWatcher). PostgreSQL has no such counter; it has LISTEN/NOTIFY. A transaction that
makes a job claimable (a create, a hand-back) sends `NOTIFY daguerre_queue` (`notify_queue`), which
the server delivers to every listening session of the same database when that transaction commits.
In each process with workers one `QueueListener` thread holds a session that LISTENs and turns each
notification into a wake-up of the process's ChangeSignal, on which its idle workers wait. The
listener sleeps on its socket, so idle workers cost the database nothing; should its session drop,
it connects again, and the workers still look for work every second on their own (worker.loop).
"""

from __future__ import annotations

import logging
import os
import select
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import Connection

from daguerre.store.changes import ChangeSignal

log = logging.getLogger(__name__)

QUEUE_CHANNEL = "daguerre_queue"
DONE_CHANNEL = "daguerre_done"
"""Notified when generations end (completed or failed): API processes with requests waiting for
them (api.waiting) listen."""
MIGRATION_LOCK = 7260011
"""The key of the transaction-level advisory lock that serialises migrations (migrations/env.py)."""
RECONNECT_S = 1.0


def notify_done(conn: Connection) -> None:
    """Wake whatever waits for generations to end, once `conn`'s transaction commits."""
    conn.exec_driver_sql(f"NOTIFY {DONE_CHANNEL}")


def notify_queue(conn: Connection) -> None:
    """Wake the idle workers of every process once `conn`'s transaction commits (several
    notifications in one transaction are delivered as one)."""
    conn.exec_driver_sql(f"NOTIFY {QUEUE_CHANNEL}")


class QueueListener:
    """A thread that LISTENs on the queue and done channels and wakes `changes`' waiters on every
    notification. `connect` returns a new psycopg connection, which the listener owns. Once made,
    it is listening (unless the database could not be reached within `ready_s`): every job
    created or handed back after that wakes the waiters."""

    def __init__(self, connect: Callable[[], Any], changes: ChangeSignal, ready_s: float = 10.0) -> None:
        self._connect = connect
        self._changes = changes
        self._wake_r, self._wake_w = os.pipe()
        self._stopping = threading.Event()
        self._listening = threading.Event()
        self._thread = threading.Thread(target=self._run, name="queue-listener", daemon=True)
        self._thread.start()
        self._listening.wait(ready_s)

    def close(self) -> None:
        self._stopping.set()
        os.write(self._wake_w, b"x")
        self._thread.join()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _run(self) -> None:
        while not self._stopping.is_set():
            conn: Any = None
            try:
                conn = self._connect()
                conn.autocommit = True
                conn.execute(f"LISTEN {QUEUE_CHANNEL}")
                conn.execute(f"LISTEN {DONE_CHANNEL}")
                if self._listening.is_set():
                    # Jobs may have come while no session listened: let the workers look once.
                    self._changes.notify()
                self._listening.set()
                self._listen(conn)
            except Exception:
                if self._stopping.is_set():
                    return
                log.warning("listening for new jobs failed; again in %g s", RECONNECT_S, exc_info=True)
                select.select([self._wake_r], [], [], RECONNECT_S)
            finally:
                if conn is not None:
                    conn.close()

    def _listen(self, conn: Any) -> None:
        socket = conn.fileno()
        while not self._stopping.is_set():
            ready, _, _ = select.select([socket, self._wake_r], [], [])
            if self._wake_r in ready:
                return
            # Reads what arrived without waiting; raises when the session is gone.
            if list(conn.notifies(timeout=0)):
                self._changes.notify()
