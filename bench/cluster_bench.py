"""The cluster profile against the embedded profile, in one run, with an engine that answers at once.

Command (wrk from Debian's package `wrk`; PostgreSQL 15, redis-server, and the `weed` and
`temporal` binaries of the test extra, as the tests use them):

    .venv/bin/python bench/cluster_bench.py [--latency-jobs 100] [--latency-rounds 4] [--batch 300]
        [--batch-rounds 3] [--rounds 5] [--duration 3] [--connections 16] [--no-write]

About four minutes on 2 cores.

Everything runs on 127.0.0.1 and is stopped at the end. The Temporal dev server keeps its state in
memory (`--temporal-file`: in its SQLite file, a disk write on every state change) and reads its
transfer queue as often as needed (tests/support/temporal.py; docs/deployment.md, "Latency under
load"). The cluster (tests/support/cluster.py):
two `daguerre serve --workers 0` API processes with execution = temporal, sharing PostgreSQL 15,
an S3 bucket (SeaweedFS `weed mini`), Redis (rate limits) and a Temporal dev server, and four full
`daguerre worker` processes (each one polls the main queue: the workflow, prepare, finalize; and
the engine queue of every model, one generate at a time). The embedded profile: one `daguerre
serve` on SQLite and local blobs, with 1 in-process worker for latency, 4 for throughput, none for
the HTTP rates (the same data directory, restarted). Both run tests/support/engines.py's
ScriptedEngine with steps=0 (a 64x64 solid image, no sleep) and moderation off, so what is measured
is the API, the queue and the hand-offs. Creates are spread over 500 accounts whose limits are set
high enough never to refuse one (the limit checks still run on every create: Redis on the cluster).

1. created → completed latency: `--latency-jobs` sequential creates per profile (after 4 warm-up
   jobs), each polled with GET every 10 ms until it is completed, then 50 ms of idle before the
   next; from the row's `created_at` to its `finished_at` (both written on this host's clock), and
   as the client saw it (POST sent → the GET that saw `completed`). Requests alternate between the
   two API processes on the cluster. Rounds alternate between the profiles. Where a cluster job's
   time goes comes from each workflow's Temporal history: the wait in the task queue and the run
   of every workflow task and activity.
2. jobs/s: `--batch` creates submitted by 16 concurrent clients (alternating between the API
   processes on the cluster), then waited for; the rate is the batch over the time from its first
   `created_at` to its last `finished_at`. `--batch-rounds` rounds, alternating; medians.
3. HTTP rates (the workers stopped, so that they take no CPU from the API): wrk, 1 thread, on
   `GET /v1/generations/{id}` (a queued and a completed generation) and `POST /v1/generations`
   (bench/api_bench.py's request and wrk Lua script, over the 500 accounts). The cluster gets one
   wrk per API process at once, each with half the connections, and their rates are summed; the
   embedded process gets one wrk with all of them. Each round runs every endpoint on both profiles
   back to back (alternating which goes first), the ratio is cluster / embedded within the round,
   and the figures are medians over `--rounds` rounds.

CPU time: utime + stime from /proc/<pid>/stat of every process of a profile (and its children,
living or reaped) over the measurement, divided by the jobs or requests; on the cluster split into
daguerre's processes and the shared servers (PostgreSQL, Temporal, SeaweedFS, Redis).

Targets (the cluster issue): created → completed p50 ≤ 50 ms on the cluster; ≥ 100 jobs/s with 4
workers on the cluster. The HTTP ratios have no target; they are written for comparison. Figures
are appended to bench/RESULTS.md with the date, machine and the load average before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS = BENCH_DIR / "RESULTS.md"
sys.path[:0] = [str(ROOT / "tests"), str(BENCH_DIR)]

from api_bench import POST_LUA, wrk  # noqa: E402

ACCOUNTS = 500
WORKERS = 4
WARMUP_JOBS = 4
POLL_S = 0.010
GAP_S = 0.050
SUBMITTERS = 16
JOB_DEADLINE_S = 30.0
BATCH_DEADLINE_S = 120.0
LATENCY_TARGET_MS = 50.0
RATE_TARGET = 100.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
TERMINAL = ("completed", "failed")


# CPU time from /proc ------------------------------------------------------------------------------


def _proc_cpu(pid: int, with_children: bool) -> float:
    """utime + stime of `pid` (+ cutime + cstime: its children that exited and were waited for)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    # fields[0] is field 3 of the file (state): utime..cstime are fields 14..17.
    ticks = int(fields[11]) + int(fields[12])
    if with_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLK_TCK


