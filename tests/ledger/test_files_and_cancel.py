"""Contract suite, part 3: the cancel flag and result-file records (both backends)."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from orchestrator.clock import FakeClock
from orchestrator.errors import JobNotFound
from orchestrator.ledger import ResultFile, SqlLedger
from orchestrator.model import JobChanges, JobState, Outcome
from tests.ledger.factories import SHA, add, bring_to

pytestmark = pytest.mark.anyio


async def test_request_cancel_sets_the_flag_once(ledger: SqlLedger, clock: FakeClock) -> None:
    """The first request sets the flag with an event; repeating it changes nothing."""
    job = await bring_to(ledger, await add(ledger), JobState.RUNNING)
    clock.advance(3)
    flagged = await ledger.request_cancel(job.name)
    assert flagged.cancel_requested
    assert flagged.state is JobState.RUNNING
    assert flagged.updated_at == clock.now()
    events = await ledger.events(job.id)
    assert (events[-1].from_state, events[-1].to_state, events[-1].detail) == (
        JobState.RUNNING,
        JobState.RUNNING,
        "cancel requested",
    )
    clock.advance(3)
    again = await ledger.request_cancel(job.name)
    assert again == flagged
    assert await ledger.events(job.id) == events


@pytest.mark.parametrize("final", [JobState.DONE, JobState.REJECTED])
async def test_request_cancel_on_a_final_job_is_a_no_op(ledger: SqlLedger, final: JobState) -> None:
    """A finished job stays as it is: nothing left to cancel."""
    job = await add(ledger)
    changes: JobChanges = (
        {"outcome": Outcome.SUCCEEDED} if final is JobState.DONE else {"error": "bad"}
    )
    finished = await ledger.transition(job.id, JobState.QUEUED, final, **changes)
    assert await ledger.request_cancel(job.name) == finished
    assert not (await ledger.get(job.id)).cancel_requested


async def test_request_cancel_of_an_unknown_job_is_not_found(ledger: SqlLedger) -> None:
    """Cancelling a name the ledger does not know raises JobNotFound."""
    with pytest.raises(JobNotFound, match="'ghost'"):
        await ledger.request_cancel("ghost")


async def test_concurrent_cancel_requests_record_one_event(ledger: SqlLedger) -> None:
    """Ten simultaneous requests set the flag once."""
    job = await add(ledger)
    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(ledger.request_cancel, job.name)
    details = [e.detail for e in await ledger.events(job.id)]
    assert details == ["created", "cancel requested"]


async def test_the_cancel_flag_survives_transitions(ledger: SqlLedger) -> None:
    """A flagged job keeps the flag as it moves, until the daemon clears it."""
    job = await add(ledger)
    await ledger.request_cancel(job.name)
    admitted = await ledger.transition(job.id, JobState.QUEUED, JobState.ADMITTED)
    assert admitted.cancel_requested
    cleared = await ledger.update(job.id, JobState.ADMITTED, cancel_requested=False)
    assert not cleared.cancel_requested


async def test_record_file_and_read_it_back(ledger: SqlLedger, clock: FakeClock) -> None:
    """A recorded file comes back with every field; output is listed before error."""
    job = await bring_to(ledger, await add(ledger), JobState.COLLECTING)
    error = await ledger.record_file(
        job.id, "error", path=Path("/r/errors.jsonl"), bytes=10, sha256=SHA, lines=1
    )
    clock.advance(1)
    output = await ledger.record_file(
        job.id, "output", path="/r/output.jsonl", bytes=5_000_000_000, sha256="c" * 64, lines=7
    )
    assert output == ResultFile(
        job_id=job.id,
        kind="output",
        path="/r/output.jsonl",
        bytes=5_000_000_000,
        sha256="c" * 64,
        lines=7,
        recorded_at=clock.now(),
    )
    assert error.path == "/r/errors.jsonl"
    assert await ledger.files(job.id) == [output, error]


async def test_record_file_replaces_the_same_kind(ledger: SqlLedger, clock: FakeClock) -> None:
    """Recording a kind again (a re-download) replaces the record instead of adding one."""
    job = await add(ledger)
    await ledger.record_file(job.id, "output", path="/a", bytes=1, sha256=SHA, lines=1)
    clock.advance(30)
    second = await ledger.record_file(
        job.id, "output", path="/b", bytes=2, sha256="d" * 64, lines=2
    )
    assert await ledger.files(job.id) == [second]
    assert second.recorded_at == clock.now()


async def test_concurrent_records_of_one_kind_keep_one_row(ledger: SqlLedger) -> None:
    """Racing upserts of the same file never duplicate or fail."""
    job = await add(ledger)

    async def record(n: int) -> None:
        await ledger.record_file(job.id, "output", path=f"/p{n}", bytes=n, sha256=SHA, lines=n)

    async with anyio.create_task_group() as tg:
        for n in range(10):
            tg.start_soon(record, n)
    (only,) = await ledger.files(job.id)
    assert only.path == f"/p{only.bytes}"


async def test_files_of_a_job_without_files_is_empty(ledger: SqlLedger) -> None:
    """A job with nothing downloaded yet lists no files."""
    job = await add(ledger)
    assert await ledger.files(job.id) == []


async def test_record_file_for_a_missing_job_is_not_found(ledger: SqlLedger) -> None:
    """The foreign key turns a file for an unknown job into JobNotFound."""
    with pytest.raises(JobNotFound):
        await ledger.record_file(404, "output", path="/x", bytes=1, sha256=SHA, lines=1)


@pytest.mark.parametrize(
    ("kind", "size", "sha", "lines", "message"),
    [
        ("result", 1, SHA, 1, "kind must be one of"),
        ("output", -1, SHA, 1, "must be >= 0"),
        ("output", 1, SHA, -1, "must be >= 0"),
        ("output", 1, "AB" * 32, 1, "64 lowercase hex"),
        ("output", 1, "ab", 1, "64 lowercase hex"),
    ],
)
async def test_record_file_refuses_bad_values(
    ledger: SqlLedger, kind: str, size: int, sha: str, lines: int, message: str
) -> None:
    """Impossible file records are refused with a message naming the problem."""
    job = await add(ledger)
    with pytest.raises(ValueError, match=message):
        await ledger.record_file(
            job.id,
            kind,  # type: ignore[arg-type]
            path="/x",
            bytes=size,
            sha256=sha,
            lines=lines,
        )
    assert await ledger.files(job.id) == []
