"""The official SDK as an app configures it: from the environment, against each module's `server`."""

from __future__ import annotations

import luma_agents
import pytest


@pytest.fixture
def luma(server, monkeypatch):
    monkeypatch.setenv("LUMA_BASE_URL", server.api_url)
    monkeypatch.setenv("LUMA_AGENTS_API_KEY", server.key)
    return luma_agents.Luma()  # configured from the environment, as an app would be
