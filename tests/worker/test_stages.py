"""The stages of one generation, run one by one as an engine host and a coordinator would run them:
`generate` with no database, and every stage with nothing carried in memory from the one before."""

from __future__ import annotations

import base64
import dataclasses
import io

import pytest
from PIL import Image

from daguerre.engine import ModelRegistry, load_models_file
from daguerre.errors import JobFailure
from daguerre.moderation import Moderator, Verdict
from daguerre.wire import FailureCode, GenerationType, State
from daguerre.worker.previews import Previews
from daguerre.worker.stages import (
    EngineRequest,
    Generated,
    Prepared,
    StageContext,
    finalize,
    generate,
    prepare,
)
from support.engines import preview_at, prompt_colour
from support.helpers import ignore_steps, scripted_models
from support.imageserver import png_bytes


def create(client, auth, **body):
    response = client.post("/v1/generations", json={"prompt": "a red circle", **body}, headers=auth)
    assert response.status_code == 201, response.text
    return response.json()["id"]


class FlagColour:
    def __init__(self, colour):
        self.colour = colour

    def check(self, image):
        return Verdict("sexual", 0.9, "detector:TEST") if image.getpixel((0, 0)) == self.colour else None

    def warm(self):
        pass


@pytest.fixture
def contexts(settings, store, blobs):
    """(coordinator: store, no engine; engine host: engine, no store)."""
    registry = ModelRegistry(load_models_file(settings.models_file))
    moderator = Moderator(None, None, ())
    return StageContext(settings, blobs, moderator, store=store), StageContext(
        settings, blobs, moderator, registry=registry
    )


def claim(store):
    record = store.generations.claim("test:0", lease_s=30)
    assert record is not None and record.lease_token is not None
    return record


def test_the_request_crosses_as_plain_data_and_the_engine_host_needs_no_database(
    client, auth, store, blobs, contexts
):
    coordinator, engine_host = contexts
    source = {"data": base64.b64encode(png_bytes((40, 30), (9, 200, 9))).decode(), "media_type": "image/png"}
    generation_id = create(client, auth, type="image_edit", source=source)
    record = claim(store)
    prepared = prepare(coordinator, record, record.lease_token)
    request = prepared.request
    assert request == EngineRequest(**dataclasses.asdict(request))  # nothing but plain fields
    assert request.type == GenerationType.IMAGE_EDIT and len(request.input_keys) == 1
    generated = generate(engine_host, Prepared(request), ignore_steps)  # inputs reloaded
    assert generated.output_key == f"outputs/{generation_id}/{record.lease_token}/0.png"
    assert blobs.exists(generated.output_key)
    assert finalize(coordinator, request, Generated(generated.output_key)) is True
    assert store.generations.get(generation_id).state == State.COMPLETED


def test_a_superseded_attempt_changes_nothing_and_leaves_no_output(client, auth, store, blobs, contexts):
    coordinator, engine_host = contexts
    generation_id = create(client, auth)
    first = claim(store)
    prepared = prepare(coordinator, first, first.lease_token)
    store.generations.hand_back(generation_id, first.lease_token, count_attempt=True)  # its lease went
    second = claim(store)
    stale = generate(engine_host, prepared, ignore_steps)
    assert finalize(coordinator, prepared.request, stale) is False
    assert not blobs.exists(stale.output_key)
    row = store.generations.get(generation_id)
    assert (row.state, row.lease_token) == (State.PROCESSING, second.lease_token)


def test_finalize_checks_an_output_it_did_not_see_being_made(client, auth, store, blobs, settings, contexts):
    coordinator, engine_host = contexts
    prompt = "a flagged output"
    generation_id = create(client, auth, prompt=prompt)
    record = claim(store)
    prepared = prepare(coordinator, record, record.lease_token)
    generated = generate(engine_host, prepared, ignore_steps)
    checking = dataclasses.replace(
        coordinator, moderator=Moderator(None, FlagColour(prompt_colour(prompt)), ("output",))
    )
    with pytest.raises(JobFailure) as failure:
        finalize(checking, prepared.request, Generated(generated.output_key))  # the image is read back
    assert failure.value.code == FailureCode.CONTENT_MODERATED
    assert not blobs.exists(generated.output_key)  # never served
    assert store.generations.get(generation_id).state == State.PROCESSING  # the caller decides the failure


def test_an_input_gone_before_the_engine_ran_is_invalid_request(client, auth, store, blobs, contexts):
    coordinator, engine_host = contexts
    source = {"data": base64.b64encode(png_bytes((8, 8))).decode(), "media_type": "image/png"}
    create(client, auth, type="image_edit", source=source)
    record = claim(store)
    prepared = prepare(coordinator, record, record.lease_token)
    blobs.delete(prepared.request.input_keys[0])
    with pytest.raises(JobFailure) as failure:
        generate(engine_host, Prepared(prepared.request), ignore_steps)
    assert failure.value.code == FailureCode.INVALID_REQUEST


