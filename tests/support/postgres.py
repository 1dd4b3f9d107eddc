"""A PostgreSQL server for tests: the machine's PostgreSQL 15 binaries, a cluster in a temporary
directory, listening on a free loopback port, stopped at the end. Run as the `postgres` user when
the tests run as root (initdb refuses root).

The cluster lives in a directory of its own under the system's temporary directory, not under
pytest's `pytest-of-<user>`: every pytest session that starts resets that directory to mode 0700,
which locked the `postgres` user out of a running cluster's files (pg_ctl could no longer stop it).
The server is stopped by signalling its postmaster, which needs no access to its files, and a
watchdog stops it if the tests are killed before they can.

Tests take a database of their own: `fresh_database` (empty) or `migrated_database` (a copy of a
template database at the newest revision, which costs a few milliseconds instead of a migration
run); `drop_database` removes one, closing whatever connections are left on it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from support.helpers import free_port

DEBIAN_BINARIES = Path("/usr/lib/postgresql/15/bin")
TEMPLATE = "daguerre_template"


def _binary(name: str) -> str:
    found = DEBIAN_BINARIES / name
    if found.exists():
        return str(found)
    on_path = shutil.which(name)
    if on_path is None:
        raise RuntimeError(f"PostgreSQL's {name} is not installed (apt-get install postgresql-15)")
    return on_path


def _as_server_user(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@contextmanager
def postgres_server() -> Iterator[str]:
    """Start a throwaway cluster; yields the URL of its `postgres` database (SQLAlchemy, psycopg 3)."""
    directory = Path(tempfile.mkdtemp(prefix="daguerre-postgres-"))
    try:
        if os.geteuid() == 0:
            shutil.chown(directory, "postgres")
        directory.chmod(0o755)
        data = directory / "data"
        port = free_port()
        subprocess.run(
            _as_server_user(
                [_binary("initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync"]
            ),
            check=True,
            capture_output=True,
        )
        options = (
            f"-c listen_addresses=127.0.0.1 -p {port} -k {directory} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
        )
        subprocess.run(
            _as_server_user(
                [
                    _binary("pg_ctl"),
                    "-D",
                    str(data),
                    "-l",
                    str(directory / "log"),
                    "-w",
                    "-o",
                    options,
                    "start",
                ]
            ),
            check=True,
            capture_output=True,
        )
        postmaster = int((data / "postmaster.pid").read_text().split()[0])
        # Should the tests be killed before they stop the server, this stops it within a second.
        watchdog = subprocess.Popen(
            [
                "sh",
                "-c",
                f"while kill -0 {os.getpid()} 2>/dev/null; do sleep 1; done; "
                f'kill -QUIT {postmaster}; sleep 2; rm -rf "{directory}"',
            ],
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
        finally:
            watchdog.kill()
            watchdog.wait()
            _stop(postmaster)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _stop(pid: int) -> None:
    """Immediate shutdown (what `pg_ctl -m immediate` sends), then wait for the postmaster to go."""
    try:
        os.kill(pid, signal.SIGQUIT)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)


def _admin(server_url: str, *statements: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(server_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            for statement in statements:
                conn.exec_driver_sql(statement)
    finally:
        engine.dispose()


def _url(server_url: str, name: str) -> str:
    return server_url.rsplit("/", 1)[0] + f"/{name}"


def fresh_database(server_url: str) -> str:
    """A new, empty database on the server; its URL."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    _admin(server_url, f'CREATE DATABASE "{name}"')
    return _url(server_url, name)


def make_template(server_url: str) -> None:
    """The template database `migrated_database` copies: empty, at the newest revision."""
    from daguerre.store.migrate import upgrade

    _admin(server_url, f'DROP DATABASE IF EXISTS "{TEMPLATE}"', f'CREATE DATABASE "{TEMPLATE}"')
    upgrade(_url(server_url, TEMPLATE))


def migrated_database(server_url: str) -> str:
    """A new database at the newest revision (a copy of the template; see `make_template`)."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    _admin(server_url, f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}" STRATEGY FILE_COPY')
    return _url(server_url, name)


def drop_database(url: str) -> None:
    """Drop the database of `url`, ending the sessions still connected to it."""
    server_url, name = url.rsplit("/", 1)
    _admin(f"{server_url}/postgres", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
