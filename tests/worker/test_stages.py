"""The stages of one generation, run one by one as an engine host and a coordinator would run them:
`generate` with no database, and every stage with nothing carried in memory from the one before."""

from __future__ import annotations

import base64
import dataclasses

import pytest

from daguerre.engine import ModelRegistry, load_models_file
from daguerre.errors import JobFailure
from daguerre.moderation import Moderator, Verdict
from daguerre.wire import FailureCode, GenerationType, State
from daguerre.worker.stages import (
    EngineRequest,
    Generated,
    Prepared,
    StageContext,
    finalize,
    generate,
    prepare,
)
from support.engines import prompt_colour
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
    generated = generate(engine_host, Prepared(request), lambda step, total: None)  # inputs reloaded
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
    stale = generate(engine_host, prepared, lambda step, total: None)
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
    generated = generate(engine_host, prepared, lambda step, total: None)
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
        generate(engine_host, Prepared(prepared.request), lambda step, total: None)
    assert failure.value.code == FailureCode.INVALID_REQUEST


def test_the_step_hook_can_stop_the_engine_before_any_output(client, auth, store, blobs, contexts):
    coordinator, engine_host = contexts
    create(client, auth)
    record = claim(store)
    prepared = prepare(coordinator, record, record.lease_token)

    class Stop(Exception):
        pass

    def stop(step, total):
        raise Stop

    with pytest.raises(Stop):
        generate(engine_host, prepared, stop)
    assert list(blobs.list_blobs("outputs/")) == []
