"""Scale-out execution on a real Temporal dev server (loopback), local blobs, and SQLite (the
tests marked both_databases also on PostgreSQL): a create
starts a workflow after its commit, the stages run as activities, failures become failure codes,
a lost start is relayed, a superseded attempt changes nothing, and an engine-only worker (no
database) that is killed mid-generation is replaced within seconds, the job charged once."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from PIL import Image
from temporalio.testing import ActivityEnvironment

from daguerre.api.relay import relay_once
from daguerre.dispatch import Dispatch, TemporalDispatcher
from daguerre.moderation import Moderator, Verdict
from daguerre.settings import Settings
from daguerre.store import Store
from daguerre.store.schema import generations, ledger
from daguerre.wire import Reason, State
from daguerre.worker.temporal import RunnerThread, TemporalRunner
from support.engines import prompt_colour, runs_of
from support.helpers import free_port, scripted_models, subprocess_env
from support.temporal import TemporalServer

PRICE = 40_400  # uni-1, no inputs
BALANCE = 1_000_000


@pytest.fixture
def settings(
    tmp_path: Path, models_file: Path, store_url: str | None, temporal_server: TemporalServer
) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=store_url,
        models_file=models_file,
        workers=0,
        default_rpm=100_000,
        default_concurrency=100_000,
        moderation=False,
        execution="temporal",
        temporal_address=temporal_server.address,
        temporal_task_queue=f"test-{uuid.uuid4().hex[:12]}",  # each test its own queues
        temporal_heartbeat_timeout_s=2.0,
        max_attempts=3,
        blob_secret="test-secret",
    )


@pytest.fixture
def metered(store: Store) -> tuple[str, dict[str, str]]:
    account = store.accounts.create("metered", balance=BALANCE)
    _, token = store.accounts.create_key(account.id)
    return account.id, {"Authorization": f"Bearer {token}"}


@pytest.fixture
def runner(settings: Settings, store: Store, blobs: Any) -> Iterator[Callable[..., RunnerThread]]:
    started: list[RunnerThread] = []

    def start(runner_settings: Settings | None = None, **options: Any) -> RunnerThread:
        thread = RunnerThread(TemporalRunner(runner_settings or settings, store, blobs, **options))
        started.append(thread)
        return thread

    yield start
    for thread in started:
        thread.stop(timeout=15)


def create(client: Any, auth: dict[str, str], **body: Any) -> str:
    response = client.post("/v1/generations", json={"prompt": "a cat", **body}, headers=auth)
    assert response.status_code == 201, response.text
    generation_id: str = response.json()["id"]
    return generation_id


def wait_terminal(client: Any, auth: dict[str, str], generation_id: str, timeout_s: float = 30) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        body = client.get(f"/v1/generations/{generation_id}", headers=auth).json()
        if body["state"] in ("completed", "failed"):
            return body
        assert time.monotonic() < deadline, f"{generation_id} still {body['state']}"
        time.sleep(0.05)


def captures(store: Store, generation_id: str) -> list[int]:
    with store.db.engine.connect() as conn:
        rows = conn.execute(
            sa.select(ledger.c.amount).where(
                ledger.c.generation_id == generation_id, ledger.c.kind == "capture"
            )
        )
        return [int(row.amount) for row in rows]


def outbox_at(store: Store, generation_id: str) -> Any:
    with store.db.engine.connect() as conn:
        return conn.execute(
            sa.select(generations.c.outbox_at).where(generations.c.id == generation_id)
        ).scalar()


@pytest.mark.both_databases
def test_a_generation_completes_through_temporal_and_is_charged_once(client, store, metered, runner):
    account_id, auth = metered
    runner().start()
    generation_id = create(client, auth)
    body = wait_terminal(client, auth, generation_id)
    assert body["state"] == "completed", body
    image = client.get(body["output"][0]["url"])
    assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
    assert captures(store, generation_id) == [PRICE]
    account = store.accounts.get(account_id)
    assert (account.balance, account.reserved) == (BALANCE - PRICE, 0)
    assert outbox_at(store, generation_id) is None  # started after the commit, then cleared


@pytest.mark.both_databases
def test_a_job_failure_in_generate_fails_with_its_code_and_refunds(
    client, store, settings, metered, runner, tmp_path
):
    account_id, auth = metered
    failing = scripted_models(tmp_path / "failing.toml", mode="job_failure", code="image_too_large")
    runner(settings.model_copy(update={"models_file": failing})).start()
    generation_id = create(client, auth)
    body = wait_terminal(client, auth, generation_id)
    assert (body["state"], body["failure_code"]) == ("failed", "image_too_large"), body
    assert body["failure_reason"] == "scripted image_too_large"
    assert captures(store, generation_id) == []
    account = store.accounts.get(account_id)
    assert (account.balance, account.reserved) == (BALANCE, 0)


class OutputColour:
    """An image checker that flags the scripted engine's image for one prompt."""

    def __init__(self, prompt: str) -> None:
        self.colour = prompt_colour(prompt)

    def check(self, image: Image.Image) -> Verdict | None:
        return (
            Verdict("sexual", 0.8, "detector:TEST")
            if image.convert("RGB").getpixel((0, 0)) == self.colour
            else None
        )

    def warm(self) -> None:
        pass


