"""The Idempotency-Key header (daguerre extension) on POST /v1/generations and POST /v1/files: a
repeat creates and charges nothing and answers the first resource; another request with the key is
422; two concurrent requests with one key make one resource; keys are per account and endpoint,
last 24 hours, and a refused create does not use its key up."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import sqlalchemy as sa

from daguerre.api import create_app
from daguerre.store.schema import generations, idempotency_keys
from daguerre.worker import Sweeper
from support.helpers import make_key, uvicorn_thread
from support.imageserver import png_bytes

pytestmark = pytest.mark.both_databases

PRICE = 40_400
BALANCE = 1_000_000
REUSED = {"detail": "Idempotency-Key reused with a different request"}


@pytest.fixture
def metered(store):
    account = store.accounts.create("metered", balance=BALANCE)
    _, token = store.accounts.create_key(account.id)
    return account.id, {"Authorization": f"Bearer {token}"}


def post(client, auth, key, body, path="/v1/generations"):
    return client.post(path, json=body, headers={**auth, "Idempotency-Key": key})


def rows_of(store, account_id):
    with store.db.engine.connect() as conn:
        return conn.execute(
            sa.select(sa.func.count()).select_from(generations).where(generations.c.account_id == account_id)
        ).scalar()


def test_a_repeat_answers_the_first_generation_and_charges_nothing_more(client, store, metered):
    account_id, auth = metered
    body = {"prompt": "a red fox", "aspect_ratio": "16:9"}
    first = post(client, auth, "order-1", body)
    assert first.status_code == 201 and "idempotent-replayed" not in first.headers
    # The same request, its JSON written differently: still a repeat.
    raw = json.dumps({"aspect_ratio": "16:9", "prompt": "a red fox"}, indent=2)
    again = client.post(
        "/v1/generations",
        content=raw,
        headers={**auth, "Idempotency-Key": "order-1", "Content-Type": "application/json"},
    )
    assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert rows_of(store, account_id) == 1
    account = store.accounts.get(account_id)
    assert (account.balance, account.reserved) == (BALANCE, PRICE)  # one hold


def test_the_same_key_with_another_request_is_422(client, store, metered):
    account_id, auth = metered
    assert post(client, auth, "k", {"prompt": "one"}).status_code == 201
    refused = post(client, auth, "k", {"prompt": "two"})
    assert (refused.status_code, refused.json()) == (422, REUSED)
    assert rows_of(store, account_id) == 1


def test_keys_are_per_account_and_per_endpoint(client, store, metered):
    _, auth = metered
    other = make_key(store, "other")
    mine = post(client, auth, "shared", {"prompt": "x"}).json()["id"]
    theirs = post(client, other.headers, "shared", {"prompt": "x"}).json()["id"]
    assert mine != theirs
    file = post(client, auth, "shared", {"mime_type": "image/png", "size_bytes": 10}, path="/v1/files")
    assert file.status_code == 201 and "idempotent-replayed" not in file.headers


def test_two_concurrent_requests_with_one_key_make_one_generation(settings, store, blobs, metered):
    account_id, auth = metered
    answers: list[httpx.Response] = []
    barrier = threading.Barrier(8)

    def send(url: str) -> None:
        with httpx.Client(base_url=url, timeout=30) as http:
            barrier.wait()
            answers.append(
                http.post(
                    "/v1/generations", json={"prompt": "once"}, headers={**auth, "Idempotency-Key": "race"}
                )
            )

    with uvicorn_thread(create_app(settings, store, blobs)) as url:
        threads = [threading.Thread(target=send, args=(url,)) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    assert [answer.status_code for answer in answers] == [201] * 8
    assert len({answer.json()["id"] for answer in answers}) == 1
    assert sum(answer.headers.get("idempotent-replayed") == "true" for answer in answers) == 7
    assert rows_of(store, account_id) == 1
    assert store.accounts.get(account_id).reserved == PRICE


@pytest.mark.parametrize("text", ["", "k" * 256, "clé".encode(), "tab\there"])
def test_a_malformed_key_is_400(client, auth, text):
    headers = {**auth, "Idempotency-Key": text}
    response = client.post("/v1/generations", json={"prompt": "x"}, headers=headers)
    assert response.status_code == 400
    assert response.json() == {"detail": "Idempotency-Key: must be 1 to 255 printable ASCII characters"}


def test_a_key_lasts_24_hours_and_the_sweeper_deletes_it_then(client, store, settings, blobs, metered):
    _, auth = metered
    first = post(client, auth, "daily", {"prompt": "x"}).json()["id"]
    with store.db.engine.begin() as conn:
        conn.execute(idempotency_keys.update().values(created_at=datetime.now(UTC) - timedelta(hours=25)))
    second = post(client, auth, "daily", {"prompt": "another request, a day later"})
    assert second.status_code == 201 and second.json()["id"] != first  # the old key was taken over
    with store.db.engine.begin() as conn:
        conn.execute(idempotency_keys.update().values(created_at=datetime.now(UTC) - timedelta(hours=25)))
    Sweeper(settings, store, blobs).sweep()
    with store.db.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(idempotency_keys)).scalar() == 0


def test_a_refused_create_does_not_use_its_key_up(client, store, metered):
    account_id, auth = metered
    store.accounts.set_limits(account_id, concurrency_limit=1)
    busy = post(client, auth, "first", {"prompt": "busy"}).json()["id"]
    refused = post(client, auth, "second", {"prompt": "waits"})
    assert refused.status_code == 429
    client.post(f"/v1/generations/{busy}/cancel", headers=auth)
    retried = post(client, auth, "second", {"prompt": "waits"})
    assert retried.status_code == 201 and "idempotent-replayed" not in retried.headers


def test_files_json_and_multipart_repeats_answer_the_first_file(client, store, metered):
    _, auth = metered
    body = {"mime_type": "image/png", "size_bytes": 1234, "purpose": "input"}
    first = post(client, auth, "upload-1", body, path="/v1/files")
    again = post(client, auth, "upload-1", body, path="/v1/files")
    assert first.status_code == again.status_code == 201
    assert again.json()["id"] == first.json()["id"] and again.headers["idempotent-replayed"] == "true"
    assert again.json()["upload"]["url"]  # still awaiting its bytes: where to PUT them
    assert (post(client, auth, "upload-1", {**body, "size_bytes": 99}, path="/v1/files").json()) == REUSED

    image = png_bytes((8, 8), "red")
    headers = {**auth, "Idempotency-Key": "inline-1"}
    sent = [
        client.post("/v1/files", files={"file": ("a.png", image, "image/png")}, headers=headers)
        for _ in range(2)
    ]  # a new multipart boundary each time
    assert [response.status_code for response in sent] == [201, 201]
    assert sent[0].json()["id"] == sent[1].json()["id"] and sent[1].json()["upload"] is None
    other = client.post(
        "/v1/files", files={"file": ("a.png", png_bytes((9, 9), "red"), "image/png")}, headers=headers
    )
    assert (other.status_code, other.json()) == (422, REUSED)
