"""The engine factory: URL mapping, SQLite pragmas and write locking, lost-update safety."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import anyio
import pytest
import sqlalchemy as sa

from orchestrator.errors import ConfigError
from orchestrator.ledger import SqlLedger
from orchestrator.ledger.engine import (
    READ_ONLY,
    async_url,
    create_engine,
    display_url,
    sqlite_path,
)
from orchestrator.ledger.schema import jobs
from tests.ledger.factories import add


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///var/ledger.db", "sqlite+aiosqlite:///var/ledger.db"),
        ("sqlite:////abs/ledger.db", "sqlite+aiosqlite:////abs/ledger.db"),
        ("sqlite://", "sqlite+aiosqlite://"),
        ("postgresql://u:p%40ss@db:5432/orch", "postgresql+asyncpg://u:p%40ss@db:5432/orch"),
        ("postgres://u@db/orch", "postgresql+asyncpg://u@db/orch"),
        ("postgresql://u@db/orch?ssl=require", "postgresql+asyncpg://u@db/orch?ssl=require"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("postgresql+asyncpg://u@db/orch", "postgresql+asyncpg://u@db/orch"),
        ("postgresql+psycopg://u@db/orch", "postgresql+psycopg://u@db/orch"),
    ],
)
def test_async_url_maps_plain_urls_and_keeps_explicit_drivers(url: str, expected: str) -> None:
    """Plain URLs get the async driver; passwords survive; explicit drivers are left alone."""
    assert async_url(url) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://u@db/orch", "unsupported ledger database 'mysql'"),
        ("not a url", "cannot parse ledger URL"),
    ],
)
def test_bad_ledger_urls_are_config_errors(url: str, message: str) -> None:
    """A URL of another database, or no URL at all, is a ConfigError naming ledger.url."""
    with pytest.raises(ConfigError, match=message) as info:
        async_url(url)
    assert info.value.key == "ledger.url"
    assert "sqlite:///" in str(info.value)


def test_errors_and_display_never_show_the_password() -> None:
    """The password is masked in messages and in display URLs."""
    with pytest.raises(ConfigError) as info:
        async_url("mysql://user:s3cret@db/orch")
    assert "s3cret" not in str(info.value)
    assert "s3cret" not in display_url("postgresql://user:s3cret@db/orch")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///var/ledger.db", Path("var/ledger.db")),
        ("sqlite+aiosqlite:////abs/l.db", Path("/abs/l.db")),
        ("sqlite:///file:/abs/l.db?uri=true", Path("/abs/l.db")),
        ("sqlite://", None),
        ("sqlite:///:memory:", None),
        ("sqlite:///file::memory:?cache=shared&uri=true", None),
        ("postgresql://u@db/orch", None),
    ],
)
def test_sqlite_path_finds_the_database_file(url: str, expected: Path | None) -> None:
    """The file behind a SQLite URL; None where there is no file."""
    assert sqlite_path(url) == expected


@pytest.mark.anyio
async def test_sqlite_connections_use_the_durable_settings(sqlite_url: str) -> None:
    """Every SQLite connection runs WAL, synchronous=FULL, foreign keys and a busy timeout."""
    engine = create_engine(sqlite_url, busy_timeout=2.5)
    try:
        async with engine.connect() as conn:
            pragmas = {
                name: (await conn.exec_driver_sql(f"PRAGMA {name}")).scalar()
                for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
            }
    finally:
        await engine.dispose()
    assert pragmas == {
        "journal_mode": "wal",
        "synchronous": 2,
        "foreign_keys": 1,
        "busy_timeout": 2500,
    }


@pytest.mark.anyio
async def test_sqlite_transactions_take_the_write_lock_unless_read_only(sqlite_url: str) -> None:
    """A write transaction holds the write lock from its first SELECT; a read-only one does not."""
    engine = create_engine(sqlite_url)
    other = sqlite3.connect(str(sqlite_path(sqlite_url)), timeout=0, isolation_level=None)
    try:
        async with engine.begin() as conn:
            await conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
        async with engine.begin() as conn:
            await conn.exec_driver_sql("SELECT count(*) FROM t")
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
        async with engine.execution_options(**{READ_ONLY: True}).connect() as conn:
            await conn.exec_driver_sql("SELECT count(*) FROM t")
            other.execute("BEGIN IMMEDIATE")
            other.execute("INSERT INTO t VALUES (1)")
            other.execute("COMMIT")
    finally:
        other.close()
        await engine.dispose()


@pytest.mark.anyio
async def test_read_modify_write_transactions_lose_no_update(
    ledger: SqlLedger, ledger_url: str
) -> None:
    """20 tasks x 25 increments, each SELECT ... FOR UPDATE then UPDATE: the count is exact."""
    job = await add(ledger)
    engine = create_engine(ledger_url)

    async def increment_many() -> None:
        for _ in range(25):
            async with engine.begin() as conn:
                current = await conn.scalar(
                    sa.select(jobs.c.step_retries).where(jobs.c.id == job.id).with_for_update()
                )
                assert current is not None
                await conn.execute(
                    jobs.update().where(jobs.c.id == job.id).values(step_retries=current + 1)
                )

    try:
        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(increment_many)
    finally:
        await engine.dispose()
    assert (await ledger.get(job.id)).step_retries == 500
