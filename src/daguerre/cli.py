"""The `daguerre` command: serve, worker, keys, migrate.

Heavy modules (FastAPI, SQLAlchemy, torch) are imported inside the subcommands that need them, so
`daguerre --help` stays instant and the base install needs none of them.

Errors a user can make are one line on stderr, `daguerre: ...`, and an exit status:

* 2 (USAGE): the command itself is wrong: a bad option value, a missing argument, options that
  contradict each other, invalid settings. Nothing was read or written.
* 1 (STATE): the command is well-formed but the data does not allow it: no such account or key, an
  account name already taken, no database where the settings point, a database that cannot be
  opened.

Values are checked before anything is written, so a refused command changes nothing.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from typer.core import TyperGroup

from daguerre.client_cli import generate, generations_app
from daguerre.settings import Settings, write_private_file

try:  # newer typers carry their own copy of click and raise its exceptions
    from typer._click.exceptions import ClickException, UsageError
except ImportError:  # pragma: no cover - older typers raise click's
    from click.exceptions import ClickException, UsageError  # type: ignore[assignment]

if TYPE_CHECKING:
    import sqlalchemy as sa

    from daguerre.store import Store

USAGE = 2
"""Exit status of a command that is wrong in itself (bad value, missing argument, bad settings)."""
STATE = 1
"""Exit status of a well-formed command the data does not allow (no such account, no database)."""

log = logging.getLogger("daguerre.cli")


class _Commands(TyperGroup):
    """The root command. Its only difference from Typer's: a usage error (unknown option, missing
    argument, a value of the wrong type) is one line on stderr and exit status 2, rather than the
    usage text and a framed message."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        try:
            status = super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        except typer.Abort:
            typer.echo("daguerre: aborted", err=True)
            sys.exit(STATE)
        except ClickException as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # the help itself, already shown
                if exc.format_message().strip():
                    typer.echo(exc.format_message(), err=True)
                sys.exit(exc.exit_code)
            message = f"daguerre: {_one_line(exc.format_message())}"
            ctx = exc.ctx if isinstance(exc, UsageError) else None
            if ctx is not None:
                message += f" (see '{ctx.command_path} --help')"
            typer.echo(message, err=True)
            sys.exit(exc.exit_code)
        # Without standalone mode the result is the command's return value (None) or the status of
        # a typer.Exit.
        sys.exit(status if isinstance(status, int) else 0)


app = typer.Typer(
    cls=_Commands,
    help="daguerre: self-hosted image generation with Luma's Generations API.",
    no_args_is_help=True,
)
keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
accounts_app = typer.Typer(help="Accounts: balances, limits, suspension.", no_args_is_help=True)
app.add_typer(accounts_app, name="accounts")
app.command()(generate)
app.add_typer(generations_app, name="generations")

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


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _fail(status: int, message: str) -> NoReturn:
    """One line on stderr, then exit with `status` (USAGE or STATE)."""
    typer.echo(f"daguerre: {_one_line(message)}", err=True)
    raise typer.Exit(status)


def _settings(config: Path | None, **values: Any) -> Settings:
    from pydantic import ValidationError

    try:
        settings = Settings.load(config, **values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'settings'}: {error['msg']}"
            + (f" (got {error['input']!r})" if isinstance(error["input"], int | float | str) else "")
            for error in exc.errors()
        )
        _fail(USAGE, f"invalid settings: {problems}")
    except Exception as exc:
        _fail(USAGE, f"invalid settings: {exc}")
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if settings.log_level != "debug":
        # Alembic tells at INFO which plugins it set up and which DDL mode it assumes, each time the
        # schema is checked, which is every command. What a migration did is reported by
        # `_open_store` (and printed by `daguerre migrate`); Alembic's warnings and errors still show.
        logging.getLogger("alembic").setLevel(logging.WARNING)
    return settings


