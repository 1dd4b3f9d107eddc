"""POST and GET /v1/generations on the in-process app: shapes, headers, 404s, limits, OpenAPI."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from fastapi import Depends, Request, Response

from daguerre.api.deps import RequestRoute
from daguerre.wire import format_timestamp

pytestmark = pytest.mark.both_databases

BODY = {"prompt": "a glass of iced coffee on a marble countertop", "aspect_ratio": "16:9"}
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def test_create_answers_201_with_a_queued_generation(client, auth):
    response = client.post("/v1/generations", json=BODY, headers=auth)
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {
        "id",
        "type",
        "state",
        "model",
        "created_at",
        "output",
        "failure_reason",
        "failure_code",
    }
    assert uuid.UUID(body["id"])
    assert body["state"] == "queued"
    assert (body["type"], body["model"], body["output"]) == ("image", "uni-1", [])
    assert body["failure_reason"] is None and body["failure_code"] is None
    assert TIMESTAMP.match(body["created_at"])
    assert response.headers["content-type"] == "application/json"


def test_get_returns_the_same_generation(client, auth):
    created = client.post("/v1/generations", json={**BODY, "model": "uni-1-max"}, headers=auth).json()
    fetched = client.get(f"/v1/generations/{created['id']}", headers=auth)
    assert fetched.status_code == 200
    assert fetched.json() == created


@pytest.mark.parametrize("generation_id", ["not-a-uuid", str(uuid.uuid4()), "1" * 300, "%20"])
def test_unknown_and_malformed_ids_are_404(client, auth, generation_id):
    response = client.get(f"/v1/generations/{generation_id}", headers=auth)
    assert (response.status_code, response.json()) == (404, {"detail": "Generation not found"})


def test_uppercase_ids_find_the_generation(client, auth):
    created = client.post("/v1/generations", json=BODY, headers=auth).json()
    assert client.get(f"/v1/generations/{created['id'].upper()}", headers=auth).json()["id"] == created["id"]


def test_every_response_carries_request_id_and_api_version(client, auth):
    responses = [
        client.post("/v1/generations", json=BODY, headers=auth),
        client.post("/v1/generations", json={}, headers=auth),
        client.get(f"/v1/generations/{uuid.uuid4()}", headers=auth),
        client.get("/v1/generations/x"),
        client.get("/v1/nothing-here"),
        client.delete("/v1/generations", headers=auth),
    ]
    ids = set()
    for response in responses:
        assert response.headers["x-api-version"] == "2026-04-01"
        ids.add(uuid.UUID(response.headers["x-request-id"]))
    assert len(ids) == len(responses)


def test_request_id_is_echoed_when_sane_and_replaced_otherwise(client, auth):
    echoed = client.get(f"/v1/generations/{uuid.uuid4()}", headers={**auth, "X-Request-Id": "req-42_abc"})
    assert echoed.headers["x-request-id"] == "req-42_abc"
    too_long = client.get(f"/v1/generations/{uuid.uuid4()}", headers={**auth, "X-Request-Id": "r" * 201})
    assert uuid.UUID(too_long.headers["x-request-id"])


def test_rate_limit_headers_are_absent_on_get(client, auth):
    created = client.post("/v1/generations", json=BODY, headers=auth).json()
    response = client.get(f"/v1/generations/{created['id']}", headers=auth)
    assert not any(name.lower().startswith("x-ratelimit") for name in response.headers)


def test_unknown_route_and_wrong_method_have_string_details(client, auth):
    missing = client.get("/v1/nothing-here", headers=auth)
    assert (missing.status_code, missing.json()) == (404, {"detail": "Not Found"})
    wrong = client.put("/v1/generations", headers=auth, json=BODY)
    assert wrong.status_code == 405
    assert wrong.json() == {"detail": "Method Not Allowed"}


def test_body_over_the_cap_is_413_before_it_is_read(tmp_path, store, blobs, key):
    from fastapi.testclient import TestClient

    from daguerre.api import create_app
    from daguerre.settings import Settings

    settings = Settings(data_dir=tmp_path / "data", max_request_bytes=4096)
    with TestClient(create_app(settings, store, blobs)) as small:
        response = small.post("/v1/generations", headers=key.headers, json={"prompt": "x" * 5000})
        assert (response.status_code, response.json()) == (413, {"detail": "Request body too large"})
        assert response.headers["x-api-version"] == "2026-04-01"

        def chunks():  # no Content-Length: the cap applies to the streamed body
            for _ in range(10):
                yield b"x" * 1000

        streamed = small.post(
            "/v1/generations", headers={**key.headers, "content-type": "application/json"}, content=chunks()
        )
        assert (streamed.status_code, streamed.json()) == (413, {"detail": "Request body too large"})
        assert small.post("/v1/generations", headers=key.headers, json={"prompt": "fits"}).status_code == 201


def test_default_body_cap_fits_nine_base64_images_of_50_mb(settings):
    assert settings.max_request_bytes >= 9 * (50 * 1024 * 1024) * 4 // 3


def test_a_crash_in_a_route_is_500_with_a_string_detail(client, auth, store, monkeypatch):
    def explode(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(store.generations, "summary", explode)
    response = client.get(f"/v1/generations/{uuid.uuid4()}", headers=auth)
    assert (response.status_code, response.json()) == (500, {"detail": "Internal server error"})


def test_openapi_schema_documents_the_api(client):
    schema = client.get("/openapi.json").json()
    post = schema["paths"]["/v1/generations"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/GenerationCreate"
    }
    assert "201" in post["responses"]
    components = schema["components"]["schemas"]
    assert {"GenerationCreate", "ImageRef", "Generation", "ErrorBody"} <= set(components)
    assert set(components["GenerationCreate"]["properties"]) >= {
        "prompt",
        "model",
        "type",
        "aspect_ratio",
        "source",
    }
    (parameter,) = schema["paths"]["/v1/generations/{generation_id}"]["get"]["parameters"]
    assert (parameter["name"], parameter["in"], parameter["required"]) == ("generation_id", "path", True)
    get = schema["paths"]["/v1/generations/{generation_id}"]["get"]
    assert get["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Generation"
    }
    # Luma documents 200, 401 and 404 (api.md §8.3); a suspended or deactivated account's key is
    # refused 403 here as on every route (§2), so daguerre's document lists it too.
    assert set(get["responses"]) == {"200", "401", "403", "404"}


def test_a_request_route_takes_only_the_request():
    """The generations routes skip FastAPI's parameter solving, so an endpoint that asks for
    anything else is refused when the route is declared, not left unfilled at request time."""

    async def needs_an_id(request: Request, generation_id: str) -> Response:
        raise AssertionError

    def not_async(request: Request) -> Response:
        raise AssertionError

    for endpoint in (needs_an_id, not_async):
        with pytest.raises(TypeError, match="RequestRoute"):
            RequestRoute("/x", endpoint)

    async def fine(request: Request) -> Response:
        raise AssertionError

    RequestRoute("/x", fine)
    with pytest.raises(TypeError, match="no dependencies"):
        RequestRoute("/x", fine, dependencies=[Depends(lambda: None)])


def test_null_aspect_ratio_is_picked_from_the_prompt(client, auth, store):
    def ratio(prompt, **extra):
        created = client.post("/v1/generations", json={"prompt": prompt, **extra}, headers=auth).json()
        return store.generations.get(created["id"]).aspect_ratio

    assert ratio("a red apple") == "1:1"
    assert ratio("a wide landscape with mountains") == "16:9"
    assert ratio("a portrait of an old sailor") == "2:3"
    assert ratio("a panoramic banner of a city") == "3:1"
    assert ratio("a red apple", style="manga") == "2:3"
    assert ratio("a wide landscape", style="manga") == "2:3"


def test_timestamps_are_utc_whole_seconds_with_a_z():
    moment = datetime(2026, 3, 9, 23, 59, 58, 999_999, tzinfo=timezone(timedelta(hours=-5)))
    assert format_timestamp(moment) == "2026-03-10T04:59:58Z"
    assert format_timestamp(datetime(7, 1, 2, 3, 4, 5, tzinfo=UTC)) == "0007-01-02T03:04:05Z"
