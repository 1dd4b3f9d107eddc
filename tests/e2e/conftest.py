"""The end-to-end suite runs on both profiles. A module's `server` fixture starts its service with
`launch(root, models, workers=..., **env)`: on `embedded`, one `daguerre serve` (SQLite, local
blobs, in-process workers); on `cluster`, support.cluster.Cluster (two API processes on
PostgreSQL, S3, Redis and Temporal, a full worker and an engine-only worker without a database),
where the SDK's requests alternate between the two API processes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import luma_agents
import pytest

from support.cluster import Cluster
from support.helpers import LiveServer, start_server

PROFILES = ("embedded", "cluster")


@pytest.fixture(scope="module", params=PROFILES)
def profile(request: pytest.FixtureRequest) -> str:
    return str(request.param)


Launch = Callable[..., LiveServer | Cluster]


@pytest.fixture(scope="module")
def launch(profile: str, request: pytest.FixtureRequest) -> Iterator[Launch]:
    """Start the service on this module's profile; what it started is stopped by the caller."""
    services = request.getfixturevalue("cluster_services") if profile == "cluster" else None

    def start(root: Path, models: Path, workers: int = 1, **env: str) -> LiveServer | Cluster:
        if services is None:
            return start_server(root / "data", models, workers=workers, **env)
        return Cluster.start(root / "cluster", models, services, workers=workers > 0, **env)

    yield start


@pytest.fixture
def luma(server: LiveServer | Cluster, monkeypatch: pytest.MonkeyPatch) -> luma_agents.Luma:
    monkeypatch.setenv("LUMA_BASE_URL", server.api_url)
    monkeypatch.setenv("LUMA_AGENTS_API_KEY", server.key)
    if isinstance(server, Cluster):
        return server.sdk(auth_token=None, base_url=None)  # configured from the environment
    return luma_agents.Luma()  # configured from the environment, as an app would be
