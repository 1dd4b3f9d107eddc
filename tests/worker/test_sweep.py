"""The sweeper: orphaned blobs (never a live attempt's output) and the retention policy, on the real
SQLite store and local blobs, with a clock moved by hand."""

from __future__ import annotations

import base64
import io
import os
import threading
import time
import uuid
from datetime import timedelta

import pytest
from PIL import Image

from daguerre.settings import Settings
from daguerre.store.schema import input_key, output_key, upload_key
from daguerre.wire import FailureCode, State
from daguerre.worker import WorkerPool
from daguerre.worker.sweep import MARKER_KEY, Sweeper
from support.clock import Clock
from support.helpers import make_worker

GRACE = timedelta(hours=1)  # the default gc_grace_s


@pytest.fixture
def clock(monkeypatch):
    return Clock().install(monkeypatch)


@pytest.fixture
def sweeper(settings, store, blobs):
    return Sweeper(settings, store, blobs)


def png_b64() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), "red").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def create(client, auth, **body):
    response = client.post("/v1/generations", json={"prompt": "a red circle", **body}, headers=auth)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def create_with_input(client, auth):
    return create(client, auth, image_ref=[{"data": png_b64(), "media_type": "image/png"}])


def age(blobs, key, seconds):
    """Make the blob look written `seconds` ago (by the real clock its modification time is on)."""
    moment = time.time() - seconds
    os.utime(blobs.path_for(key), (moment, moment))


def keys(blobs, prefix=""):
    return sorted(blob.key for blob in blobs.list_blobs(prefix))


def put_output(blobs, generation_id, token):
    key = output_key(generation_id, token, 0, "png")
    blobs.put(key, b"\x89PNG not really", "image/png")
    return key


# Orphaned outputs --------------------------------------------------------------------------------


def test_a_live_attempt_s_output_is_kept_however_old(client, auth, store, blobs, sweeper, clock):
    generation_id = create(client, auth)
    claimed = store.generations.claim("w1", lease_s=30)
    key = put_output(blobs, generation_id, claimed.lease_token)
    age(blobs, key, 10 * 86400)
    clock.advance(hours=2)  # the lease has lapsed too, but nobody claimed the job since
    report = sweeper.sweep(now=clock.now + timedelta(days=10))
    assert report.orphan_outputs == 0 and keys(blobs, "outputs/") == [key]
    # ... because the attempt can still commit it:
    assert store.generations.complete(generation_id, claimed.lease_token, (key,))
    assert client.get(f"/v1/generations/{generation_id}", headers=auth).json()["state"] == "completed"


def test_a_superseded_attempt_s_output_is_deleted_and_the_new_attempt_s_kept(
    client, auth, store, blobs, sweeper, clock
):
    generation_id = create(client, auth)
    first = store.generations.claim("w1", lease_s=30)
    stale = put_output(blobs, generation_id, first.lease_token)
    clock.advance(seconds=31)  # the first worker's lease lapses; another worker takes the job
    second = store.generations.claim("w2", lease_s=30)
    assert second.id == generation_id and second.lease_token != first.lease_token
    live = put_output(blobs, generation_id, second.lease_token)
    report = sweeper.sweep(now=clock.now + GRACE + timedelta(minutes=1))
    assert (report.orphan_outputs, report.orphan_inputs) == (1, 0)
    assert report.orphan_bytes == len(b"\x89PNG not really")
    assert keys(blobs, "outputs/") == [live]
    # The stale attempt could never have committed it anyway:
    assert not store.generations.complete(generation_id, first.lease_token, (stale,))
    assert store.generations.complete(generation_id, second.lease_token, (live,))


def test_outputs_younger_than_the_grace_are_kept(client, auth, store, blobs, sweeper, clock):
    generation_id = create(client, auth)
    first = store.generations.claim("w1", lease_s=30)
    stale = put_output(blobs, generation_id, first.lease_token)
    clock.advance(seconds=31)
    store.generations.claim("w2", lease_s=30)
    assert sweeper.sweep(now=clock.now + GRACE - timedelta(minutes=1)).orphan_outputs == 0
    assert keys(blobs, "outputs/") == [stale]
    assert sweeper.sweep(now=clock.now + GRACE + timedelta(minutes=1)).orphan_outputs == 1
    assert keys(blobs, "outputs/") == []


