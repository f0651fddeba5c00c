"""A rejected job is redefined in place by a new definition; every other job keeps its own."""

from __future__ import annotations

import anyio
import pytest

from orchestrator.clock import FakeClock
from orchestrator.errors import DefinitionConflict
from orchestrator.ledger import PartSpec, SqlLedger
from orchestrator.model import Job, JobState, Outcome
from tests.ledger.factories import add, bring_to, make_spec

pytestmark = pytest.mark.anyio

BAD = "data/cheese.jsonl:3: custom_id missing"


async def _rejected(ledger: SqlLedger, name: str = "cheese-survey") -> Job:
    job, created = await ledger.add_job(
        make_spec(name),
        definition_hash="raw-1",
        request_count=0,
        state=JobState.REJECTED,
        error=BAD,
    )
    assert created
    return job


async def test_a_new_definition_replaces_a_rejected_job_under_its_name(
    ledger: SqlLedger, clock: FakeClock
) -> None:
    """Same id and name, the new definition queued afresh, the rejection kept in the history."""
    old = await _rejected(ledger)
    clock.advance(60)
    spec = make_spec(model="mistral-large-latest", priority=2)
    job, written = await ledger.add_job(spec, definition_hash="fixed", request_count=7)
    assert written
    assert (job.id, job.name) == (old.id, old.name)
    assert (job.state, job.outcome, job.error) == (JobState.QUEUED, None, None)
    assert (job.definition_hash, job.request_count) == ("fixed", 7)
    assert (job.model, job.priority) == ("mistral-large-latest", 2)
    assert job.finished_at is None
    assert job.updated_at == clock.now() and job.created_at == old.created_at
    assert job.client_token != old.client_token, "no remote job of the old definition is adopted"
    assert await ledger.get_by_name(old.name) == job
    first, redefined = await ledger.events(job.id)
    assert (first.to_state, first.detail) == (JobState.REJECTED, "rejected at intake")
    assert (redefined.from_state, redefined.to_state) == (JobState.REJECTED, JobState.QUEUED)
    assert redefined.detail == f"redefined, created; the earlier definition was rejected: {BAD}"
    assert redefined.at == clock.now()


async def test_a_still_invalid_definition_replaces_the_report(ledger: SqlLedger) -> None:
    """A fix that is still invalid: rejected again with the new error; both reports in history."""
    old = await _rejected(ledger)
    job, written = await ledger.add_job(
        make_spec(),
        definition_hash="raw-2",
        request_count=0,
        state=JobState.REJECTED,
        error="data/cheese.jsonl:9: body missing",
    )
    assert written and job.id == old.id
    assert (job.state, job.error) == (JobState.REJECTED, "data/cheese.jsonl:9: body missing")
    details = [event.detail for event in await ledger.events(job.id)]
    assert details == [
        "rejected at intake",
        f"redefined, rejected at intake; the earlier definition was rejected: {BAD}",
    ]


async def test_the_same_definition_of_a_rejected_job_is_a_no_op(ledger: SqlLedger) -> None:
    """Re-reading an unchanged config leaves the rejected job as it is."""
    old = await _rejected(ledger)
    job, written = await ledger.add_job(
        make_spec(), definition_hash="raw-1", request_count=0, state=JobState.REJECTED, error=BAD
    )
    assert (job, written) == (old, False)
    assert len(await ledger.events(old.id)) == 1


async def test_a_job_rejected_after_an_upload_starts_again_from_nothing(
    ledger: SqlLedger,
) -> None:
    """File ids, attempts and backoff of the refused create are not carried over."""
    job = await bring_to(ledger, await add(ledger), JobState.SUBMITTING)
    job = await ledger.update(
        job.id, JobState.SUBMITTING, input_file_ids=("file-1",), step_retries=2, not_before=5.0
    )
    job = await ledger.transition(
        job.id, JobState.SUBMITTING, JobState.REJECTED, detail="create refused", error="422"
    )
    fixed, written = await ledger.add_job(make_spec(), definition_hash="fixed", request_count=3)
    assert written and fixed.id == job.id
    assert fixed.input_file_ids == () and fixed.step_retries == 0 and fixed.not_before is None
    assert fixed.remote_id is None and fixed.submitted_at is None


async def test_a_rejected_job_can_be_redefined_as_a_split_job(ledger: SqlLedger) -> None:
    """The parent takes the rejected row; its parts are new queued jobs."""
    old = await _rejected(ledger, "big")
    parts = [
        PartSpec(inputs=("/r/big/parts/0001/input.jsonl",), request_count=10),
        PartSpec(inputs=("/r/big/parts/0002/input.jsonl",), request_count=5),
    ]
    parent, written = await ledger.add_split_job(
        make_spec("big"), definition_hash="split", request_count=15, parts=parts
    )
    assert written and parent.id == old.id and parent.part_count == 2
    assert parent.state is JobState.QUEUED
    assert [p.name for p in await ledger.parts(parent.id)] == ["big/part-0001", "big/part-0002"]


@pytest.mark.parametrize("state", [JobState.QUEUED, JobState.RUNNING, JobState.DONE])
async def test_every_other_state_keeps_its_definition(ledger: SqlLedger, state: JobState) -> None:
    """Queued, running or done (cancelled included): another definition is still a conflict."""
    job = await add(ledger)
    if state is JobState.DONE:
        job = await ledger.transition(
            job.id, JobState.QUEUED, JobState.DONE, detail="cancelled", outcome=Outcome.CANCELLED
        )
    else:
        job = await bring_to(ledger, job, state)
    with pytest.raises(DefinitionConflict):
        await ledger.add_job(make_spec(), definition_hash="other", request_count=1)
    assert await ledger.get(job.id) == job


async def test_a_rejected_part_is_not_redefined_on_its_own(ledger: SqlLedger) -> None:
    """A part is defined by its parent: a job named like it is a conflict."""
    parent, _ = await ledger.add_split_job(
        make_spec("big"),
        definition_hash="split",
        request_count=2,
        parts=[
            PartSpec(inputs=("/p1",), request_count=1),
            PartSpec(inputs=("/p2",), request_count=1),
        ],
    )
    part = (await ledger.parts(parent.id))[0]
    await ledger.transition(part.id, JobState.QUEUED, JobState.REJECTED, error="never fits")
    with pytest.raises(DefinitionConflict):
        await ledger.add_job(make_spec(part.name), definition_hash="other", request_count=1)


async def test_concurrent_redefinitions_replace_the_job_once(ledger: SqlLedger) -> None:
    """Ten intakes of one fixed definition at once: one redefines, nine find it done."""
    old = await _rejected(ledger)
    written: list[bool] = []

    async def redefine() -> None:
        job, created = await ledger.add_job(make_spec(), definition_hash="fixed", request_count=4)
        assert job.id == old.id
        written.append(created)

    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(redefine)
    assert sorted(written) == [False] * 9 + [True]
    assert len(await ledger.events(old.id)) == 2
