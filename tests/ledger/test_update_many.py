"""Contract suite: many compare-and-set updates in one transaction (both backends)."""

from __future__ import annotations

import anyio
import pytest

from orchestrator.clock import FakeClock
from orchestrator.ledger import BulkUpdate, SqlLedger
from orchestrator.model import Job, JobChanges, JobState, Outcome
from tests.ledger.factories import add, bring_to

pytestmark = pytest.mark.anyio


async def _running(ledger: SqlLedger, count: int) -> list[Job]:
    return [
        await bring_to(ledger, await add(ledger, f"job-{index}"), JobState.RUNNING)
        for index in range(count)
    ]


def _progress(completed: int, status: str = "RUNNING") -> JobChanges:
    return {"remote_status": status, "total": 100, "completed": completed}


async def test_every_row_is_updated_with_events_for_status_changes(
    ledger: SqlLedger, clock: FakeClock
) -> None:
    """All rows are written; an event is added only where the remote status changed."""
    jobs = await _running(ledger, 3)
    await ledger.update(jobs[0].id, JobState.RUNNING, remote_status="RUNNING")
    events_before = [len(await ledger.events(job.id)) for job in jobs]
    clock.advance(7)
    result = await ledger.update_many(
        [(job.id, JobState.RUNNING, _progress(10 * (i + 1))) for i, job in enumerate(jobs)]
    )
    assert result == BulkUpdate(updated=tuple(job.id for job in jobs))
    after = [await ledger.get(job.id) for job in jobs]
    assert [(j.completed, j.total, j.remote_status) for j in after] == [
        (10, 100, "RUNNING"),
        (20, 100, "RUNNING"),
        (30, 100, "RUNNING"),
    ]
    assert all(j.updated_at == clock.now() and j.state is JobState.RUNNING for j in after)
    new_events = [
        (await ledger.events(job.id))[count:]
        for job, count in zip(jobs, events_before, strict=True)
    ]
    assert new_events[0] == []  # the status was RUNNING already
    for events in new_events[1:]:
        assert [(e.at, e.from_state, e.to_state, e.remote_status, e.detail) for e in events] == [
            (
                clock.now(),
                JobState.RUNNING,
                JobState.RUNNING,
                "RUNNING",
                "remote status none -> RUNNING",
            )
        ]


async def test_a_lost_race_skips_that_row_only(ledger: SqlLedger) -> None:
    """A job that moved on is reported stale and left as it is; the others are written."""
    jobs = await _running(ledger, 3)
    moved = await ledger.transition(
        jobs[1].id,
        JobState.RUNNING,
        JobState.COLLECTING,
        outcome=Outcome.SUCCEEDED,
        remote_status="SUCCESS",
        total=100,
        completed=100,
    )
    events_before = len(await ledger.events(moved.id))
    result = await ledger.update_many([(job.id, JobState.RUNNING, _progress(40)) for job in jobs])
    assert result == BulkUpdate(updated=(jobs[0].id, jobs[2].id), stale=(jobs[1].id,))
    assert await ledger.get(moved.id) == moved
    assert len(await ledger.events(moved.id)) == events_before
    assert [(await ledger.get(job.id)).completed for job in (jobs[0], jobs[2])] == [40, 40]


async def test_a_missing_job_is_reported_and_the_rest_written(ledger: SqlLedger) -> None:
    """An id no job has is reported missing; it does not stop the other rows."""
    (job,) = await _running(ledger, 1)
    result = await ledger.update_many(
        [(job.id + 1000, JobState.RUNNING, _progress(5)), (job.id, JobState.RUNNING, _progress(5))]
    )
    assert result == BulkUpdate(updated=(job.id,), missing=(job.id + 1000,))
    assert (await ledger.get(job.id)).completed == 5


async def test_rows_with_different_fields_in_one_call(ledger: SqlLedger) -> None:
    """Rows may change different columns (and JSON ones) in the same transaction."""
    running, admitted = (
        await _running(ledger, 1),
        await bring_to(ledger, await add(ledger, "admitted"), JobState.ADMITTED),
    )
    result = await ledger.update_many(
        [
            (running[0].id, JobState.RUNNING, {"completed": 3}),
            (admitted.id, JobState.ADMITTED, {"input_file_ids": ("f-1",), "step_retries": 2}),
        ]
    )
    assert result.updated == (running[0].id, admitted.id)
    assert (await ledger.get(running[0].id)).completed == 3
    changed = await ledger.get(admitted.id)
    assert (changed.input_file_ids, changed.step_retries) == (("f-1",), 2)


async def test_many_chunks_of_ids(ledger: SqlLedger, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ids are read in chunks; every chunk's rows are checked and written."""
    monkeypatch.setattr("orchestrator.ledger._bulk.CHUNK", 2)
    jobs = await _running(ledger, 5)
    await ledger.transition(
        jobs[3].id, JobState.RUNNING, JobState.COLLECTING, outcome=Outcome.FAILED
    )
    result = await ledger.update_many([(job.id, JobState.RUNNING, _progress(9)) for job in jobs])
    assert result.stale == (jobs[3].id,)
    assert result.updated == tuple(job.id for job in jobs if job.id != jobs[3].id)


async def test_bad_input_writes_nothing(ledger: SqlLedger) -> None:
    """An unknown field or a repeated job fails the whole call before anything is written."""
    jobs = await _running(ledger, 2)
    with pytest.raises(TypeError, match="name"):
        await ledger.update_many(
            [
                (jobs[0].id, JobState.RUNNING, _progress(1)),
                (jobs[1].id, JobState.RUNNING, {"name": "x"}),  # type: ignore[typeddict-unknown-key]
            ]
        )
    with pytest.raises(ValueError, match="once"):
        await ledger.update_many(
            [(jobs[0].id, JobState.RUNNING, _progress(1)), (jobs[0].id, JobState.RUNNING, {})]
        )
    assert [(await ledger.get(job.id)).completed for job in jobs] == [0, 0]
    assert await ledger.update_many([]) == BulkUpdate()


async def test_racing_a_transition_never_overwrites_it(ledger: SqlLedger) -> None:
    """Bulk progress writes race running -> collecting: the transition's values always stand."""
    jobs = await _running(ledger, 8)
    stale: set[int] = set()

    async def progress() -> None:
        result = await ledger.update_many(
            [(job.id, JobState.RUNNING, _progress(50)) for job in jobs]
        )
        stale.update(result.stale)

    async def finish(job: Job) -> None:
        await ledger.transition(
            job.id,
            JobState.RUNNING,
            JobState.COLLECTING,
            outcome=Outcome.SUCCEEDED,
            remote_status="SUCCESS",
            total=100,
            completed=100,
        )

    async with anyio.create_task_group() as tg:
        for job in jobs[::2]:
            tg.start_soon(finish, job)
        tg.start_soon(progress)
        tg.start_soon(progress)
    for job in jobs:
        after = await ledger.get(job.id)
        if job in jobs[::2]:
            assert (after.state, after.completed, after.remote_status) == (
                JobState.COLLECTING,
                100,
                "SUCCESS",
            )
        else:
            assert (after.state, after.completed) == (JobState.RUNNING, 50)
            assert job.id not in stale
