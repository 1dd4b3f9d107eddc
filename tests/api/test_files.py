"""The Files API on the in-process app: create, upload, complete, ingest, list, get, delete, use."""

from __future__ import annotations

import io
import time
from datetime import UTC, datetime, timedelta

import pytest

from daguerre.api import files as files_api
from daguerre.api.deps import Services
from daguerre.api.files import MAX_INGEST_ATTEMPTS, maintain_files
from daguerre.store.schema import file_key, upload_key
from daguerre.store.schema import files as files_table
from daguerre.wire import FailureCode, State
from support.helpers import make_key
from support.imageserver import png_bytes

pytestmark = pytest.mark.both_databases

PNG = png_bytes((40, 20))


def create(client, auth, **body):
    payload = {"mime_type": "image/png", "size_bytes": len(PNG), **body}
    return client.post("/v1/files", json=payload, headers=auth)


def upload(client, auth, data=PNG, **body):
    """The whole presigned flow: create, PUT, complete. Returns the file id."""
    created = create(client, auth, size_bytes=len(data), **body)
    assert created.status_code == 201, created.text
    envelope = created.json()["upload"]
    put = client.put(envelope["url"], content=data, headers=envelope["headers"])
    assert put.status_code == 200, put.text
    completed = client.post(
        f"/v1/files/{created.json()['id']}/complete", headers={**auth, "Content-Type": "application/json"}
    )
    assert completed.status_code == 200
    return created.json()["id"]


def get(client, auth, file_id):
    return client.get(f"/v1/files/{file_id}", headers=auth)


def test_create_answers_201_with_a_pending_file_and_a_put_envelope(client, auth):
    response = create(client, auth, filename="cat.png", purpose="reference", user_id="u-1")
    assert response.status_code == 201
    body = response.json()
    assert body["id"] == body["file"]["id"] and body["state"] == body["file"]["state"] == "pending"
    file = body["file"]
    assert (file["mime_type"], file["size_bytes"], file["purpose"]) == ("image/png", len(PNG), "reference")
    assert (file["filename"], file["user_id"], file["deleted_at"], file["failure_reason"]) == (
        "cat.png",
        "u-1",
        None,
        None,
    )
    upload_ = body["upload"]
    assert upload_["method"] == "PUT" and upload_["headers"] == {"Content-Type": "image/png"}
    assert (
        "X-Amz-Signature=" in upload_["url"] and "X-Amz-SignedHeaders=content-type%3Bhost" in upload_["url"]
    )
    assert datetime.fromisoformat(upload_["expires_at"]) > datetime.now(UTC) + timedelta(minutes=59)


def test_the_presigned_flow_ends_ready(client, auth):
    file_id = upload(client, auth)
    body = get(client, auth, file_id).json()
    assert body["state"] == "ready" and body["failure_reason"] is None


def test_complete_before_the_upload_is_400_and_the_file_stays_pending(client, auth):
    file_id = create(client, auth).json()["id"]
    response = client.post(f"/v1/files/{file_id}/complete", headers=auth)
    assert (response.status_code, response.json()) == (400, {"detail": "file upload has not been received"})
    assert get(client, auth, file_id).json()["state"] == "pending"


def test_complete_again_returns_the_file_unchanged(client, auth):
    file_id = upload(client, auth)
    again = client.post(f"/v1/files/{file_id}/complete", headers=auth)
    assert again.status_code == 200 and again.json()["state"] == "ready"


@pytest.mark.parametrize(
    ("data", "declared", "reason"),
    [
        (PNG, len(PNG) + 5, f"uploaded {len(PNG)} bytes, but size_bytes is {len(PNG) + 5}"),
        (b"\x89PNG\r\n\x1a\n" + b"garbage" * 10, None, "corrupt_input"),
        (b"GIF89a" + b"\0" * 20, None, "corrupt_input"),
    ],
)
def test_ingest_fails_bad_uploads_with_a_reason(client, auth, data, declared, reason):
    created = create(client, auth, size_bytes=declared or len(data))
    envelope = created.json()["upload"]
    client.put(envelope["url"], content=data, headers=envelope["headers"])
    client.post(f"/v1/files/{created.json()['id']}/complete", headers=auth)
    body = get(client, auth, created.json()["id"]).json()
    assert body["state"] == "failed" and reason in body["failure_reason"]


