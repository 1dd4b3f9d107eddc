"""The cluster profile under failure, with the official SDK and the real servers (support.cluster):
two API processes on PostgreSQL, S3 (SeaweedFS), Redis and Temporal; a full worker serving
uni-1-max; two engine-only workers serving uni-1, started without any database setting.

* a generation created on API process A is read on B, its output a presigned S3 URL that the object
  store checks (tampering is refused with 403 by SeaweedFS itself);
* an engine-only worker is SIGKILLed mid-generation ten times in a row: every generation completes
  exactly once on another worker and is charged once;
* API process A is SIGKILLed during a burst of creates: every 201 completes, and so does every row
  A committed without answering; none runs twice.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import luma_agents
import pytest
import sqlalchemy as sa

from daguerre.store.schema import generations, ledger
from support.cluster import Cluster, ClusterServices, run_cli
from support.engines import runs_of
from support.helpers import scripted_models, scripted_models_each, start_server, wait_for_generation

SLOW = {"steps": 10, "step_s": 0.2}
"""uni-1: two seconds, ten heartbeats; long enough to be killed mid-generation."""
PRICES = {"uni-1": 40_400, "uni-1-max": 100_000}


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, cluster_services: ClusterServices, runs_dir: Path
) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("cluster")
    models = scripted_models_each(
        root / "models.toml",
        {"uni-1": {**SLOW, "runs_dir": str(runs_dir)}, "uni-1-max": {"steps": 1, "runs_dir": str(runs_dir)}},
    )
    live = Cluster.start(
        root,
        models,
        cluster_services,
        full_worker_models=["uni-1-max"],
        engine_models=["uni-1"],
        engine_workers=2,
    )
    yield live
    assert live.stop() == 0, live.log()


@pytest.fixture(scope="module")
def metered(cluster: Cluster) -> str:
    """The key of a metered account ($1,000) without limits: each generation is charged."""
    for command in (
        ("accounts", "create", "metered", "--balance", "1000"),
        ("accounts", "set-limits", "metered", "--rpm", "unlimited", "--concurrency", "unlimited"),
    ):
        result = run_cli(cluster, *command)
        assert result.exit_code == 0, result.output
    created = run_cli(cluster, "keys", "create", "--account", "metered")
    assert created.exit_code == 0, created.output
    return str(created.stdout.strip().splitlines()[-1])


def client(cluster: Cluster, api: int, key: str) -> luma_agents.Luma:
    return luma_agents.Luma(auth_token=key, base_url=cluster.apis[api].api_url)


def pids_of(runs_dir: Path, generation_id: str) -> list[int]:
    """The pid of every engine run of the generation, in order."""
    return [run.pid for run in runs_of(runs_dir, generation_id)]


def captures(cluster: Cluster, generation_ids: list[str]) -> dict[str, list[int]]:
    engine = sa.create_engine(cluster.database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.select(ledger.c.generation_id, ledger.c.amount).where(
                    ledger.c.generation_id.in_(generation_ids), ledger.c.kind == "capture"
                )
            ).all()
    finally:
        engine.dispose()
    found: dict[str, list[int]] = {generation_id: [] for generation_id in generation_ids}
    for row in rows:
        found[row.generation_id].append(int(row.amount))
    return found


def test_a_generation_created_on_one_api_process_is_read_on_the_other_with_an_s3_url(cluster, metered):
    services_endpoint = cluster.env["AWS_ENDPOINT_URL_S3"]
    with client(cluster, 0, metered) as a, client(cluster, 1, metered) as b:
        created = a.generations.create(prompt="a small blue house", model="uni-1-max", aspect_ratio="3:2")
        assert b.generations.get(created.id).id == created.id  # B sees A's row at once
        done = wait_for_generation(b, created.id, 60)
        assert done.state == "completed", (done.failure_code, done.failure_reason)
        url = done.output[0].url
        assert a.generations.get(created.id).state == "completed"
    assert url.startswith(services_endpoint + "/")
    params = httpx.URL(url).params
    assert params["X-Amz-Expires"] == "3600"
    signed_at = datetime.strptime(params["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    assert abs((datetime.now(UTC) - signed_at).total_seconds()) < 60  # minted by the GET, valid 1 h
    image = httpx.get(url, timeout=30)
    assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
    for tampered in (
        httpx.URL(url).copy_merge_params({"X-Amz-Signature": "0" * 64}),
        httpx.URL(url).copy_merge_params({"X-Amz-Expires": "604800"}),  # a longer life
        httpx.URL(str(url).replace("/0.png?", "/1.png?")),  # another key
    ):
        refused = httpx.get(tampered, timeout=30)
        assert refused.status_code == 403 and "SignatureDoesNotMatch" in refused.text


def test_prefer_wait_answers_once_a_worker_in_another_process_has_finished(cluster, metered):
    """The API process learns of the end through PostgreSQL's notification, not by polling."""
    with client(cluster, 1, metered) as b:
        started = time.monotonic()
        raw = b.generations.with_raw_response.create(
            prompt="quick", model="uni-1-max", extra_headers={"Prefer": "wait=30"}
        )
        elapsed = time.monotonic() - started
    assert raw.status_code == 201 and raw.headers["preference-applied"] == "wait=30"
    done = raw.parse()
    assert done.state == "completed" and done.output[0].url
    assert elapsed < 10