def test_the_step_hook_can_stop_the_engine_before_any_output(client, auth, store, blobs, contexts):
    coordinator, engine_host = contexts
    create(client, auth)
    record = claim(store)
    prepared = prepare(coordinator, record, record.lease_token)

    class Stop(Exception):
        pass

    def stop(step, total, preview=None):
        raise Stop

    with pytest.raises(Stop):
        generate(engine_host, prepared, stop)
    assert list(blobs.list_blobs("outputs/")) == []


@pytest.fixture
def slow_engine_host(settings, blobs, tmp_path):
    """An engine host whose model takes 8 steps of 40 ms, showing a preview every 0.1 s."""
    return engine_host_with(
        settings.model_copy(
            update={
                "models_file": scripted_models(tmp_path / "slow.toml", steps=8, step_s=0.04),
                "preview_every_s": 0.1,
            }
        ),
        blobs,
    )


def engine_host_with(settings, blobs, moderator=None):
    registry = ModelRegistry(load_models_file(settings.models_file))
    return StageContext(settings, blobs, moderator or Moderator(None, None, ()), registry=registry)


def previews_shown(host, prepared):
    """The steps after which `generate` handed on a preview."""
    shown = []
    generate(host, prepared, lambda step, total, preview: shown.append(step) if preview else None)
    return shown


def test_previews_come_every_preview_every_s_as_small_jpegs_of_the_picture_so_far(
    client, auth, store, contexts, slow_engine_host
):
    coordinator, _ = contexts
    prompt = "a slow red circle"
    create(client, auth, prompt=prompt)
    record = claim(store)
    prepared = prepare(coordinator, record, record.lease_token)
    calls = []
    generate(slow_engine_host, prepared, lambda step, total, preview: calls.append((step, total, preview)))
    assert [(step, total) for step, total, _ in calls] == [(step, 8) for step in range(1, 9)]
    shown = [(step, preview) for step, _, preview in calls if preview is not None]
    # none in the first 0.1 s, then about one every 0.1 s (steps of 40 ms): 2 or 3 in 8 steps
    assert 2 <= len(shown) <= 3 and shown[0][0] >= 2
    for step, preview in shown:
        picture = Image.open(io.BytesIO(preview))
        assert picture.format == "JPEG" and picture.size == (32, 16)
        expected = preview_at(prompt, step, 8).getpixel((0, 0))
        assert max(abs(a - b) for a, b in zip(picture.getpixel((8, 8)), expected, strict=True)) <= 3


class FlagAll:
    def __init__(self):
        self.checked = 0

    def check(self, image):
        self.checked += 1
        return Verdict("sexual", 0.9, "detector:TEST")

    def warm(self):
        pass


def test_no_previews_when_they_are_off(client, auth, store, blobs, contexts, slow_engine_host):
    coordinator, _ = contexts
    create(client, auth)
    record = claim(store)
    off = engine_host_with(slow_engine_host.settings.model_copy(update={"preview_every_s": 0}), blobs)
    assert previews_shown(off, prepare(coordinator, record, record.lease_token)) == []


def test_previews_are_moderated_like_outputs_and_stop_after_one_is_flagged(
    client, auth, store, blobs, contexts, slow_engine_host
):
    coordinator, _ = contexts
    create(client, auth)
    record = claim(store)
    checker = FlagAll()
    checked = engine_host_with(slow_engine_host.settings, blobs, Moderator(None, checker, ("output",)))
    assert previews_shown(checked, prepare(coordinator, record, record.lease_token)) == []
    assert checker.checked == 1  # the first preview was flagged: no more were drawn


@pytest.mark.parametrize("previews", ["raise", "junk"])
def test_a_preview_that_fails_costs_the_job_nothing(
    client, auth, store, blobs, contexts, previews, tmp_path, caplog
):
    coordinator, _ = contexts
    models = scripted_models(tmp_path / "broken.toml", steps=6, step_s=0.03, previews=previews)
    host = engine_host_with(
        coordinator.settings.model_copy(update={"models_file": models, "preview_every_s": 0.05}), blobs
    )
    create(client, auth)
    record = claim(store)
    prepared = prepare(coordinator, record, record.lease_token)
    calls = []
    generated = generate(host, prepared, lambda step, total, preview: calls.append(preview))
    assert len(calls) == 6 and calls == [None] * 6
    assert "a preview failed; no more previews of this job" in caplog.text
    assert caplog.text.count("a preview failed") == 1  # tried once
    assert finalize(coordinator, prepared.request, generated) is True  # the job itself completed


def test_an_engine_with_no_preview_yet_is_asked_again_a_period_later():
    ticks = iter(range(100))
    previews = Previews("job", 2.5, Moderator(None, None, ()), clock=lambda: next(ticks))
    asked = []

    def none_yet():
        asked.append(True)
        return None

    results = [previews.take(none_yet) for _ in range(9)]  # the clock moves a second a call
    assert results == [None] * 9 and len(asked) == 3  # at 3, 6 and 9 s: not at every step
