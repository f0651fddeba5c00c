"""The migrations build exactly the schema module, both ways, on both dialects."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from orchestrator.errors import LedgerError
from orchestrator.ledger import migrate
from orchestrator.ledger.engine import create_engine, sqlite_path
from orchestrator.ledger.migrate import (
    alembic_config,
    current_revision,
    downgrade,
    head_revision,
    migrations_dir,
    upgrade,
)
from orchestrator.ledger.schema import metadata

TABLES = {"jobs", "job_events", "result_files", "outbox_events", "outbox_deliveries"}


def _differences(conn: Connection) -> list[object]:
    context = MigrationContext.configure(
        conn, opts={"compare_type": True, "compare_server_default": True}
    )
    return list(compare_metadata(context, metadata))


def _tables(conn: Connection) -> set[str]:
    return set(sa.inspect(conn).get_table_names()) - {"alembic_version"}


async def _inspect(url: str) -> tuple[list[object], set[str]]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(_differences), await conn.run_sync(_tables)
    finally:
        await engine.dispose()


@pytest.mark.anyio
async def test_upgrade_downgrade_upgrade_matches_the_schema(ledger_url: str) -> None:
    """upgrade head == schema.py; downgrade base leaves nothing; upgrade head again == schema."""
    assert await current_revision(ledger_url) is None
    await upgrade(ledger_url)
    assert await current_revision(ledger_url) == head_revision()
    assert await _inspect(ledger_url) == ([], TABLES)

    await downgrade(ledger_url)
    assert await current_revision(ledger_url) is None
    assert (await _inspect(ledger_url))[1] == set()

    await upgrade(ledger_url)
    assert await current_revision(ledger_url) == head_revision()
    assert await _inspect(ledger_url) == ([], TABLES)


@pytest.mark.anyio
async def test_upgrade_is_idempotent(ledger_url: str) -> None:
    """Upgrading a ledger already at head changes nothing."""
    await upgrade(ledger_url)
    await upgrade(ledger_url)
    assert await current_revision(ledger_url) == head_revision()


@pytest.mark.anyio
async def test_constraints_guard_the_stored_values(ledger_url: str) -> None:
    """The database itself refuses unknown states and file kinds and orphan rows."""
    await upgrade(ledger_url)
    engine = create_engine(ledger_url)
    row = {
        "name": "j",
        "workspace": "w",
        "model": "m",
        "endpoint": "/e",
        "inputs": "[]",
        "metadata": "{}",
        "timeout_hours": 24,
        "definition_hash": "h",
        "client_token": "orch-1",
        "request_count": 1,
        "input_file_ids": "[]",
        "created_at": 0.0,
        "updated_at": 0.0,
    }
    jobs = sa.table("jobs", *(sa.column(name) for name in (*row, "state")))
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.insert(jobs).values(**row, state="queued"))
        bad_rows: list[sa.Executable] = [
            sa.insert(jobs).values(
                **{**row, "name": "k", "client_token": "orch-2"}, state="paused"
            ),
            sa.text(
                "INSERT INTO result_files (job_id, kind, path, bytes, sha256, lines, recorded_at)"
                " VALUES (1, 'debug', '/p', 1, 'x', 1, 0)"
            ),
            sa.text("INSERT INTO job_events (job_id, at, to_state) VALUES (999, 0, 'queued')"),
            sa.insert(jobs).values(**{**row, "client_token": "orch-3"}, state="queued"),
            sa.insert(jobs).values(**{**row, "name": "other"}, state="queued"),
        ]
        for statement in bad_rows:
            with pytest.raises(sa.exc.IntegrityError):
                async with engine.begin() as conn:
                    await conn.execute(statement)
    finally:
        await engine.dispose()


@pytest.mark.anyio
async def test_upgrade_creates_the_folder_of_a_sqlite_ledger(tmp_path: Path) -> None:
    """`migrate` on a fresh machine creates var/ for the SQLite file."""
    url = f"sqlite:///{tmp_path / 'var' / 'state' / 'ledger.db'}"
    await upgrade(url)
    assert (tmp_path / "var" / "state" / "ledger.db").is_file()
    assert await current_revision(url) == head_revision()


def test_the_alembic_command_line_path_migrates_from_a_url(sqlite_url: str) -> None:
    """env.py run without a connection (as by the alembic CLI) connects by itself."""
    command.upgrade(alembic_config(sqlite_url), "head")
    path = sqlite_path(sqlite_url)
    assert path is not None
    with sa.create_engine(f"sqlite:///{path}").connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == head_revision()
        assert _differences(conn) == []
    sa.create_engine(f"sqlite:///{path}").dispose()


@pytest.mark.parametrize(
    ("url", "dialect_marker"),
    [("sqlite:///x.db", "CREATE TABLE jobs"), ("postgresql://u@db/x", "DOUBLE PRECISION")],
)
def test_offline_mode_prints_the_ddl(url: str, dialect_marker: str) -> None:
    """`--sql` mode renders the DDL for the URL's dialect without connecting."""
    config = alembic_config(url)
    buffer = io.StringIO()
    config.output_buffer = buffer
    command.upgrade(config, "head", sql=True)
    ddl = buffer.getvalue()
    assert dialect_marker in ddl
    assert all(f"CREATE TABLE {table}" in ddl for table in TABLES)


