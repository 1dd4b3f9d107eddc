"""A PostgreSQL server for tests: the machine's PostgreSQL 15 binaries, a cluster in a temporary
directory, listening on a free loopback port, stopped at the end. Run as the `postgres` user when
the tests run as root (initdb refuses root)."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from support.helpers import free_port

DEBIAN_BINARIES = Path("/usr/lib/postgresql/15/bin")


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
def postgres_server(directory: Path) -> Iterator[str]:
    """Start a throwaway cluster; yields the URL of its `postgres` database (SQLAlchemy, psycopg 3)."""
    directory.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(directory, "postgres")
        directory.chmod(0o755)
        for parent in directory.parents:  # the server user must reach its directory
            if parent == Path("/"):
                break
            parent.chmod(parent.stat().st_mode | 0o011)
    data = directory / "data"
    port = free_port()
    subprocess.run(
        _as_server_user([_binary("initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync"]),
        check=True,
        capture_output=True,
    )
    options = (
        f"-c listen_addresses=127.0.0.1 -p {port} -k {directory} "
        "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
    )
    pg_ctl = _binary("pg_ctl")
    subprocess.run(
        _as_server_user(
            [pg_ctl, "-D", str(data), "-l", str(directory / "log"), "-w", "-o", options, "start"]
        ),
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            _as_server_user([pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"]), capture_output=True
        )


def fresh_database(server_url: str) -> str:
    """A new, empty database on the server; its URL."""
    import sqlalchemy as sa

    name = f"test_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    engine.dispose()
    return server_url.rsplit("/", 1)[0] + f"/{name}"