@pytest.mark.both_databases
def test_a_flagged_output_ends_content_moderated_and_is_never_stored(
    client, store, settings, metered, runner
):
    account_id, auth = metered
    runner_thread = runner()
    activities = runner_thread.runner.activities
    flagged = "a picture the image checker will flag"
    moderator = Moderator(None, OutputColour(flagged), ("output",))
    activities.ctx = dataclasses.replace(activities.ctx, moderator=moderator)
    runner_thread.start()
    generation_id = create(client, auth, prompt=flagged)
    body = wait_terminal(client, auth, generation_id)
    assert (body["state"], body["failure_code"], body["failure_reason"]) == (
        "failed",
        "content_moderated",
        Reason.OUTPUT_MODERATED,
    ), body
    outputs = settings.resolved_blob_dir / "outputs"
    assert not outputs.exists() or not [path for path in outputs.rglob("*") if path.is_file()]
    assert store.accounts.get(account_id).balance == BALANCE


@pytest.mark.both_databases
def test_a_duplicate_start_is_a_no_op_and_a_lost_start_is_relayed(
    client, store, settings, metered, runner, monkeypatch
):
    account_id, auth = metered
    svc = client.app.state.services
    real = svc.dispatcher

    async def lost(job: Dispatch) -> bool:
        return False  # Temporal unreachable, say: the 201 is answered all the same

    monkeypatch.setattr(real, "dispatch", lost)
    generation_id = create(client, auth)
    client.portal.call(svc.starts.drain, 10.0)  # the start after the 201 ran, and was lost
    assert outbox_at(store, generation_id) is not None
    monkeypatch.undo()
    assert client.portal.call(relay_once, svc, 0.0) == 1  # started by the relay
    assert outbox_at(store, generation_id) is None
    assert client.portal.call(relay_once, svc, 0.0) == 0
    job = Dispatch(generation_id, account_id, "uni-1")
    assert client.portal.call(real.dispatch, job) is True  # already started: success, nothing new
    runner().start()
    assert wait_terminal(client, auth, generation_id)["state"] == "completed"
    assert client.portal.call(real.dispatch, job) is True  # after it closed: still no second run
    time.sleep(1.0)
    assert captures(store, generation_id) == [PRICE]
    runs = list(client.portal.call(_runs, real, generation_id))
    assert len(runs) == 1


async def _runs(dispatcher: TemporalDispatcher, workflow_id: str) -> list[str]:
    client = await dispatcher.client()
    return [run.run_id async for run in client.list_workflows(f"WorkflowId = '{workflow_id}'")]


@pytest.mark.both_databases
def test_a_completion_from_a_superseded_attempt_changes_nothing(client, store, settings, blobs, metered):
    _, auth = metered
    activities = TemporalRunner(settings, store, blobs).activities
    generation_id = create(client, auth)  # its workflow waits: no worker polls this test's queues
    first = activities.prepare(generation_id)
    second = activities.prepare(generation_id)  # a second run takes over: the first token is stale
    assert first is not None and second is not None and first["token"] != second["token"]
    stale_output = ActivityEnvironment().run(activities.generate, first)
    assert activities.finalize(first, stale_output) == "superseded"
    record = store.generations.get(generation_id)
    assert record is not None and record.state == State.PROCESSING
    assert captures(store, generation_id) == []
    assert not blobs.exists(stale_output)
    output = ActivityEnvironment().run(activities.generate, second)
    assert activities.finalize(second, output) == "completed"
    assert activities.finalize(first, stale_output) == "superseded"
    assert captures(store, generation_id) == [PRICE]
    assert activities.prepare(generation_id) is None  # decided: a later run does nothing


# An engine-only worker: no database settings, killed mid-generation --------------------------------