def test_a_terminal_generation_keeps_only_its_committed_output(
    client, auth, store, blobs, worker, sweeper, clock
):
    done = create(client, auth)
    failed = create(client, auth)
    worker.run_once()
    served = store.generations.get(done).output_keys[0]
    leftover = put_output(blobs, done, str(uuid.uuid4()))  # an earlier attempt's, never committed
    claimed = store.generations.claim("w1", lease_s=30)
    assert claimed.id == failed
    written = put_output(blobs, failed, claimed.lease_token)  # written, then the job failed
    assert store.generations.fail(failed, claimed.lease_token, FailureCode.GENERATION_FAILED, "boom")
    no_row = put_output(blobs, str(uuid.uuid4()), str(uuid.uuid4()))
    report = sweeper.sweep(now=clock.now + GRACE + timedelta(minutes=1))
    assert report.orphan_outputs == 3
    assert keys(blobs, "outputs/") == [served]
    assert {leftover, written, no_row}.isdisjoint(keys(blobs))
    body = client.get(f"/v1/generations/{done}", headers=auth).json()
    assert client.get(body["output"][0]["url"]).status_code == 200


def test_blobs_of_other_shapes_are_never_touched(blobs, sweeper, clock):
    strange = ["outputs/not-a-uuid/t/0.png", "inputs/x/0", "files/abc", "elsewhere/1"]
    for key in strange:
        blobs.put(key, b"x", "application/octet-stream")
        age(blobs, key, 86400 * 400)
    report = sweeper.sweep(now=clock.now + timedelta(days=400))
    assert (report.orphan_outputs, report.orphan_inputs) == (0, 0)
    assert keys(blobs) == sorted(strange)


def test_a_worker_killed_between_writing_its_output_and_committing(
    client, auth, settings, store, blobs, sweeper, clock, monkeypatch
):
    """The fault-injection case: the output is on disk, the commit never happened."""

    class Killed(BaseException):
        pass

    generation_id = create(client, auth)
    doomed = make_worker(settings, store, blobs, worker_id="doomed:0")
    real_complete = store.generations.complete

    def killed(*args, **kwargs):
        raise Killed

    monkeypatch.setattr(store.generations, "complete", killed)
    with pytest.raises(Killed):
        doomed.run_once()
    monkeypatch.setattr(store.generations, "complete", real_complete)
    [orphan] = keys(blobs, "outputs/")
    row = store.generations.get(generation_id)
    assert row.state == State.PROCESSING and row.lease_token in orphan

    # While its row still holds the dead worker's token, the output is kept (it might yet commit).
    assert sweeper.sweep(now=clock.now + GRACE * 2).orphan_outputs == 0
    assert keys(blobs, "outputs/") == [orphan]

    clock.advance(seconds=settings.lease_s + 1)
    assert make_worker(settings, store, blobs, worker_id="next:0").run_once().state == State.COMPLETED
    [served] = store.generations.get(generation_id).output_keys
    assert sorted(keys(blobs, "outputs/")) == sorted([orphan, served])
    report = sweeper.sweep(now=clock.now + GRACE * 2)
    assert report.orphan_outputs == 1
    assert keys(blobs, "outputs/") == [served]
    body = client.get(f"/v1/generations/{generation_id}", headers=auth).json()
    assert body["state"] == "completed" and client.get(body["output"][0]["url"]).status_code == 200


# Orphaned inputs ---------------------------------------------------------------------------------


def test_inputs_without_a_generation_are_deleted_only_past_the_grace(client, auth, blobs, sweeper, clock):
    generation_id = create_with_input(client, auth)  # a live generation's input is never an orphan
    live_input = input_key(generation_id, 0)
    crashed = input_key(str(uuid.uuid4()), 0)  # stored by a create that died before its insert
    blobs.put(crashed, b"input bytes", "image/png")
    assert keys(blobs, "inputs/") == sorted([live_input, crashed])

    report = sweeper.sweep(now=clock.now + GRACE - timedelta(minutes=1))
    assert report.orphan_inputs == 0 and keys(blobs, "inputs/") == sorted([live_input, crashed])

    report = sweeper.sweep(now=clock.now + GRACE + timedelta(minutes=1))
    assert (report.orphan_inputs, report.orphan_bytes) == (1, len(b"input bytes"))
    assert keys(blobs, "inputs/") == [live_input]


