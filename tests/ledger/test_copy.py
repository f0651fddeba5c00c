"""copy_ledger: every row over (keys, times, order, part links), leases cleared, refusals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from orchestrator.clock import FakeClock
from orchestrator.errors import CopyRefused, LedgerError
from orchestrator.ledger import PartSpec, SqlLedger, copy
from orchestrator.ledger.copy import copy_ledger, copy_order
from orchestrator.ledger.engine import create_engine
from orchestrator.ledger.migrate import head_revision, upgrade
from orchestrator.model import JobState, Outcome
from tests.ledger.factories import SHA, add, bring_to, make_spec

pytestmark = pytest.mark.anyio

FIRST_REVISION = "db86b8589d7f"


async def build(url: str, clock: FakeClock, *, owner: str | None = "replica-a") -> None:
    """A ledger with a job in most states, a split job with parts, events, files and leases."""
    await upgrade(url)
    async with await SqlLedger.connect(url, clock=clock) as ledger:
        await add(ledger, "queued", priority=2)
        for state in (JobState.ADMITTED, JobState.RUNNING, JobState.COLLECTING):
            clock.advance(7.25)
            await bring_to(ledger, await add(ledger, state.value), state)
        done = await bring_to(ledger, await add(ledger, "done"), JobState.COLLECTING)
        for kind in ("output", "error"):
            await ledger.record_file(
                done.id, kind, path=f"/r/done/{kind}.jsonl", bytes=12, sha256=SHA, lines=3
            )
        await ledger.transition(
            done.id, JobState.COLLECTING, JobState.DONE, outcome=Outcome.PARTIAL, failed=1
        )
        rejected = await add(ledger, "rejected")
        await ledger.transition(rejected.id, JobState.QUEUED, JobState.REJECTED, error="bad line")
        await ledger.request_cancel("queued")
        parent, _ = await ledger.add_split_job(
            make_spec("big"),
            definition_hash="h-big",
            request_count=30,
            parts=[PartSpec(inputs=(f"/r/big/{i}.jsonl",), request_count=10) for i in range(3)],
        )
        first = (await ledger.parts(parent.id))[0]
        await bring_to(ledger, first, JobState.RUNNING)
        if owner is not None:
            ledger.act_as(owner, lease_ttl=None)
            assert await ledger.claim_all() > 0


async def dump(url: str) -> dict[str, list[dict[str, Any]]]:
    """Every row of every schema table, in key order."""
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return {
                table.name: [
                    dict(row._mapping)
                    for row in await conn.execute(
                        sa.select(table).order_by(*table.primary_key.columns)
                    )
                ]
                for table in copy_order()
            }
    finally:
        await engine.dispose()


def without_leases(rows: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """The dump with the lease columns dropped."""
    cleared = dict(rows)
    cleared["jobs"] = [
        {k: v for k, v in job.items() if k not in ("claimed_by", "lease_until")}
        for job in rows["jobs"]
    ]
    return cleared


@pytest.fixture
def other_url(tmp_path: Path) -> str:
    """A second SQLite URL (its file does not exist yet)."""
    return f"sqlite:///{tmp_path / 'copy' / 'ledger.db'}"


@pytest.mark.postgres
async def test_sqlite_to_postgres_and_back_keeps_every_row(
    sqlite_url: str, postgres_url: str, other_url: str, clock: FakeClock
) -> None:
    """SQLite -> PostgreSQL -> SQLite: the same rows (keys, times, links), no lease left."""
    await build(sqlite_url, clock)
    before = await dump(sqlite_url)
    assert any(job["claimed_by"] for job in before["jobs"])
    there = await copy_ledger(sqlite_url, postgres_url, clock=clock, batch_size=3)
    back = await copy_ledger(postgres_url, other_url, clock=clock, batch_size=2)
    assert there.leases_cleared > 0 and back.leases_cleared == 0
    assert there.rows == back.rows == {name: len(rows) for name, rows in before.items()}
    for url in (postgres_url, other_url):
        after = await dump(url)
        assert without_leases(after) == without_leases(before)
        assert all(
            job["claimed_by"] is None and job["lease_until"] is None for job in after["jobs"]
        )
    # The sequences follow the copied ids: new rows get fresh keys on both.
    for url in (postgres_url, other_url):
        async with await SqlLedger.connect(url, clock=clock) as ledger:
            new = await add(ledger, "after-copy")
            assert new.id == max(job["id"] for job in before["jobs"]) + 1
            assert (await ledger.events(new.id))[0].id == len(before["job_events"]) + 1


async def test_sqlite_to_sqlite_in_small_batches(
    sqlite_url: str, other_url: str, clock: FakeClock
) -> None:
    """Batches of one copy the same rows; the parts point at their parent."""
    await build(sqlite_url, clock)
    report = await copy_ledger(sqlite_url, other_url, clock=clock, batch_size=1)
    assert report.rows["jobs"] == 10 and report.rows["result_files"] == 2
    assert without_leases(await dump(other_url)) == without_leases(await dump(sqlite_url))
    async with await SqlLedger.connect(other_url, clock=clock) as ledger:
        parent = await ledger.get_by_name("big")
        assert [p.name for p in await ledger.parts(parent.id)] == [
            f"big/part-000{i}" for i in (1, 2, 3)
        ]


async def test_a_failure_leaves_the_target_empty(
    sqlite_url: str, other_url: str, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write failing after some rows went over rolls the whole copy back."""
    await build(sqlite_url, clock)
    real, calls = copy._write, []

    async def failing(*args: Any) -> None:
        calls.append(args)
        if len(calls) == 3:
            raise LedgerError("disk on fire")
        await real(*args)

    monkeypatch.setattr(copy, "_write", failing)
    with pytest.raises(LedgerError, match="disk on fire"):
        await copy_ledger(sqlite_url, other_url, clock=clock, batch_size=2)
    assert all(rows == [] for rows in (await dump(other_url)).values())
    monkeypatch.setattr(copy, "_write", real)
    await copy_ledger(sqlite_url, other_url, clock=clock)  # the empty target is fine again