def engine_worker(
    settings: Settings, workdir: Path, models: Path, name: str
) -> tuple[subprocess.Popen[bytes], Path]:
    data_dir = workdir / name  # empty: no database, nothing of the API's
    data_dir.mkdir(parents=True)
    log_path = workdir / f"{name}.log"
    env = subprocess_env(
        DAGUERRE_EXECUTION="temporal",
        DAGUERRE_TEMPORAL_ADDRESS=settings.temporal_address,
        DAGUERRE_TEMPORAL_TASK_QUEUE=settings.temporal_task_queue,
        DAGUERRE_BLOB_DIR=str(settings.resolved_blob_dir),
        DAGUERRE_BLOB_SECRET="test-secret",
        DAGUERRE_MODELS_FILE=str(models),
        DAGUERRE_DATA_DIR=str(data_dir),
        DAGUERRE_WORKER_ID=name,
    )
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "daguerre.cli", "worker", "--engine-only", "--model", "uni-1"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while "temporal worker:" not in log_path.read_text(errors="replace"):
        assert process.poll() is None, log_path.read_text(errors="replace")
        assert time.monotonic() < deadline, log_path.read_text(errors="replace")
        time.sleep(0.1)
    return process, data_dir


def test_an_engine_only_worker_without_a_database_is_replaced_within_seconds_when_killed(
    client, store, settings, blobs, metered, runner, tmp_path
):
    account_id, auth = metered
    runs_dir = tmp_path / "runs"
    slow = scripted_models(tmp_path / "slow.toml", steps=40, step_s=0.25, runs_dir=str(runs_dir))
    runner(models=[]).start()  # the main queue only, in this process
    first, first_data = engine_worker(settings, tmp_path, slow, "engine-a")
    second = None
    try:
        generation_id = create(client, auth)
        deadline = time.monotonic() + 30
        while not runs_of(runs_dir, generation_id):
            assert time.monotonic() < deadline, (tmp_path / "engine-a.log").read_text()
            time.sleep(0.05)
        second, second_data = engine_worker(settings, tmp_path, slow, "engine-b")
        time.sleep(0.5)  # a few heartbeats
        first.send_signal(signal.SIGKILL)
        first.wait()
        killed_at = time.monotonic()
        body = wait_terminal(client, auth, generation_id, timeout_s=60)
        assert body["state"] == "completed", body
        runs = runs_of(runs_dir, generation_id)
        assert [run.pid for run in runs] == [first.pid, second.pid]
        assert runs[1].started - killed_at < 6.0  # heartbeat timeout (2 s) + retry, not a lease or a TTL
        assert captures(store, generation_id) == [PRICE]
        assert store.accounts.get(account_id).balance == BALANCE - PRICE
        for data_dir in (first_data, second_data):
            assert not (data_dir / "daguerre.db").exists()  # never opened a database
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def test_one_account_s_backlog_does_not_hold_back_another_s_jobs(client, store, settings, runner, tmp_path):
    """Fairness keys (the account) on a server with `matching.enableFairness=true`: with one engine
    slot, account B's 2 jobs queued after account A's 8 do not wait for all of A's (without
    fairness they finish 9th and 10th). The order is not strictly FIFO either way (task-queue
    partitions), so the test asserts fairness, not an exact order."""
    keys = {}
    for name in ("a", "b"):
        account = store.accounts.create(f"fair-{name}")
        _, token = store.accounts.create_key(account.id)
        keys[name] = {"Authorization": f"Bearer {token}"}
    jobs = [("a", create(client, keys["a"])) for _ in range(8)]
    jobs += [("b", create(client, keys["b"])) for _ in range(2)]
    slow = settings.model_copy(
        update={"models_file": scripted_models(tmp_path / "slow.toml", steps=2, step_s=0.1)}
    )
    runner(slow, models=[]).start()  # the main queue only: every job is prepared, none generated
    deadline = time.monotonic() + 30
    while any(store.generations.get(generation_id).state != State.PROCESSING for _, generation_id in jobs):
        assert time.monotonic() < deadline, "not every job was prepared"
        time.sleep(0.05)
    runner(slow, engine_only=True).start()  # one engine slot, before a backlog of A x 8, B x 2
    for name, generation_id in jobs:
        assert wait_terminal(client, keys[name], generation_id, timeout_s=60)["state"] == "completed"
    finished = sorted(jobs, key=lambda job: store.generations.get(job[1]).finished_at)
    b_places = [place for place, (name, _) in enumerate(finished, start=1) if name == "b"]
    assert b_places[-1] <= 6, f"B's jobs finished at places {b_places} of 10"


# What a main-queue worker runs besides the workflow: the reaper of unstarted rows, the sweeper ----


@pytest.mark.both_databases
def test_a_queued_row_whose_workflow_ended_is_failed_and_refunded_one_still_running_is_not(
    client, store, settings, blobs, metered
):
    account_id, auth = metered
    ended, waiting = create(client, auth), create(client, auth)  # no worker polls: both stay queued
    client.portal.call(client.app.state.services.starts.drain, 10.0)  # their workflows are started
    runner = TemporalRunner(settings, store, blobs, models=[])

    async def reap() -> list[str]:
        temporal = await runner.connect()
        await temporal.get_workflow_handle(ended).terminate(reason="by hand")
        return await runner.reap_unstarted(datetime.now(UTC))

    assert asyncio.run(reap()) == [ended]
    body = wait_terminal(client, auth, ended)
    assert (body["state"], body["failure_code"]) == ("failed", "generation_failed")
    assert "could not be started" in body["failure_reason"]
    assert store.generations.get(waiting).state == State.QUEUED
    assert captures(store, ended) == []
    account = store.accounts.get(account_id)
    assert (account.balance, account.reserved) == (BALANCE, PRICE)  # only the waiting job's hold