@contextmanager
def _startup_errors() -> Iterator[None]:
    """A bad models file, missing moderation packages or an unusable blob store: one clear line
    and exit status 2."""
    from daguerre.blobs.base import BlobStoreUnavailable
    from daguerre.engine.config import ModelsConfigError
    from daguerre.moderation import ModerationUnavailable

    try:
        yield
    except (ModelsConfigError, ModerationUnavailable, BlobStoreUnavailable) as exc:
        _fail(USAGE, str(exc))


# The database ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Schema:
    """What bringing the schema up to date did: the revision before (None: no schema yet) and after."""

    database: str
    """The database URL, its password hidden."""
    before: str | None
    after: str | None

    def describe(self) -> str:
        if self.before == self.after:
            return f"database at {self.database} is up to date (schema {self.after})"
        if self.before is None:
            return f"database at {self.database}: schema {self.after} created"
        return f"database at {self.database}: schema upgraded from {self.before} to {self.after}"


def _sqlite_file(url: sa.URL) -> Path | None:
    """The file of a SQLite database; None for other databases and in-memory SQLite."""
    database = url.database
    if url.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    if database.startswith("file:"):  # a SQLite URI filename: left to SQLite
        return None
    return Path(database)


def _is_database(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 0


def _schema_revision(url: str) -> str | None:
    import sqlalchemy as sa
    from alembic.runtime.migration import MigrationContext

    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def _migrate(settings: Settings, *, create: bool) -> _Schema:
    """Bring the schema up to date. Unless `create` (serve, worker, migrate), a SQLite database must
    already exist: commands that read or change what is in it never create an empty one elsewhere."""
    import sqlalchemy as sa

    from daguerre.store.migrate import upgrade

    url = settings.resolved_database_url
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError as exc:
        _fail(USAGE, f"invalid settings: database_url: {exc}")
    shown = parsed.render_as_string(hide_password=True)
    path = _sqlite_file(parsed)
    if path is not None and not create and not _is_database(path):
        _fail(
            STATE,
            f"no daguerre database at {path}: point at yours with --data-dir or DAGUERRE_DATA_DIR "
            "(or database_url), or create one with 'daguerre serve' or 'daguerre migrate'",
        )
    try:
        before = None if path is not None and not _is_database(path) else _schema_revision(url)
        upgrade(url)
        return _Schema(shown, before, _schema_revision(url))
    except (sa.exc.SQLAlchemyError, ModuleNotFoundError, OSError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        _fail(STATE, f"cannot open the database at {shown}: {reason}")


def _open_store(settings: Settings, *, create: bool = False) -> Store:
    """The store, its schema brought up to date first (see `_migrate` for `create`)."""
    from daguerre.store import open_store

    schema = _migrate(settings, create=create)
    if schema.before != schema.after:
        log.info("%s", schema.describe())
    return open_store(settings.resolved_database_url, migrate=False, key_cache_s=settings.key_cache_s)


# Values of options -----------------------------------------------------------------------------

MAX_LIMIT = 2**31 - 1
"""The largest per-account limit (the columns are 32-bit integers)."""
MAX_DOLLARS = Decimal(1_000_000_000)
"""The largest balance or spending cap the CLI takes (the columns hold micro-dollars in 64 bits)."""
MAX_DAYS = 36_525.0
"""A key expires at most a hundred years from now (give no --expires-in-days for never)."""


def _bad_value(option: str, text: str, expected: str) -> NoReturn:
    _fail(USAGE, f"invalid value for {option}: {text!r} is not {expected}")


def _limit(option: str, text: str) -> int | None:
    """`--rpm` / `--concurrency`: N >= 1, `default` (None: the deployment's) or `unlimited` (0)."""
    from daguerre.store.accounts import UNLIMITED

    word = text.strip().lower()
    if word == "default":
        return None
    if word == "unlimited":
        return UNLIMITED
    expected = f"a whole number from 1 to {MAX_LIMIT}, 'default' or 'unlimited'"
    try:
        value = int(word)
    except ValueError:
        _bad_value(option, text, expected)
    if value == 0:
        _fail(USAGE, f"invalid value for {option}: 0 is not a limit: say 'unlimited' or 'default'")
    if not 1 <= value <= MAX_LIMIT:
        _bad_value(option, text, expected)
    return value


def _micro_dollars(option: str, text: str) -> int:
    """Dollars (`25`, `12.50`, `$3`) -> micro-dollars, 0 to MAX_DOLLARS."""
    from daguerre.pricing import MICRO

    expected = f"an amount in dollars from 0 to {MAX_DOLLARS:,} (e.g. 25 or 12.50)"
    try:
        amount = Decimal(text.strip().removeprefix("$"))
    except InvalidOperation:
        _bad_value(option, text, expected)
    if not amount.is_finite() or not 0 <= amount <= MAX_DOLLARS:
        _bad_value(option, text, expected)
    return int((amount * MICRO).to_integral_value())


def _days(option: str, text: str) -> float:
    expected = f"a number of days above 0 and at most {MAX_DAYS:,.0f}"
    try:
        days = float(text)
    except ValueError:
        _bad_value(option, text, expected)
    if not math.isfinite(days) or not 0 < days <= MAX_DAYS:
        _bad_value(option, text, expected)
    return days


def _account_name(option: str, text: str) -> str:
    name = text.strip()
    if not name or len(name) > 100:
        _bad_value(option, text, "an account name (1 to 100 characters)")
    return name


def _limit_text(value: int | None, default: int) -> str:
    from daguerre.store.accounts import applied_limit

    applied = applied_limit(value, default)
    return "unlimited" if applied is None else str(applied)


# serve, worker, migrate: these may create the database ----------------------------------------


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind.", show_default="127.0.0.1")] = None,
    port: Annotated[int | None, typer.Option(help="Port to bind.", show_default="8000")] = None,
    data_dir: DataDirOpt = None,
    models: ModelsOpt = None,
    workers: Annotated[int | None, typer.Option(help="In-process workers.", show_default="1")] = None,
    config: ConfigOpt = None,
) -> None:
    """Run the API with N in-process workers on the embedded defaults (SQLite, local blobs).

    With execution = "temporal": the API, and unless --workers 0 one in-process Temporal worker (as
    `daguerre worker` runs)."""
    settings = _settings(config, host=host, port=port, data_dir=data_dir, models_file=models, workers=workers)
    temporal = settings.execution == "temporal"
    _choose_wait_policy(settings, 0 if temporal else settings.workers)
    import uvicorn

    from daguerre.api import create_app
    from daguerre.api.protocol import protocol_with_head_timeout
    from daguerre.blobs import open_blob_store
    from daguerre.worker import WorkerPool

    store = _open_store(settings, create=True)
    _first_run(settings, store)
    with _startup_errors():
        blobs = open_blob_store(settings)
        pool = WorkerPool(settings, store, blobs, 0 if temporal else settings.workers)
        runner = _temporal_runner(settings, store, blobs) if temporal and settings.workers > 0 else None
        app = create_app(settings, store, blobs, readiness=pool.readiness)
    server = _server(
        uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level,
            access_log=settings.log_level == "debug",
            timeout_graceful_shutdown=max(1, int(settings.shutdown_grace_s)),
            timeout_keep_alive=settings.http_keep_alive_s,
            http=protocol_with_head_timeout(settings.http_head_timeout_s),
        ),
        on_exit=pool.request_stop,
    )
    pool.start()
    if runner is not None:
        runner.start()
    try:
        server.run()
    finally:
        pool.stop()
        if runner is not None:
            runner.stop()
        store.close()