@pytest.mark.postgres
async def test_a_row_postgres_refuses_rolls_back(
    sqlite_url: str, postgres_url: str, clock: FakeClock
) -> None:
    """A name too long for PostgreSQL's column (SQLite stored it) fails the copy cleanly."""
    await build(sqlite_url, clock, owner=None)
    engine = create_engine(sqlite_url)
    async with engine.begin() as conn:
        await conn.execute(sa.text("UPDATE jobs SET name = :n WHERE id = 9"), {"n": "x" * 400})
    await engine.dispose()
    with pytest.raises(
        LedgerError, match=r"rows of jobs into the ledger postgresql://.*\(the target stays empty\)"
    ):
        await copy_ledger(sqlite_url, postgres_url, clock=clock, batch_size=4)
    assert all(rows == [] for rows in (await dump(postgres_url)).values())


async def test_refuses_a_target_with_rows(
    sqlite_url: str, other_url: str, clock: FakeClock
) -> None:
    """A target holding jobs is refused before it is migrated or written."""
    await build(sqlite_url, clock)
    await upgrade(other_url, FIRST_REVISION)
    engine = create_engine(other_url)
    async with engine.begin() as conn:
        values = {"i": "[]", "m": "{}", "t": 1.0}
        await conn.execute(
            sa.text(
                "INSERT INTO jobs (name, workspace, model, endpoint, inputs, metadata, "
                "timeout_hours, definition_hash, client_token, request_count, state, "
                "input_file_ids, created_at, updated_at) VALUES ('old', 'w', 'm', '/e', :i, :m, "
                "1, 'h', 'tok', 1, 'queued', :i, :t, :t)"
            ),
            values,
        )
    await engine.dispose()
    with pytest.raises(CopyRefused, match=r"--to: the ledger .* is not empty \(1 jobs"):
        await copy_ledger(sqlite_url, other_url, clock=clock)
    engine = create_engine(other_url)
    async with engine.connect() as conn:
        version = await conn.scalar(sa.text("SELECT version_num FROM alembic_version"))
    await engine.dispose()
    assert version == FIRST_REVISION  # not even migrated


