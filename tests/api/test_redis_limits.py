"""The per-minute limit shared through a real redis-server, and failing open when Redis is down."""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient

from daguerre.api import create_app
from daguerre.settings import Settings
from support.helpers import RedisServer

BODY = {"prompt": "a red circle"}


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path)
    yield server
    server.stop()


def app_with(tmp_path, store, blobs, storage, name):
    settings = Settings(
        data_dir=tmp_path / name, default_rpm=3, default_concurrency=100, rate_limit_storage=storage
    )
    return TestClient(create_app(settings, store, blobs))


def test_two_api_processes_share_one_budget_through_redis(tmp_path, store, blobs, key, redis_server):
    with (
        app_with(tmp_path, store, blobs, redis_server.url, "a") as first,
        app_with(tmp_path, store, blobs, redis_server.url, "b") as second,
    ):
        assert (
            first.post("/v1/generations", json=BODY, headers=key.headers).headers["x-ratelimit-remaining"]
            == "2"
        )
        assert (
            second.post("/v1/generations", json=BODY, headers=key.headers).headers["x-ratelimit-remaining"]
            == "1"
        )
        assert first.post("/v1/generations", json=BODY, headers=key.headers).status_code == 201
        refused = second.post("/v1/generations", json=BODY, headers=key.headers)
        assert (refused.status_code, refused.json()["detail"]) == (429, "Rate limit exceeded")
        assert int(refused.headers["retry-after"]) >= 1


def test_memory_storage_is_per_process(tmp_path, store, blobs, key):
    with (
        app_with(tmp_path, store, blobs, "memory://", "a") as first,
        app_with(tmp_path, store, blobs, "memory://", "b") as second,
    ):
        for _ in range(3):
            assert first.post("/v1/generations", json=BODY, headers=key.headers).status_code == 201
        assert second.post("/v1/generations", json=BODY, headers=key.headers).status_code == 201


def test_the_api_fails_open_when_redis_is_down(tmp_path, store, blobs, key, redis_server, caplog):
    with app_with(tmp_path, store, blobs, redis_server.url, "a") as client:
        assert "x-ratelimit-limit" in client.post("/v1/generations", json=BODY, headers=key.headers).headers
        redis_server.stop()
        with caplog.at_level(logging.WARNING, logger="daguerre.api.ratelimit"):
            for _ in range(5):  # over the limit of 3, but the limiter cannot count: allowed
                response = client.post("/v1/generations", json=BODY, headers=key.headers)
                assert response.status_code == 201
                assert not any(name.startswith("x-ratelimit") for name in response.headers)
        assert "rate limit store unreachable" in caplog.text