def cpu_seconds(pids: list[int]) -> float:
    """CPU seconds used so far by these processes and every descendant, living or reaped."""
    total = 0.0
    for pid in pids:
        try:
            children = psutil.Process(pid).children(recursive=True)
        except psutil.NoSuchProcess:
            continue
        total += _proc_cpu(pid, True)
        total += sum(_proc_cpu(child.pid, True) for child in children)
    return total


@dataclass
class CpuGroups:
    """Named groups of processes whose CPU time is measured together."""

    groups: dict[str, Callable[[], list[int]]]

    def sample(self) -> dict[str, float]:
        return {name: cpu_seconds(pids()) for name, pids in self.groups.items()}


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: after[name] - before[name] for name in before}


# A profile: its API processes, its store, its keys ------------------------------------------------


@dataclass
class Profile:
    name: str
    bases: list[str]
    store: Any
    keys: list[str]
    cpu: CpuGroups
    ids: list[str] = field(default_factory=list)
    """Generations completed in the latency phase (the completed GET reads one)."""

    def client(self) -> httpx.Client:
        from support.cluster import RoundRobin

        return httpx.Client(base_url=self.bases[0], transport=RoundRobin(self.bases), timeout=30)


def make_keys(store: Any, count: int) -> list[str]:
    """Keys of `count` new accounts whose limits never refuse a create in this benchmark (the checks
    still run: the rate limiter on every create, the concurrency count in its transaction)."""
    tokens = []
    for i in range(count):
        account = store.accounts.create(f"bench-{i}", rpm_limit=10**9, concurrency_limit=1000)
        tokens.append(store.accounts.create_key(account.id)[1])
    return tokens


def rows(store: Any, ids: list[str]) -> dict[str, Any]:
    import sqlalchemy as sa

    from daguerre.store.schema import generations as g

    found: dict[str, Any] = {}
    for start in range(0, len(ids), 500):
        query = sa.select(g.c.id, g.c.state, g.c.created_at, g.c.started_at, g.c.finished_at).where(
            g.c.id.in_(ids[start : start + 500])
        )
        with store.db.read() as conn:
            found.update({row.id: row for row in conn.execute(query)})
    return found


def unfinished(store: Any) -> int:
    import sqlalchemy as sa

    from daguerre.store.schema import generations as g

    query = sa.select(sa.func.count()).select_from(g).where(g.c.state.in_(("queued", "processing")))
    with store.db.read() as conn:
        return int(conn.execute(query).scalar_one())


def ms(start: datetime, end: datetime) -> float:
    return (end - start).total_seconds() * 1000


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# 1. Latency ---------------------------------------------------------------------------------------


def sequential(profile: Profile, count: int, offset: int) -> list[dict[str, float]]:
    """`count` creates one after another, each polled until completed; per job: client-observed,
    created → started, started → finished and created → finished, in ms."""
    client_ms: dict[str, float] = {}
    with profile.client() as client:
        for i in range(count):
            key = profile.keys[(offset + i) % len(profile.keys)]
            headers = {"Authorization": f"Bearer {key}"}
            sent = time.perf_counter()
            response = client.post(
                "/v1/generations",
                json={"prompt": f"latency {offset + i}", "aspect_ratio": "1:1"},
                headers=headers,
            )
            response.raise_for_status()
            generation_id = response.json()["id"]
            while True:
                state = client.get(f"/v1/generations/{generation_id}", headers=headers).json()["state"]
                if state in TERMINAL:
                    break
                if time.perf_counter() - sent > JOB_DEADLINE_S:
                    raise RuntimeError(f"{profile.name}: {generation_id} did not finish")
                time.sleep(POLL_S)
            if state != "completed":
                raise RuntimeError(f"{profile.name}: {generation_id} {state}")
            client_ms[generation_id] = (time.perf_counter() - sent) * 1000
            profile.ids.append(generation_id)
            time.sleep(GAP_S)
    found = rows(profile.store, list(client_ms))
    return [
        {
            "client": client_ms[gid],
            "dispatch": ms(row.created_at, row.started_at),
            "run": ms(row.started_at, row.finished_at),
            "total": ms(row.created_at, row.finished_at),
        }
        for gid, row in found.items()
    ]


