"""Alembic environment: the target metadata is daguerre.store.schema.metadata."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from daguerre.store.postgres import MIGRATION_LOCK
from daguerre.store.schema import metadata

config = context.config


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = sa.create_engine(config.get_main_option("sqlalchemy.url") or "", poolclass=sa.pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            if connection.dialect.name == "postgresql":
                # Processes starting at once (API processes, workers) migrate one after the other:
                # the lock is held until this transaction commits, and Alembic reads the revision
                # after it, so a later one finds the work done. SQLite: a file lock (migrate.py).
                connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
