"""Opening a ledger: the schema must be at head, and nothing is created by accident."""

from __future__ import annotations

import sqlite3

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from orchestrator.clock import FakeClock
from orchestrator.errors import ConfigError, LedgerError, LedgerNotMigrated
from orchestrator.ledger import SqlLedger
from orchestrator.ledger.engine import create_engine, sqlite_path
from orchestrator.ledger.migrate import current_revision, head_revision, upgrade

pytestmark = pytest.mark.anyio


async def test_a_missing_sqlite_file_is_not_migrated_and_not_created(sqlite_url: str) -> None:
    """Connecting to a file that does not exist raises LedgerNotMigrated and creates nothing."""
    with pytest.raises(LedgerNotMigrated) as info:
        await SqlLedger.connect(sqlite_url)
    assert info.value.current is None
    assert info.value.head == head_revision()
    assert "orchestrator migrate" in str(info.value)
    path = sqlite_path(sqlite_url)
    assert path is not None
    assert not path.exists()


async def test_an_empty_database_is_not_migrated(ledger_url: str) -> None:
    """A database without the schema (an empty SQLite file, a new PostgreSQL db) is refused."""
    path = sqlite_path(ledger_url)
    if path is not None:
        sqlite3.connect(path).close()
        assert path.exists()
    with pytest.raises(LedgerNotMigrated, match="at schema revision none"):
        await SqlLedger.connect(ledger_url)


async def test_a_ledger_at_another_revision_is_refused(ledger_url: str) -> None:
    """A revision the code does not expect (older or newer) is named in the error."""
    await upgrade(ledger_url)
    engine = create_engine(ledger_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text("UPDATE alembic_version SET version_num = 'f00dfeed'"))
    finally:
        await engine.dispose()
    with pytest.raises(LedgerNotMigrated, match="f00dfeed") as info:
        await SqlLedger.connect(ledger_url)
    assert info.value.current == "f00dfeed"


async def test_a_migrated_ledger_opens_and_closes(ledger_url: str, clock: FakeClock) -> None:
    """After upgrade the ledger opens; close is idempotent; the URL shown hides the password."""
    await upgrade(ledger_url)
    ledger = await SqlLedger.connect(ledger_url, clock=clock)
    assert await ledger.list_jobs() == []
    assert ledger.url.split("://")[0] in ("sqlite", "postgresql")
    await ledger.close()
    await ledger.close()


async def test_an_unsupported_url_is_a_config_error() -> None:
    """A URL of another database fails with a configuration error, before connecting."""
    with pytest.raises(ConfigError, match="mysql"):
        await SqlLedger.connect("mysql://u@db/orch")


async def test_an_unreachable_server_is_a_clear_ledger_error() -> None:
    """Nobody listening on the port: LedgerError naming the URL, without the password."""
    url = "postgresql://orch:s3cret@127.0.0.1:1/orch"
    for open_ledger in (SqlLedger.connect, upgrade, current_revision):
        with pytest.raises(LedgerError, match="cannot open the ledger") as info:
            await open_ledger(url)
        assert "127.0.0.1:1" in str(info.value)
        assert "s3cret" not in str(info.value)


@pytest.mark.postgres
async def test_a_missing_postgres_database_is_named(postgres_url: str) -> None:
    """A database that does not exist is reported as such, not as a bare driver error."""
    missing = make_url(postgres_url).set(database="orch_no_such_db").render_as_string(False)
    with pytest.raises(LedgerError, match='"orch_no_such_db" does not exist'):
        await SqlLedger.connect(missing)


async def test_an_unknown_revision_is_a_clear_ledger_error(ledger_url: str) -> None:
    """Migrating to a revision the code does not know raises LedgerError naming it."""
    with pytest.raises(LedgerError, match="'f00dfeed'"):
        await upgrade(ledger_url, "f00dfeed")
    assert await current_revision(ledger_url) is None