def test_there_is_one_head_and_dated_revision_files() -> None:
    """A single head, reachable from base, in files named by date."""
    script = ScriptDirectory.from_config(alembic_config())
    assert script.get_heads() == [head_revision()]
    assert [rev.down_revision for rev in script.walk_revisions()][-1] is None
    files = sorted(p.name for p in (migrations_dir() / "versions").glob("*.py"))
    assert files
    for name in files:
        assert re.fullmatch(r"\d{4}_\d{2}_\d{2}_\d{4}-[0-9a-f]{12}_\w+\.py", name), name
    revisions = {rev.revision for rev in script.walk_revisions()}
    assert {name.split("-")[1].split("_")[0] for name in files} == revisions


def test_revisions_do_not_import_the_package() -> None:
    """Revision scripts stay frozen: they must not depend on code that keeps changing."""
    for path in (migrations_dir() / "versions").glob("*.py"):
        assert "orchestrator" not in path.read_text(), path.name


def test_migrations_are_found_in_the_package_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wheel's orchestrator/_migrations wins over a migrations/ folder beside the package."""
    package = tmp_path / "site" / "orchestrator"
    for folder in (package / "_migrations", tmp_path / "site" / "migrations"):
        (folder / "versions").mkdir(parents=True)
        (folder / "env.py").write_text("")
    monkeypatch.setattr(migrate, "_PACKAGE_DIR", package)
    assert migrations_dir() == package / "_migrations"
    (package / "_migrations" / "env.py").unlink()
    assert migrations_dir() == tmp_path / "site" / "migrations"
    (tmp_path / "site" / "migrations" / "env.py").unlink()
    with pytest.raises(LedgerError, match="cannot find the ledger migrations"):
        migrations_dir()


def test_the_source_tree_migrations_are_used_from_a_checkout() -> None:
    """In a checkout (editable install) the top-level migrations/ folder is the one used."""
    assert migrations_dir() == Path(__file__).resolve().parents[2] / "migrations"


@pytest.mark.anyio
async def test_autogenerate_writes_nothing_when_the_schema_is_at_head() -> None:
    """With schema.py matching the head, asking for a new revision fails and writes no file."""
    versions = migrations_dir() / "versions"
    before = set(versions.iterdir())
    try:
        with pytest.raises(LedgerError, match="nothing to write a revision for"):
            await migrate.autogenerate_revision("no change")
    finally:
        for stray in set(versions.iterdir()) - before:
            stray.unlink()
    assert set(versions.iterdir()) == before
