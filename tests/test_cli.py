"""The `daguerre` command line: help everywhere, first run, keys, settings sources."""

from __future__ import annotations

import stat
import subprocess
import sys

import httpx
import pytest
from typer.testing import CliRunner

from daguerre.cli import app
from daguerre.settings import Settings
from support.helpers import scripted_models, start_server, subprocess_env

runner = CliRunner()


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["serve"],
        ["worker"],
        ["migrate"],
        ["keys"],
        ["keys", "create"],
        ["keys", "list"],
        ["keys", "revoke"],
        ["accounts"],
        ["accounts", "create"],
        ["accounts", "list"],
        ["accounts", "set-balance"],
        ["accounts", "set-limits"],
        ["accounts", "suspend"],
        ["accounts", "deactivate"],
        ["accounts", "reactivate"],
    ],
)
def test_help_everywhere(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0
    assert "Usage" in result.output


def test_first_serve_creates_an_account_and_a_private_key_file(tmp_path):
    models = scripted_models(tmp_path / "models.toml")
    server = start_server(tmp_path / "data", models, workers=1)
    try:
        key_file = tmp_path / "data" / "api-key"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert server.key in server.log()
        response = httpx.post(
            server.api_url + "/generations",
            json={"prompt": "x"},
            headers={"Authorization": f"Bearer {server.key}"},
        )
        assert response.status_code == 201
    finally:
        server.stop()
    again = start_server(tmp_path / "data", models, workers=0)  # not a first run any more
    try:
        assert "created account" not in again.log()
        assert server.key not in again.log()  # shown on the first start only
        assert again.key == server.key
    finally:
        again.stop()


def test_keys_create_list_revoke(tmp_path):
    data = ["--data-dir", str(tmp_path)]
    created = runner.invoke(app, ["keys", "create", "--account", "studio", "--name", "ci", *data])
    assert created.exit_code == 0, created.output
    token = created.stdout.strip().splitlines()[-1]
    assert token.startswith("luma-api-")

    listed = runner.invoke(app, ["keys", "list", *data])
    assert listed.exit_code == 0
    assert "studio" in listed.stdout and "active" in listed.stdout and token not in listed.stdout
    key_id = next(line.split()[0] for line in listed.stdout.splitlines() if "studio" in line)

    revoked = runner.invoke(app, ["keys", "revoke", key_id, *data])
    assert revoked.exit_code == 0
    assert "revoked" in runner.invoke(app, ["keys", "list", "--account", "studio", *data]).stdout
    assert runner.invoke(app, ["keys", "revoke", "no-such-key", *data]).exit_code == 1


def test_keys_create_with_expiry(tmp_path):
    result = runner.invoke(
        app, ["keys", "create", "--expires-in-days", "0.00001", "--data-dir", str(tmp_path)]
    )
    assert result.exit_code == 0
    import time

    time.sleep(1.5)
    assert "expired" in runner.invoke(app, ["keys", "list", "--data-dir", str(tmp_path)]).stdout


def test_settings_come_from_cli_env_and_config_file(tmp_path, monkeypatch):
    config = tmp_path / "daguerre.toml"
    config.write_text("port = 9001\nworkers = 3\nlease_s = 12.5\n")
    assert Settings.load(data_dir=tmp_path).port == 9001  # <data_dir>/daguerre.toml is found
    monkeypatch.setenv("DAGUERRE_PORT", "9002")
    loaded = Settings.load(data_dir=tmp_path)
    assert (loaded.port, loaded.workers, loaded.lease_s) == (9002, 3, 12.5)  # env beats the file
    assert Settings.load(data_dir=tmp_path, port=9003).port == 9003  # the CLI beats both
    other = tmp_path / "other.toml"
    other.write_text("workers = 5\n")
    assert Settings.load(other, data_dir=tmp_path).workers == 5


def test_bad_settings_are_explained(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text("wokers = 3\n")
    result = runner.invoke(app, ["migrate", "--config", str(config), "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "wokers" in result.output


def test_import_daguerre_stays_light():
    heavy = "('fastapi', 'sqlalchemy', 'torch', 'diffusers', 'PIL')"
    code = f"import sys, daguerre, daguerre.cli; print(sorted(m for m in {heavy} if m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env(), check=True
    )
    assert result.stdout.strip() == "[]"


def test_a_key_revoked_from_the_cli_stops_working_on_a_running_server(tmp_path):
    import time

    server = start_server(tmp_path / "data", scripted_models(tmp_path / "models.toml"), workers=0)
    try:
        created = runner.invoke(
            app, ["keys", "create", "--account", "ops", "--data-dir", str(tmp_path / "data")]
        )
        token = created.stdout.strip().splitlines()[-1]
        headers = {"Authorization": f"Bearer {token}"}
        url = server.api_url + "/generations"
        assert httpx.post(url, json={"prompt": "x"}, headers=headers).status_code == 201
        key_id = next(
            line.split()[0]
            for line in runner.invoke(
                app, ["keys", "list", "--data-dir", str(tmp_path / "data")]
            ).stdout.splitlines()
            if " ops " in line
        )
        assert (
            runner.invoke(app, ["keys", "revoke", key_id, "--data-dir", str(tmp_path / "data")]).exit_code
            == 0
        )
        time.sleep(2.5)  # the server trusted the key for key_cache_s (2 s)
        response = httpx.post(url, json={"prompt": "x"}, headers=headers)
        assert (response.status_code, response.json()) == (401, {"detail": "API key has been revoked"})
    finally:
        server.stop()


def test_accounts_admin_commands(tmp_path):
    data = ["--data-dir", str(tmp_path)]
    assert runner.invoke(app, ["accounts", "create", "studio", "--balance", "25", *data]).exit_code == 0
    assert runner.invoke(app, ["accounts", "create", "lab", *data]).exit_code == 0
    listed = runner.invoke(app, ["accounts", "list", *data]).stdout
    assert "$25.0000" in listed and "unmetered" in listed
    assert runner.invoke(app, ["accounts", "set-balance", "studio", "12.50", *data]).exit_code == 0
    assert (
        runner.invoke(
            app,
            [
                "accounts",
                "set-limits",
                "studio",
                "--rpm",
                "5",
                "--concurrency",
                "2",
                "--spend-cap",
                "3",
                *data,
            ],
        ).exit_code
        == 0
    )
    assert runner.invoke(app, ["accounts", "suspend", "lab", *data]).exit_code == 0
    line = next(
        row for row in runner.invoke(app, ["accounts", "list", *data]).stdout.splitlines() if "studio" in row
    )
    assert "$12.5000" in line and "$3.0000" in line and line.split()[-2:] == ["5", "2"]
    assert "suspended" in runner.invoke(app, ["accounts", "list", *data]).stdout
    assert runner.invoke(app, ["accounts", "reactivate", "lab", *data]).exit_code == 0
    assert runner.invoke(app, ["accounts", "set-balance", "lab", "--unmetered", *data]).exit_code == 0
    assert (
        runner.invoke(app, ["accounts", "set-limits", "studio", "--spend-cap", "none", *data]).exit_code == 0
    )
    assert runner.invoke(app, ["accounts", "suspend", "nobody", *data]).exit_code == 1
    assert runner.invoke(app, ["accounts", "set-limits", "studio", *data]).exit_code == 2

    from daguerre.store import open_store

    store = open_store(f"sqlite:///{tmp_path / 'daguerre.db'}", migrate=False)
    studio = store.accounts.get("studio")
    assert (studio.metered, studio.balance, studio.spend_cap, studio.rpm_limit) == (True, 12_500_000, None, 5)
    assert store.accounts.get("lab").status.value == "active" and not store.accounts.get("lab").metered
    store.close()
