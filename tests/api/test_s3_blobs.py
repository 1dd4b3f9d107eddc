"""The service with its blobs in S3 (a real SeaweedFS): uploads PUT straight to the object store,
generations that read them and write outputs there, output URLs served by the object store, and
the sweeper working from S3 listings. The in-process app and worker, as elsewhere."""

from __future__ import annotations

import base64
import uuid
from datetime import timedelta

import httpx
import pytest

from daguerre.blobs import S3BlobStore
from daguerre.store.clock import utcnow
from daguerre.store.schema import file_key, input_key, output_key, upload_key
from daguerre.wire import FailureCode, State
from daguerre.worker.sweep import MARKER_KEY, Sweeper
from support.imageserver import png_bytes
from support.seaweed import REGION

pytestmark = pytest.mark.s3

PNG = png_bytes((40, 20))


@pytest.fixture
def blobs(s3_blobs) -> S3BlobStore:
    """The app, the worker and the sweeper of these tests keep their blobs in S3."""
    return s3_blobs


def create_file(client, auth, size_bytes=None):
    body = {"mime_type": "image/png", "size_bytes": len(PNG) if size_bytes is None else size_bytes}
    response = client.post("/v1/files", json=body, headers=auth)
    assert response.status_code == 201, response.text
    return response.json()


def put(envelope, data=PNG):
    """PUT to the upload URL as a client does: over the network, straight to the object store."""
    return httpx.put(envelope["url"], content=data, headers=envelope["headers"], timeout=30)


def keys(blobs, prefix=""):
    return sorted(blob.key for blob in blobs.list_blobs(prefix))


def test_an_upload_goes_straight_to_s3_and_is_used_by_a_generation(client, auth, blobs, seaweedfs, worker):
    created = create_file(client, auth)
    envelope = created["upload"]
    assert envelope["url"].startswith(f"{seaweedfs.endpoint}/{seaweedfs.bucket}/{blobs.prefix}uploads/")
    assert envelope["headers"] == {"Content-Type": "image/png"}
    assert put(envelope).status_code == 200
    file_id = created["id"]
    assert blobs.get(upload_key(file_id)) == PNG
    completed = client.post(
        f"/v1/files/{file_id}/complete", headers={**auth, "Content-Type": "application/json"}
    )
    assert completed.status_code == 200, completed.text
    assert client.get(f"/v1/files/{file_id}", headers=auth).json()["state"] == "ready"
    # the checked bytes were moved to the file's own key; the upload URL cannot replace them
    assert blobs.get(file_key(file_id)) == PNG and not blobs.exists(upload_key(file_id))
    late = put(envelope, bytes(reversed(PNG)))  # the declared size, other bytes
    assert late.status_code == 200  # S3 cannot refuse it...
    assert blobs.get(file_key(file_id)) == PNG  # ... but nothing reads it, and the sweeper removes it

    response = client.post(
        "/v1/generations",
        json={"prompt": "a red circle", "image_ref": [{"file_id": file_id}]},
        headers=auth,
    )
    assert response.status_code == 201, response.text
    assert worker.run_once().state == State.COMPLETED
    body = client.get(f"/v1/generations/{response.json()['id']}", headers=auth).json()
    assert body["state"] == "completed"
    [output] = body["output"]
    assert output["url"].startswith(f"{seaweedfs.endpoint}/{seaweedfs.bucket}/{blobs.prefix}outputs/")
    assert "X-Amz-Expires=3600" in output["url"]
    image = httpx.get(output["url"], timeout=10)
    assert image.status_code == 200 and image.content.startswith(b"\x89PNG\r\n\x1a\n")
    assert image.headers["content-type"] == "image/png"


def test_an_upload_of_another_size_than_declared_is_refused_by_s3(client, auth, blobs):
    created = create_file(client, auth, size_bytes=len(PNG) + 5)
    refused = put(created["upload"])
    assert refused.status_code == 403 and "SignatureDoesNotMatch" in refused.text
    assert not blobs.exists(upload_key(created["id"]))
    response = client.post(f"/v1/files/{created['id']}/complete", headers=auth)
    assert (response.status_code, response.json()) == (400, {"detail": "file upload has not been received"})