def test_a_dry_run_deletes_nothing_and_counts_what_a_real_run_deletes(
    client, auth, store, blobs, worker, sweeper, clock
):
    old = create_with_input(client, auth)
    worker.run_once()
    blobs.put(input_key(str(uuid.uuid4()), 0), b"orphan", "image/png")
    put_output(blobs, old, str(uuid.uuid4()))
    before = keys(blobs)
    later = clock.now + timedelta(days=31)
    dry = sweeper.sweep(now=later, dry_run=True)
    assert keys(blobs) == before
    assert store.generations.get(old).purged_at is None
    real = sweeper.sweep(now=later)
    assert (dry.purged_generations, dry.purged_blobs, dry.orphan_inputs, dry.orphan_outputs) == (1, 3, 1, 0)
    assert (real.purged_generations, real.purged_blobs, real.orphan_inputs, real.orphan_outputs) == (
        1,
        3,
        1,
        0,
    )
    assert dry.purged_bytes + dry.orphan_bytes == real.purged_bytes + real.orphan_bytes > 0
    assert keys(blobs) == []
    assert "would purge 1 generation(s): 3 blob(s)" in dry.describe()
    assert "purged 1 generation(s): 3 blob(s)" in real.describe()


# Retention ----------------------------------------------------------------------------------------


def test_retention_purges_old_generations_and_keeps_their_rows(
    client, auth, store, blobs, worker, sweeper, clock, tmp_path
):
    from support.helpers import scripted_models

    start = clock.advance(days=-40)  # so that all of it lies in the past of the usage report
    old = create_with_input(client, auth)
    assert worker.run_once().state == State.COMPLETED
    old_failed = create_with_input(client, auth)
    failing = make_worker(
        Settings(data_dir=tmp_path / "data", models_file=scripted_models(tmp_path / "f.toml", mode="raise")),
        store,
        blobs,
    )
    assert failing.run_once().state == State.FAILED
    stuck = create_with_input(client, auth)  # still processing when the sweep comes: not terminal
    running = store.generations.claim("slow", lease_s=30)
    assert running.id == stuck
    late = create_with_input(client, auth)  # waits in the queue, finishes 20 days after its creation
    clock.advance(days=20)
    assert store.generations.renew(stuck, running.lease_token, lease_s=30)
    recent = create_with_input(client, auth)
    assert worker.run_once().generation_id == late
    assert worker.run_once().generation_id == recent
    old_blobs = keys(blobs, f"outputs/{old}/") + keys(blobs, f"inputs/{old}/")
    old_blobs += keys(blobs, f"inputs/{old_failed}/")
    assert len(old_blobs) == 3
    sizes = sum(len(blobs.get(key)) for key in old_blobs)
    clock.advance(days=11)  # old and old_failed finished 31 days ago; late and recent 11 days ago

    report = sweeper.sweep(now=clock.now)
    assert (report.purged_generations, report.purged_blobs, report.purged_bytes) == (2, 3, sizes)
    assert set(keys(blobs)).isdisjoint(old_blobs)
    row = store.generations.get(old)
    assert row is not None and row.state == State.COMPLETED and row.purged_at == clock.now
    assert row.output_keys == () and row.input_keys  # the request and its input keys stay on the row
    assert store.generations.get(old_failed).purged_at == clock.now
    for kept in (stuck, late, recent):
        assert store.generations.get(kept).purged_at is None
        assert keys(blobs, f"inputs/{kept}/")
    assert keys(blobs, f"outputs/{late}/") and keys(blobs, f"outputs/{recent}/")

    purged = client.get(f"/v1/generations/{old}", headers=auth)
    assert (purged.status_code, purged.json()) == (
        404,
        {"detail": "Generation output was deleted after the retention period"},
    )
    failed = client.get(f"/v1/generations/{old_failed}", headers=auth)
    assert failed.status_code == 200 and failed.json()["state"] == "failed"  # nothing shown was deleted
    for kept in (late, recent):
        body = client.get(f"/v1/generations/{kept}", headers=auth).json()
        assert body["state"] == "completed" and client.get(body["output"][0]["url"]).status_code == 200

    since = (start - timedelta(days=1)).date().isoformat()
    usage = client.get(f"/v1/usage?from={since}&group_by=model", headers=auth).json()["total"]
    assert usage["generations"] == {"total": 5, "queued": 0, "processing": 1, "completed": 3, "failed": 1}

    again = sweeper.sweep(now=clock.now)
    assert (again.purged_generations, again.purged_blobs, again.orphan_inputs, again.orphan_outputs) == (
        0,
        0,
        0,
        0,
    )


