"""The `daguerre` command: serve, worker, keys, migrate.

Heavy modules (FastAPI, SQLAlchemy, torch) are imported inside the subcommands that need them, so
`daguerre --help` stays instant and the base install needs none of them.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from daguerre.settings import Settings, write_private_file

if TYPE_CHECKING:
    from daguerre.store import Store

app = typer.Typer(
    help="daguerre: self-hosted image generation with Luma's Generations API.", no_args_is_help=True
)
keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
accounts_app = typer.Typer(help="Accounts: balances, limits, suspension.", no_args_is_help=True)
app.add_typer(accounts_app, name="accounts")

FIRST_ACCOUNT = "local"

DataDirOpt = Annotated[
    Path | None, typer.Option("--data-dir", help="Database, blobs and secrets live here.", show_default=False)
]
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="Settings file (TOML).", exists=True, dir_okay=False)
]
ModelsOpt = Annotated[
    Path | None, typer.Option("--models", help="Models configuration (TOML).", exists=True, dir_okay=False)
]


def _settings(config: Path | None, **values: Any) -> Settings:
    try:
        settings = Settings.load(config, **values)
    except Exception as exc:
        typer.echo(f"daguerre: invalid settings: {exc}", err=True)
        raise typer.Exit(2) from exc
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return settings


@contextmanager
def _startup_errors() -> Iterator[None]:
    """A bad models file or missing moderation packages: one clear line and exit status 2."""
    from daguerre.engine.config import ModelsConfigError
    from daguerre.moderation import ModerationUnavailable

    try:
        yield
    except (ModelsConfigError, ModerationUnavailable) as exc:
        typer.echo(f"daguerre: {exc}", err=True)
        raise typer.Exit(2) from exc


def _open_store(settings: Settings) -> Store:
    from daguerre.store import open_store

    return open_store(settings.resolved_database_url, key_cache_s=settings.key_cache_s)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind.", show_default="127.0.0.1")] = None,
    port: Annotated[int | None, typer.Option(help="Port to bind.", show_default="8000")] = None,
    data_dir: DataDirOpt = None,
    models: ModelsOpt = None,
    workers: Annotated[int | None, typer.Option(help="In-process workers.", show_default="1")] = None,
    config: ConfigOpt = None,
) -> None:
    """Run the API with N in-process workers on the embedded defaults (SQLite, local blobs)."""
    settings = _settings(config, host=host, port=port, data_dir=data_dir, models_file=models, workers=workers)
    import uvicorn

    from daguerre.api import create_app
    from daguerre.blobs import open_blob_store
    from daguerre.worker import WorkerPool

    store = _open_store(settings)
    blobs = open_blob_store(settings)
    _first_run(settings, store)
    with _startup_errors():
        pool = WorkerPool(settings, store, blobs, settings.workers)
        app = create_app(settings, store, blobs)
    server = _server(
        uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level,
            access_log=settings.log_level == "debug",
            timeout_graceful_shutdown=max(1, int(settings.shutdown_grace_s)),
        ),
        on_exit=pool.request_stop,
    )
    pool.start()
    try:
        server.run()
    finally:
        pool.stop()
        store.close()


def _server(config: Any, on_exit: Callable[[], None]) -> Any:
    """A uvicorn.Server that also tells the workers to stop claiming the moment a signal arrives."""
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            on_exit()
            super().handle_exit(sig, frame)

    return Server(config)


@app.command()
def worker(data_dir: DataDirOpt = None, models: ModelsOpt = None, config: ConfigOpt = None) -> None:
    """Run one worker process against the same store and blobs as the API.

    SIGTERM or Ctrl-C: stop claiming, finish the running job within the grace time, or hand it back.
    """
    settings = _settings(config, data_dir=data_dir, models_file=models)
    from daguerre.blobs import open_blob_store
    from daguerre.worker import WorkerPool

    store = _open_store(settings)
    with _startup_errors():
        pool = WorkerPool(settings, store, open_blob_store(settings), count=1)

    def on_signal(signum: int, frame: Any) -> None:
        logging.getLogger("daguerre.worker").info("signal %d: stopping", signum)
        pool.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    pool.start()
    while not pool.stop_event.wait(0.5):
        pass
    pool.stop()
    store.close()


@app.command()
def migrate(data_dir: DataDirOpt = None, config: ConfigOpt = None) -> None:
    """Bring the database schema to the newest version (serve and worker also do this at start)."""
    settings = _settings(config, data_dir=data_dir)
    _open_store(settings).close()
    typer.echo(f"database at {settings.resolved_database_url} is up to date")


def _first_run(settings: Settings, store: Store) -> None:
    """On an empty database: create the local account and its first key, print it once, and save
    it to a file only the current user can read."""
    if store.accounts.count() > 0:
        return
    account = store.accounts.create(FIRST_ACCOUNT)
    _, token = store.accounts.create_key(account.id, name="first key")
    saved = write_private_file(settings.first_key_file, token + "\n")
    base = f"http://{settings.host}:{settings.port}/v1"
    typer.echo(
        f"\ndaguerre: created account '{FIRST_ACCOUNT}' and its first API key (shown once"
        + (f", saved to {settings.first_key_file}" if saved else "")
        + f"):\n\n    {token}\n\nUse it with the luma-agents SDK:\n\n"
        f"    export LUMA_AGENTS_API_KEY={token}\n    export LUMA_BASE_URL={base}\n"
    )


# keys ------------------------------------------------------------------------------------------


@keys_app.command("create")
def keys_create(
    account: Annotated[
        str, typer.Option(help="Account name or id; created if it does not exist.")
    ] = FIRST_ACCOUNT,
    name: Annotated[str | None, typer.Option(help="A label for the key.")] = None,
    expires_in_days: Annotated[
        float | None, typer.Option(help="Expire the key after this many days.")
    ] = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Create a key and print it. It is shown once and stored only as a hash."""
    from daguerre.store.accounts import AccountNotFound

    settings = _settings(config, data_dir=data_dir)
    store = _open_store(settings)
    try:
        owner = store.accounts.get(account)
    except AccountNotFound:
        owner = store.accounts.create(account)
        typer.echo(f"created account '{owner.name}' ({owner.id})", err=True)
    expires_at = datetime.now(UTC) + timedelta(days=expires_in_days) if expires_in_days else None
    record, token = store.accounts.create_key(owner.id, name=name, expires_at=expires_at)
    store.close()
    typer.echo(
        f"key {record.id} for account '{owner.name}'"
        + (f", expires {expires_at:%Y-%m-%d %H:%M} UTC" if expires_at else ""),
        err=True,
    )
    typer.echo(token)