def where_the_time_goes(address: str, store: Any, ids: list[str]) -> dict[str, float]:
    """Median ms per stage of the cluster's jobs, from each workflow's Temporal history: the API's
    start (the row's created_at → WorkflowExecutionStarted), the workflow tasks and each activity,
    split into the wait in the task queue (scheduled → started) and the run (started → completed).
    Cut at the row's finished_at (the finalize activity's commit)."""
    from temporalio.client import Client

    async def histories() -> list[Any]:
        client = await Client.connect(address)
        return [(await client.get_workflow_handle(gid).fetch_history()).events for gid in ids]

    found = rows(store, ids)
    per_job = [
        _stages(events, found[gid].created_at, found[gid].finished_at)
        for gid, events in zip(ids, asyncio.run(histories()), strict=True)
    ]
    names = list(dict.fromkeys(name for stages in per_job for name in stages))
    return {name: statistics.median(stages.get(name, 0.0) for stages in per_job) for name in names}


def _stages(events: list[Any], created: datetime, finished: datetime) -> dict[str, float]:
    from temporalio.api.enums.v1 import EventType as T

    by_id = {event.event_id: event for event in events}
    stages: dict[str, float] = {}

    def at(event: Any) -> datetime:
        when: datetime = event.event_time.ToDatetime(tzinfo=UTC)
        return min(finished, when)

    def add(stage: str, start: Any, end: Any) -> None:
        stages[stage] = stages.get(stage, 0.0) + ms(at(start), at(end))

    def activity(scheduled_id: int) -> str:
        return str(by_id[scheduled_id].activity_task_scheduled_event_attributes.activity_type.name)

    for event in events:
        kind = event.event_type
        if kind == T.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
            stages["API: commit → workflow started"] = ms(created, at(event))
        elif kind == T.EVENT_TYPE_WORKFLOW_TASK_STARTED:
            attrs = event.workflow_task_started_event_attributes
            add("workflow tasks: wait", by_id[attrs.scheduled_event_id], event)
        elif kind == T.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            attrs = event.workflow_task_completed_event_attributes
            add("workflow tasks: run", by_id[attrs.started_event_id], event)
        elif kind == T.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            attrs = event.activity_task_started_event_attributes
            add(f"{activity(attrs.scheduled_event_id)}: wait", by_id[attrs.scheduled_event_id], event)
        elif kind == T.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            attrs = event.activity_task_completed_event_attributes
            add(f"{activity(attrs.scheduled_event_id)}: run", by_id[attrs.started_event_id], event)
    return stages


# 2. Throughput --------------------------------------------------------------------------------------


async def _submit(profile: Profile, count: int, offset: int) -> list[str]:
    clients = [httpx.AsyncClient(base_url=base, timeout=60) for base in profile.bases]
    counter = itertools.count()
    ids: list[str] = []

    async def submitter() -> None:
        while (i := next(counter)) < count:
            key = profile.keys[(offset + i) % len(profile.keys)]
            response = await clients[i % len(clients)].post(
                "/v1/generations",
                json={"prompt": f"batch {offset + i}", "aspect_ratio": "1:1"},
                headers={"Authorization": f"Bearer {key}"},
            )
            if response.status_code != 201:
                raise RuntimeError(f"{profile.name}: create answered {response.status_code}: {response.text}")
            ids.append(response.json()["id"])

    try:
        await asyncio.gather(*(submitter() for _ in range(SUBMITTERS)))
    finally:
        for client in clients:
            await client.aclose()
    return ids


