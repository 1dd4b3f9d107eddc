"""API throughput and dispatch latency, as ratios to a bare FastAPI endpoint measured in the same run.

Command (wrk from Debian's package `wrk`):

    .venv/bin/python bench/api_bench.py [--rounds 7] [--duration 3] [--connections 16]

One uvicorn process serves daguerre's app plus a bare `async def` JSON endpoint (`/bench/bare`)
added to the same app, so the baseline goes through the same server, event loop and middleware;
the ratio is the cost of daguerre's own work per request. wrk drives the endpoints below in rounds;
the machines are shared and their speed drifts over tens of seconds, so each endpoint runs right
after a bare run of its own, is divided by it, and each ratio is the median over rounds:

* `GET /bench/bare`                      the baseline
* `GET /v1/generations/{id}` (queued)    what polling clients mostly do: auth and one row
* `GET /v1/generations/{id}` (completed) auth, one row and a freshly minted presigned URL
* `POST /v1/generations`                 validation, rate limits, the concurrency check and one INSERT
                                         in SQLite, spread over 1,000 accounts. No worker runs; between
                                         rounds the bench marks the queued jobs completed (as workers
                                         would), so an account has at most about ten active jobs, as
                                         under Luma's default limit. Every round's creates stay in the
                                         table: later rounds insert into a larger one.

Dispatch latency: a second server with one idle in-process worker; sequential creates, each
measured from `created_at` to `started_at` in the database.

Targets (issue 2): GET >= 60 % and POST >= 40 % of the bare endpoint's req/s; dispatch p50 <= 20 ms.
Figures are appended to bench/RESULTS.md with the date and machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

BENCH_DIR = Path(__file__).parent
ROOT = BENCH_DIR.parent
RESULTS = BENCH_DIR / "RESULTS.md"

SERVER = """
import sys
from fastapi import FastAPI
import uvicorn
from daguerre.api import create_app
from daguerre.blobs import open_blob_store
from daguerre.settings import Settings
from daguerre.store import open_store
from daguerre.worker import WorkerPool

settings = Settings(
    data_dir=sys.argv[1], models_file=sys.argv[2], workers=int(sys.argv[4]), log_level="warning"
)
store = open_store(settings.resolved_database_url)
blobs = open_blob_store(settings)
app = create_app(settings, store, blobs)

@app.get("/bench/bare")
async def bare() -> dict[str, str]:
    return {"status": "ok"}

