"""Requests that used to end in 500: every one is a 4xx with a string detail, and whatever does go
wrong unexpectedly is a 500 that is logged with the request id and keeps the connection usable."""

from __future__ import annotations

import base64
import logging

import httpx
import pytest

from daguerre.api import create_app
from daguerre.validation import MAX_JSON_VALUES
from support.helpers import uvicorn_thread

JSON = {"content-type": "application/json"}


def post_raw(client, path, content, auth):
    return client.post(path, content=content, headers={**auth, **JSON})


@pytest.mark.parametrize("path", ["/v1/generations", "/v1/files"])
@pytest.mark.parametrize(
    ("depth", "detail"),
    [
        (900, "Request body must be a JSON object"),  # parsed: it is just not an object
        (5_000, "Request body is nested too deeply"),
        (100_000, "Request body has too many JSON values"),  # refused before parsing
    ],
)
def test_deeply_nested_json_is_a_400(client, auth, path, depth, detail):
    response = post_raw(client, path, b"[" * depth + b"]" * depth, auth)
    assert (response.status_code, response.json()) == (400, {"detail": detail})


def test_deep_nesting_inside_an_object_is_a_400(client, auth):
    body = b'{"prompt": "x", "extra": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"
    response = post_raw(client, "/v1/generations", body, auth)
    assert (response.status_code, response.json()) == (400, {"detail": "Request body is nested too deeply"})


@pytest.mark.parametrize("path", ["/v1/generations", "/v1/files"])
def test_a_body_of_countless_tiny_values_is_refused_before_parsing(client, auth, path):
    body = b'{"prompt": "x", "extra": [' + b",".join([b"{}"] * (MAX_JSON_VALUES + 1)) + b"]}"
    response = post_raw(client, path, body, auth)
    assert (response.status_code, response.json()) == (
        400,
        {"detail": "Request body has too many JSON values"},
    )


def test_a_large_body_of_base64_is_not_counted_as_many_values(client, auth):
    data = base64.b64encode(b"\x00" * 3_000_000).decode()  # not an image: refused later, by the worker
    body = {"prompt": "x", "image_ref": [{"data": data, "media_type": "image/png"}]}
    assert client.post("/v1/generations", json=body, headers=auth).status_code == 201


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/generations", b'{"prompt": "\\ud800"}', "prompt"),
        ("/v1/generations", b'{"prompt": "x", "user_id": "ab\\uDFFFcd"}', "user_id"),
        (
            "/v1/generations",
            b'{"prompt": "x", "image_ref": [{"url": "https://x/\\udc00"}]}',
            "image_ref[0].url",
        ),
        ("/v1/generations", b'{"prompt": "x", "\\ud800": 1}', "request"),
        ("/v1/files", b'{"mime_type": "image/png", "size_bytes": 3, "filename": "\\udc00.png"}', "filename"),
    ],
)
def test_lone_surrogates_are_a_400_naming_the_field(client, auth, path, body, field):
    response = post_raw(client, path, body, auth)
    assert response.status_code == 400
    assert response.json() == {"detail": f"{field}: must not contain a lone surrogate (\\ud800-\\udfff)"}


def test_a_surrogate_pair_is_an_ordinary_character(client, auth):
    response = post_raw(client, "/v1/generations", b'{"prompt": "a smiling \\ud83d\\ude00 face"}', auth)
    assert response.status_code == 201


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({"from": "0001-01-01T00:00:00+01:00", "to": "0001-01-02"}, "from: out of range"),
        ({"from": "9999-12-31", "to": "9999-12-31T23:59:59-01:00"}, "to: out of range"),
        ({"from": "not a date"}, "from: must be an ISO-8601 date or datetime"),
    ],
)
def test_usage_dates_out_of_range_are_a_400(client, auth, params, detail):
    response = client.get("/v1/usage", params=params, headers=auth)
    assert (response.status_code, response.json()) == (400, {"detail": detail})


def test_usage_at_the_edges_of_the_calendar(client, auth):
    response = client.get(
        "/v1/usage", params={"from": "9999-01-01", "to": "9999-12-31T23:59:59"}, headers=auth
    )
    assert response.status_code == 200
    assert response.json()["total"]["generations"]["total"] == 0


@pytest.mark.parametrize(
    ("expires_at", "status"),
    [("9999-12-31T23:59:59-05:00", 400), ("9999-12-31T23:59:59", 201), ("9999-12-31T23:59:59+05:00", 201)],
)
def test_file_expiry_far_in_the_future(client, auth, expires_at, status):
    body = {"mime_type": "image/png", "size_bytes": 3, "expires_at": expires_at}
    response = client.post("/v1/files", json=body, headers=auth)
    assert response.status_code == status, response.text
    if status == 400:
        assert response.json() == {"detail": "expires_at: out of range"}


@pytest.mark.parametrize(
    "raw",
    [b"2026-01-01T00:00:00|abc", b"2026-01-01T00:00:00+01:00|abc", b"0001-01-01T00:00:00|x", b"|", b"\xff"],
)
def test_a_forged_files_cursor_is_a_400(client, auth, raw):
    cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    response = client.get("/v1/files", params={"cursor": cursor}, headers=auth)
    assert (response.status_code, response.json()) == (400, {"detail": "cursor: invalid"})


def test_an_unexpected_error_is_a_logged_500_and_the_connection_stays_usable(
    settings, store, blobs, key, monkeypatch, caplog
):
    def broken(*args, **kwargs):
        raise RuntimeError("the disk caught fire")

    app = create_app(settings, store, blobs)
    generation_url = "/v1/generations/d290f1ee-6c54-4b01-90e6-d701748f0851"
    with uvicorn_thread(app) as base, httpx.Client(base_url=base, headers=key.headers) as client:
        assert client.get(generation_url).status_code == 404
        first_socket = _local_address(client, generation_url)
        monkeypatch.setattr(store.generations, "summary", broken)
        with caplog.at_level(logging.ERROR, logger="daguerre.api.middleware"):
            response = client.get(generation_url, headers={"X-Request-Id": "req-on-fire"})
        assert (response.status_code, response.json()) == (500, {"detail": "Internal server error"})
        assert response.headers["x-request-id"] == "req-on-fire"
        assert response.headers["x-api-version"]
        assert response.headers.get("connection") != "close"
        logged = [r for r in caplog.records if "req-on-fire" in r.getMessage()]
        assert logged and logged[0].exc_info is not None
        monkeypatch.undo()
        # the same keep-alive connection answers the next request
        assert _local_address(client, generation_url) == first_socket


def _local_address(client, url):
    with client.stream("GET", url) as response:
        response.read()
        return response.extensions["network_stream"].get_extra_info("client_addr")
