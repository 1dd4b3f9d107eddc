"""/docs and /redoc load with no internet: every script, style and icon they reference is served by
daguerre itself (from the fastapi-offline package)."""

from __future__ import annotations

import re

import pytest


@pytest.mark.parametrize(
    ("path", "needs"), [("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")]
)
def test_the_pages_reference_only_what_daguerre_serves(client, path, needs):
    page = client.get(path)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    referenced = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", page.text)
    referenced += re.findall(r"""(?:url|spec-url)\s*:\s*["']([^"']+)["']""", page.text)
    assert any(url.endswith(needs) for url in referenced), referenced
    assert not [url for url in referenced if "://" in url or url.startswith("//")], referenced
    assert "openapi.json" in page.text
    for url in referenced:
        asset = client.get(url)
        assert asset.status_code == 200 and len(asset.content) > 0, url