pool = WorkerPool(settings, store, blobs, settings.workers)
pool.start()
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[3]), log_level="warning", access_log=False)
pool.stop()
"""

MODELS = """
[models."uni-1"]
engine = "python"
entrypoint = "engines:InstantEngine"
[models."uni-1-max"]
engine = "python"
entrypoint = "engines:InstantEngine"
"""

POST_LUA = """
local keys = {%s}
local body = '{"prompt": "a red circle above a blue square", "aspect_ratio": "16:9"}'
request = function()
  local headers = {["Authorization"] = "Bearer " .. keys[math.random(#keys)],
                   ["Content-Type"] = "application/json"}
  return wrk.format("POST", nil, headers, body)
end
"""
POST_ACCOUNTS = 1000


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(data_dir: Path, models: Path, workers: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(BENCH_DIR)}
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(data_dir), str(models), str(port), str(workers)], env=env
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(base + "/healthz").status_code == 200:
                return process, base
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("server did not start")


def make_keys(data_dir: Path, count: int = 1) -> list[str]:
    """API keys of `count` new accounts. The rate limits still run on every create; they are only
    set high enough never to refuse one in the benchmark."""
    from daguerre.settings import Settings
    from daguerre.store import open_store

    store = open_store(Settings(data_dir=data_dir).resolved_database_url)
    tokens = []
    for i in range(count):
        account = store.accounts.create(f"bench-{i}")
        store.accounts.set_limits(account.id, rpm_limit=10**9, concurrency_limit=1000)
        tokens.append(store.accounts.create_key(account.id)[1])
    store.close()
    return tokens


def wrk(
    url: str, key: str | None, duration: int, connections: int, script: Path | None = None
) -> dict[str, float]:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency"]
    if key:
        command += ["-H", f"Authorization: Bearer {key}"]
    if script:
        command += ["-s", str(script)]
    output = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    if non_2xx:
        raise RuntimeError(f"{url}: {non_2xx.group(1)} error responses\n{output}")

    def percentile(name: str) -> float:
        value, unit = re.search(rf"{name}%\s+([\d.]+)(us|ms|s)", output).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    return {"rps": rps, "p50_ms": percentile("50"), "p99_ms": percentile("99")}


def finish_queued_jobs(data_dir: Path, keep: str) -> None:
    """Mark every queued generation but `keep` completed, as workers would have: the throughput
    server runs none. Between POST runs, so that each account starts a run with no active job and
    ends it with about ten (Luma's default limit), while the table keeps growing like a real one."""
    import sqlite3

    conn = sqlite3.connect(data_dir / "daguerre.db", timeout=30)
    with conn:
        conn.execute(
            "UPDATE generations SET state = 'completed', finished_at = created_at"
            " WHERE state = 'queued' AND id != ?",
            (keep,),
        )
    conn.close()


def dispatch_latency(base: str, key: str, data_dir: Path, count: int) -> dict[str, float]:
    from daguerre.settings import Settings
    from daguerre.store import open_store

    store = open_store(Settings(data_dir=data_dir).resolved_database_url, migrate=False)
    headers = {"Authorization": f"Bearer {key}"}
    delays = []
    with httpx.Client(base_url=base, headers=headers) as client:
        # The first job waits for the worker to start (it loads its models before it claims
        # anything); it is timed apart, and the figures below are for an idle, ready worker.
        started = time.perf_counter()
        first_id = client.post("/v1/generations", json={"prompt": "warm-up"}).json()["id"]
        while store.generations.get(first_id).state.value != "completed":  # type: ignore[union-attr]
            time.sleep(0.005)
        first_job_ms = (time.perf_counter() - started) * 1000
        for _ in range(count):
            generation_id = client.post("/v1/generations", json={"prompt": "dispatch"}).json()["id"]
            while (record := store.generations.get(generation_id)).state.value != "completed":
                time.sleep(0.005)
            assert record.started_at is not None
            delays.append((record.started_at - record.created_at).total_seconds() * 1000)
            time.sleep(0.05)  # let the worker go idle again
    store.close()
    delays.sort()
    return {
        "p50_ms": statistics.median(delays),
        "p99_ms": delays[min(len(delays) - 1, round(0.99 * (len(delays) - 1)))],
        "max_ms": delays[-1],
        "first_job_ms": first_job_ms,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # Many short pairs rather than a few long ones: a burst of noise spoils one pair, not the median.
    parser.add_argument("--duration", type=int, default=3, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--dispatch-count", type=int, default=100)
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to RESULTS.md")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")

    work = Path(tempfile.mkdtemp(prefix="daguerre-bench-"))
    models = work / "models.toml"
    models.write_text(MODELS)

    # Throughput: no worker, so the engine takes no CPU from the server.
    api_dir = work / "api"
    key, *post_keys = make_keys(api_dir, 1 + POST_ACCOUNTS)
    server, base = start(api_dir, models, workers=0)
    try:
        headers = {"Authorization": f"Bearer {key}"}
        queued_id, completed_id = (
            httpx.post(base + "/v1/generations", json={"prompt": "x"}, headers=headers).json()["id"]
            for _ in range(2)
        )
        # Complete the oldest one with a worker run in this process, so its GET mints a presigned URL.
        from daguerre.blobs import open_blob_store
        from daguerre.engine import ModelRegistry, load_models_file
        from daguerre.settings import Settings
        from daguerre.store import open_store
        from daguerre.worker import Worker

        sys.path.insert(0, str(BENCH_DIR))
        settings = Settings(data_dir=api_dir, models_file=models)
        store = open_store(settings.resolved_database_url, migrate=False)
        worker = Worker(
            settings, store, open_blob_store(settings), ModelRegistry(load_models_file(models)), "bench"
        )
        assert worker.run_once().generation_id == queued_id
        queued_id, completed_id = completed_id, queued_id
        store.close()

        post_script = work / "post.lua"
        post_script.write_text(POST_LUA % ", ".join(f'"{k}"' for k in post_keys))
        bare = base + "/bench/bare"
        targets = {
            "get_queued": (f"{base}/v1/generations/{queued_id}", key, None),
            "get_completed": (f"{base}/v1/generations/{completed_id}", key, None),
            "post": (base + "/v1/generations", None, post_script),
        }
        wrk(bare, None, 2, args.connections)  # warm-up
        # Each endpoint runs right after a bare run of its own and is compared with that one: the
        # machine's speed drifts over tens of seconds, less over a few.
        rounds: list[dict[str, tuple[dict[str, float], dict[str, float]]]] = []
        for _ in range(args.rounds):
            measured = {}
            for name, (url, k, script) in targets.items():
                baseline = wrk(bare, None, args.duration, args.connections)
                measured[name] = (baseline, wrk(url, k, args.duration, args.connections, script))
            rounds.append(measured)
            finish_queued_jobs(api_dir, keep=queued_id)
    finally:
        server.terminate()
        server.wait()

    dispatch_dir = work / "dispatch"
    (dispatch_key,) = make_keys(dispatch_dir)
    server, base = start(dispatch_dir, models, workers=1)
    try:
        dispatch = dispatch_latency(base, dispatch_key, dispatch_dir, args.dispatch_count)
    finally:
        server.terminate()
        server.wait()
    shutil.rmtree(work, ignore_errors=True)

    def medians(runs: list[dict[str, float]]) -> dict[str, float]:
        return {field: statistics.median(run[field] for run in runs) for field in ("rps", "p50_ms", "p99_ms")}

    figures: dict[str, Any] = {"bare": medians([baseline for r in rounds for baseline, _ in r.values()])}
    for name in targets:
        figures[name] = medians([r[name][1] for r in rounds])
        figures[name]["by_round"] = [round(r[name][1]["rps"] / r[name][0]["rps"], 3) for r in rounds]
        figures[name]["ratio"] = statistics.median(figures[name]["by_round"])
    figures["dispatch"] = dispatch
    print(json.dumps(figures, indent=2))
    if not args.no_write:
        write_results(figures, args)


def write_results(f: dict[str, Any], args: argparse.Namespace) -> None:
    machine = (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.node()}"
    )
    targets = {"get_queued": 0.6, "get_completed": 0.6, "post": 0.4}
    labels = {
        "bare": "bare FastAPI `async def` JSON endpoint",
        "get_queued": "`GET /v1/generations/{id}` (queued)",
        "get_completed": "`GET /v1/generations/{id}` (completed: fresh presigned URL)",
        "post": f"`POST /v1/generations` (over {POST_ACCOUNTS} accounts)",
    }
    rows = []
    for name, label in labels.items():
        row = f[name]
        ratio = row.get("ratio", 1.0)
        target = targets.get(name)
        verdict = "" if target is None else f"≥ {target:.2f} {'met' if ratio >= target else 'NOT met'}"
        figures = f"{row['rps']:.0f} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {ratio:.2f}"
        rows.append(f"| {label} | {figures} | {verdict} |")
    d = f["dispatch"]
    lines = [
        f"### API throughput and dispatch — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: {machine}. Command: `python bench/api_bench.py --rounds {args.rounds} "
        f"--duration {args.duration} --connections {args.connections}` (wrk, 1 thread, "
        f"{args.connections} connections; one uvicorn process; SQLite; medians of {args.rounds} "
        "rounds, each endpoint run right after a bare run of its own and divided by it).",
        "",
        "| endpoint | req/s | p50 ms | p99 ms | ratio to bare | target |",
        "|---|---:|---:|---:|---:|---|",
        *rows,
        "",
        "Ratios round by round (queued jobs are marked completed between rounds, as workers would; "
        "the creates of each round stay in the table, so later POST rounds insert into a larger one): "
        + "; ".join(
            f"{name} {', '.join(f'{x:.2f}' for x in f[name]['by_round'])}"
            for name in ("get_queued", "get_completed", "post")
        )
        + ".",
        "",
        "Dispatch latency (created → processing, idle in-process worker, "
        f"{args.dispatch_count} sequential jobs): p50 {d['p50_ms']:.1f} ms, p99 {d['p99_ms']:.1f} ms, "
        f"max {d['max_ms']:.1f} ms "
        f"(target p50 ≤ 20 ms: {'met' if d['p50_ms'] <= 20 else 'NOT met'}). Before them, the first job "
        f"after start took {d['first_job_ms']:.0f} ms to complete: the worker loads its models (the "
        "moderation models included) before it claims anything.",
        "",
    ]
    header = "# Benchmark results\n\nEach benchmark appends its figures here with the date and machine.\n\n"
    existing = RESULTS.read_text() if RESULTS.exists() else header
    RESULTS.write_text(existing.rstrip("\n") + "\n\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
