"""Images a minute with one and with two worker processes, against a bare pipeline loop.

Command:

    .venv/bin/python bench/workers_bench.py [--jobs 120] [--model uni-1] [--no-write]

Every figure comes from the same run, on the built-in model (moderation off on every side, so the
comparison is of the engine work alone):

* bare loop: one process that loads the engine and draws images back to back (engine call and PNG
  encode: what a worker does for a job, minus the queue), with torch's default threads: the
  plainest way to use this machine;
* 1 process: `daguerre serve --workers 1`;
* 2 processes: the same plus one `daguerre worker` on the same data directory;
* 2 processes, old sizing: as above with each process given all the cores
  (`DAGUERRE_ENGINE_THREADS=<cores>`) and OpenMP's default wait policy (spinning), which is what
  every process did before the thread rule (issue 13).

For the services, all jobs are queued first, then the benchmark waits; throughput is read from the
rows' `finished_at` (the first few jobs, which include model loading, are left out), and CPU time
per image from the processes' own counters. The load average is written beside the figures.
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).with_name("RESULTS.md")
WARMUP_JOBS = 4
PROMPTS = [
    "a red circle on a white background",
    "two blue squares on a yellow background",
    "a green star above a purple heart",
    "an orange triangle left of a black circle",
]

BARE_LOOP = """
import resource, sys, time
from daguerre.engine import EngineJob, ModelRegistry, load_models_file
from daguerre.media import encode_image
from daguerre.wire import GenerationType
model, count, prompts = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
engine = ModelRegistry(load_models_file()).engine(model)
def one(i):
    job = EngineJob(id=f"bare-{i}", model=model, type=GenerationType.IMAGE, prompt=prompts[i % len(prompts)],
                    aspect_ratio="1:1", seed=i)
    encode_image(engine.generate(job, lambda step, total, preview=None: None), "png")
for i in range(3):
    one(i)
cpu0, t0 = time.process_time(), time.perf_counter()
for i in range(count):
    one(i)
print(count / (time.perf_counter() - t0) * 60, (time.process_time() - cpu0) / count)
"""


@dataclass
class Figure:
    name: str
    images_per_min: float
    cpu_s_per_image: float


def env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DAGUERRE_", "LUMA_", "OMP_"))}
    base.update(
        DAGUERRE_MODERATION="0",
        DAGUERRE_DEFAULT_RPM="1000000",
        DAGUERRE_DEFAULT_CONCURRENCY="1000000",
        HF_HUB_OFFLINE="1",
    )
    base.update(extra)
    return base


def bare_loop(model: str, jobs: int) -> Figure:
    out = subprocess.run(
        [sys.executable, "-c", BARE_LOOP, model, str(jobs), *PROMPTS],
        env=env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return Figure("bare pipeline loop (1 process, torch's default threads)", float(out[0]), float(out[1]))


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def service(name: str, model: str, jobs: int, extra_workers: int, **extra_env: str) -> Figure:
    with tempfile.TemporaryDirectory(prefix="workers-bench-") as tmp:
        data = Path(tmp) / "data"
        port = free_port()
        daguerre = [sys.executable, "-m", "daguerre.cli"]
        log = open(Path(tmp) / "serve.log", "wb")  # noqa: SIM115
        processes = [
            subprocess.Popen(
                [*daguerre, "serve", "--data-dir", str(data), "--port", str(port), "--workers", "1"],
                env=env(**extra_env),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        ]
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 120
            while True:
                try:
                    if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError((Path(tmp) / "serve.log").read_text())
                time.sleep(0.2)
            for _ in range(extra_workers):
                processes.append(
                    subprocess.Popen(
                        [*daguerre, "worker", "--data-dir", str(data)],
                        env=env(**extra_env),
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
            key = (data / "api-key").read_text().strip()
            cpu_before = sum(_cpu(p.pid) for p in processes)
            with httpx.Client(
                base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30
            ) as client:
                for i in range(jobs + WARMUP_JOBS):
                    body = {"prompt": PROMPTS[i % len(PROMPTS)], "aspect_ratio": "1:1", "model": model}
                    client.post("/v1/generations", json=body).raise_for_status()
            database = sqlite3.connect(f"file:{data / 'daguerre.db'}?mode=ro", uri=True)
            while database.execute(
                "SELECT count(*) FROM generations WHERE state IN ('queued','processing')"
            ).fetchone()[0]:
                time.sleep(1.0)
            cpu_after = sum(_cpu(p.pid) for p in processes)
            finished = sorted(
                datetime.fromisoformat(row[0])
                for row in database.execute("SELECT finished_at FROM generations WHERE state = 'completed'")
            )
            failed = database.execute("SELECT count(*) FROM generations WHERE state = 'failed'").fetchone()[0]
            database.close()
            if failed:
                raise RuntimeError(f"{failed} jobs failed:\n{(Path(tmp) / 'serve.log').read_text()[-3000:]}")
            measured = finished[WARMUP_JOBS:]
            seconds = (measured[-1] - measured[0]).total_seconds()
            rate = (len(measured) - 1) / seconds * 60
            return Figure(name, rate, (cpu_after - cpu_before) / (jobs + WARMUP_JOBS))
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
            log.close()


def _cpu(pid: int) -> float:
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return float(times.user + times.system)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=120)
    parser.add_argument("--model", default="uni-1")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    load_before = os.getloadavg()
    figures = [
        bare_loop(args.model, args.jobs),
        service("1 worker process (`serve --workers 1`)", args.model, args.jobs, extra_workers=0),
        service("2 worker processes (`serve` + `worker`)", args.model, args.jobs, extra_workers=1),
        service(
            "2 worker processes, old sizing (all cores each, OpenMP spinning)",
            args.model,
            args.jobs,
            extra_workers=1,
            DAGUERRE_ENGINE_THREADS=str(cores),
            OMP_WAIT_POLICY="ACTIVE",
        ),
    ]
    bare = figures[0].images_per_min
    for figure in figures:
        print(
            f"{figure.name}: {figure.images_per_min:.0f} images/min "
            f"({figure.images_per_min / bare:.2f} of bare), {figure.cpu_s_per_image:.2f} CPU-s/image",
            flush=True,
        )
    if args.no_write:
        return
    two, one = figures[2].images_per_min, figures[1].images_per_min
    lines = [
        f"### Worker processes and engine threads — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: {platform.machine()}, {cores} cores, load average before {load_before[0]:.2f} / after "
        f"{os.getloadavg()[0]:.2f}. Command: `python bench/workers_bench.py --jobs {args.jobs} --model "
        f"{args.model}` (built-in model, 1:1, moderation off; services: all jobs queued, then rate from the "
        f"rows' finished_at after {WARMUP_JOBS} warm-up jobs; CPU time of every process of the service).",
        "",
        "| configuration | images/min | ratio to bare loop | CPU-s per image |",
        "|---|---:|---:|---:|",
    ]
    for figure in figures:
        lines.append(
            f"| {figure.name} | {figure.images_per_min:.0f} | {figure.images_per_min / bare:.2f} | "
            f"{figure.cpu_s_per_image:.2f} |"
        )
    verdict = "met" if two >= one else "NOT met"
    lines += [
        "",
        f"Adding a worker process: {two / one:.2f}× the throughput of one (target: never lower; {verdict}).",
        "",
    ]
    existing = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    RESULTS.write_text(existing.rstrip("\n") + "\n\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