def test_multipart_uploads_are_inline(client, auth):
    response = client.post(
        "/v1/files",
        headers=auth,
        files={"file": ("pic.png", PNG, "image/png")},
        data={"purpose": "reference", "user_id": "u-2"},
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["upload"] is None and body["file"]["filename"] == "pic.png"
    assert body["file"]["size_bytes"] == len(PNG) and body["file"]["user_id"] == "u-2"
    assert get(client, auth, body["id"]).json()["state"] == "ready"


def test_multipart_caps_the_file_at_50_mb(client, auth):
    response = client.post(
        "/v1/files", headers=auth, files={"file": ("big.png", b"\0" * (50 * 1024 * 1024 + 1), "image/png")}
    )
    assert (response.status_code, response.json()) == (413, {"detail": "file: image exceeds 50 MB limit"})
    missing = client.post("/v1/files", headers=auth, files={"other": ("x.png", PNG, "image/png")})
    assert (missing.status_code, missing.json()) == (400, {"detail": "file: field required"})


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"size_bytes": 10}, "mime_type: field required"),
        (
            {"mime_type": "image/tiff", "size_bytes": 10},
            "mime_type: must be one of image/jpeg, image/png, image/webp, image/gif",
        ),
        ({"mime_type": "image/png"}, "size_bytes: field required"),
        ({"mime_type": "image/png", "size_bytes": "10"}, "size_bytes: must be an integer"),
        ({"mime_type": "image/png", "size_bytes": 0}, "size_bytes: must be between 1 and 52428800"),
        ({"mime_type": "image/png", "size_bytes": 52428801}, "size_bytes: must be between 1 and 52428800"),
        (
            {"mime_type": "image/png", "size_bytes": 10, "expires_at": "tomorrow"},
            "expires_at: must be an ISO-8601 datetime",
        ),
        (
            {"mime_type": "image/png", "size_bytes": 10, "expires_at": "2020-01-01T00:00:00+00:00"},
            "expires_at: must be in the future",
        ),
        (
            {"mime_type": "image/png", "size_bytes": 10, "purpose": "style"},
            "purpose: must be one of input, reference",
        ),
        (
            {"mime_type": "image/png", "size_bytes": 10, "filename": "x" * 256},
            "filename: must be at most 255 characters",
        ),
        (
            {"mime_type": "image/png", "size_bytes": 10, "user_id": "u" * 257},
            "user_id: must be at most 256 characters",
        ),
        ([], "Request body must be a JSON object"),
    ],
)
def test_create_validation(client, auth, body, detail):
    response = client.post("/v1/files", json=body, headers=auth)
    assert (response.status_code, response.json()) == (400, {"detail": detail})


def test_list_is_newest_first_with_an_opaque_cursor_and_filters(client, auth):
    empty = client.get("/v1/files?limit=1", headers=auth)
    assert empty.json() == {"data": [], "has_more": False, "next_cursor": None}
    ids = [upload(client, auth, purpose="reference" if i % 2 else "input") for i in range(5)]
    pending = create(client, auth).json()["id"]
    page = client.get("/v1/files?limit=2", headers=auth).json()
    assert [f["id"] for f in page["data"]] == [pending, ids[4]] and page["has_more"] is True
    seen = [f["id"] for f in page["data"]]
    while page["has_more"]:
        page = client.get(f"/v1/files?limit=2&cursor={page['next_cursor']}", headers=auth).json()
        seen += [f["id"] for f in page["data"]]
    assert seen == [pending, *reversed(ids)]
    ready = client.get("/v1/files?limit=10&state=ready", headers=auth).json()["data"]
    assert [f["id"] for f in ready] == list(reversed(ids))
    references = client.get("/v1/files?purpose=reference", headers=auth).json()["data"]
    assert {f["id"] for f in references} == {ids[1], ids[3]}


@pytest.mark.parametrize(
    ("query", "detail"),
    [
        ("limit=0", "limit: must be between 1 and 100"),
        ("limit=101", "limit: must be between 1 and 100"),
        ("state=gone", "state: must be one of pending, ready, failed, deleted"),
        ("purpose=x", "purpose: must be one of input, reference"),
        ("cursor=!!!", "cursor: invalid"),
        ("limit=ten", "limit: Input should be a valid integer, unable to parse string as an integer"),
    ],
)
def test_list_validation(client, auth, query, detail):
    response = client.get(f"/v1/files?{query}", headers=auth)
    assert (response.status_code, response.json()) == (400, {"detail": detail})


def test_delete_is_soft_repeatable_and_hides_the_file(client, auth, blobs):
    file_id = upload(client, auth)
    first = client.delete(
        f"/v1/files/{file_id}", headers={**auth, "Accept": "*/*", "Content-Type": "application/json"}
    )
    assert first.status_code == 204 and first.content == b""
    assert client.delete(f"/v1/files/{file_id}", headers=auth).status_code == 204
    body = get(client, auth, file_id).json()
    assert body["state"] == "deleted" and body["deleted_at"] is not None
    assert not blobs.exists(file_key(file_id))
    assert file_id not in [f["id"] for f in client.get("/v1/files", headers=auth).json()["data"]]
    assert file_id in [f["id"] for f in client.get("/v1/files?state=deleted", headers=auth).json()["data"]]


