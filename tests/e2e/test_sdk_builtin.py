"""A fresh install as a user meets it: `daguerre serve` with no models file, the official SDK, and the
built-in model drawing and editing a picture with nothing downloaded."""

from __future__ import annotations

import io
import signal

import httpx
import pytest
from PIL import Image

from daguerre.engine import DEFAULT_MODELS_FILE
from daguerre.engine.builtin.analysis import analyse
from support.helpers import wait_for_generation


@pytest.fixture(scope="module")
def server(tmp_path_factory, launch):
    root = tmp_path_factory.mktemp("builtin")
    live = launch(root, DEFAULT_MODELS_FILE)
    yield live
    assert live.stop() in (0, -signal.SIGTERM), live.log()


def finished(luma, generation_id):
    generation = wait_for_generation(luma, generation_id)
    assert generation.state == "completed", (generation.failure_code, generation.failure_reason)
    return generation


def download(generation) -> Image.Image:
    return Image.open(io.BytesIO(httpx.get(generation.output[0].url, timeout=30).content))


@pytest.mark.parametrize("model", ["uni-1", "uni-1-max"])
def test_a_prompt_becomes_the_picture_it_describes_and_an_edit_changes_it(luma, model):
    created = luma.generations.create(
        prompt="a large yellow circle on a blue background", model=model, aspect_ratio="16:9"
    )
    picture = download(finished(luma, created.id))
    assert picture.size == ((688, 384) if model == "uni-1" else (1360, 768))
    read = analyse(picture)
    assert read.background == "blue"
    assert [region.colour for region in read.regions] == ["yellow"]

    edit = luma.generations.create(
        type="image_edit", model=model, prompt="make the background red", source={"generation_id": created.id}
    )
    edited = download(finished(luma, edit.id))
    assert edited.size == picture.size
    read = analyse(edited)
    assert read.background == "red"
    assert [region.colour for region in read.regions] == ["yellow"]