def test_a_purge_interrupted_after_marking_its_row_is_finished_by_the_orphan_sweep(
    client, auth, store, blobs, worker, sweeper, clock
):
    generation_id = create_with_input(client, auth)
    worker.run_once()
    left = keys(blobs, f"outputs/{generation_id}/") + keys(blobs, f"inputs/{generation_id}/")
    assert len(left) == 2
    later = clock.advance(days=31)
    # A process marks the row purged, then dies before deleting the blobs.
    assert store.generations.mark_purged([generation_id], later) == {generation_id}
    report = sweeper.sweep(now=later + GRACE * 2)
    assert (report.purged_generations, report.orphan_outputs, report.orphan_inputs) == (0, 1, 1)
    assert keys(blobs) == []


def test_a_purged_generation_cannot_be_used_as_an_image_reference(client, auth, worker, sweeper, clock):
    old = create(client, auth)
    worker.run_once()
    sweeper.sweep(now=clock.advance(days=31))
    for body in (
        {"image_ref": [{"generation_id": old}]},
        {"type": "image_edit", "source": {"generation_id": old}},
    ):
        response = client.post("/v1/generations", json={"prompt": "x", **body}, headers=auth)
        field = "image_ref[0]" if "image_ref" in body else "source"
        assert (response.status_code, response.json()) == (
            400,
            {"detail": f"{field}: generation output was deleted after the retention period"},
        )


def test_an_output_a_waiting_job_uses_as_input_outlives_the_retention_until_that_job_ends(
    client, auth, store, blobs, worker, sweeper, clock
):
    old = create(client, auth)
    worker.run_once()
    [output] = store.generations.get(old).output_keys
    clock.advance(days=31)
    edit = create(client, auth, type="image_edit", prompt="make it blue", source={"generation_id": old})
    assert sweeper.sweep(now=clock.now).purged_generations == 0
    assert blobs.exists(output)
    assert worker.run_once().state == State.COMPLETED
    assert store.generations.get(edit).state == State.COMPLETED
    assert sweeper.sweep(now=clock.now).purged_generations == 1
    assert not blobs.exists(output)


def test_retention_days_zero_keeps_everything(client, auth, settings, store, blobs, worker, clock):
    forever = Sweeper(settings.model_copy(update={"retention_days": 0}), store, blobs)
    generation_id = create_with_input(client, auth)
    worker.run_once()
    before = keys(blobs)
    report = forever.sweep(now=clock.advance(days=3650))
    assert (report.purged_generations, report.orphan_outputs, report.orphan_inputs) == (0, 0, 0)
    assert keys(blobs) == before and store.generations.get(generation_id).purged_at is None
    assert client.get(f"/v1/generations/{generation_id}", headers=auth).json()["state"] == "completed"


def test_a_generation_that_finishes_long_after_its_creation_is_purged_within_a_day(
    client, auth, store, blobs, sweeper, clock
):
    """Between a process's daily full passes, its passes read only recently created generations; a
    job that waited in the queue for days is found by the next full pass."""
    slow = create(client, auth)
    clock.advance(days=5)
    claimed = store.generations.claim("w", lease_s=30)
    key = put_output(blobs, slow, claimed.lease_token)
    assert store.generations.complete(slow, claimed.lease_token, (key,))
    finished = clock.now
    full = finished + timedelta(days=30) - timedelta(hours=1)  # an hour too early: kept
    assert sweeper.sweep(now=full).purged_generations == 0
    # Two hours later it is past the retention, but this pass looks back a day before the last
    # cutoff only, and it was created five days before it.
    assert sweeper.sweep(now=full + timedelta(hours=2)).purged_generations == 0
    assert blobs.exists(key)
    assert sweeper.sweep(now=full + timedelta(days=1, minutes=1)).purged_generations == 1
    assert not blobs.exists(key)


