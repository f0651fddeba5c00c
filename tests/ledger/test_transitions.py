"""Contract suite, part 2: transitions, updates, compare-and-set races and history."""

from __future__ import annotations

import itertools

import anyio
import pytest

from orchestrator.clock import FakeClock
from orchestrator.errors import IllegalTransition, JobNotFound, StaleTransition
from orchestrator.ledger import SqlLedger
from orchestrator.model import TRANSITIONS, Job, JobState, Outcome
from tests.ledger.factories import add, bring_to, final_changes

pytestmark = pytest.mark.anyio

LEGAL = [(source, target) for source, targets in TRANSITIONS.items() for target in targets]
ILLEGAL = [
    (source, target)
    for source, target in itertools.product(JobState, JobState)
    if target not in TRANSITIONS[source]
]


async def test_every_legal_transition_moves_and_records_an_event(
    ledger: SqlLedger, clock: FakeClock
) -> None:
    """Each move of the table lands, stamps the times and appends one event."""
    assert LEGAL
    for index, (source, target) in enumerate(LEGAL):
        job = await bring_to(ledger, await add(ledger, f"job-{index}"), source)
        clock.advance(10)
        moved = await ledger.transition(
            job.id, source, target, detail=f"{source}->{target}", **final_changes(target)
        )
        assert moved.state is target, (source, target)
        assert moved.updated_at == clock.now()
        if target in (JobState.DONE, JobState.REJECTED):
            assert moved.finished_at == clock.now()
        else:
            assert moved.finished_at is None
        if target is JobState.RUNNING:
            assert moved.submitted_at == clock.now()
        assert await ledger.get(job.id) == moved
        last = (await ledger.events(job.id))[-1]
        assert (last.from_state, last.to_state) == (source, target)
        assert (last.at, last.detail) == (clock.now(), f"{source}->{target}")


async def test_illegal_transitions_raise_and_change_nothing(ledger: SqlLedger) -> None:
    """Moves outside the table raise IllegalTransition before touching the job."""
    assert len(LEGAL) + len(ILLEGAL) == len(JobState) ** 2
    jobs: dict[JobState, Job] = {}
    for state in JobState:
        if state in (JobState.DONE, JobState.REJECTED):
            job = await add(ledger, f"final-{state}")
            jobs[state] = await ledger.transition(
                job.id, JobState.QUEUED, state, error="x", **final_changes(state)
            )
        else:
            jobs[state] = await bring_to(ledger, await add(ledger, f"at-{state}"), state)
    history = {state: await ledger.events(job.id) for state, job in jobs.items()}
    for source, target in ILLEGAL:
        job = jobs[source]
        with pytest.raises(IllegalTransition, match=f"{source} -> {target}"):
            await ledger.transition(job.id, source, target, **final_changes(target))
        assert await ledger.get(job.id) == job
    for state, job in jobs.items():
        assert await ledger.events(job.id) == history[state]


async def test_transition_from_a_state_the_job_left_is_stale(ledger: SqlLedger) -> None:
    """A compare-and-set on an outdated state raises StaleTransition and changes nothing."""
    job = await add(ledger)
    admitted = await ledger.transition(job.id, JobState.QUEUED, JobState.ADMITTED)
    with pytest.raises(StaleTransition) as info:
        await ledger.transition(job.id, JobState.QUEUED, JobState.REJECTED, error="late")
    assert (info.value.job_id, info.value.expected, info.value.target) == (
        job.id,
        "queued",
        "rejected",
    )
    assert await ledger.get(job.id) == admitted
    assert len(await ledger.events(job.id)) == 2


async def test_transition_of_a_missing_job_is_not_found(ledger: SqlLedger) -> None:
    """Moving a job that does not exist raises JobNotFound, not StaleTransition."""
    with pytest.raises(JobNotFound):
        await ledger.transition(999, JobState.QUEUED, JobState.ADMITTED)
    with pytest.raises(JobNotFound):
        await ledger.update(999, JobState.QUEUED, step_retries=1)