async def test_refuses_a_source_behind_the_head(
    sqlite_url: str, other_url: str, clock: FakeClock
) -> None:
    """A source at an older revision is refused with the command that upgrades it."""
    await upgrade(sqlite_url, FIRST_REVISION)
    with pytest.raises(CopyRefused, match=f"not the head {head_revision()}.*orchestrator migrate"):
        await copy_ledger(sqlite_url, other_url, clock=clock)
    assert not Path(other_url.removeprefix("sqlite:///")).exists()


async def test_refuses_a_ledger_a_daemon_holds(
    sqlite_url: str, other_url: str, clock: FakeClock
) -> None:
    """A SQLite source or target under the daemon lock is refused, naming the pid."""
    await build(sqlite_url, clock)
    await upgrade(other_url)
    for held, message in ((sqlite_url, "--from"), (other_url, "--to")):
        async with await SqlLedger.connect(held, clock=clock) as ledger, ledger.daemon_lock():
            with pytest.raises(CopyRefused, match=rf"{message}: a running daemon \(pid \d+\)"):
                await copy_ledger(sqlite_url, other_url, clock=clock)
    assert all(rows == [] for rows in (await dump(other_url)).values())


@pytest.mark.parametrize(
    ("source", "target", "message"),
    [
        ("mysql://h/db", "sqlite:///{tmp}/b.db", "--from: unsupported ledger database 'mysql'"),
        ("sqlite:///{tmp}/a.db", "nonsense", "--to: cannot parse ledger URL 'nonsense'"),
        ("sqlite:///{tmp}/missing.db", "sqlite:///{tmp}/b.db", "--from: the SQLite ledger"),
        ("sqlite:///{tmp}/a.db", "sqlite://", "--to: .* is an in-memory SQLite database"),
        ("sqlite:///{tmp}/a.db", "sqlite:///{tmp}/../{name}/a.db", "name the same ledger"),
        (
            "postgresql://u@db.example/ledger",
            "postgresql+asyncpg://v@DB.example:5432/ledger",
            "name the same ledger",
        ),
    ],
)
async def test_refuses_bad_urls(
    tmp_path: Path, clock: FakeClock, source: str, target: str, message: str
) -> None:
    """Malformed, unsupported, missing, in-memory and identical ledgers: refused, untouched."""
    await upgrade(f"sqlite:///{tmp_path}/a.db")
    fill = {"tmp": str(tmp_path), "name": tmp_path.name}
    with pytest.raises(CopyRefused, match=message):
        await copy_ledger(source.format(**fill), target.format(**fill), clock=clock)
    assert not (tmp_path / "b.db").exists()


@pytest.mark.postgres
async def test_refuses_a_postgres_source_with_live_replicas(
    postgres_url: str, other_url: str, clock: FakeClock
) -> None:
    """A live replica's presence session, then its unexpired leases, are refused by name."""
    await build(postgres_url, clock, owner=None)
    async with await SqlLedger.connect(postgres_url, clock=clock) as ledger:
        async with ledger.replica_session("replica-b"):
            with pytest.raises(CopyRefused, match=r"live replicas \('replica-b'"):
                await copy_ledger(postgres_url, other_url, clock=clock)
        ledger.act_as("replica-b", lease_ttl=60)
        await ledger.claim_orphans()
    with pytest.raises(CopyRefused, match=r"replica 'replica-b' holds unexpired leases on 4 jobs"):
        await copy_ledger(postgres_url, other_url, clock=clock)
    clock.advance(61)  # a dead replica's leases have expired: the copy may go on
    report = await copy_ledger(postgres_url, other_url, clock=clock)
    assert report.leases_cleared == 4
