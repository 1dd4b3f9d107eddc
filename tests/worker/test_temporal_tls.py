"""Reaching a Temporal cluster over TLS, with a client certificate (mutual TLS) or an API key, as
production clusters and Temporal Cloud require: the dev server behind a TLS front on loopback
(support.tlsproxy) that checks certificates and reads the request headers it forwards."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydantic
import pytest

from daguerre.dispatch import connect_temporal
from daguerre.settings import Settings
from daguerre.worker.temporal import RunnerThread, TemporalRunner
from support.temporal import TemporalServer
from support.tlsproxy import Certificates, TLSProxy, tls_front

API_KEY = "tk-" + uuid.uuid4().hex


@pytest.fixture(params=["mutual-tls", "api-key"])
def front(request: pytest.FixtureRequest, temporal_server: TemporalServer, tmp_path: Path) -> Iterator[Any]:
    mutual = request.param == "mutual-tls"
    with tls_front(temporal_server.address, tmp_path / "pki", require_client_cert=mutual) as (proxy, ca):
        yield request.param, proxy, ca


def tls_settings(base: dict[str, Any], proxy: TLSProxy, ca: Certificates, how: str) -> Settings:
    extra: dict[str, Any] = {"temporal_tls_ca": ca.ca_pem, "temporal_tls_server_name": "temporal.test"}
    if how == "mutual-tls":
        extra |= {"temporal_tls_cert": ca.client_cert, "temporal_tls_key": ca.client_key}
    else:
        extra |= {"temporal_api_key": API_KEY}
    return Settings(**base, temporal_address=proxy.address, **extra)


@pytest.fixture
def settings(tmp_path: Path, models_file: Path, front: Any) -> Settings:
    how, proxy, ca = front
    base = {
        "data_dir": tmp_path / "data",
        "models_file": models_file,
        "workers": 0,
        "moderation": False,
        "execution": "temporal",
        "temporal_task_queue": f"tls-{uuid.uuid4().hex[:12]}",
        "temporal_heartbeat_timeout_s": 2.0,
    }
    return tls_settings(base, proxy, ca, how)


def test_a_generation_runs_through_temporal_over_tls(client, auth, settings, store, blobs, front):
    how, proxy, _ = front
    worker = RunnerThread(TemporalRunner(settings, store, blobs))
    worker.start()
    try:
        created = client.post("/v1/generations", json={"prompt": "over tls"}, headers=auth).json()
        for _ in range(300):
            body = client.get(f"/v1/generations/{created['id']}", headers=auth).json()
            if body["state"] in ("completed", "failed"):
                break
            time.sleep(0.05)
        assert body["state"] == "completed", body
    finally:
        worker.stop(timeout=15)
    calls = [request for request in proxy.requests if request.get(":path", "").startswith("/temporal.")]
    paths = {request[":path"].rsplit("/", 1)[1] for request in calls}
    assert {"StartWorkflowExecution", "PollActivityTaskQueue"} <= paths  # the API and the worker
    if how == "mutual-tls":
        assert proxy.client_subjects  # every connection showed the client certificate
        assert all(subject == proxy.client_subjects[0] for subject in proxy.client_subjects)
        assert not any("authorization" in request for request in calls)
    else:
        assert calls and all(request.get("authorization") == f"Bearer {API_KEY}" for request in calls)


def test_a_frontend_that_wants_a_client_certificate_refuses_a_client_without_one(
    temporal_server: TemporalServer, tmp_path: Path
):
    with tls_front(temporal_server.address, tmp_path / "pki", require_client_cert=True) as (proxy, ca):
        settings = Settings(
            data_dir=tmp_path / "data",
            execution="temporal",
            temporal_address=proxy.address,
            temporal_tls_ca=ca.ca_pem,
            temporal_tls_server_name="temporal.test",
        )
        with pytest.raises(RuntimeError):
            asyncio.run(asyncio.wait_for(connect_temporal(settings), 20))
        assert proxy.requests == [] and proxy.client_subjects == []  # not one call got through
        # the same settings with the certificate get through: it was the certificate, over TLS
        with_certificate = settings.model_copy(
            update={"temporal_tls_cert": ca.client_cert, "temporal_tls_key": ca.client_key}
        )
        asyncio.run(asyncio.wait_for(connect_temporal(with_certificate), 20))
        assert proxy.client_subjects and proxy.requests


def test_tls_settings_that_cannot_work_are_refused_at_once(tmp_path: Path):
    with pytest.raises(pydantic.ValidationError, match="temporal_tls_cert and temporal_tls_key go together"):
        Settings(data_dir=tmp_path, temporal_tls_cert=tmp_path / "client.pem")
    with pytest.raises(pydantic.ValidationError, match="temporal_tls_ca: no such file"):
        Settings(data_dir=tmp_path, execution="temporal", temporal_tls_ca=tmp_path / "missing.pem")
    assert not Settings(data_dir=tmp_path).temporal_uses_tls
    assert Settings(data_dir=tmp_path, temporal_api_key="k").temporal_uses_tls  # Temporal Cloud: TLS
    assert API_KEY not in repr(Settings(data_dir=tmp_path, temporal_api_key=API_KEY))  # never shown
