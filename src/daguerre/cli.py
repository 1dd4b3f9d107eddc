"""The `daguerre` command: serve, worker, keys, migrate.

Heavy modules (FastAPI, SQLAlchemy, torch) are imported inside the subcommands that need them, so
`daguerre --help` stays instant and the base install needs none of them.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
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
    pool = WorkerPool(settings, store, blobs, settings.workers)
    server = _server(
        uvicorn.Config(
            create_app(settings, store, blobs),
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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