async def test_transition_applies_changes(ledger: SqlLedger, clock: FakeClock) -> None:
    """Changes ride along with a transition in the same statement."""
    job = await bring_to(ledger, await add(ledger), JobState.SUBMITTING)
    running = await ledger.transition(
        job.id,
        JobState.SUBMITTING,
        JobState.RUNNING,
        detail="created",
        remote_id="batch-1",
        remote_status="QUEUED",
        total=0,
        submitted_at=123.0,
        not_before=None,
        error=None,
    )
    assert (running.remote_id, running.remote_status, running.submitted_at) == (
        "batch-1",
        "QUEUED",
        123.0,
    )
    collecting = await ledger.transition(
        job.id,
        JobState.RUNNING,
        JobState.COLLECTING,
        remote_status="SUCCESS",
        outcome=Outcome.PARTIAL,
        output_file_id="out-1",
        error_file_id="err-1",
        total=10,
        completed=10,
        succeeded=8,
        failed=2,
    )
    assert collecting.outcome is Outcome.PARTIAL
    assert (collecting.succeeded, collecting.failed) == (8, 2)
    # The outcome decided while polling carries the job to done.
    done = await ledger.transition(job.id, JobState.COLLECTING, JobState.DONE, error=None)
    assert (done.state, done.outcome, done.finished_at) == (
        JobState.DONE,
        Outcome.PARTIAL,
        clock.now(),
    )
    assert (await ledger.events(job.id))[-1].remote_status == "SUCCESS"


async def test_done_without_an_outcome_is_refused_and_rolled_back(ledger: SqlLedger) -> None:
    """A job cannot reach done without an outcome; the failed move leaves no trace."""
    job = await add(ledger)
    with pytest.raises(ValueError, match="outcome"):
        await ledger.transition(job.id, JobState.QUEUED, JobState.DONE)
    assert await ledger.get(job.id) == job
    assert len(await ledger.events(job.id)) == 1


async def test_unknown_change_keys_are_refused(ledger: SqlLedger) -> None:
    """A typo in a change name is an error naming it, not a silent no-op."""
    job = await add(ledger)
    with pytest.raises(TypeError, match="remote_stauts"):
        await ledger.update(job.id, JobState.QUEUED, remote_stauts="x")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="state"):
        await ledger.transition(
            job.id,
            JobState.QUEUED,
            JobState.ADMITTED,
            state="done",  # type: ignore[call-arg]
        )
    assert await ledger.get(job.id) == job


async def test_update_changes_fields_within_the_state(ledger: SqlLedger, clock: FakeClock) -> None:
    """A same-state update sets fields and updated_at; without detail or new status, no event."""
    job = await bring_to(ledger, await add(ledger), JobState.ADMITTED)
    events_before = await ledger.events(job.id)
    clock.advance(5)
    updated = await ledger.update(
        job.id,
        JobState.ADMITTED,
        input_file_ids=("file-1", "file-2"),
        step_retries=2,
        not_before=9.5,
    )
    assert updated.state is JobState.ADMITTED
    assert updated.input_file_ids == ("file-1", "file-2")
    assert (updated.step_retries, updated.not_before, updated.updated_at) == (2, 9.5, clock.now())
    assert await ledger.get(job.id) == updated
    assert await ledger.events(job.id) == events_before


async def test_update_records_events_for_detail_and_status_changes(
    ledger: SqlLedger, clock: FakeClock
) -> None:
    """An event is added when detail is given or the remote status changes, not otherwise."""
    job = await bring_to(ledger, await add(ledger), JobState.RUNNING)
    start = len(await ledger.events(job.id))
    clock.advance(1)
    await ledger.update(job.id, JobState.RUNNING, remote_status="RUNNING", total=10)
    clock.advance(1)
    await ledger.update(job.id, JobState.RUNNING, remote_status="RUNNING", completed=5)
    clock.advance(1)
    await ledger.update(job.id, JobState.RUNNING, detail="operator note")
    events = (await ledger.events(job.id))[start:]
    assert [(e.from_state, e.to_state) for e in events] == [(JobState.RUNNING,) * 2] * 2
    assert [(e.at, e.remote_status, e.detail) for e in events] == [
        (clock.now() - 2, "RUNNING", "remote status none -> RUNNING"),
        (clock.now(), "RUNNING", "operator note"),
    ]
    assert (await ledger.get(job.id)).completed == 5