def _temporal_runner(settings: Settings, store: Store, blobs: Any) -> Any:
    """`daguerre serve`'s in-process Temporal worker: every activity, every model."""
    from daguerre.worker.temporal import RunnerThread, TemporalRunner

    return RunnerThread(TemporalRunner(settings, store, blobs))


def _choose_wait_policy(settings: Settings, workers: int) -> None:
    """OpenMP's wait policy, from the threads this process's workers will use; must happen before
    torch loads (see worker.threads)."""
    from daguerre.worker.threads import choose_wait_policy

    choose_wait_policy(settings.engine_threads, workers)


def _server(config: Any, on_exit: Callable[[], None]) -> Any:
    """A uvicorn.Server that also tells the workers to stop claiming the moment a signal arrives."""
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            on_exit()
            super().handle_exit(sig, frame)

    return Server(config)


@app.command()
def worker(
    data_dir: DataDirOpt = None,
    models: ModelsOpt = None,
    config: ConfigOpt = None,
    engine_only: Annotated[
        bool,
        typer.Option(
            "--engine-only",
            help="Run only the engine (the generate activity): needs Temporal and the blob store, "
            "no database. execution = temporal only.",
        ),
    ] = False,
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            help="Serve only this model's engine queue (repeatable, or comma-separated: "
            "--model uni-1,uni-1-max; default: every model in the models file). execution = temporal only.",
            show_default=False,
        ),
    ] = None,
    no_engine: Annotated[
        bool,
        typer.Option(
            "--no-engine",
            help="Run only the main queue (workflows, checks, results), no engine: for a host next "
            "to the database while engine-only workers run on the GPU hosts. execution = temporal only.",
        ),
    ] = False,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            min=1,
            max=65535,
            help="Serve this process's Prometheus metrics at http://HOST:PORT/metrics.",
            show_default=False,
        ),
    ] = None,
    metrics_host: Annotated[
        str, typer.Option("--metrics-host", help="Address for --metrics-port.")
    ] = "127.0.0.1",
) -> None:
    """Run one worker process against the same store and blobs as the API.

    SIGTERM or Ctrl-C: stop claiming, finish the running job within the grace time, or hand it back.
    With execution = "temporal": a Temporal worker for the main queue and the engine queue of each
    model (--engine-only: the engine queues alone, without the database; --no-engine: the main
    queue alone).
    """
    settings = _settings(config, data_dir=data_dir, models_file=models)
    if metrics_port is not None:
        _serve_metrics(metrics_host, metrics_port)
    if settings.execution == "temporal":
        if no_engine and (engine_only or model):
            _fail(USAGE, "--no-engine runs no engine: it goes with neither --engine-only nor --model")
        chosen = None if model is None else [name.strip() for names in model for name in names.split(",")]
        _temporal_worker(settings, engine_only=engine_only, models=[] if no_engine else chosen)
        return
    if engine_only or model or no_engine:
        _fail(USAGE, '--engine-only, --model and --no-engine need execution = "temporal"')
    _choose_wait_policy(settings, 1)
    from daguerre.blobs import open_blob_store
    from daguerre.worker import WorkerPool

    store = _open_store(settings, create=True)
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