def test_an_engine_only_worker_killed_mid_generation_ten_times_in_a_row(cluster, metered, runs_dir):
    finished: list[str] = []
    luma = cluster.sdk(auth_token=metered)
    for round_ in range(10):
        generation_id = luma.generations.create(prompt=f"round {round_}", aspect_ratio="1:1").id
        deadline = time.monotonic() + 30
        while not pids_of(runs_dir, generation_id):
            assert time.monotonic() < deadline, cluster.log()
            time.sleep(0.02)
        (pid,) = pids_of(runs_dir, generation_id)
        (victim,) = [worker for worker in cluster.engine_workers if worker.pid == pid]
        time.sleep(0.3)  # a step or two in
        victim.kill()
        replacement = cluster.start_engine_worker(["uni-1"])
        done = wait_for_generation(luma, generation_id, 60)
        assert done.state == "completed", (round_, done.failure_code, done.failure_reason)
        runs = pids_of(runs_dir, generation_id)
        assert len(runs) == 2 and runs[0] == victim.pid and runs[1] != victim.pid, (round_, runs)
        finished.append(generation_id)
        replacement.wait_ready()  # two live engine workers again before the next kill
    assert captures(cluster, finished) == {generation_id: [PRICES["uni-1"]] for generation_id in finished}


def test_an_api_process_killed_during_a_burst_of_creates_loses_nothing(cluster, metered, runs_dir):
    a = cluster.apis[0]
    accepted: list[str] = []
    refused: list[str] = []
    stop = threading.Event()

    def burst(thread: int) -> None:
        with httpx.Client(base_url=a.api_url, headers={"Authorization": f"Bearer {metered}"}) as http:
            for n in range(1000):
                if stop.is_set():
                    return
                body = {"prompt": f"burst {thread} {n}", "model": "uni-1-max", "aspect_ratio": "1:1"}
                try:
                    response = http.post("/generations", json=body, timeout=10)
                except httpx.HTTPError:
                    return  # A is gone: this create may or may not have been committed
                if response.status_code == 201:
                    accepted.append(response.json()["id"])
                else:
                    refused.append(response.text)

    burst_started = datetime.now(UTC)
    threads = [threading.Thread(target=burst, args=(index,)) for index in range(4)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 60
    while len(accepted) < 40:
        assert time.monotonic() < deadline and not refused, refused
        time.sleep(0.01)
    a.stop(signal.SIGKILL)
    stop.set()
    for thread in threads:
        thread.join(30)
    assert not refused, refused
    # Everything A committed, answered or not, is in the database; B's relay starts what A could not.
    engine = sa.create_engine(cluster.database_url)
    try:
        with engine.connect() as conn:
            committed = [
                row.id
                for row in conn.execute(
                    sa.select(generations.c.id).where(generations.c.created_at >= burst_started)
                )
            ]
    finally:
        engine.dispose()
    assert set(accepted) <= set(committed)
    with client(cluster, 1, metered) as b:
        for generation_id in committed:
            done = wait_for_generation(b, generation_id, 120)
            assert done.state == "completed", (generation_id, done.failure_code, done.failure_reason)
    assert all(len(pids_of(runs_dir, generation_id)) == 1 for generation_id in committed)
    assert captures(cluster, committed) == {
        generation_id: [PRICES["uni-1-max"]] for generation_id in committed
    }
    cluster.restart_api(0)


def test_serve_runs_the_api_and_a_temporal_worker_in_one_process(tmp_path, temporal_server):
    """The one-GPU-box topology: `daguerre serve` with execution = temporal and its in-process
    worker, on SQLite and local blobs."""
    models = scripted_models(tmp_path / "models.toml")
    live = start_server(
        tmp_path / "data",
        models,
        workers=1,
        DAGUERRE_EXECUTION="temporal",
        DAGUERRE_TEMPORAL_ADDRESS=temporal_server.address,
        DAGUERRE_TEMPORAL_TASK_QUEUE=f"serve-{tmp_path.name}",
    )
    try:
        with luma_agents.Luma(auth_token=live.key, base_url=live.api_url) as luma:
            done = wait_for_generation(luma, luma.generations.create(prompt="a lamp").id, 60)
        assert done.state == "completed", (done.failure_code, done.failure_reason)
        assert httpx.get(done.output[0].url, timeout=30).content.startswith(b"\x89PNG")
        assert f"temporal worker: queue serve-{tmp_path.name}" in live.log()
    finally:
        assert live.stop() in (0, -signal.SIGTERM), live.log()