def test_a_main_queue_worker_runs_the_retention_sweep(client, store, settings, metered, runner):
    _, auth = metered
    sweeping = settings.model_copy(update={"gc_interval_s": 0.2, "retention_days": 1.0})
    runner(sweeping).start()
    generation_id = create(client, auth)
    assert wait_terminal(client, auth, generation_id)["state"] == "completed"
    two_days_ago = datetime.now(UTC) - timedelta(days=2)
    with store.db.engine.begin() as conn:  # created and finished two days ago
        conn.execute(
            generations.update()
            .where(generations.c.id == generation_id)
            .values(created_at=two_days_ago, finished_at=two_days_ago)
        )
    deadline = time.monotonic() + 20
    while store.generations.get(generation_id).purged_at is None:
        assert time.monotonic() < deadline, "the sweeper did not purge the old generation"
        time.sleep(0.1)
    response = client.get(f"/v1/generations/{generation_id}", headers=auth)
    assert response.status_code == 404
    assert response.json() == {"detail": "Generation output was deleted after the retention period"}
    outputs = settings.resolved_blob_dir / "outputs"
    assert not [path for path in outputs.rglob("*") if path.is_file()]


def test_serve_s_in_process_worker_starts_again_once_temporal_is_reachable(
    settings, store, blobs, tmp_path, monkeypatch
):
    from daguerre.worker import temporal as module

    monkeypatch.setattr(module, "RESTART_S", 0.2)
    port = free_port()
    later = settings.model_copy(update={"temporal_address": f"127.0.0.1:{port}"})
    thread = RunnerThread(TemporalRunner(later, store, blobs))
    thread.start(timeout=30)
    server = None
    try:
        assert thread.error is not None and not thread.runner.ready.is_set()  # nothing listens yet
        server = TemporalServer.start(tmp_path / "temporal", port=port)
        assert thread.runner.ready.wait(30), "the worker did not start once Temporal was there"
    finally:
        thread.stop(timeout=15)
        if server is not None:
            server.stop()


@pytest.mark.parametrize(
    ("execution", "flags", "says"),
    [
        ("embedded", ["--engine-only"], '--engine-only, --model and --no-engine need execution = "temporal"'),
        ("embedded", ["--model", "uni-1"], "--engine-only, --model and --no-engine need execution"),
        ("embedded", ["--no-engine"], "--engine-only, --model and --no-engine need execution"),
        ("temporal", ["--no-engine", "--engine-only"], "--no-engine runs no engine"),
        ("temporal", ["--no-engine", "--model", "uni-1"], "--no-engine runs no engine"),
        ("temporal", ["--engine-only", "--model", "uni-3"], "no such model in the models file: uni-3"),
        ("temporal", ["--engine-only", "--model", "uni-1,uni-3"], "no such model in the models file: uni-3"),
    ],
)
def test_worker_flags_that_do_not_fit_are_refused_in_one_line(tmp_path, models_file, execution, flags, says):
    from typer.testing import CliRunner

    from daguerre.cli import app

    env = {"DAGUERRE_EXECUTION": execution, "DAGUERRE_DATA_DIR": str(tmp_path / "data")}
    result = CliRunner().invoke(app, ["worker", "--models", str(models_file), *flags], env=env)
    assert result.exit_code == 2, result.output
    assert says in result.stderr and "Traceback" not in result.output


def test_an_engine_only_worker_checks_its_previews_as_outputs_are_checked(
    settings: Settings, blobs: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def engine_only(worker_settings: Settings) -> Any:
        return TemporalRunner(worker_settings, None, blobs, engine_only=True).activities.ctx

    moderated = settings.model_copy(update={"moderation": True, "preview_every_s": 1.0})
    checks = engine_only(moderated).moderator
    assert checks.image is not None and checks.text is None and checks.stages == {"output"}
    outputs_unchecked = moderated.model_copy(update={"moderation_stages": ["prompt", "inputs"]})
    assert engine_only(outputs_unchecked).moderator.image is None
    # without the moderation packages, previews are off there rather than unchecked
    monkeypatch.setattr("daguerre.moderation.PACKAGES", ("no_such_moderation_package",))
    ctx = engine_only(moderated)
    assert ctx.moderator.image is None and ctx.settings.preview_every_s == 0