def _serve_metrics(host: str, port: int) -> None:
    """This process's metrics over HTTP on a thread of prometheus-client's own."""
    from prometheus_client import start_http_server

    from daguerre import metrics

    metrics.register_process_collectors()
    try:
        start_http_server(port, addr=host, registry=metrics.REGISTRY)
    except OSError as error:
        _fail(STATE, f"--metrics-port {port}: {error.strerror or error}")


def _temporal_worker(settings: Settings, *, engine_only: bool, models: list[str] | None) -> None:
    import asyncio

    from daguerre.blobs import open_blob_store
    from daguerre.worker.temporal import TemporalRunner

    _choose_wait_policy(settings, 1)
    store = None if engine_only else _open_store(settings, create=True)  # engine-only: no database
    try:
        with _startup_errors():
            try:
                runner = TemporalRunner(
                    settings, store, open_blob_store(settings), models=models, engine_only=engine_only
                )
            except ValueError as exc:
                _fail(USAGE, str(exc))

        async def run() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, stop.set)
            await runner.run(stop)

        try:
            asyncio.run(run())
        except RuntimeError as exc:  # Temporal unreachable at start, say
            _fail(STATE, f"cannot run the Temporal worker at {settings.temporal_address}: {exc}")
    finally:
        if store is not None:
            store.close()
    _exit_without_teardown()


