"""The official SDK, unchanged: image_edit from data, url, generation_id and file_id sources, and
the whole Files flow, against a live server running a tiny FLUX.2 [klein] built offline."""

from __future__ import annotations

import base64
import io
import json
import signal
import time

import httpx
import luma_agents
import pytest
from PIL import Image

from support.cluster import sdk
from support.helpers import klein_models
from support.helpers import wait_for_generation as wait
from support.imageserver import image_servers, png_bytes

SOURCE = png_bytes((160, 80), "orange")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    with image_servers(tmp_path_factory.mktemp("tls")) as servers:
        yield servers


@pytest.fixture(scope="module")
def server(tmp_path_factory, klein_folder, images, launch):
    root = tmp_path_factory.mktemp("sdk-inputs")
    live = launch(
        root,
        klein_models(root / "models.toml", klein_folder),
        DAGUERRE_URL_ALLOWED_NETWORKS=json.dumps(["127.0.0.1/32"]),
        DAGUERRE_URL_CA_BUNDLE=str(images.ca_file),
    )
    yield live
    assert live.stop() in (0, -signal.SIGTERM), live.log()


@pytest.fixture
def luma(server):
    return sdk(server)


def download(url):
    return Image.open(io.BytesIO(httpx.get(url).content))


def assert_edited(luma, generation_id, ratio=2.0):
    done = wait(luma, generation_id)
    assert done.state == "completed", (done.failure_code, done.failure_reason)
    image = download(done.output[0].url)
    assert image.width / image.height == pytest.approx(ratio, rel=0.05)
    return done


def test_edit_from_base64_data(luma):
    created = luma.generations.create(
        type="image_edit",
        prompt="make it blue",
        source={"data": base64.b64encode(SOURCE).decode(), "media_type": "image/png"},
    )
    assert created.type == "image_edit"
    assert_edited(luma, created.id)


def test_edit_from_a_url_on_an_allowed_server(luma, images):
    created = luma.generations.create(
        type="image_edit", prompt="make it blue", source={"url": images.https + "/image.png"}
    )
    assert_edited(luma, created.id)  # the served image is 40x20


def test_url_refusals_reach_the_sdk_as_422(luma, images):
    with pytest.raises(luma_agents.UnprocessableEntityError) as refused:
        luma.generations.create(type="image_edit", prompt="x", source={"url": images.http + "/image.png"})
    assert refused.value.body == {"detail": "source: failed to fetch URL (https required)"}


def test_chained_edits_from_generation_ids(luma):
    first = wait(luma, luma.generations.create(prompt="a green square", aspect_ratio="2:1").id)
    second = assert_edited(
        luma, luma.generations.create(type="image_edit", prompt="blue", source={"generation_id": first.id}).id
    )
    assert_edited(
        luma, luma.generations.create(type="image_edit", prompt="red", source={"generation_id": second.id}).id
    )


def test_the_whole_files_flow(luma):
    created = luma.files.create(
        mime_type="image/png", size_bytes=len(SOURCE), filename="source.png", purpose="input"
    )
    assert created.state == "pending" and created.upload is not None and created.upload.method == "PUT"
    put = httpx.put(created.upload.url, content=SOURCE, headers=created.upload.headers)
    assert put.status_code == 200
    luma.files.complete(created.id)
    for _ in range(100):
        file = luma.files.get(created.id)
        if file.state != "pending":
            break
        time.sleep(0.05)
    assert file.state == "ready" and file.filename == "source.png"

    edit = luma.generations.create(type="image_edit", prompt="make it blue", source={"file_id": file.id})
    assert_edited(luma, edit.id)
    reference = luma.generations.create(
        prompt="in this style", image_ref=[{"file_id": file.id}], aspect_ratio="1:1"
    )
    assert wait(luma, reference.id).state == "completed"

    listed = luma.files.list(limit=10, state="ready")
    assert file.id in [f.id for f in listed.data] and listed.has_more is False

    luma.files.delete(file.id)
    assert luma.files.get(file.id).state == "deleted"
    with pytest.raises(luma_agents.BadRequestError) as gone:
        luma.generations.create(type="image_edit", prompt="again", source={"file_id": file.id})
    assert gone.value.body == {"detail": "source: file not found"}


def test_unknown_files_are_404_through_the_sdk(luma):
    with pytest.raises(luma_agents.NotFoundError) as missing:
        luma.files.get("00000000-0000-4000-8000-000000000000")
    assert missing.value.body == {"detail": "File not found"}