def test_other_accounts_files_are_404(client, auth, store):
    file_id = upload(client, auth)
    other = make_key(store, "globex").headers
    for response in (
        get(client, other, file_id),
        client.post(f"/v1/files/{file_id}/complete", headers=other),
        client.delete(f"/v1/files/{file_id}", headers=other),
        get(client, auth, "not-a-uuid"),
    ):
        assert (response.status_code, response.json()) == (404, {"detail": "File not found"})
    assert client.get("/v1/files", headers=other).json()["data"] == []


def test_a_ready_file_is_an_edit_source_and_a_reference(client, auth, worker):
    file_id = upload(client, auth)
    body = {
        "prompt": "x",
        "type": "image_edit",
        "source": {"file_id": file_id},
        "image_ref": [{"file_id": file_id}],
    }
    response = client.post("/v1/generations", json=body, headers=auth)
    assert response.status_code == 201, response.text
    assert worker.run_once().state == State.COMPLETED


def test_files_that_cannot_be_referenced(client, auth, store):
    pending = create(client, auth).json()["id"]
    body = {"prompt": "x", "type": "image_edit", "source": {"file_id": pending}}
    response = client.post("/v1/generations", json=body, headers=auth)
    assert (response.status_code, response.json()) == (400, {"detail": "source: file is not ready"})
    deleted = upload(client, auth)
    client.delete(f"/v1/files/{deleted}", headers=auth)
    for file_id in (
        deleted,
        "00000000-0000-4000-8000-000000000000",
        "nope",
        upload(client, make_key(store, "x").headers),
    ):
        response = client.post(
            "/v1/generations", json={"prompt": "x", "image_ref": [{"file_id": file_id}]}, headers=auth
        )
        assert (response.status_code, response.json()) == (400, {"detail": "image_ref[0]: file not found"})


def test_a_file_deleted_after_the_request_was_accepted_fails_it_with_invalid_request(client, auth, worker):
    file_id = upload(client, auth)
    response = client.post(
        "/v1/generations",
        json={"prompt": "x", "type": "image_edit", "source": {"file_id": file_id}},
        headers=auth,
    )
    client.delete(f"/v1/files/{file_id}", headers=auth)
    assert worker.run_once().failure_code == FailureCode.INVALID_REQUEST
    assert (
        client.get(f"/v1/generations/{response.json()['id']}", headers=auth).json()["failure_code"]
        == "invalid_request"
    )


def test_expired_files_are_reaped(client, auth, store, blobs, settings):
    soon = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    file_id = upload(client, auth, expires_at=soon)
    assert get(client, auth, file_id).json()["expires_at"] is not None
    time.sleep(1.2)
    maintain_files(Services.build(settings, store, blobs))
    body = get(client, auth, file_id).json()
    assert body["state"] == "deleted" and not blobs.exists(file_key(file_id))


def test_an_interrupted_ingest_is_run_again(client, auth, store, blobs, settings):
    created = create(client, auth).json()
    blobs.put(file_key(created["id"]), PNG, "image/png")
    store.files.mark_uploaded(created["id"])  # as if the process died before ingesting
    with store.db.write() as conn:
        conn.execute(files_table.update().values(uploaded_at=datetime.now(UTC) - timedelta(minutes=5)))
    maintain_files(Services.build(settings, store, blobs))
    assert get(client, auth, created["id"]).json()["state"] == "ready"


def test_put_urls_sign_the_content_type_and_only_write_files(client, auth, blobs):
    envelope = create(client, auth).json()["upload"]
    wrong = client.put(envelope["url"], content=PNG, headers={"Content-Type": "image/jpeg"})
    assert wrong.status_code == 403 and "SignatureDoesNotMatch" in wrong.text
    sneaky = blobs.presign_put("outputs/x/y/0.png", 3600, "image/png", "http://testserver")
    refused = client.put(sneaky, content=PNG, headers={"Content-Type": "image/png"})
    assert refused.status_code == 403 and "AccessDenied" in refused.text
    too_big = client.put(
        envelope["url"],
        content=io.BytesIO(b"\0" * (50 * 1024 * 1024 + 1)).read(),
        headers=envelope["headers"],
    )
    assert too_big.status_code == 400 and "EntityTooLarge" in too_big.text


