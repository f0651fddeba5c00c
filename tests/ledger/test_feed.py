"""Contract suite: the API's reads (pages of jobs, the event feed), on both backends."""

from __future__ import annotations

import secrets

import pytest
import sqlalchemy as sa

from orchestrator.clock import FakeClock
from orchestrator.ledger import SqlLedger
from orchestrator.ledger.schema import jobs
from orchestrator.model import JobState
from tests.ledger.factories import add

pytestmark = pytest.mark.anyio


async def _bulk(ledger: SqlLedger, count: int, now: float) -> None:
    """``count`` done jobs in one transaction, priorities 0-4 (a direct insert: fast)."""
    rows = [
        {
            "name": f"bulk-{i:05d}",
            "workspace": "main" if i % 3 else "other",
            "model": "m",
            "endpoint": "/v1/chat/completions",
            "inputs": ["/data/x.jsonl"],
            "metadata": {},
            "timeout_hours": 24,
            "priority": i % 5,
            "definition_hash": f"h{i}",
            "client_token": secrets.token_hex(16),
            "request_count": 1,
            "state": "done",
            "outcome": "succeeded",
            "input_file_ids": [],
            "created_at": now,
            "updated_at": now,
        }
        for i in range(count)
    ]
    async with ledger._write() as conn:
        await conn.execute(jobs.insert(), rows)


async def test_ten_thousand_jobs_come_in_pages_in_admission_order(
    ledger: SqlLedger, clock: FakeClock
) -> None:
    """Keyset pages cover every job once, in list_jobs order, with the total of the filter."""
    await _bulk(ledger, 10_000, clock.now())
    expected = [job.name for job in await ledger.list_jobs()]
    seen: list[str] = []
    after = None
    while True:
        page, total = await ledger.jobs_page(after=after, limit=1000)
        assert total == 10_000
        seen += [job.name for job in page]
        if len(page) < 1000:
            break
        after = (page[-1].priority, page[-1].id)
    assert seen == expected
    other, total = await ledger.jobs_page(workspace="other", limit=5)
    assert total == 3334 and {job.workspace for job in other} == {"other"}
    none, total = await ledger.jobs_page(states=[JobState.RUNNING])
    assert (none, total) == ([], 0)


async def test_the_event_feed_reads_after_an_id(ledger: SqlLedger, clock: FakeClock) -> None:
    """events_after and recent_events see every job's history in id order; changed_since
    sees updates at or after a time."""
    first = await add(ledger, "first")
    clock.advance(10)
    second = await add(ledger, "second")
    await ledger.request_cancel("first")
    everything = await ledger.events_after(0)
    assert [(e.job_id, e.detail) for e in everything] == [
        (first.id, "created"),
        (second.id, "created"),
        (first.id, "cancel requested"),
    ]
    assert await ledger.events_after(everything[0].id, limit=1) == everything[1:2]
    assert await ledger.recent_events(2) == everything[1:]
    changed = await ledger.changed_since(clock.now())
    assert {job.name for job in changed} == {"first", "second"}
    assert [job.name for job in await ledger.changed_since(clock.now() + 1)] == []
    found = await ledger.jobs_by_ids([first.id, second.id, 999])
    assert set(found) == {first.id, second.id}
    page, total = await ledger.jobs_page(after=(0, first.id))
    assert ([job.name for job in page], total) == (["second"], 2)
    # A part is left out unless asked for.
    async with ledger._write() as conn:
        await conn.execute(sa.update(jobs).where(jobs.c.id == second.id).values(parent_id=first.id))
    assert [j.name for j in (await ledger.jobs_page())[0]] == ["first"]
    assert len((await ledger.jobs_page(parts=True))[0]) == 2
