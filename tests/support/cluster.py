"""The cluster profile, all on loopback: two `daguerre serve` API processes on different ports
sharing one PostgreSQL database, one S3 bucket (SeaweedFS), one Redis and one Temporal server; a
full `daguerre worker`; and an engine-only `daguerre worker --engine-only` started without any
database setting.

    cluster = Cluster.start(root, models, services, workers=True)
    cluster.apis[0].api_url, cluster.apis[1].api_url, cluster.key
    cluster.sdk()                      # a luma_agents.Luma whose requests alternate between A and B
    cluster.engine_workers[0].kill()   # SIGKILL; cluster.start_engine_worker() starts another
    cluster.stop()                     # 0 when every process stopped cleanly

Each cluster has its own database, key prefix in the bucket and Temporal task queue, so clusters
started by different test modules never see each other's jobs.
"""

from __future__ import annotations

import itertools
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from support.helpers import LiveServer, RedisServer, start_server, subprocess_env
from support.seaweed import REGION, SeaweedFS
from support.temporal import TemporalServer

HEARTBEAT_TIMEOUT_S = 2.0
"""Temporal's heartbeat timeout in the cluster: a killed engine worker's job runs again elsewhere
this long after its last heartbeat."""


@dataclass
class ClusterServices:
    """The servers a cluster shares (started once per test run by the fixtures in conftest)."""

    postgres_template: str
    seaweedfs: SeaweedFS
    redis: RedisServer
    temporal: TemporalServer


@dataclass
class WorkerProcess:
    name: str
    process: subprocess.Popen[bytes]
    data_dir: Path
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while "temporal worker:" not in self.log():
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start:\n{self.log()}")
            time.sleep(0.1)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self, timeout_s: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


class RoundRobin(httpx.HTTPTransport):
    """Sends each request to the next of several origins, as a load balancer would."""

    def __init__(self, origins: list[str]) -> None:
        super().__init__()
        self._origins = itertools.cycle([httpx.URL(origin) for origin in origins])
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            origin = next(self._origins)
        request.url = request.url.copy_with(host=origin.host, port=origin.port)
        request.headers["host"] = f"{origin.host}:{origin.port}"
        return super().handle_request(request)