def test_inline_uploads_and_deletes_reach_s3(client, auth, blobs):
    response = client.post("/v1/files", headers=auth, files={"file": ("pic.png", PNG, "image/png")})
    assert response.status_code == 201, response.text
    file_id = response.json()["id"]
    assert client.get(f"/v1/files/{file_id}", headers=auth).json()["state"] == "ready"
    assert blobs.get(file_key(file_id)) == PNG
    assert client.delete(f"/v1/files/{file_id}", headers=auth).status_code == 204
    assert not blobs.exists(file_key(file_id))


def test_the_local_blob_routes_are_not_mounted(client):
    response = client.get("/blobs/daguerre/outputs/x/y/0.png")
    assert (response.status_code, response.json()) == (404, {"detail": "Not Found"})


def test_the_sweeper_works_from_s3_listings(client, auth, settings, store, blobs, worker):
    data = base64.b64encode(PNG).decode()
    created = client.post(
        "/v1/generations",
        json={"prompt": "a red circle", "image_ref": [{"data": data, "media_type": "image/png"}]},
        headers=auth,
    )
    assert created.status_code == 201, created.text
    assert worker.run_once().state == State.COMPLETED
    generation_id = created.json()["id"]
    [served] = store.generations.get(generation_id).output_keys
    live = [served, input_key(generation_id, 0)]
    orphans = [
        output_key(str(uuid.uuid4()), str(uuid.uuid4()), 0, "png"),  # no generation
        output_key(generation_id, str(uuid.uuid4()), 0, "png"),  # an attempt that never committed
        input_key(str(uuid.uuid4()), 0),
        upload_key(str(uuid.uuid4())),  # no file
    ]
    for key in orphans:
        blobs.put(key, b"orphan", "image/png")
    blobs.put("elsewhere/1", b"not ours to judge", "text/plain")
    assert set(live) <= set(keys(blobs))

    sweeper = Sweeper(settings, store, blobs)
    # S3 objects cannot be aged, so the sweep is run as if later: past the grace, within retention
    young = sweeper.sweep(now=utcnow() + timedelta(seconds=settings.gc_grace_s - 60))
    assert young.deleted_anything is False
    report = sweeper.sweep(now=utcnow() + timedelta(seconds=settings.gc_grace_s + 60))
    assert (report.orphan_outputs, report.orphan_inputs, report.orphan_uploads) == (2, 1, 1)
    assert report.orphan_bytes == 4 * len(b"orphan") and report.purged_generations == 0
    assert keys(blobs) == sorted([*live, "elsewhere/1"])
    served_url = client.get(f"/v1/generations/{generation_id}", headers=auth).json()["output"][0]["url"]
    assert httpx.get(served_url, timeout=10).status_code == 200

    # the marker that spaces out the periodic passes of all processes lives in S3 too
    one, other = Sweeper(settings, store, blobs), Sweeper(settings, store, blobs)
    assert one._take_turn() and not other._take_turn()
    assert [blob.key for blob in blobs.list_blobs(MARKER_KEY)] == [MARKER_KEY]


def test_an_output_the_object_store_does_not_take_fails_with_output_not_found(
    client, auth, settings, store, seaweedfs
):
    from support.helpers import free_port, make_worker

    unreachable = S3BlobStore(
        seaweedfs.bucket,
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        region_name=REGION,
        credentials=seaweedfs.credentials,
    )
    created = client.post("/v1/generations", json={"prompt": "a red circle"}, headers=auth)
    outcome = make_worker(settings, store, unreachable).run_once()
    assert (outcome.state, outcome.failure_code) == (State.FAILED, FailureCode.OUTPUT_NOT_FOUND)
    body = client.get(f"/v1/generations/{created.json()['id']}", headers=auth).json()
    assert (body["state"], body["failure_code"]) == ("failed", "output_not_found")
