"""Alembic environment for the orchestrator ledger (async, no alembic.ini).

Three ways in:

- from :mod:`orchestrator.ledger.migrate`, which hands over an open connection in
  ``config.attributes["connection"]`` and owns the transaction;
- from the ``alembic`` command line with ``sqlalchemy.url`` set: an async engine of
  :func:`orchestrator.ledger.engine.create_engine` is made here, one transaction per revision;
- offline (``--sql``): the DDL is printed for the URL's dialect.

SQLite alters tables by copy-and-move (``render_as_batch``), which is why the metadata has a
naming convention.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy.engine import Connection, make_url

from orchestrator.ledger.engine import async_url, create_engine
from orchestrator.ledger.schema import JSONText, metadata

config = context.config


def render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    """Render project types as plain SQLAlchemy ones, so revisions never import the package."""
    if type_ == "type" and isinstance(obj, JSONText):
        return "sa.Text()"
    return False


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError(
            "no ledger to migrate: pass a connection in config.attributes['connection'] "
            "or set sqlalchemy.url (use orchestrator.ledger.migrate, or `orchestrator migrate`)"
        )
    return url


def run_migrations_offline() -> None:
    """Emit the migration SQL for the configured URL's dialect without connecting."""
    url = async_url(_url())
    context.configure(
        url=url,
        target_metadata=metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=make_url(url).get_backend_name() == "sqlite",
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    """Run the migrations on ``connection`` (sync, inside ``AsyncConnection.run_sync``)."""
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        transaction_per_migration=True,
        compare_type=True,
        render_item=render_item,
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations() -> None:
    """Connect with the project's engine and run the migrations."""
    engine = create_engine(_url())
    try:
        async with engine.connect() as connection:
            await connection.run_sync(do_run_migrations)
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    """Use the caller's connection when there is one, else connect."""
    connection = config.attributes.get("connection")
    if connection is not None:
        do_run_migrations(connection)
    else:
        asyncio.run(run_async_migrations())


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
