"""How many CPU threads each worker's engine may use, so that workers never oversubscribe a host.

The rule: every engine worker on this host gets `max(1, cores // workers)` threads, where

* `cores` is the number of CPUs this process may run on (`os.sched_getaffinity`: what `taskset`,
  a container's cpuset or systemd's `CPUAffinity` gives it), and
* `workers` is the number of engine workers of every daguerre process on this host that shares
  the run directory (`<data_dir>/run/workers`): `daguerre serve --workers N` and each
  `daguerre worker` register there, each holding a lock on its own file for as long as it runs.

`engine_threads` set in the settings overrides the rule. Workers re-read the registry at most
every REFRESH_S seconds, before a job, so a worker that starts or stops beside them is taken into
account from their next job on. OpenMP's threads spin while they wait for the next operation;
with the rule no core is shared by two workers' threads, so the spinning costs nobody anything,
and a lone worker is much faster for it. Only an `engine_threads` that oversubscribes the cores
makes the CLI ask OpenMP to wait passively (`choose_wait_policy`).

Measured on a 2-core machine (issue 13): `daguerre serve` plus one `daguerre worker`, each with
torch's default of two spinning threads, made 20-31 `uni-1` images a minute instead of about 190;
see bench/RESULTS.md for the figures with this rule.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

REFRESH_S = 2.0


def cores_given() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class HostWorkers:
    """This process's entry in the host's registry of engine workers.

    with HostWorkers(run_dir, count=2) as host:
        host.total()        # engine workers of every registered process, this one included
    """

    def __init__(self, directory: Path, count: int) -> None:
        self.directory = directory
        self.count = count
        self._path = directory / f"{os.getpid()}.workers"
        self._fd: int | None = None

    def __enter__(self) -> HostWorkers:
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, str(self.count).encode())
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            self._path.unlink(missing_ok=True)
            os.close(self._fd)  # releases the lock
            self._fd = None

    def total(self) -> int:
        """Workers of every live registered process; files left by dead processes are removed."""
        total = 0
        for path in self.directory.glob("*.workers"):
            if path == self._path:
                total += self.count
                continue
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                except BlockingIOError:  # its process holds the lock: alive
                    total += _count(os.pread(fd, 16, 0))
                else:  # nobody holds it: its process is gone
                    path.unlink(missing_ok=True)
            finally:
                os.close(fd)
        return max(total, 1)


def _count(text: bytes) -> int:
    try:
        return max(0, int(text.decode()))
    except ValueError:
        return 1


class ThreadBudget:
    """The engine threads for this process's workers, by the rule above, refreshed now and then."""

    def __init__(
        self, host: HostWorkers | None, explicit: int | None = None, cores: int | None = None
    ) -> None:
        self._host = host
        self._explicit = explicit
        self._cores = cores or cores_given()
        self._lock = threading.Lock()
        self._threads = 0
        self._checked = float("-inf")

    def threads(self) -> int:
        """Threads per engine worker now."""
        if self._explicit is not None:
            return self._explicit
        with self._lock:
            if time.monotonic() - self._checked >= REFRESH_S:
                workers = self._host.total() if self._host is not None else 1
                threads = max(1, self._cores // workers)
                if threads != self._threads:
                    log.info(
                        "engine threads per worker: %d (%d cores, %d workers)", threads, self._cores, workers
                    )
                self._threads, self._checked = threads, time.monotonic()
            return self._threads


def choose_wait_policy(engine_threads: int | None, workers: int, cores: int | None = None) -> None:
    """Let OpenMP's idle threads sleep (`OMP_WAIT_POLICY=PASSIVE`) when this process's workers
    would oversubscribe its cores: only when `engine_threads` is set by hand so high that
    `engine_threads * workers > cores`. Otherwise OpenMP's default stands: its threads spin
    briefly between operations, which the rule above leaves room for, and which is much faster
    for a lone worker (measured on 2 cores, `uni-1`: 345 images a minute spinning, 196 passive).
    Takes effect only before torch (and its OpenMP runtime) loads, which is why the CLI calls it
    first; a value the user set is kept."""
    if engine_threads is not None and engine_threads * max(1, workers) > (cores or cores_given()):
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