async def test_update_in_another_state_is_stale(ledger: SqlLedger) -> None:
    """A same-state update on a job that moved raises StaleTransition and writes nothing."""
    job = await add(ledger)
    await ledger.transition(job.id, JobState.QUEUED, JobState.ADMITTED)
    with pytest.raises(StaleTransition):
        await ledger.update(job.id, JobState.QUEUED, step_retries=3, detail="late")
    after = await ledger.get(job.id)
    assert after.step_retries == 0
    assert len(await ledger.events(job.id)) == 2


async def test_racing_transitions_have_exactly_one_winner(ledger: SqlLedger) -> None:
    """Twenty tasks race queued -> admitted: one wins, nineteen get StaleTransition."""
    job = await add(ledger)
    wins: list[int] = []
    stale: list[StaleTransition] = []

    async def race(n: int) -> None:
        try:
            await ledger.transition(
                job.id, JobState.QUEUED, JobState.ADMITTED, detail=f"task {n}", step_retries=n
            )
            wins.append(n)
        except StaleTransition as exc:
            stale.append(exc)

    async with anyio.create_task_group() as tg:
        for n in range(20):
            tg.start_soon(race, n)
    assert len(wins) == 1
    assert len(stale) == 19
    after = await ledger.get(job.id)
    assert after.state is JobState.ADMITTED
    assert after.step_retries == wins[0]
    transitions = [e for e in await ledger.events(job.id) if e.from_state is not None]
    assert [e.detail for e in transitions] == [f"task {wins[0]}"]


async def test_racing_status_updates_record_the_change_once(ledger: SqlLedger) -> None:
    """Twenty tasks report the same new remote status at once: exactly one event records it."""
    job = await bring_to(ledger, await add(ledger), JobState.RUNNING)
    await ledger.update(job.id, JobState.RUNNING, remote_status="QUEUED")
    start = len(await ledger.events(job.id))

    async def report(n: int) -> None:
        await ledger.update(job.id, JobState.RUNNING, remote_status="RUNNING", completed=n)

    async with anyio.create_task_group() as tg:
        for n in range(20):
            tg.start_soon(report, n)
    events = (await ledger.events(job.id))[start:]
    assert [e.detail for e in events] == ["remote status QUEUED -> RUNNING"]


async def test_racing_transition_and_updates_never_mix(ledger: SqlLedger) -> None:
    """Updates racing a transition either land before it or fail stale; none is lost."""
    job = await bring_to(ledger, await add(ledger), JobState.RUNNING)
    start = len(await ledger.events(job.id))
    landed: list[str] = []

    async def progress(n: int) -> None:
        try:
            await ledger.update(job.id, JobState.RUNNING, detail=f"progress {n}")
            landed.append(f"progress {n}")
        except StaleTransition:
            pass

    async def finish() -> None:
        await ledger.transition(
            job.id, JobState.RUNNING, JobState.COLLECTING, outcome=Outcome.SUCCEEDED
        )

    async with anyio.create_task_group() as tg:
        for n in range(10):
            tg.start_soon(progress, n)
        tg.start_soon(finish)
        for n in range(10, 20):
            tg.start_soon(progress, n)
    events = (await ledger.events(job.id))[start:]
    *updates, last = events
    assert (last.from_state, last.to_state) == (JobState.RUNNING, JobState.COLLECTING)
    assert all(e.to_state is JobState.RUNNING for e in updates)
    assert sorted(str(e.detail) for e in updates) == sorted(landed)


async def test_events_are_in_time_order_with_creation_first(
    ledger: SqlLedger, clock: FakeClock
) -> None:
    """A job's history starts with its creation and follows the clock."""
    start = clock.now()
    job = await add(ledger)
    clock.advance(1.25)
    await ledger.transition(job.id, JobState.QUEUED, JobState.ADMITTED, detail="fits")
    clock.advance(2.5)
    await ledger.transition(job.id, JobState.ADMITTED, JobState.SUBMITTING, detail="intent")
    events = await ledger.events(job.id)
    assert [(e.at, e.from_state, e.to_state, e.detail) for e in events] == [
        (start, None, JobState.QUEUED, "created"),
        (start + 1.25, JobState.QUEUED, JobState.ADMITTED, "fits"),
        (start + 3.75, JobState.ADMITTED, JobState.SUBMITTING, "intent"),
    ]
    assert all(e.job_id == job.id for e in events)
    assert [e.id for e in events] == sorted(e.id for e in events)
