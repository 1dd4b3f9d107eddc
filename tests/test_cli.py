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
from daguerre.store import open_store
from support.helpers import scripted_models, start_server, subprocess_env

runner = CliRunner()


def database(path) -> list[str]:
    """`--data-dir PATH` once `daguerre migrate` has made a database there."""
    result = runner.invoke(app, ["migrate", "--data-dir", str(path)])
    assert result.exit_code == 0, result.output
    return ["--data-dir", str(path)]


def one_line_error(result, status: int) -> str:
    """The command ended with `status` and a single `daguerre: ...` line on stderr, no traceback."""
    assert result.exit_code == status, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # not an uncaught exception
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("daguerre: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


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
    data = database(tmp_path)
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
    result = runner.invoke(app, ["keys", "create", "--expires-in-days", "0.00001", *database(tmp_path)])
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
    assert "wokers" in one_line_error(result, 2)
    result = runner.invoke(app, ["serve", "--port", "70000", "--data-dir", str(tmp_path)])
    assert "port" in one_line_error(result, 2) and "65535" in result.stderr
    assert not (tmp_path / "daguerre.db").exists()


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
    data = database(tmp_path)
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

    store = open_store(f"sqlite:///{tmp_path / 'daguerre.db'}", migrate=False)
    studio = store.accounts.get("studio")
    assert (studio.metered, studio.balance, studio.spend_cap, studio.rpm_limit) == (True, 12_500_000, None, 5)
    assert store.accounts.get("lab").status.value == "active" and not store.accounts.get("lab").metered
    store.close()


# User errors: one line, status 2 for a wrong command, 1 for what the data does not allow ---------


@pytest.fixture(scope="module")
def admin_data(tmp_path_factory) -> list[str]:
    """A database with the account `bob`, for the tests that must leave it unchanged."""
    data = database(tmp_path_factory.mktemp("admin"))
    assert runner.invoke(app, ["accounts", "create", "bob", *data]).exit_code == 0
    return data


def snapshot(data: list[str]) -> tuple[object, ...]:
    store = open_store(f"sqlite:///{data[1]}/daguerre.db", migrate=False)
    try:
        return (store.accounts.all(), store.accounts.list_keys())
    finally:
        store.close()


@pytest.mark.parametrize(
    ("command", "says"),
    [
        (["accounts", "set-limits", "bob", "--rpm", "-5"], "--rpm: '-5'"),
        (["accounts", "set-limits", "bob", "--rpm", "0"], "0 is not a limit"),
        (["accounts", "set-limits", "bob", "--rpm", "abc"], "--rpm: 'abc'"),
        (["accounts", "set-limits", "bob", "--rpm", "2.5"], "--rpm: '2.5'"),
        (["accounts", "set-limits", "bob", "--rpm", "99999999999"], "--rpm: '99999999999'"),
        (["accounts", "set-limits", "bob", "--concurrency", "-1"], "--concurrency: '-1'"),
        (["accounts", "set-limits", "bob", "--rpm", "5", "--concurrency", "-1"], "--concurrency"),
        (["accounts", "set-limits", "bob", "--spend-cap", "-3"], "--spend-cap: '-3'"),
        (["accounts", "set-limits", "bob", "--spend-cap", "nan"], "--spend-cap: 'nan'"),
        (["accounts", "set-limits", "bob", "--spend-cap", "inf"], "--spend-cap: 'inf'"),
        (["accounts", "set-limits", "bob"], "nothing to set"),
        (["accounts", "set-balance", "bob", "abc"], "USD: 'abc'"),
        (["accounts", "set-balance", "bob", "--", "-5"], "USD: '-5'"),
        (["accounts", "set-balance", "bob", "1e20"], "USD: '1e20'"),
        (["accounts", "set-balance", "bob", "5", "--unmetered"], "an amount or --unmetered"),
        (["accounts", "create", "carol", "--balance", "abc"], "--balance: 'abc'"),
        (["accounts", "create", "carol", "--balance", "-1"], "--balance"),
        (["accounts", "create", " "], "account name"),
        (["accounts", "create"], "Missing argument"),
        (["keys", "create", "--account", "carol", "--expires-in-days", "-1"], "--expires-in-days: '-1'"),
        (["keys", "create", "--account", "carol", "--expires-in-days", "0"], "--expires-in-days: '0'"),
        (["keys", "create", "--account", "carol", "--expires-in-days", "nan"], "--expires-in-days: 'nan'"),
        (["keys", "create", "--account", "carol", "--expires-in-days", "1e9"], "--expires-in-days: '1e9'"),
        (["keys", "create", "--account", "carol", "--expires-in-days", "abc"], "--expires-in-days: 'abc'"),
        (["keys", "list", "--no-such-option"], "No such option"),
        (["serve", "--port", "abc"], "--port"),
        (["serve", "--workers", "-1"], "workers"),
    ],
)
def test_bad_values_are_refused_in_one_line_before_anything_is_written(admin_data, command, says):
    before = snapshot(admin_data)
    end = command.index("--") if "--" in command else len(command)  # `--` ends the options
    result = runner.invoke(app, [*command[:end], *admin_data, *command[end:]])
    assert says in one_line_error(result, 2)
    assert snapshot(admin_data) == before


def test_what_the_data_does_not_allow_is_one_line_and_status_1(tmp_path):
    data = database(tmp_path)
    assert runner.invoke(app, ["accounts", "create", "bob", *data]).exit_code == 0
    before = snapshot(data)
    for command, says in [
        (["accounts", "create", "bob"], "account 'bob' already exists"),
        (["accounts", "set-limits", "nobody", "--rpm", "3"], "no account 'nobody'"),
        (["accounts", "set-balance", "nobody", "3"], "no account 'nobody'"),
        (["accounts", "suspend", "nobody"], "no account 'nobody'"),
        (["keys", "list", "--account", "nobody"], "no account 'nobody'"),
        (["keys", "revoke", "no-such-key"], "no single key matches 'no-such-key'"),
    ]:
        assert one_line_error(runner.invoke(app, [*command, *data]), 1) == f"daguerre: {says}"
    assert snapshot(data) == before


@pytest.mark.parametrize(
    "command",
    [
        ["keys", "create"],
        ["keys", "list"],
        ["keys", "revoke", "some-key"],
        ["accounts", "create", "bob"],
        ["accounts", "list"],
        ["accounts", "set-balance", "bob", "5"],
        ["accounts", "set-limits", "bob", "--rpm", "5"],
        ["accounts", "suspend", "bob"],
        ["accounts", "deactivate", "bob"],
        ["accounts", "reactivate", "bob"],
    ],
)
def test_admin_commands_never_create_a_database(tmp_path, command):
    missing = tmp_path / "nowhere"
    line = one_line_error(runner.invoke(app, [*command, "--data-dir", str(missing)]), 1)
    assert f"no daguerre database at {missing / 'daguerre.db'}" in line
    assert all(hint in line for hint in ("--data-dir", "DAGUERRE_DATA_DIR", "daguerre migrate"))
    assert not missing.exists()


def test_without_data_dir_the_default_one_must_exist_too(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    line = one_line_error(runner.invoke(app, ["keys", "list"]), 1)
    assert str(tmp_path / "xdg" / "daguerre" / "daguerre.db") in line
    assert not (tmp_path / "xdg").exists()
    monkeypatch.setenv("DAGUERRE_DATA_DIR", database(tmp_path / "data")[1])
    assert runner.invoke(app, ["keys", "create"]).exit_code == 0
    assert "local" in runner.invoke(app, ["keys", "list"]).stdout
    assert not (tmp_path / "xdg").exists()


def test_another_database_is_not_checked_for_a_file(tmp_path, monkeypatch):
    # No PostgreSQL here: the command tries to reach it (rather than looking for a SQLite file) and
    # says, in one line, that it cannot; the password is not shown.
    monkeypatch.setenv("DAGUERRE_DATABASE_URL", "postgresql://daguerre:secret@127.0.0.1:1/daguerre")
    line = one_line_error(runner.invoke(app, ["keys", "list", "--data-dir", str(tmp_path)]), 1)
    assert line.startswith("daguerre: cannot open the database at postgresql://daguerre:***@127.0.0.1:1/")
    assert "secret" not in line and "no daguerre database" not in line


def test_limits_are_a_number_default_or_unlimited(tmp_path):
    data = database(tmp_path)
    assert runner.invoke(app, ["accounts", "create", "bob", *data]).exit_code == 0

    def limits() -> tuple[object, ...]:
        listed = next(row for row in runner.invoke(app, ["accounts", "list", *data]).stdout.splitlines()[1:])
        store = open_store(f"sqlite:///{tmp_path / 'daguerre.db'}", migrate=False)
        bob = store.accounts.get("bob")
        store.close()
        return (bob.rpm_limit, bob.concurrency_limit, *listed.split()[-2:])

    assert limits() == (None, None, "30", "10")  # the deployment's defaults
    for rpm, concurrency, expected in [
        ("unlimited", "7", (0, 7, "unlimited", "7")),
        ("12", "Unlimited", (12, 0, "12", "unlimited")),
        ("default", "default", (None, None, "30", "10")),
    ]:
        command = ["accounts", "set-limits", "bob", "--rpm", rpm, "--concurrency", concurrency, *data]
        assert runner.invoke(app, command).exit_code == 0
        assert limits() == expected


def test_commands_do_not_repeat_alembic_chatter_and_migrate_says_what_it_did(tmp_path):
    from alembic.script import ScriptDirectory

    from daguerre.store.migrate import alembic_config, downgrade

    def daguerre(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "daguerre.cli", *args, "--data-dir", str(tmp_path)],
            capture_output=True,
            text=True,
            env=subprocess_env(),
            timeout=120,
        )

    url = f"sqlite:///{tmp_path / 'daguerre.db'}"
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    created, again = daguerre("migrate"), daguerre("migrate")
    for run in (created, again, daguerre("keys", "list"), daguerre("accounts", "list")):
        assert run.returncode == 0, run.stderr
        assert "alembic" not in run.stderr, run.stderr  # no "Context impl", "Will assume ... DDL"
    assert created.stdout.strip().endswith(f"schema {head} created")
    assert again.stdout.strip().endswith(f"is up to date (schema {head})")
    key = daguerre("keys", "create")
    said = key.stderr.strip().splitlines()
    assert len(said) == 2 and said[0].startswith("created account 'local'") and said[1].startswith("key ")
    downgrade(url, "0005")
    upgraded = daguerre("migrate")
    assert upgraded.stdout.strip().endswith(f"schema upgraded from 0005 to {head}")
    assert "alembic" not in upgraded.stderr


def test_webhook_secret_and_default_url(tmp_path):
    data = database(tmp_path / "data")
    assert runner.invoke(app, ["accounts", "create", "hooks", *data]).exit_code == 0
    first = runner.invoke(app, ["accounts", "webhook-secret", "hooks", *data])
    again = runner.invoke(app, ["accounts", "webhook-secret", "hooks", *data])
    rotated = runner.invoke(app, ["accounts", "webhook-secret", "hooks", "--rotate", *data])
    assert first.exit_code == again.exit_code == rotated.exit_code == 0
    assert first.stdout.startswith("whsec_") and first.stdout == again.stdout != rotated.stdout
    set_url = runner.invoke(app, ["accounts", "set-webhook", "hooks", "https://example.com/hook", *data])
    assert set_url.exit_code == 0 and "https://example.com/hook" in set_url.stdout
    store = open_store(Settings(data_dir=tmp_path / "data").resolved_database_url)
    try:
        account_id = store.accounts.get("hooks").id
        assert store.webhooks.account_url(account_id) == "https://example.com/hook"
        assert runner.invoke(app, ["accounts", "set-webhook", "hooks", "none", *data]).exit_code == 0
        assert store.webhooks.account_url(account_id) is None
    finally:
        store.close()
    refused = runner.invoke(app, ["accounts", "set-webhook", "hooks", "http://example.com/hook", *data])
    assert "https required" in one_line_error(refused, 2)
    missing = runner.invoke(app, ["accounts", "webhook-secret", "nobody", *data])
    assert one_line_error(missing, 1) == "daguerre: no account 'nobody'"
