"""Alembic migrations, on SQLite and PostgreSQL: the newest revision builds exactly the schema the
code declares, and every revision goes down and up again."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from daguerre.store.migrate import downgrade, upgrade
from daguerre.store.schema import metadata
from support.postgres import fresh_database


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    """An empty database of each kind: a SQLite file, a fresh database on the test PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'm.db'}"
    return fresh_database(request.getfixturevalue("postgres_url"))


def test_upgrade_head_matches_the_declared_schema(database_url):
    url = database_url
    upgrade(url)
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    engine.dispose()
    assert diff == []


def test_downgrade_to_base_and_up_again(database_url):
    url = database_url
    upgrade(url)
    downgrade(url, "base")
    engine = sa.create_engine(url)
    assert set(sa.inspect(engine).get_table_names()) == {"alembic_version"}
    upgrade(url)
    assert {"accounts", "api_keys", "generations"} <= set(sa.inspect(engine).get_table_names())
    engine.dispose()


def test_sqlite_runs_in_wal_mode(store):
    with store.db.read() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
