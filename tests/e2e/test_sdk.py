"""The official luma-agents SDK, unchanged, against a live service on both profiles (embedded: one
`daguerre serve` with SQLite and an in-process worker; cluster: two API processes on PostgreSQL, S3,
Redis and Temporal with separate workers), the diffusers adapter running a tiny pipeline built
offline."""

from __future__ import annotations

import asyncio
import io
import signal

import httpx
import luma_agents
import pytest
from PIL import Image

from daguerre.sizing import ratio_value
from support.helpers import tiny_sd_models
from support.helpers import wait_for_generation as wait


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_sd_folder, launch):
    root = tmp_path_factory.mktemp("sdk")
    live = launch(root, tiny_sd_models(root / "models.toml", tiny_sd_folder, pixels=96 * 96))
    yield live
    assert live.stop() in (0, -signal.SIGTERM), live.log()  # uvicorn re-raises the signal it handled


def decode(url):
    response = httpx.get(url, timeout=30)
    assert response.status_code == 200
    return Image.open(io.BytesIO(response.content))


@pytest.mark.parametrize(("ratio", "fmt"), [("16:9", "png"), ("1:3", "jpeg"), ("3:2", None)])
def test_sync_client_create_poll_download(luma, ratio, fmt):
    extra = {"output_format": fmt} if fmt else {}
    created = luma.generations.create(prompt="a red fox in the snow", aspect_ratio=ratio, **extra)
    assert created.state == "queued" and created.model == "uni-1" and created.type == "image"
    done = wait(luma, created.id)
    assert done.state == "completed", (done.failure_code, done.failure_reason)
    assert done.failure_code is None and len(done.output) == 1
    image = decode(done.output[0].url)
    assert image.format == ("JPEG" if fmt == "jpeg" else "PNG")
    assert image.width / image.height == pytest.approx(ratio_value(ratio), rel=0.1)


def test_async_client_create_poll_download(server):
    async def run():
        async with luma_agents.AsyncLuma(auth_token=server.key, base_url=server.api_url) as luma:
            created = await luma.generations.create(
                prompt="a blue circle", model="uni-1-max", aspect_ratio="9:16"
            )
            for _ in range(600):
                generation = await luma.generations.get(created.id)
                if generation.state in ("completed", "failed"):
                    return generation
                await asyncio.sleep(0.2)
            raise AssertionError("not finished")

    done = asyncio.run(run())
    assert done.state == "completed" and done.model == "uni-1-max"
    image = decode(done.output[0].url)
    assert image.width / image.height == pytest.approx(9 / 16, rel=0.1)


def test_an_edit_chained_from_an_earlier_generation(luma):
    first = wait(luma, luma.generations.create(prompt="a green square", aspect_ratio="2:1").id)
    edit = luma.generations.create(
        type="image_edit", prompt="make it blue", source={"generation_id": first.id}
    )
    done = wait(luma, edit.id)
    # The tiny text-to-image pipeline cannot edit: a clean failure, never a crash.
    assert done.state == "failed" and done.failure_code == "invalid_request"
    assert "StableDiffusionPipeline" in done.failure_reason


def test_errors_surface_as_the_sdk_exceptions(luma, server):
    with pytest.raises(luma_agents.BadRequestError) as bad:
        luma.generations.create(prompt="hi", model="uni-2")
    assert bad.value.status_code == 400 and bad.value.body == {"detail": "Unknown model: uni-2"}
    with pytest.raises(luma_agents.BadRequestError) as ratio:
        luma.generations.create(prompt="hi", aspect_ratio="4:3")
    assert ratio.value.body["detail"].startswith("Invalid aspect_ratio '4:3'. Valid: 1:1, 1:2")
    with pytest.raises(luma_agents.NotFoundError) as missing:
        luma.generations.get("d290f1ee-6c54-4b01-90e6-d701748f0851")
    assert missing.value.body == {"detail": "Generation not found"}
    stranger = luma_agents.Luma(auth_token="luma-api-" + "0" * 43, base_url=server.api_url)
    with pytest.raises(luma_agents.AuthenticationError) as unauthorised:
        stranger.generations.create(prompt="hi")
    assert unauthorised.value.body == {"detail": "Invalid API key"}


def test_raw_response_headers(luma):
    raw = luma.generations.with_raw_response.create(
        prompt="a lighthouse", extra_headers={"X-Request-Id": "sdk-1"}
    )
    assert raw.status_code == 201
    assert raw.headers["x-request-id"] == "sdk-1"
    assert raw.headers["x-api-version"] == "2026-04-01"
    assert raw.parse().state == "queued"


def test_the_openapi_schema_is_served(server):
    schema = httpx.get(server.base_url + "/openapi.json").json()
    assert "/v1/generations" in schema["paths"]