def test_several_sweepers_at_once_purge_each_generation_once(
    client, auth, store, blobs, worker, settings, clock
):
    ids = [create_with_input(client, auth) for _ in range(6)]
    for _ in ids:
        worker.run_once()
    later = clock.advance(days=31)
    sweepers = [Sweeper(settings, store, blobs) for _ in range(3)]
    reports = []
    threads = [threading.Thread(target=lambda s=s: reports.append(s.sweep(now=later))) for s in sweepers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(report.purged_generations for report in reports) == 6
    assert keys(blobs) == []
    assert all(store.generations.get(i).purged_at == later for i in ids)
    assert store.generations.mark_purged(ids, later) == set()


def test_a_second_sweep_of_the_same_process_while_one_runs_does_nothing(settings, store, blobs):
    entered, release = threading.Event(), threading.Event()

    class SlowBlobs:
        def __getattr__(self, name):
            return getattr(blobs, name)

        def list_blobs(self, prefix):
            entered.set()
            release.wait(10)
            return blobs.list_blobs(prefix)

    sweeper = Sweeper(settings, store, SlowBlobs())
    first = threading.Thread(target=sweeper.sweep)
    first.start()
    assert entered.wait(10)
    assert sweeper.sweep() is None
    release.set()
    first.join()
    assert sweeper.sweep() is not None


# The periodic task -------------------------------------------------------------------------------


def test_processes_sharing_the_blobs_take_turns(settings, store, blobs):
    one, other = Sweeper(settings, store, blobs), Sweeper(settings, store, blobs)
    assert one._take_turn()
    assert not other._take_turn() and not one._take_turn()
    age(blobs, MARKER_KEY, settings.gc_interval_s / 2 + 60)
    assert other._take_turn()


def test_a_worker_pool_sweeps_in_the_background(tmp_path, settings, store, blobs, monkeypatch):
    monkeypatch.setattr("daguerre.worker.sweep.FIRST_PASS_DELAY_S", 0.05)
    fast = settings.model_copy(update={"gc_interval_s": 0.2, "gc_grace_s": 60})
    orphan = input_key(str(uuid.uuid4()), 0)
    blobs.put(orphan, b"x", "image/png")
    age(blobs, orphan, 120)
    pool = WorkerPool(fast, store, blobs, count=1)
    pool.start()
    try:
        deadline = time.monotonic() + 10
        while blobs.exists(orphan) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        pool.stop()
    assert not blobs.exists(orphan)
    assert not any(thread.is_alive() for thread in pool._threads)


def test_an_api_only_pool_and_a_zero_interval_run_no_sweeper(settings, store, blobs):
    for pool in (
        WorkerPool(settings, store, blobs, count=0),
        WorkerPool(settings.model_copy(update={"gc_interval_s": 0}), store, blobs, count=1),
    ):
        pool.start()
        try:
            assert "gc" not in [thread.name for thread in pool._threads]
        finally:
            pool.stop()


# What presigned PUTs wrote ----------------------------------------------------------------------


def test_an_upload_key_is_kept_while_its_file_is_pending_and_deleted_after(
    client, auth, store, blobs, sweeper
):
    def new_upload():
        created = client.post(
            "/v1/files", json={"mime_type": "image/png", "size_bytes": 3}, headers=auth
        ).json()
        key = upload_key(created["id"])
        blobs.put(key, b"abc", "image/png")
        age(blobs, key, 2 * GRACE.total_seconds())
        return created["id"], key

    _, waiting = new_upload()  # never completed: its file is still pending
    deleted_id, late = new_upload()
    assert client.delete(f"/v1/files/{deleted_id}", headers=auth).status_code == 204
    blobs.put(late, b"a PUT that landed after the delete (S3 cannot refuse it)", "image/png")
    age(blobs, late, 2 * GRACE.total_seconds())
    stray = upload_key(str(uuid.uuid4()))  # no file at all
    blobs.put(stray, b"x", "image/png")
    age(blobs, stray, 2 * GRACE.total_seconds())
    report = sweeper.sweep()
    assert report.orphan_uploads == 2
    assert keys(blobs, "uploads/") == [waiting]
