"""A live `daguerre serve` whose blobs are in S3 (a real SeaweedFS), configured the way an operator
does it: `DAGUERRE_BLOB_URL` and the standard AWS variables. The official SDK drives the Files flow
and a generation; every byte goes to and comes from the object store."""

from __future__ import annotations

import signal
import time

import httpx
import luma_agents
import pytest

from support.helpers import scripted_models, start_server
from support.helpers import wait_for_generation as wait
from support.imageserver import png_bytes
from support.seaweed import REGION

pytestmark = pytest.mark.s3

SOURCE = png_bytes((80, 40), "orange")


@pytest.fixture
def server(tmp_path, seaweedfs):
    live = start_server(
        tmp_path / "data",
        scripted_models(tmp_path / "models.toml"),
        DAGUERRE_BLOB_URL=f"s3://{seaweedfs.bucket}/serve-{tmp_path.name}",
        AWS_ENDPOINT_URL_S3=seaweedfs.endpoint,
        AWS_ACCESS_KEY_ID=seaweedfs.credentials.access_key,
        AWS_SECRET_ACCESS_KEY=seaweedfs.credentials.secret_key,
        AWS_REGION=REGION,
    )
    yield live
    assert live.stop() in (0, -signal.SIGTERM), live.log()


def test_the_sdk_uploads_to_s3_and_downloads_from_it(server, seaweedfs, tmp_path):
    luma = luma_agents.Luma(auth_token=server.key, base_url=server.api_url)
    bucket_url = f"{seaweedfs.endpoint}/{seaweedfs.bucket}/serve-{tmp_path.name}/"
    created = luma.files.create(mime_type="image/png", size_bytes=len(SOURCE), purpose="reference")
    assert created.upload is not None and created.upload.url.startswith(bucket_url + "uploads/")
    put = httpx.put(created.upload.url, content=SOURCE, headers=created.upload.headers, timeout=30)
    assert put.status_code == 200, put.text
    luma.files.complete(created.id)
    for _ in range(200):
        file = luma.files.get(created.id)
        if file.state != "pending":
            break
        time.sleep(0.05)
    assert file.state == "ready", file.failure_reason

    generation = luma.generations.create(prompt="in this style", image_ref=[{"file_id": file.id}])
    done = wait(luma, generation.id, deadline_s=60)
    assert done.state == "completed", (done.failure_code, done.failure_reason)
    url = done.output[0].url
    assert url.startswith(bucket_url + "outputs/") and "X-Amz-Expires=3600" in url
    image = httpx.get(url, timeout=30)
    assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
    assert not (server.data_dir / "blobs").exists()  # nothing went to local disk
    assert "blob-secret" not in {path.name for path in server.data_dir.iterdir()}