def test_the_upload_url_is_refused_once_the_upload_is_complete(client, auth, blobs):
    created = create(client, auth).json()
    envelope = created["upload"]
    assert "/uploads/" in envelope["url"]  # the URL writes the upload key, never the file's own
    for _ in range(2):  # while the upload is open it may be written again
        assert client.put(envelope["url"], content=PNG, headers=envelope["headers"]).status_code == 200
    client.post(f"/v1/files/{created['id']}/complete", headers=auth)
    assert get(client, auth, created["id"]).json()["state"] == "ready"
    other = png_bytes((8, 8))
    late = client.put(envelope["url"], content=other, headers=envelope["headers"])
    assert late.status_code == 403 and "AccessDenied" in late.text
    assert blobs.get(file_key(created["id"])) == PNG  # what was checked is what stays
    assert not blobs.exists(upload_key(created["id"]))


def test_the_upload_url_cannot_bring_back_a_deleted_file(client, auth, blobs):
    created = create(client, auth).json()
    envelope = created["upload"]
    client.put(envelope["url"], content=PNG, headers=envelope["headers"])
    assert client.delete(f"/v1/files/{created['id']}", headers=auth).status_code == 204
    assert not blobs.exists(upload_key(created["id"]))
    again = client.put(envelope["url"], content=PNG, headers=envelope["headers"])
    assert again.status_code == 403
    assert not blobs.exists(upload_key(created["id"])) and not blobs.exists(file_key(created["id"]))


@pytest.mark.parametrize(
    ("size", "reason"),
    [
        (
            (1, 39_000_000),
            "unsupported_format: Input image is 1x39000000; the most elongated shape accepted is 20:1",
        ),
        ((30_000, 2), "unsupported_format: Input image is 30000x2"),
    ],
)
def test_an_extremely_elongated_upload_fails_with_a_reason(client, auth, size, reason):
    data = png_bytes(size)
    file_id = upload(client, auth, data=data)
    body = get(client, auth, file_id).json()
    assert body["state"] == "failed" and body["failure_reason"].startswith(reason)


def _stall(store, blobs, file_id, data=PNG, attempts=0):
    """As if the process had died while ingesting the upload: pending, uploaded minutes ago."""
    blobs.put(file_key(file_id), data, "image/png")
    store.files.mark_uploaded(file_id)
    with store.db.write() as conn:
        conn.execute(
            files_table.update()
            .where(files_table.c.id == file_id)
            .values(uploaded_at=datetime.now(UTC) - timedelta(minutes=5), ingest_attempts=attempts)
        )


def test_one_failing_ingest_never_stops_the_maintenance_of_the_others(
    client, auth, store, blobs, settings, monkeypatch
):
    first, second = create(client, auth).json()["id"], create(client, auth).json()["id"]
    _stall(store, blobs, first)
    _stall(store, blobs, second)
    real = files_api.load_input

    def explode_once(data, *args):
        if not exploded:
            exploded.append(True)
            raise RuntimeError("the decoder crashed")
        return real(data, *args)

    exploded: list[bool] = []
    monkeypatch.setattr(files_api, "load_input", explode_once)
    maintain_files(Services.build(settings, store, blobs))
    states = sorted(get(client, auth, file_id).json()["state"] for file_id in (first, second))
    assert states == ["failed", "ready"]
    failed = next(
        get(client, auth, i).json()
        for i in (first, second)
        if get(client, auth, i).json()["state"] == "failed"
    )
    assert failed["failure_reason"] == "the upload could not be checked"


def test_an_upload_whose_ingest_keeps_dying_is_failed_not_retried_for_ever(
    client, auth, store, blobs, settings
):
    file_id = create(client, auth).json()["id"]
    _stall(store, blobs, file_id, attempts=MAX_INGEST_ATTEMPTS)  # three ingests began and never ended
    maintain_files(Services.build(settings, store, blobs))
    body = get(client, auth, file_id).json()
    assert body["state"] == "failed"
    assert (
        body["failure_reason"]
        == f"the upload could not be checked: {MAX_INGEST_ATTEMPTS} attempts did not finish"
    )


def test_an_interrupted_ingest_counts_its_attempts(client, auth, store, blobs, settings):
    file_id = create(client, auth).json()["id"]
    _stall(store, blobs, file_id, attempts=MAX_INGEST_ATTEMPTS - 1)
    maintain_files(Services.build(settings, store, blobs))
    assert get(client, auth, file_id).json()["state"] == "ready"  # the last allowed attempt still runs


@pytest.mark.parametrize("declared", ["image/jpg", "IMAGE/JPG", "image/jpeg"])
def test_image_jpg_is_read_as_image_jpeg_as_in_generations(client, auth, declared):
    response = create(client, auth, mime_type=declared)
    assert response.status_code == 201, response.text
    assert response.json()["file"]["mime_type"] == "image/jpeg"
    assert response.json()["upload"]["headers"] == {"Content-Type": "image/jpeg"}