@keys_app.command("list")
def keys_list(
    account: Annotated[str | None, typer.Option(help="Only this account's keys.")] = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """List keys (never the keys themselves: id, prefix, account, state)."""
    settings = _settings(config, data_dir=data_dir)
    store = _open_store(settings)
    account_id = store.accounts.get(account).id if account else None
    now = datetime.now(UTC)
    typer.echo(f"{'ID':36}  {'PREFIX':16}  {'ACCOUNT':16}  {'STATE':8}  {'CREATED':16}  NAME")
    for key in store.accounts.list_keys(account_id):
        state = (
            "revoked"
            if key.revoked_at
            else "expired"
            if key.expires_at and key.expires_at <= now
            else "active"
        )
        typer.echo(
            f"{key.id:36}  {key.key_prefix + '…':16}  {key.account_name:16}  {state:8}  "
            f"{key.created_at:%Y-%m-%d %H:%M}  {key.name or ''}"
        )
    store.close()


@keys_app.command("revoke")
def keys_revoke(
    key: Annotated[str, typer.Argument(help="The key's id (or its listed prefix).")],
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Revoke a key; requests with it get 401 `API key has been revoked` from then on."""
    settings = _settings(config, data_dir=data_dir)
    store = _open_store(settings)
    revoked = store.accounts.revoke_key(key)
    store.close()
    if not revoked:
        typer.echo(f"no single key matches {key!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {key}")


# accounts --------------------------------------------------------------------------------------

AccountArg = Annotated[str, typer.Argument(help="Account name or id.")]


def _account_action(
    settings_config: Path | None, data_dir: Path | None, name: str, action: Callable[[Store, str], None]
) -> None:
    from daguerre.store.accounts import AccountNotFound

    settings = _settings(settings_config, data_dir=data_dir)
    store = _open_store(settings)
    try:
        action(store, store.accounts.get(name).id)
    except AccountNotFound:
        typer.echo(f"no account {name!r}", err=True)
        raise typer.Exit(1) from None
    finally:
        store.close()


@accounts_app.command("create")
def accounts_create(
    name: Annotated[str, typer.Argument(help="A unique name.")],
    balance: Annotated[str | None, typer.Option(help="Make it metered with this balance in dollars.")] = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Create an account: unmetered, or metered with --balance (then each generation is charged)."""
    from daguerre.pricing import micro_dollars

    settings = _settings(config, data_dir=data_dir)
    store = _open_store(settings)
    account = store.accounts.create(name, balance=micro_dollars(balance) if balance is not None else None)
    store.close()
    typer.echo(f"created account '{account.name}' ({account.id})")


@accounts_app.command("list")
def accounts_list(data_dir: DataDirOpt = None, config: ConfigOpt = None) -> None:
    """Accounts with their status, balance, holds, spend this month and limits."""
    from daguerre.pricing import dollars

    settings = _settings(config, data_dir=data_dir)
    store = _open_store(settings)
    columns = ("NAME", "STATUS", "BALANCE", "HELD", "SPENT/MONTH", "CAP", "RPM", "JOBS")
    widths = (16, 11, 12, 10, 12, 10, 5, 5)
    typer.echo(
        "  ".join(
            f"{c:{w}}" if i < 2 else f"{c:>{w}}" for i, (c, w) in enumerate(zip(columns, widths, strict=True))
        )
    )
    for account in store.accounts.all():
        balance = dollars(account.balance) if account.metered else "unmetered"
        cap = dollars(account.spend_cap) if account.spend_cap is not None else "-"
        rpm = account.rpm_limit or settings.default_rpm
        jobs = account.concurrency_limit or settings.default_concurrency
        typer.echo(
            f"{account.name:16}  {account.status.value:11}  {balance:>12}  {dollars(account.reserved):>10}  "
            f"{dollars(store.accounts.spent_this_month(account.id)):>12}  {cap:>10}  {rpm:>5}  {jobs:>5}"
        )
    store.close()


@accounts_app.command("set-balance")
def accounts_set_balance(
    name: AccountArg,
    amount: Annotated[str | None, typer.Argument(help="Dollars, e.g. 25 or 12.50.")] = None,
    unmetered: Annotated[bool, typer.Option("--unmetered", help="Stop charging this account.")] = False,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Set the balance (the account becomes metered), or make it unmetered."""
    from daguerre.pricing import micro_dollars

    if (amount is None) == (not unmetered):
        typer.echo("give an amount or --unmetered", err=True)
        raise typer.Exit(2)
    value = None if unmetered else micro_dollars(amount or 0)
    _account_action(
        config, data_dir, name, lambda store, account_id: store.accounts.set_balance(account_id, value)
    )
    typer.echo(f"{name}: " + ("unmetered" if value is None else f"balance set to ${amount}"))


@accounts_app.command("set-limits")
def accounts_set_limits(
    name: AccountArg,
    rpm: Annotated[int | None, typer.Option(help="Creates per minute (0: the default).")] = None,
    concurrency: Annotated[
        int | None, typer.Option(help="Generations not yet finished (0: the default).")
    ] = None,
    spend_cap: Annotated[
        str | None, typer.Option(help="Dollars per calendar month ('none': no cap).")
    ] = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Per-account limits; generations waiting when a lowered cap is reached end as budget_exhausted."""
    from daguerre.pricing import micro_dollars

    limits: dict[str, int | None] = {}
    if rpm is not None:
        limits["rpm_limit"] = rpm or None
    if concurrency is not None:
        limits["concurrency_limit"] = concurrency or None
    if spend_cap is not None:
        limits["spend_cap"] = None if spend_cap.lower() == "none" else micro_dollars(spend_cap)
    if not limits:
        typer.echo("nothing to set: give --rpm, --concurrency or --spend-cap", err=True)
        raise typer.Exit(2)
    _account_action(
        config, data_dir, name, lambda store, account_id: store.accounts.set_limits(account_id, **limits)
    )
    typer.echo(f"{name}: limits updated")


@accounts_app.command("suspend")
def accounts_suspend(name: AccountArg, data_dir: DataDirOpt = None, config: ConfigOpt = None) -> None:
    """Suspend: every request gets 403 `API client is suspended` until reactivated."""
    from daguerre.store.accounts import AccountStatus

    _account_action(config, data_dir, name, lambda s, a: s.accounts.set_status(a, AccountStatus.SUSPENDED))
    typer.echo(f"{name}: suspended")


@accounts_app.command("deactivate")
def accounts_deactivate(name: AccountArg, data_dir: DataDirOpt = None, config: ConfigOpt = None) -> None:
    """Deactivate: every request gets 403 `API client is deactivated`."""
    from daguerre.store.accounts import AccountStatus

    _account_action(config, data_dir, name, lambda s, a: s.accounts.set_status(a, AccountStatus.DEACTIVATED))
    typer.echo(f"{name}: deactivated")


@accounts_app.command("reactivate")
def accounts_reactivate(name: AccountArg, data_dir: DataDirOpt = None, config: ConfigOpt = None) -> None:
    """Make a suspended or deactivated account active again."""
    from daguerre.store.accounts import AccountStatus

    _account_action(config, data_dir, name, lambda s, a: s.accounts.set_status(a, AccountStatus.ACTIVE))
    typer.echo(f"{name}: active")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
