"""Async engines for the ledger: URL mapping and the SQLite discipline.

SQLite gets WAL, ``synchronous=FULL``, a ``busy_timeout``, foreign keys, and ``BEGIN
IMMEDIATE`` for every write transaction. The sqlite3 driver only emits ``BEGIN`` before DML,
so without this a ``SELECT`` followed by an ``UPDATE`` in one ``engine.begin()`` block is not
one transaction and concurrent read-modify-writes lose updates (see the field notes).
PostgreSQL needs none of this: row locks and single-statement compare-and-set do the work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from orchestrator.errors import ConfigError

READ_ONLY = "orchestrator_read_only"
"""Execution option: a transaction that only reads starts with a deferred ``BEGIN``.

Without it, SQLite transactions start with ``BEGIN IMMEDIATE`` (the write lock), so a
transaction that reads then writes can never be overtaken between the two.
"""

DEFAULT_BUSY_TIMEOUT = 30.0
"""Seconds a SQLite writer waits for another writer's lock before ``database is locked``."""

_ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
}


def parse_url(url: str) -> URL:
    """Parse a ledger URL, or raise a :class:`ConfigError` that says what is wrong.

    Raises:
        ConfigError: the URL cannot be parsed or names a database other than SQLite or
            PostgreSQL.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(
            f"cannot parse ledger URL {url!r} ({exc}); "
            "use sqlite:///path/to/ledger.db or postgresql://user@host/db",
            key="ledger.url",
        ) from None
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql", "postgres"):
        raise ConfigError(
            f"unsupported ledger database {backend!r} in "
            f"{parsed.render_as_string(hide_password=True)!r}; "
            "use sqlite:///path/to/ledger.db or postgresql://user@host/db",
            key="ledger.url",
        )
    return parsed


def async_url(url: str) -> str:
    """The URL with an async driver: ``sqlite://`` → aiosqlite, ``postgresql://`` → asyncpg.

    A URL that already names a driver (``postgresql+psycopg://``) is returned unchanged.

    Raises:
        ConfigError: as :func:`parse_url`.
    """
    parsed = parse_url(url)
    if "+" in parsed.drivername:
        return url
    return parsed.set(drivername=_ASYNC_DRIVERS[parsed.drivername]).render_as_string(
        hide_password=False
    )


def display_url(url: str) -> str:
    """``url`` with any password masked, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL; None for PostgreSQL and in-memory SQLite.

    Raises:
        ConfigError: as :func:`parse_url`.
    """
    parsed = parse_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database or ""
    if database in ("", ":memory:") or parsed.query.get("mode") == "memory":
        return None
    if database.startswith("file:"):
        # URI form (``?uri=true``): the path is everything before the URI's own query.
        database = database.removeprefix("file:").split("?", 1)[0]
        if database in ("", ":memory:"):
            return None
    return Path(database)


def is_sqlite(engine: AsyncEngine) -> bool:
    """True when ``engine`` talks to SQLite."""
    return engine.dialect.name == "sqlite"


def create_engine(url: str, *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> AsyncEngine:
    """An async engine for ``url`` (plain ``sqlite://``/``postgresql://`` URLs are mapped).

    SQLite connections run in WAL mode with ``synchronous=FULL``, foreign keys on and
    ``busy_timeout``; transactions begin with ``BEGIN IMMEDIATE`` unless the connection
    carries the :data:`READ_ONLY` execution option. The default pool is kept on purpose:
    ``NullPool`` costs five times more per transaction, ``StaticPool`` interleaves tasks on
    one connection.

    Args:
        url: the ledger URL.
        busy_timeout: seconds a SQLite writer waits for the write lock.

    Raises:
        ConfigError: as :func:`parse_url`.
    """
    target = async_url(url)
    if make_url(target).get_backend_name() != "sqlite":
        # A long-running daemon outlives server restarts and idle-connection reapers.
        return create_async_engine(target, pool_pre_ping=True)
    engine = create_async_engine(target)
    _install_sqlite_discipline(engine, busy_timeout_ms=round(busy_timeout * 1000))
    return engine


def _install_sqlite_discipline(engine: AsyncEngine, *, busy_timeout_ms: int) -> None:
    """Register the pragmas and the BEGIN handling on ``engine``."""

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take BEGIN away from the driver: it would skip it before SELECTs (see module doc).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {busy_timeout_ms:d}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = FULL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        if conn.get_execution_options().get(READ_ONLY):
            conn.exec_driver_sql("BEGIN")
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
