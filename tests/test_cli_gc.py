"""`daguerre gc`: the retention policy and the orphan sweep, once, through the real command line."""

from __future__ import annotations

import base64
import io
import os
import time
import uuid

from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from daguerre.api import create_app
from daguerre.blobs import open_blob_store
from daguerre.cli import app
from daguerre.settings import Settings
from daguerre.store import open_store
from daguerre.store.schema import input_key
from daguerre.wire import State
from support.clock import Clock
from support.helpers import make_key, make_worker, scripted_models

runner = CliRunner()


def blob_keys(blobs):
    return sorted(blob.key for blob in blobs.list_blobs(""))


def test_gc_dry_run_then_retention_off_then_for_real(tmp_path, monkeypatch):
    data_dir = tmp_path / "data"
    settings = Settings(data_dir=data_dir, models_file=scripted_models(tmp_path / "models.toml"))
    store = open_store(settings.resolved_database_url)
    blobs = open_blob_store(settings)
    key = make_key(store)
    clock = Clock()
    monkeypatch.setattr("daguerre.store.generations.utcnow", clock)  # the sweep keeps the real clock
    clock.advance(days=-40)
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), "blue").save(buffer, format="PNG")
    image = {"data": base64.b64encode(buffer.getvalue()).decode(), "media_type": "image/png"}
    with TestClient(create_app(settings, store, blobs)) as client:
        created = client.post(
            "/v1/generations", json={"prompt": "x", "image_ref": [image]}, headers=key.headers
        )
        generation_id = created.json()["id"]
        assert make_worker(settings, store, blobs).run_once().state == State.COMPLETED
        clock.advance(days=40)
        purged_blobs = blob_keys(blobs)
        assert len(purged_blobs) == 2  # its input and its output
        sizes = sum(len(blobs.get(k)) for k in purged_blobs)
        orphan = input_key(str(uuid.uuid4()), 0)
        blobs.put(orphan, b"orphan", "image/png")
        two_hours_ago = time.time() - 7200
        os.utime(blobs.path_for(orphan), (two_hours_ago, two_hours_ago))
        data = ["--data-dir", str(data_dir)]

        dry = runner.invoke(app, ["gc", "--dry-run", *data])
        assert dry.exit_code == 0, dry.output
        assert dry.stdout.splitlines() == [
            "dry run: nothing was deleted",
            f"retention: would purge 1 generation(s): 2 blob(s), {sizes} bytes ({sizes / 1e6:.1f} MB)",
            "orphans: would delete 0 output(s), 1 input(s) and 0 upload(s), 6 bytes (0.0 MB)",
        ]
        assert blob_keys(blobs) == sorted([*purged_blobs, orphan])

        config = tmp_path / "keep.toml"
        config.write_text("retention_days = 0\n")
        kept = runner.invoke(app, ["gc", "--config", str(config), *data])
        assert kept.exit_code == 0, kept.output
        assert "retention: purged 0 generation(s)" in kept.stdout
        assert "orphans: deleted 0 output(s), 1 input(s) and 0 upload(s), 6 bytes" in kept.stdout
        assert blob_keys(blobs) == purged_blobs

        done = runner.invoke(app, ["gc", *data])
        assert done.exit_code == 0, done.output
        assert f"retention: purged 1 generation(s): 2 blob(s), {sizes} bytes" in done.stdout
        assert blob_keys(blobs) == []
        row = store.generations.get(generation_id)
        assert row.state == State.COMPLETED and row.purged_at is not None
        answer = client.get(f"/v1/generations/{generation_id}", headers=key.headers)
        assert answer.status_code == 404
        assert answer.json() == {"detail": "Generation output was deleted after the retention period"}
    store.close()


def test_gc_help():
    shown = runner.invoke(app, ["gc", "--help"])
    assert shown.exit_code == 0 and "--dry-run" in shown.output and "--data-dir" in shown.output


def test_gc_needs_an_existing_database_and_creates_nothing(tmp_path):
    missing = runner.invoke(app, ["gc", "--data-dir", str(tmp_path / "nothing-here")])
    assert missing.exit_code == 1
    assert "no daguerre database" in missing.output
    assert not (tmp_path / "nothing-here" / "blobs").exists()
