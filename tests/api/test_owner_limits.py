"""The owner's account (made on the first start) has no per-minute and no concurrency limit; accounts
made with the CLI keep the deployment's defaults; `accounts set-limits` changes either."""

from __future__ import annotations

import base64

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from daguerre.api import create_app
from daguerre.cli import app
from daguerre.settings import Settings
from daguerre.store.accounts import UNLIMITED
from daguerre.store.schema import accounts
from support.helpers import make_key, scripted_models, start_server
from support.imageserver import png_bytes

BODY = {"prompt": "a red circle", "aspect_ratio": "1:1"}
runner = CliRunner()


def rate_headers(response: httpx.Response) -> list[str]:
    return [name for name in response.headers if name.lower().startswith("x-ratelimit")]


def cli(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


def limits_listed(data: tuple[str, ...], name: str) -> list[str]:
    """The RPM and JOBS columns of `accounts list` for this account."""
    row = next(row for row in cli("accounts", "list", *data).splitlines() if row.split()[0] == name)
    return row.split()[-2:]


def test_the_owner_has_no_limits_cli_accounts_keep_the_defaults(tmp_path):
    # The deployment's defaults (30 a minute, 10 at a time); no workers, so every job stays queued
    # and holds its concurrency slot. Key lookups are not cached, so set-limits applies at once.
    server = start_server(
        tmp_path / "data", scripted_models(tmp_path / "models.toml"), workers=0, DAGUERRE_KEY_CACHE_S="0"
    )
    data = ("--data-dir", str(server.data_dir))
    url = server.api_url + "/generations"
    try:
        with httpx.Client(timeout=30) as http:
            owner = {"Authorization": f"Bearer {server.key}"}
            for _ in range(35):  # past both defaults
                created = http.post(url, json=BODY, headers=owner)
                assert created.status_code == 201, created.text
                assert rate_headers(created) == []  # no limit, no X-RateLimit-*
            assert limits_listed(data, "local") == ["unlimited", "unlimited"]

            # An account made with the CLI: 10 jobs at a time ...
            token = cli("keys", "create", "--account", "studio", *data).strip().splitlines()[-1]
            studio = {"Authorization": f"Bearer {token}"}
            for _ in range(10):
                created = http.post(url, json=BODY, headers=studio)
                assert created.status_code == 201 and created.headers["x-ratelimit-limit"] == "30"
            refused = http.post(url, json=BODY, headers=studio)
            assert (refused.status_code, refused.json()) == (429, {"detail": "Too many concurrent jobs"})
            # ... and 30 creates a minute (the 11th, refused above, counted: docs/api.md).
            cli("accounts", "set-limits", "studio", "--concurrency", "unlimited", *data)
            remaining = None
            for _ in range(30):
                created = http.post(url, json=BODY, headers=studio)
                assert created.status_code == 201, created.text
                remaining = created.headers["x-ratelimit-remaining"]
                if remaining == "0":
                    break
            assert remaining == "0"
            refused = http.post(url, json=BODY, headers=studio)
            assert (refused.status_code, refused.json()) == (429, {"detail": "Rate limit exceeded"})

            # The owner's limits are set like any account's.
            cli("accounts", "set-limits", "local", "--rpm", "2", *data)
            for expected_remaining in ("1", "0"):
                created = http.post(url, json=BODY, headers=owner)
                assert created.status_code == 201
                assert (created.headers["x-ratelimit-limit"], created.headers["x-ratelimit-remaining"]) == (
                    "2",
                    expected_remaining,
                )
            refused = http.post(url, json=BODY, headers=owner)
            assert (refused.status_code, refused.json()) == (429, {"detail": "Rate limit exceeded"})
            cli("accounts", "set-limits", "local", "--rpm", "unlimited", "--concurrency", "38", *data)
            assert http.post(url, json=BODY, headers=owner).status_code == 201  # its 38th queued job
            refused = http.post(url, json=BODY, headers=owner)
            assert (refused.status_code, refused.json()) == (429, {"detail": "Too many concurrent jobs"})
            assert limits_listed(data, "local") == ["unlimited", "38"]
            assert limits_listed(data, "studio") == ["30", "unlimited"]
    finally:
        server.stop()


def test_an_unlimited_account_with_input_images_skips_the_early_concurrency_look(tmp_path, store, blobs):
    settings = Settings(data_dir=tmp_path / "data", default_rpm=2, default_concurrency=2)
    key = make_key(store)
    store.accounts.set_limits(key.account_id, rpm_limit=UNLIMITED, concurrency_limit=UNLIMITED)
    source = {"data": base64.b64encode(png_bytes()).decode(), "media_type": "image/png"}
    edit = {"prompt": "make it blue", "type": "image_edit", "source": source}
    with TestClient(create_app(settings, store, blobs)) as client:
        for body in [BODY, edit, BODY, edit, edit]:
            created = client.post("/v1/generations", json=body, headers=key.headers)
            assert created.status_code == 201, created.text
            assert rate_headers(created) == []
        store.accounts.set_limits(key.account_id, concurrency_limit=None)  # back to the default (2)
        refused = client.post("/v1/generations", json=edit, headers=key.headers)
        assert (refused.status_code, refused.json()) == (429, {"detail": "Too many concurrent jobs"})


def test_negative_limits_written_by_older_versions_count_as_the_defaults(tmp_path, store, blobs):
    # `set-limits --rpm -5` used to be stored as is, and every create of the account answered 500.
    settings = Settings(data_dir=tmp_path / "data", default_rpm=3, default_concurrency=100)
    key = make_key(store)
    with store.db.write() as conn:
        conn.execute(
            accounts.update()
            .where(accounts.c.id == key.account_id)
            .values(rpm_limit=-5, concurrency_limit=-1)
        )
    with TestClient(create_app(settings, store, blobs)) as client:
        created = client.post("/v1/generations", json=BODY, headers=key.headers)
        assert created.status_code == 201, created.text
        assert created.headers["x-ratelimit-limit"] == "3"
    assert store.accounts.get(key.account_id).rpm_limit is None
    with pytest.raises(ValueError, match="rpm_limit must be at least 0"):
        store.accounts.set_limits(key.account_id, rpm_limit=-5)
    with store.db.read() as conn:
        stored = conn.execute(sa.select(accounts.c.rpm_limit).where(accounts.c.id == key.account_id)).scalar()
    assert stored == -5  # the refused write changed nothing