def _exit_without_teardown() -> NoReturn:
    """End a Temporal worker process once it has stopped cleanly, skipping the interpreter's
    teardown: the Temporal SDK's native threads can outlive it and abort the process (SIGABRT,
    "PyGILState_Release: thread state ... must be current when releasing", temporalio/sdk-python
    issue 300; seen here on an engine-only worker stopped with SIGTERM), which a supervisor would
    report as a crash. Everything of ours is closed by now; logs and output are flushed first."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


@app.command()
def migrate(data_dir: DataDirOpt = None, config: ConfigOpt = None) -> None:
    """Create the database, or bring its schema to the newest version (serve and worker also do
    this at start), and say which."""
    settings = _settings(config, data_dir=data_dir)
    typer.echo(_migrate(settings, create=True).describe())


def _first_run(settings: Settings, store: Store) -> None:
    """On an empty database: create the local account and its first key, print it once, and save
    it to a file only the current user can read.

    The local account is the owner's: it has no per-minute and no concurrency limit (`accounts
    set-limits local` gives it some). Accounts made with the CLI keep the deployment's defaults."""
    from daguerre.store.accounts import UNLIMITED

    if store.accounts.count() > 0:
        return
    account = store.accounts.create(FIRST_ACCOUNT, rpm_limit=UNLIMITED, concurrency_limit=UNLIMITED)
    _, token = store.accounts.create_key(account.id, name="first key")
    saved = write_private_file(settings.first_key_file, token + "\n")
    base = f"http://{settings.host}:{settings.port}/v1"
    typer.echo(
        f"\ndaguerre: created account '{FIRST_ACCOUNT}' and its first API key (shown once"
        + (f", saved to {settings.first_key_file}" if saved else "")
        + f"):\n\n    {token}\n\nUse it with the luma-agents SDK:\n\n"
        f"    export LUMA_AGENTS_API_KEY={token}\n    export LUMA_BASE_URL={base}\n"
    )


# keys: these need an existing database ---------------------------------------------------------


@keys_app.command("create")
def keys_create(
    account: Annotated[
        str, typer.Option(help="Account name or id; created if it does not exist.")
    ] = FIRST_ACCOUNT,
    name: Annotated[str | None, typer.Option(help="A label for the key.")] = None,
    expires_in_days: Annotated[
        str | None, typer.Option(help="Expire the key after this many days.", metavar="DAYS")
    ] = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Create a key and print it. It is shown once and stored only as a hash."""
    from daguerre.store.accounts import AccountExists, AccountNotFound

    account = _account_name("--account", account)
    days = _days("--expires-in-days", expires_in_days) if expires_in_days is not None else None
    settings = _settings(config, data_dir=data_dir)
    store = _open_store(settings)
    try:
        try:
            owner = store.accounts.get(account)
        except AccountNotFound:
            try:
                owner = store.accounts.create(account)
            except AccountExists:  # created by someone else just now
                owner = store.accounts.get(account)
            else:
                typer.echo(f"created account '{owner.name}' ({owner.id})", err=True)
        expires_at = datetime.now(UTC) + timedelta(days=days) if days is not None else None
        record, token = store.accounts.create_key(owner.id, name=name, expires_at=expires_at)
    finally:
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
    from daguerre.store.accounts import AccountNotFound

    settings = _settings(config, data_dir=data_dir)
    store = _open_store(settings)
    try:
        account_id = store.accounts.get(account).id if account else None
        keys = store.accounts.list_keys(account_id)
    except AccountNotFound:
        _fail(STATE, f"no account {account!r}")
    finally:
        store.close()
    now = datetime.now(UTC)
    typer.echo(f"{'ID':36}  {'PREFIX':16}  {'ACCOUNT':16}  {'STATE':8}  {'CREATED':16}  NAME")
    for key in keys:
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


@keys_app.command("revoke")
def keys_revoke(
    key: Annotated[str, typer.Argument(help="The key's id (or its listed prefix).")],
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Revoke a key; requests with it get 401 `API key has been revoked` from then on."""
    settings = _settings(config, data_dir=data_dir)
    store = _open_store(settings)
    try:
        revoked = store.accounts.revoke_key(key)
    finally:
        store.close()
    if not revoked:
        _fail(STATE, f"no single key matches {key!r}")
    typer.echo(f"revoked {key}")


# accounts: these need an existing database -----------------------------------------------------

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
        _fail(STATE, f"no account {name!r}")
    finally:
        store.close()


@accounts_app.command("create")
def accounts_create(
    name: Annotated[str, typer.Argument(help="A unique name.")],
    balance: Annotated[
        str | None, typer.Option(help="Make it metered with this balance in dollars.", metavar="USD")
    ] = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Create an account: unmetered, or metered with --balance (then each generation is charged).
    It is held to the deployment's default limits (`default_rpm`, `default_concurrency`)."""
    from daguerre.store.accounts import AccountExists

    name = _account_name("NAME", name)
    micro = _micro_dollars("--balance", balance) if balance is not None else None
    settings = _settings(config, data_dir=data_dir)
    store = _open_store(settings)
    try:
        account = store.accounts.create(name, balance=micro)
    except AccountExists:
        _fail(STATE, f"account {name!r} already exists")
    finally:
        store.close()
    typer.echo(f"created account '{account.name}' ({account.id})")


@accounts_app.command("list")
def accounts_list(data_dir: DataDirOpt = None, config: ConfigOpt = None) -> None:
    """Accounts with their status, balance, holds, spend this month and limits."""
    from daguerre.pricing import dollars

    settings = _settings(config, data_dir=data_dir)
    store = _open_store(settings)
    try:
        rows = [(account, store.accounts.spent_this_month(account.id)) for account in store.accounts.all()]
    finally:
        store.close()
    columns = ("NAME", "STATUS", "BALANCE", "HELD", "SPENT/MONTH", "CAP", "RPM", "JOBS")
    widths = (16, 11, 12, 10, 12, 10, 9, 9)
    typer.echo(
        "  ".join(
            f"{c:{w}}" if i < 2 else f"{c:>{w}}" for i, (c, w) in enumerate(zip(columns, widths, strict=True))
        )
    )
    for account, spent in rows:
        balance = dollars(account.balance) if account.metered else "unmetered"
        cap = dollars(account.spend_cap) if account.spend_cap is not None else "-"
        rpm = _limit_text(account.rpm_limit, settings.default_rpm)
        jobs = _limit_text(account.concurrency_limit, settings.default_concurrency)
        typer.echo(
            f"{account.name:16}  {account.status.value:11}  {balance:>12}  {dollars(account.reserved):>10}  "
            f"{dollars(spent):>12}  {cap:>10}  {rpm:>9}  {jobs:>9}"
        )


@accounts_app.command("set-balance")
def accounts_set_balance(
    name: AccountArg,
    amount: Annotated[str | None, typer.Argument(help="Dollars, e.g. 25 or 12.50.", metavar="USD")] = None,
    unmetered: Annotated[bool, typer.Option("--unmetered", help="Stop charging this account.")] = False,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Set the balance (the account becomes metered), or make it unmetered."""
    if (amount is None) == (not unmetered):
        _fail(USAGE, "give an amount or --unmetered (not both)")
    from daguerre.pricing import dollars

    value = None if amount is None else _micro_dollars("USD", amount)
    _account_action(
        config, data_dir, name, lambda store, account_id: store.accounts.set_balance(account_id, value)
    )
    typer.echo(f"{name}: " + ("unmetered" if value is None else f"balance set to {dollars(value)}"))


@accounts_app.command("set-limits")
def accounts_set_limits(
    name: AccountArg,
    rpm: Annotated[
        str | None,
        typer.Option(
            help="Creates per minute: a number, 'default' (the deployment's) or 'unlimited'.",
            metavar="N|default|unlimited",
        ),
    ] = None,
    concurrency: Annotated[
        str | None,
        typer.Option(
            help="Generations not yet finished: a number, 'default' (the deployment's) or 'unlimited'.",
            metavar="N|default|unlimited",
        ),
    ] = None,
    spend_cap: Annotated[
        str | None,
        typer.Option(help="Dollars per calendar month, or 'none' for no cap.", metavar="USD|none"),
    ] = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Per-account limits; generations waiting when a lowered cap is reached end as budget_exhausted."""
    limits: dict[str, int | None] = {}
    if rpm is not None:
        limits["rpm_limit"] = _limit("--rpm", rpm)
    if concurrency is not None:
        limits["concurrency_limit"] = _limit("--concurrency", concurrency)
    if spend_cap is not None:
        limits["spend_cap"] = (
            None if spend_cap.strip().lower() == "none" else _micro_dollars("--spend-cap", spend_cap)
        )
    if not limits:
        _fail(USAGE, "nothing to set: give --rpm, --concurrency or --spend-cap")
    _account_action(
        config, data_dir, name, lambda store, account_id: store.accounts.set_limits(account_id, **limits)
    )
    typer.echo(f"{name}: limits updated")


@accounts_app.command("webhook-secret")
def accounts_webhook_secret(
    name: AccountArg,
    rotate: Annotated[
        bool, typer.Option("--rotate", help="Make a new secret; the old one stops signing.")
    ] = False,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Print the account's webhook signing secret (`whsec_...`, made on first use): receivers verify
    the `webhook-signature` of each delivery with it (Standard Webhooks)."""
    shown: list[str] = []
    _account_action(config, data_dir, name, lambda s, a: shown.append(s.webhooks.secret(a, rotate=rotate)))
    typer.echo(shown[0])


@accounts_app.command("set-webhook")
def accounts_set_webhook(
    name: AccountArg,
    url: Annotated[
        str, typer.Argument(help="Where ended generations are POSTed, or 'none'.", metavar="URL|none")
    ],
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """The account's default webhook URL, for generations created without a `callback_url`."""
    from daguerre.fetch import UrlPolicy, url_problem

    chosen = None if url.strip().lower() == "none" else url.strip()
    if chosen is not None:
        settings = _settings(config, data_dir=data_dir)
        problem = url_problem(chosen, UrlPolicy.build(allow_http=settings.url_allow_http))
        if problem is not None or not chosen.lower().startswith(("http://", "https://")):
            _bad_value("URL", url, f"an http(s) URL ({problem or 'not http(s)'})")
    _account_action(config, data_dir, name, lambda s, a: s.webhooks.set_url(a, chosen))
    typer.echo(f"{name}: webhook URL {'removed' if chosen is None else chosen}")


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


# gc ----------------------------------------------------------------------------------------------


@app.command("gc")
def gc_command(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would be deleted, and delete nothing.")
    ] = False,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Apply the retention policy (retention_days) and delete orphaned blobs, once; print what was
    deleted. Processes running workers do the same every gc_interval_s."""
    settings = _settings(config, data_dir=data_dir)
    from daguerre.blobs import open_blob_store
    from daguerre.worker.sweep import Sweeper

    store = _open_store(settings)
    try:
        with _startup_errors():
            blobs = open_blob_store(settings)
        report = Sweeper(settings, store, blobs).sweep(dry_run=dry_run)
    finally:
        store.close()
    assert report is not None  # a new Sweeper is never busy
    if dry_run:
        typer.echo("dry run: nothing was deleted")
    typer.echo(report.describe())


def main() -> None:
    app()


if __name__ == "__main__":
    main()
