"""Contract suite, part 1: recording jobs, identity, lookups and listings (both backends)."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from orchestrator.clock import FakeClock
from orchestrator.errors import DefinitionConflict, JobNotFound
from orchestrator.ledger import SqlLedger
from orchestrator.model import JobState, Outcome
from tests.ledger.factories import add, make_spec

pytestmark = pytest.mark.anyio


async def test_add_job_records_every_field(ledger: SqlLedger, clock: FakeClock) -> None:
    """A new job comes back queued, with its definition, counts and times, and reads back equal."""
    spec = make_spec(
        inputs=("/data/a.jsonl", "/data/b.jsonl"),
        metadata={"team": "research", "ticket": "42"},
        timeout_hours=12,
        priority=3,
    )
    job, created = await ledger.add_job(spec, definition_hash="h1", request_count=1234)
    assert created
    assert job.id > 0
    assert (job.name, job.workspace, job.model, job.endpoint) == (
        spec.name,
        "main",
        "mistral-small-latest",
        "/v1/chat/completions",
    )
    assert job.inputs == ("/data/a.jsonl", "/data/b.jsonl")
    assert job.metadata == {"team": "research", "ticket": "42"}
    assert (job.timeout_hours, job.priority) == (12, 3)
    assert (job.definition_hash, job.request_count) == ("h1", 1234)
    assert job.state is JobState.QUEUED
    assert job.outcome is None
    assert job.input_file_ids == ()
    counts = (job.total, job.completed, job.succeeded, job.failed, job.step_retries)
    assert counts == (0, 0, 0, 0, 0)
    assert job.cancel_requested is False
    assert job.created_at == job.updated_at == clock.now()
    assert job.finished_at is None
    assert job.submitted_at is None
    assert await ledger.get(job.id) == job
    assert await ledger.get_by_name(spec.name) == job


async def test_add_job_takes_an_explicit_creation_time(ledger: SqlLedger) -> None:
    """``now`` overrides the clock for the creation time."""
    job, _ = await ledger.add_job(
        make_spec(), definition_hash="h", request_count=1, now=1_700_000_000.5
    )
    assert job.created_at == job.updated_at == 1_700_000_000.5


async def test_same_name_and_hash_is_a_no_op(ledger: SqlLedger, clock: FakeClock) -> None:
    """Re-adding the same definition returns the existing job untouched, created=False."""
    first, created = await ledger.add_job(make_spec(), definition_hash="h", request_count=10)
    assert created
    await ledger.transition(first.id, JobState.QUEUED, JobState.ADMITTED)
    clock.advance(60)
    again, created = await ledger.add_job(
        make_spec(priority=9), definition_hash="h", request_count=10
    )
    assert not created
    assert again.id == first.id
    assert again.state is JobState.ADMITTED
    assert again.priority == 0
    assert len(await ledger.list_jobs()) == 1
    assert len(await ledger.events(first.id)) == 2


@pytest.mark.parametrize(
    ("overrides", "differences"),
    [
        ({"model": "mistral-large-latest"}, ("model",)),
        ({"endpoint": "/v1/embeddings"}, ("endpoint",)),
        ({"inputs": ("/data/other.jsonl",)}, ("inputs",)),
        ({"metadata": {"team": "ops"}}, ("metadata",)),
        ({"timeout_hours": 48}, ("timeout_hours",)),
        ({"workspace": "other"}, ("workspace",)),
        ({"model": "m2", "timeout_hours": 1}, ("model", "timeout_hours")),
        ({}, ("input contents",)),
    ],
)
async def test_same_name_other_definition_conflicts(
    ledger: SqlLedger, overrides: dict[str, Any], differences: tuple[str, ...]
) -> None:
    """Another definition under a taken name names what differs and leaves the job alone."""
    original, _ = await ledger.add_job(make_spec(), definition_hash="h1", request_count=10)
    with pytest.raises(DefinitionConflict) as info:
        await ledger.add_job(make_spec(**overrides), definition_hash="h2", request_count=10)
    assert info.value.name == "cheese-survey"
    assert info.value.differences == differences
    for difference in differences:
        assert difference in str(info.value)
    assert "untouched" in str(info.value)
    assert await ledger.get(original.id) == original


async def test_rejected_job_is_recorded_final_with_its_error(
    ledger: SqlLedger, clock: FakeClock
) -> None:
    """Intake records an invalid job as rejected, finished, with the error and an event."""
    job, created = await ledger.add_job(
        make_spec(),
        definition_hash="raw",
        request_count=0,
        state=JobState.REJECTED,
        error="data/cheese.jsonl:3: custom_id missing",
    )
    assert created
    assert job.state is JobState.REJECTED
    assert job.error == "data/cheese.jsonl:3: custom_id missing"
    assert job.finished_at == clock.now()
    (event,) = await ledger.events(job.id)
    assert (event.from_state, event.to_state) == (None, JobState.REJECTED)
    assert event.detail == "rejected at intake"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"state": JobState.RUNNING}, "starts queued or rejected"),
        ({"state": JobState.REJECTED}, "needs an error"),
        ({"request_count": -1}, "request_count"),
    ],
)
async def test_add_job_refuses_bad_arguments(
    ledger: SqlLedger, kwargs: dict[str, object], message: str
) -> None:
    """Impossible new jobs are refused with a message saying what is wrong."""
    arguments: dict[str, object] = {"definition_hash": "h", "request_count": 1, **kwargs}
    with pytest.raises(ValueError, match=message):
        await ledger.add_job(make_spec(), **arguments)  # type: ignore[arg-type]
    assert await ledger.list_jobs() == []


async def test_concurrent_adds_of_one_definition_create_it_once(ledger: SqlLedger) -> None:
    """Ten tasks adding the same job at once: one creates it, all see the same job."""
    results: list[tuple[int, bool]] = []

    async def add_one() -> None:
        job, created = await ledger.add_job(make_spec(), definition_hash="h", request_count=5)
        results.append((job.id, created))

    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(add_one)
    assert sorted(created for _, created in results) == [False] * 9 + [True]
    assert len({job_id for job_id, _ in results}) == 1
    assert len(await ledger.list_jobs()) == 1


async def test_unknown_jobs_raise_job_not_found(ledger: SqlLedger) -> None:
    """Lookups of a missing id or name raise JobNotFound naming it."""
    with pytest.raises(JobNotFound, match="404"):
        await ledger.get(404)
    with pytest.raises(JobNotFound, match="'nobody'"):
        await ledger.get_by_name("nobody")
    with pytest.raises(LookupError):
        await ledger.events(404)
    with pytest.raises(JobNotFound):
        await ledger.files(404)


async def test_list_jobs_orders_by_priority_then_age(ledger: SqlLedger) -> None:
    """Higher priority first; within a priority, oldest (lowest id) first."""
    await add(ledger, "low-1", priority=0)
    await add(ledger, "high-1", priority=5)
    await add(ledger, "low-2", priority=0)
    await add(ledger, "high-2", priority=5)
    await add(ledger, "negative", priority=-1)
    names = [job.name for job in await ledger.list_jobs()]
    assert names == ["high-1", "high-2", "low-1", "low-2", "negative"]


async def test_list_jobs_filters_by_state_and_workspace(ledger: SqlLedger) -> None:
    """States and workspace narrow the listing; an empty state set lists nothing."""
    a = await add(ledger, "a", workspace="main")
    b = await add(ledger, "b", workspace="main")
    await add(ledger, "c", workspace="other")
    await ledger.transition(b.id, JobState.QUEUED, JobState.ADMITTED)
    queued = await ledger.list_jobs(states=[JobState.QUEUED])
    assert [job.name for job in queued] == ["a", "c"]
    main_queued = await ledger.list_jobs(states=(JobState.QUEUED,), workspace="main")
    assert [job.id for job in main_queued] == [a.id]
    both = await ledger.list_jobs(states={JobState.QUEUED, JobState.ADMITTED}, workspace="main")
    assert [job.name for job in both] == ["a", "b"]
    assert [job.name for job in await ledger.list_jobs(workspace="other")] == ["c"]
    assert await ledger.list_jobs(states=()) == []


async def test_counts_by_state_groups_states_and_outcomes(ledger: SqlLedger) -> None:
    """Counts come per (state, outcome), outcome None outside done."""
    for name in ("q1", "q2"):
        await add(ledger, name)
    cancelled = await add(ledger, "c")
    await ledger.transition(cancelled.id, JobState.QUEUED, JobState.DONE, outcome=Outcome.CANCELLED)
    admitted = await add(ledger, "a")
    await ledger.transition(admitted.id, JobState.QUEUED, JobState.ADMITTED)
    await ledger.add_job(
        make_spec("bad"), definition_hash="x", request_count=0, state=JobState.REJECTED, error="e"
    )
    assert await ledger.counts_by_state() == {
        ("queued", None): 2,
        ("done", "cancelled"): 1,
        ("admitted", None): 1,
        ("rejected", None): 1,
    }


async def test_json_fields_round_trip_unicode_and_order(ledger: SqlLedger) -> None:
    """Inputs keep their order and metadata its values, unicode included."""
    spec = make_spec(
        inputs=("/z/ü.jsonl", "/a/b.jsonl", "/m.jsonl"),
        metadata={"équipe": "recherche", "emoji": "🧀", "empty": ""},
    )
    job, _ = await ledger.add_job(spec, definition_hash="h", request_count=1)
    again = await ledger.get(job.id)
    assert again.inputs == ("/z/ü.jsonl", "/a/b.jsonl", "/m.jsonl")
    assert again.metadata == {"équipe": "recherche", "emoji": "🧀", "empty": ""}


async def test_jobs_by_tokens_finds_ours_and_ignores_strangers(ledger: SqlLedger) -> None:
    """Lookup by client token (the duplicate sweep): known tokens map to their jobs."""
    first = await add(ledger, "first")
    second = await add(ledger, "second")
    await add(ledger, "third")
    found = await ledger.jobs_by_tokens(
        [first.client_token, second.client_token, first.client_token, "orch-stranger"]
    )
    assert found == {first.client_token: first, second.client_token: second}
    assert await ledger.jobs_by_tokens([]) == {}