def batch(profile: Profile, count: int, offset: int) -> dict[str, float]:
    cpu_before = profile.cpu.sample()
    started = time.perf_counter()
    ids = asyncio.run(_submit(profile, count, offset))
    submit_s = time.perf_counter() - started
    while unfinished(profile.store):
        if time.perf_counter() - started > BATCH_DEADLINE_S:
            raise RuntimeError(f"{profile.name}: the batch did not finish in {BATCH_DEADLINE_S:.0f} s")
        time.sleep(0.02)
    cpu = cpu_delta(cpu_before, profile.cpu.sample())
    found = rows(profile.store, ids)
    failed = [gid for gid, row in found.items() if row.state != "completed"]
    if failed or len(found) != count:
        raise RuntimeError(f"{profile.name}: {len(failed)} of {count} jobs not completed")
    first = min(row.created_at for row in found.values())
    last = max(row.finished_at for row in found.values())
    seconds = (last - first).total_seconds()
    return {
        "rate": count / seconds,
        "seconds": seconds,
        "submit_s": submit_s,
        **{f"cpu_ms_{name}": value / count * 1000 for name, value in cpu.items()},
    }


# 3. HTTP rates ----------------------------------------------------------------------------------------


def http_rate(
    profile: Profile, path: str, key: str | None, script: Path | None, duration: int, connections: int
) -> dict[str, float]:
    share = max(1, connections // len(profile.bases))
    cpu_before = profile.cpu.sample()
    with ThreadPoolExecutor(len(profile.bases)) as pool:
        runs = list(pool.map(lambda base: wrk(base + path, key, duration, share, script), profile.bases))
    cpu = cpu_delta(cpu_before, profile.cpu.sample())
    rps = sum(run["rps"] for run in runs)
    requests = rps * duration
    return {
        "rps": rps,
        "p50_ms": max(run["p50_ms"] for run in runs),
        "p99_ms": max(run["p99_ms"] for run in runs),
        **{f"cpu_ms_{name}": value / requests * 1000 for name, value in cpu.items()},
    }


# Servers ------------------------------------------------------------------------------------------


def postmaster_pid(store: Any) -> int:
    with store.db.read() as conn:
        backend = int(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())
    return int(psutil.Process(backend).ppid())


@contextlib.contextmanager
def embedded_server(data_dir: Path, models: Path, workers: int) -> Iterator[Any]:
    from support.helpers import start_server

    server = start_server(data_dir, models, workers=workers)
    try:
        yield server
    finally:
        server.stop()


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from daguerre.settings import Settings
    from daguerre.store import open_store
    from support.cluster import Cluster, ClusterServices
    from support.helpers import RedisServer, scripted_models
    from support.postgres import make_template, postgres_server
    from support.seaweed import SeaweedFS
    from support.temporal import TemporalServer

    models = scripted_models(work / "models.toml", steps=0)
    figures: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        postgres = stack.enter_context(postgres_server())
        make_template(postgres)
        seaweedfs = SeaweedFS.start(work / "seaweedfs")
        stack.callback(seaweedfs.stop)
        (work / "redis").mkdir()
        redis = RedisServer(work / "redis")
        stack.callback(redis.stop)
        temporal = TemporalServer.start(work / "temporal", in_memory=args.temporal_in_memory)
        stack.callback(temporal.stop)
        services = ClusterServices(postgres, seaweedfs, redis, temporal)

        cluster = Cluster.start(work / "cluster", models, services)
        stack.callback(cluster.stop)
        for _ in range(WORKERS - 1):
            cluster.start_full_worker()
        for worker in cluster.workers:
            worker.wait_ready()
        cluster_store = open_store(cluster.database_url, migrate=False)
        stack.callback(cluster_store.close)
        postmaster = postmaster_pid(cluster_store)
        cluster_profile = Profile(
            "cluster",
            [api.base_url for api in cluster.apis],
            cluster_store,
            make_keys(cluster_store, ACCOUNTS),
            CpuGroups(
                {
                    "api": lambda: [api.process.pid for api in cluster.apis],
                    "workers": lambda: [w.pid for w in cluster.workers if w.process.poll() is None],
                    "postgres": lambda: [postmaster],
                    "temporal": lambda: [temporal.process.pid],
                    "seaweedfs": lambda: [seaweedfs.process.pid],
                    "redis": lambda: [redis.process.pid],
                }
            ),
        )

        data_dir = work / "embedded" / "data"
        embedded_store = open_store(Settings(data_dir=data_dir).resolved_database_url)
        stack.callback(embedded_store.close)
        current: list[Any] = []
        embedded = Profile(
            "embedded",
            [],
            embedded_store,
            make_keys(embedded_store, ACCOUNTS),
            CpuGroups({"serve": lambda: [server.process.pid for server in current]}),
        )

        @contextlib.contextmanager
        def serving(workers: int) -> Iterator[None]:
            with embedded_server(data_dir, models, workers) as server:
                current[:] = [server]
                embedded.bases = [server.base_url]
                yield
                current.clear()

        profiles = (cluster_profile, embedded)

        def alternate(round_: int) -> tuple[Profile, ...]:
            return profiles if round_ % 2 == 0 else profiles[::-1]

        # 1. Latency: 1 in-process worker on the embedded side.
        print("latency ...", flush=True)
        with serving(1):
            latency: dict[str, list[dict[str, float]]] = {p.name: [] for p in profiles}
            first_ms = {}
            for profile in profiles:
                started = time.perf_counter()
                sequential(profile, WARMUP_JOBS, 0)
                first_ms[profile.name] = (time.perf_counter() - started) * 1000
            per_round = max(1, args.latency_jobs // args.latency_rounds)
            for r in range(args.latency_rounds):
                for profile in alternate(r):
                    latency[profile.name] += sequential(profile, per_round, 1000 + r * per_round)
        figures["latency"] = {
            name: {
                f"{part}_{q}": percentile([job[part] for job in jobs], quantile)
                for part in ("total", "client", "dispatch", "run")
                for q, quantile in (("p50", 0.5), ("p99", 0.99))
            }
            | {"jobs": len(jobs), "warmup_ms": first_ms[name]}
            for name, jobs in latency.items()
        }
        figures["latency"]["stages"] = where_the_time_goes(
            temporal.address, cluster_store, cluster_profile.ids[WARMUP_JOBS:]
        )
        print(json.dumps(figures["latency"], indent=2), flush=True)

        # 2. Throughput: 4 in-process workers on the embedded side, 4 worker processes on the cluster.
        print("throughput ...", flush=True)
        with serving(WORKERS):
            sequential(embedded, WARMUP_JOBS, 0)  # the new process's workers start
            batches: dict[str, list[dict[str, float]]] = {p.name: [] for p in profiles}
            for r in range(args.batch_rounds):
                for profile in alternate(r):
                    batches[profile.name].append(batch(profile, args.batch, 100_000 + r * args.batch))
                    time.sleep(1.0)
        figures["throughput"] = {
            name: {field_: statistics.median(b[field_] for b in runs) for field_ in runs[0]}
            | {"by_round": [round(b["rate"], 1) for b in runs]}
            for name, runs in batches.items()
        }
        print(json.dumps(figures["throughput"], indent=2), flush=True)

        # 3. HTTP rates, with no worker running on either side.
        print("http ...", flush=True)
        for worker in cluster.workers:
            worker.stop()
        with serving(0):
            targets: dict[str, dict[str, tuple[str, str | None, Path | None]]] = {}
            for profile in profiles:
                key = profile.keys[0]
                queued = httpx.post(
                    profile.bases[0] + "/v1/generations",
                    json={"prompt": "stays queued"},
                    headers={"Authorization": f"Bearer {key}"},
                ).json()["id"]
                script = work / f"post-{profile.name}.lua"
                script.write_text(POST_LUA % ", ".join(f'"{k}"' for k in profile.keys))
                targets[profile.name] = {
                    "get_queued": (f"/v1/generations/{queued}", key, None),
                    "get_completed": (f"/v1/generations/{profile.ids[0]}", key, None),
                    "post": ("/v1/generations", None, script),
                }
            for profile in profiles:  # warm-up
                http_rate(profile, *targets[profile.name]["get_queued"], 1, args.connections)
            http: dict[str, dict[str, list[dict[str, float]]]] = {
                endpoint: {p.name: [] for p in profiles} for endpoint in targets["cluster"]
            }
            for r in range(args.rounds):
                for endpoint in http:
                    for profile in alternate(r):
                        http[endpoint][profile.name].append(
                            http_rate(
                                profile, *targets[profile.name][endpoint], args.duration, args.connections
                            )
                        )
        figures["http"] = {}
        for endpoint, by_profile in http.items():
            ratios = [
                c["rps"] / e["rps"]
                for c, e in zip(by_profile["cluster"], by_profile["embedded"], strict=True)
            ]
            figures["http"][endpoint] = {
                name: {field_: statistics.median(run[field_] for run in runs) for field_ in runs[0]}
                for name, runs in by_profile.items()
            } | {"ratio": statistics.median(ratios), "by_round": [round(x, 2) for x in ratios]}
        print(json.dumps(figures["http"], indent=2), flush=True)
        unclean = cluster.stop()
        if unclean:
            print(f"warning: a cluster process exited with {unclean}", flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-jobs", type=int, default=100)
    parser.add_argument("--latency-rounds", type=int, default=4)
    parser.add_argument("--batch", type=int, default=300, help="creates per throughput round")
    parser.add_argument("--batch-rounds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the HTTP rates")
    parser.add_argument("--duration", type=int, default=3, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to RESULTS.md")
    parser.add_argument(
        "--temporal-file",
        dest="temporal_in_memory",
        action="store_false",
        help="keep the Temporal dev server's state in a SQLite file (default: in memory)",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")
    load_before = os.getloadavg()
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="daguerre-cluster-bench-"))
    try:
        figures = run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    figures["load"] = {"before": load_before, "after": os.getloadavg()}
    figures["wall_s"] = time.monotonic() - started
    if not args.no_write:
        write_results(figures, args)


def write_results(f: dict[str, Any], args: argparse.Namespace) -> None:
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    before, after = f["load"]["before"], f["load"]["after"]
    lat, thr, http = f["latency"], f["throughput"], f["http"]

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    def cpu(row: dict[str, float]) -> str:
        return f"{sum(v for k, v in row.items() if k.startswith('cpu_ms_')):.2f}"

    def cpu_parts(row: dict[str, float]) -> str:
        return ", ".join(
            f"{k.removeprefix('cpu_ms_')} {v:.2f}" for k, v in row.items() if k.startswith("cpu_ms_")
        )

    c, e = lat["cluster"], lat["embedded"]
    rows_ = [
        f"| created → completed p50 (rows) | {c['total_p50']:.1f} ms | {e['total_p50']:.1f} ms | "
        f"{c['total_p50'] / e['total_p50']:.1f} |  |  | ≤ {LATENCY_TARGET_MS:.0f} ms "
        f"{verdict(c['total_p50'] <= LATENCY_TARGET_MS)} |",
        f"| created → completed p99 (rows) | {c['total_p99']:.1f} ms | {e['total_p99']:.1f} ms | "
        f"{c['total_p99'] / e['total_p99']:.1f} |  |  |  |",
        f"| POST sent → GET sees completed, p50 / p99 (client, polling every {POLL_S * 1000:.0f} ms) | "
        f"{c['client_p50']:.1f} / {c['client_p99']:.1f} ms | {e['client_p50']:.1f} / {e['client_p99']:.1f} ms"
        f" | {c['client_p50'] / e['client_p50']:.1f} |  |  |  |",
    ]
    tc, te = thr["cluster"], thr["embedded"]
    rows_.append(
        f"| jobs/s, {WORKERS} workers ({args.batch} per batch) | {tc['rate']:.1f} | {te['rate']:.1f} | "
        f"{tc['rate'] / te['rate']:.2f} | {cpu(tc)} | {cpu(te)} | ≥ {RATE_TARGET:.0f}/s "
        f"{verdict(tc['rate'] >= RATE_TARGET)} |"
    )
    labels = {
        "get_queued": "`GET /v1/generations/{id}` (queued), req/s",
        "get_completed": "`GET /v1/generations/{id}` (completed: presigned URL), req/s",
        "post": f"`POST /v1/generations` (over {ACCOUNTS} accounts), req/s",
    }
    for endpoint, label in labels.items():
        hc, he = http[endpoint]["cluster"], http[endpoint]["embedded"]
        rows_.append(
            f"| {label} | {hc['rps']:.0f} | {he['rps']:.0f} | {http[endpoint]['ratio']:.2f} | {cpu(hc)} | "
            f"{cpu(he)} |  |"
        )
    lines = [
        f"### Cluster profile against embedded — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: {machine}; load average before {before[0]:.2f} / after {after[0]:.2f}; the whole "
        f"run took {f['wall_s']:.0f} s. Command: `python bench/cluster_bench.py --latency-jobs "
        f"{args.latency_jobs} --latency-rounds {args.latency_rounds} --batch {args.batch} "
        f"--batch-rounds {args.batch_rounds} --rounds {args.rounds} "
        f"--duration {args.duration} --connections {args.connections}`. Cluster: two API processes "
        f"(`serve --workers 0`, execution = temporal) on PostgreSQL 15, SeaweedFS S3, Redis and a Temporal "
        f"dev server, {WORKERS} full `daguerre worker` processes; embedded: one `serve` on SQLite "
        f"(1 in-process worker for latency, {WORKERS} for jobs/s, none for req/s). Instant engine "
        "(ScriptedEngine, steps=0), moderation off. CPU per job or request: every process of the "
        "profile (and their children), from /proc: on the cluster daguerre's processes and the shared "
        "servers, broken down below.",
        "",
        "| measure | cluster | embedded | cluster / embedded | cluster CPU ms per job or request | "
        "embedded CPU ms | target |",
        "|---|---:|---:|---:|---:|---:|---|",
        *rows_,
        "",
        f"Latency ({c['jobs']} sequential jobs a profile after {WARMUP_JOBS} warm-up jobs; rounds "
        f"alternate): created → started (the claim: on the cluster the workflow start, its first "
        f"workflow task and the prepare activity) p50 {c['dispatch_p50']:.1f} ms cluster, "
        f"{e['dispatch_p50']:.1f} ms embedded; started → finished (engine, upload, completion: on the "
        f"cluster the generate activity on the engine queue, then finalize) p50 {c['run_p50']:.1f} ms "
        f"cluster, {e['run_p50']:.1f} ms embedded. The {WARMUP_JOBS} warm-up jobs took "
        f"{c['warmup_ms']:.0f} ms (cluster) and {e['warmup_ms']:.0f} ms (embedded) in all.",
        "",
        "Where a cluster job's created → completed goes (medians over the same jobs, from each "
        "workflow's Temporal history, cut at the row's finished_at; wait = scheduled → started in the "
        "task queue, run = started → completed): "
        + ", ".join(f"{name} {value:.1f} ms" for name, value in lat["stages"].items())
        + f" (sum of the medians {sum(lat['stages'].values()):.1f} ms).",
        "",
        f"Jobs/s round by round: cluster {', '.join(map(str, tc['by_round']))}; embedded "
        f"{', '.join(map(str, te['by_round']))} (medians above; submitting a batch of {args.batch} with "
        f"{SUBMITTERS} concurrent clients took {tc['submit_s']:.2f} s on the cluster, {te['submit_s']:.2f} s "
        "embedded; the rate runs from the batch's first created_at to its last finished_at).",
        "",
        "Cluster CPU ms by process: per job "
        + cpu_parts(tc)
        + "; "
        + "; ".join(f"per {name} request {cpu_parts(http[name]['cluster'])}" for name in labels)
        + ".",
        "",
        "req/s ratios round by round (cluster / embedded, the workers stopped; the cluster's wrk runs "
        f"{args.connections // 2} connections on each API process, the embedded one {args.connections}): "
        + "; ".join(f"{name} {', '.join(f'{x:.2f}' for x in http[name]['by_round'])}" for name in labels)
        + ". p50 / p99 ms, cluster (the slower API process) vs embedded: "
        + "; ".join(
            f"{name} {http[name]['cluster']['p50_ms']:.1f} / {http[name]['cluster']['p99_ms']:.1f} vs "
            f"{http[name]['embedded']['p50_ms']:.1f} / {http[name]['embedded']['p99_ms']:.1f}"
            for name in labels
        )
        + ".",
        "",
    ]
    header = "# Benchmark results\n\nEach benchmark appends its figures here with the date and machine.\n\n"
    existing = RESULTS.read_text() if RESULTS.exists() else header
    RESULTS.write_text(existing.rstrip("\n") + "\n\n" + "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