@dataclass
class Cluster:
    root: Path
    models: Path
    env: dict[str, str]
    """What every daguerre process of the cluster is started with (Temporal, the bucket)."""
    database_url: str
    env_api: dict[str, str] = field(default_factory=dict)
    """What the API processes and the full worker add: the database, and Redis."""
    apis: list[LiveServer] = field(default_factory=list)
    full_workers: list[WorkerProcess] = field(default_factory=list)
    engine_workers: list[WorkerProcess] = field(default_factory=list)
    key: str = ""
    _count: itertools.count[int] = field(default_factory=itertools.count)
    _http: httpx.Client | None = None

    @classmethod
    def start(
        cls,
        root: Path,
        models: Path,
        services: ClusterServices,
        *,
        workers: bool = True,
        full_worker_models: list[str] | None = None,
        engine_models: list[str] | None = None,
        engine_workers: int = 1,
        **env: str,
    ) -> Cluster:
        """Both API processes; with `workers`, one full worker (serving `full_worker_models`, default
        every model) and `engine_workers` engine-only workers (serving `engine_models`)."""
        from support.postgres import migrated_database

        root.mkdir(parents=True, exist_ok=True)
        seaweedfs = services.seaweedfs
        shared = {
            "DAGUERRE_EXECUTION": "temporal",
            "DAGUERRE_TEMPORAL_ADDRESS": services.temporal.address,
            "DAGUERRE_TEMPORAL_TASK_QUEUE": f"cluster-{uuid.uuid4().hex[:12]}",
            "DAGUERRE_TEMPORAL_HEARTBEAT_TIMEOUT_S": str(HEARTBEAT_TIMEOUT_S),
            "DAGUERRE_BLOB_URL": f"s3://{seaweedfs.bucket}/cluster-{uuid.uuid4().hex[:12]}",
            "AWS_ENDPOINT_URL_S3": seaweedfs.endpoint,
            "AWS_ACCESS_KEY_ID": seaweedfs.credentials.access_key,
            "AWS_SECRET_ACCESS_KEY": seaweedfs.credentials.secret_key,
            "AWS_REGION": REGION,
            "DAGUERRE_MODELS_FILE": str(models),
            **env,
        }
        database_url = migrated_database(services.postgres_template)
        env_api = {"DAGUERRE_DATABASE_URL": database_url, "DAGUERRE_RATE_LIMIT_STORAGE": services.redis.url}
        cluster = cls(root, models, shared, database_url, env_api)
        try:
            for name in ("api-a", "api-b"):  # A first: on the empty database it makes the first key
                cluster.apis.append(cluster._start_api(name))
            cluster.key = cluster.apis[0].key
            if workers:
                cluster.start_full_worker(full_worker_models)
                for _ in range(engine_workers):
                    cluster.start_engine_worker(engine_models)
                for worker in cluster.workers:
                    worker.wait_ready()
        except BaseException:
            cluster.stop()
            raise
        return cluster

    @property
    def workers(self) -> list[WorkerProcess]:
        return self.full_workers + self.engine_workers

    # The LiveServer face, for tests written for one `daguerre serve` ------------------------------

    @property
    def base_url(self) -> str:
        return self.apis[0].base_url

    @property
    def api_url(self) -> str:
        return self.apis[0].api_url

    def sdk(self, **options: Any) -> Any:
        """The official SDK, its requests alternating between the two API processes."""
        import luma_agents

        if self._http is None:  # one for every client, closed by stop()
            origins = [api.base_url for api in self.apis]
            self._http = httpx.Client(transport=RoundRobin(origins), timeout=60)
        options.setdefault("auth_token", self.key)
        options.setdefault("base_url", self.api_url)
        return luma_agents.Luma(http_client=self._http, **options)

    def cli_env(self) -> dict[str, str]:
        """The environment of a `daguerre` command run against the cluster's database."""
        return {**self.env, **self.env_api, "DAGUERRE_DATA_DIR": str(self.root / "cli")}

    def log(self) -> str:
        parts = [f"--- {api.log_path.name}\n{api.log()}" for api in self.apis]
        parts += [f"--- {worker.name}\n{worker.log()}" for worker in self.workers]
        return "\n".join(parts)

    # Processes --------------------------------------------------------------------------------------

    def _start_api(self, name: str) -> LiveServer:
        return start_server(self.root / name, self.models, workers=0, **self.env, **self.env_api)

    def restart_api(self, index: int) -> LiveServer:
        """Start API process `index` again (after a kill), on a new port."""
        self.apis[index].stop()
        name = "api-a" if index == 0 else "api-b"
        self.apis[index] = self._start_api(name)
        if self._http is not None:  # the SDK's clients from now on reach the new process
            self._http.close()
            self._http = None
        return self.apis[index]

    def start_full_worker(self, models: list[str] | None = None) -> WorkerProcess:
        worker = self._start_worker("full", [], models, {**self.env, **self.env_api})
        self.full_workers.append(worker)
        return worker

    def start_engine_worker(self, models: list[str] | None = None) -> WorkerProcess:
        """An engine-only worker: Temporal and the bucket, no database setting at all."""
        worker = self._start_worker("engine", ["--engine-only"], models, dict(self.env))
        self.engine_workers.append(worker)
        return worker

    def _start_worker(
        self, kind: str, flags: list[str], models: list[str] | None, env: dict[str, str]
    ) -> WorkerProcess:
        name = f"{kind}-{next(self._count)}"
        data_dir = self.root / name
        data_dir.mkdir(parents=True)
        log_path = self.root / f"{name}.log"
        argv = [sys.executable, "-m", "daguerre.cli", "worker", *flags]
        for model in models or ():
            argv += ["--model", model]
        environment = subprocess_env(**env, DAGUERRE_DATA_DIR=str(data_dir), DAGUERRE_WORKER_ID=name)
        with open(log_path, "wb") as log:
            process = subprocess.Popen(argv, env=environment, stdout=log, stderr=subprocess.STDOUT)
        return WorkerProcess(name, process, data_dir, log_path)

    def stop(self) -> int:
        """Stop every process (workers first); 0, or the first unclean exit status."""
        if self._http is not None:
            self._http.close()
        codes = [worker.stop() for worker in self.workers]
        codes += [api.stop() for api in self.apis]
        unclean = [code for code in codes if code not in (0, -signal.SIGTERM, -signal.SIGKILL)]
        from support.postgres import drop_database

        drop_database(self.database_url)
        return unclean[0] if unclean else 0


# Tests written for either profile --------------------------------------------------------------


def sdk(server: LiveServer | Cluster, **options: Any) -> Any:
    """The SDK against `server` (on a cluster, alternating between its API processes)."""
    import luma_agents

    if isinstance(server, Cluster):
        return server.sdk(**options)
    return luma_agents.Luma(**{"auth_token": server.key, "base_url": server.api_url, **options})


def run_cli(server: LiveServer | Cluster, *args: str) -> Any:
    """`daguerre ARGS` against the server's database; the click Result."""
    from typer.testing import CliRunner

    from daguerre.cli import app

    if isinstance(server, Cluster):
        return CliRunner().invoke(app, list(args), env=server.cli_env())
    return CliRunner().invoke(app, [*args, "--data-dir", str(server.data_dir)])
