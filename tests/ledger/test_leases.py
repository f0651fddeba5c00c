"""Contract suite, leases (design §8): claims, renewal, expiry, stealing, fencing, admission.

Several ``SqlLedger`` objects on one database play the replicas; each writes as its own owner
(``act_as``). The fake clock drives lease expiry. The concurrency cases need PostgreSQL (row
locks, ``SKIP LOCKED``, advisory locks); the rest run on both backends.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack

import anyio
import pytest
import sqlalchemy as sa

from orchestrator.budget import Admission, admit, in_flight_pending
from orchestrator.clock import FakeClock
from orchestrator.errors import LeaseLost, ReplicaIdTaken, StaleTransition
from orchestrator.ledger import SqlLedger
from orchestrator.ledger.leases import admission_lock_key
from orchestrator.ledger.migrate import upgrade
from orchestrator.model import Job, JobState, Outcome
from tests.ledger.factories import SHA, add, make_spec

pytestmark = pytest.mark.anyio

TTL = 10.0


def admit_all(budget: int = 10**9) -> Callable[[list[Job]], Admission]:
    """The budget rule over the jobs admission reads."""

    def decide(jobs: list[Job]) -> Admission:
        return admit(
            [j for j in jobs if j.state is JobState.QUEUED],
            in_flight=in_flight_pending(jobs),
            budget=budget,
            now=0.0,
        )

    return decide


@pytest.fixture
async def replicas(ledger_url: str, clock: FakeClock) -> AsyncIterator[list[SqlLedger]]:
    """Three ledgers on one database, writing as replicas "a", "b" and "c"."""
    await upgrade(ledger_url)
    async with AsyncExitStack() as stack:
        opened = []
        for owner in "abc":
            ledger = await SqlLedger.connect(ledger_url, clock=clock)
            stack.push_async_callback(ledger.close)
            ledger.act_as(owner, lease_ttl=TTL)
            opened.append(ledger)
        yield opened


async def test_admission_claims_and_final_states_clear(
    replicas: list[SqlLedger], clock: FakeClock
) -> None:
    """Admitted jobs carry the admitter's lease; queued, done and rejected carry none."""
    a, _, _ = replicas
    job = await add(a, "one")
    assert (job.claimed_by, job.lease_until) == (None, None)
    _, admitted = await a.admit("main", admit_all())
    assert [j.id for j in admitted] == [job.id]
    assert (admitted[0].claimed_by, admitted[0].lease_until) == ("a", clock.now() + TTL)
    moved = await a.transition(job.id, JobState.ADMITTED, JobState.SUBMITTING)
    assert moved.claimed_by == "a"
    back = await a.transition(job.id, JobState.SUBMITTING, JobState.QUEUED)
    assert (back.claimed_by, back.lease_until) == (None, None)
    await a.admit("main", admit_all())
    await a.transition(job.id, JobState.ADMITTED, JobState.SUBMITTING)
    await a.transition(job.id, JobState.SUBMITTING, JobState.RUNNING)
    await a.transition(job.id, JobState.RUNNING, JobState.COLLECTING)
    done = await a.transition(job.id, JobState.COLLECTING, JobState.DONE, outcome=Outcome.SUCCEEDED)
    assert (done.claimed_by, done.lease_until) == (None, None)
    assert await a.held_count() == 0


async def test_a_live_lease_is_not_stolen_and_an_expired_one_is(
    replicas: list[SqlLedger], clock: FakeClock
) -> None:
    """Orphan claiming skips live leases, renewal keeps them live, expiry hands them over."""
    a, b, _ = replicas
    job = await add(a, "one")
    await a.admit("main", admit_all())
    assert await b.claim_orphans() == []
    clock.advance(TTL * 0.9)
    assert await a.renew_leases() == 1
    clock.advance(TTL * 0.9)
    assert await b.claim_orphans() == []  # renewed: still a's
    assert [j.name for j in await a.list_jobs(held=True)] == ["one"]
    assert await b.list_jobs(held=True) == []
    clock.advance(TTL)
    assert await a.list_jobs(held=True) == []  # expired: nobody works on it
    taken = await b.claim_orphans()
    assert [(j.id, j.claimed_by) for j in taken] == [(job.id, "b")]
    assert (await b.get(job.id)).lease_until == clock.now() + TTL
    events = await b.events(job.id)
    assert events[-1].detail == "claimed by b (lease of a expired)"
    assert await a.renew_leases() == 0  # a's renewal no longer touches it


async def test_a_stale_owner_writes_nothing(replicas: list[SqlLedger], clock: FakeClock) -> None:
    """Every fenced write of a replica that lost its lease raises and changes nothing."""
    a, b, _ = replicas
    job = await add(a, "one")
    await a.admit("main", admit_all())
    clock.advance(TTL + 1)
    await b.claim_orphans()
    before = await b.get(job.id)
    with pytest.raises(LeaseLost, match="no longer holds its lease"):
        await a.transition(job.id, JobState.ADMITTED, JobState.SUBMITTING, detail="intent")
    with pytest.raises(LeaseLost):
        await a.update(job.id, JobState.ADMITTED, input_file_ids=("file-x",))
    result = await a.update_many([(job.id, JobState.ADMITTED, {"step_retries": 7})])
    assert (result.updated, result.stale) == ((), (job.id,))
    with pytest.raises(LeaseLost):
        await a.record_file(job.id, "output", path="/x", bytes=1, sha256=SHA, lines=1)
    # LeaseLost is a StaleTransition: every loop already treats it as a lost race.
    with pytest.raises(StaleTransition):
        await a.transition(job.id, JobState.ADMITTED, JobState.QUEUED)
    assert await b.get(job.id) == before
    assert await b.files(job.id) == []
    moved = await b.transition(job.id, JobState.ADMITTED, JobState.SUBMITTING)
    assert moved.claimed_by == "b"


async def test_a_released_lease_is_taken_at_once(
    replicas: list[SqlLedger], clock: FakeClock
) -> None:
    """A graceful stop ends the leases now: another replica claims without waiting."""
    a, b, _ = replicas
    await add(a, "one")
    await add(a, "two")
    await a.admit("main", admit_all())
    assert await a.release_leases() == 2
    taken = await b.claim_orphans()
    assert sorted(j.name for j in taken) == ["one", "two"]
    assert await b.held_count() == 2


async def test_orphans_are_claimed_in_bounded_batches(
    replicas: list[SqlLedger], clock: FakeClock
) -> None:
    """One pass claims at most its limit, so the replicas alive share a dead one's jobs."""
    a, b, c = replicas
    for index in range(12):
        await add(a, f"job-{index}")
    await a.admit("main", admit_all())
    clock.advance(TTL + 1)
    first = await b.claim_orphans(limit=5)
    second = await c.claim_orphans(limit=5)
    third = await b.claim_orphans(limit=5)
    assert (len(first), len(second), len(third)) == (5, 5, 2)
    ids = [j.id for j in first + second + third]
    assert len(set(ids)) == 12
    assert await b.held_count() == 7
    assert await c.held_count() == 5


async def test_exclusive_mode_claims_all_and_fences_nothing(
    sqlite_url: str, clock: FakeClock
) -> None:
    """A daemon alone on its ledger (SQLite) claims every in-flight job for good."""
    await upgrade(sqlite_url)
    async with (
        await SqlLedger.connect(sqlite_url, clock=clock) as before,
        await SqlLedger.connect(sqlite_url, clock=clock) as alone,
    ):
        job = await add(before, "one")
        await before.admit("main", admit_all())  # no owner: claimed by nobody
        alone.act_as("solo", lease_ttl=None)
        assert await alone.claim_all() == 1
        clock.advance(10**6)
        assert [j.id for j in await alone.list_jobs(held=True)] == [job.id]
        moved = await alone.transition(job.id, JobState.ADMITTED, JobState.SUBMITTING)
        assert moved.claimed_by == "solo"


# PostgreSQL: real concurrency ------------------------------------------------------------


@pytest.fixture
async def pg_replicas(postgres_url: str, clock: FakeClock) -> AsyncIterator[list[SqlLedger]]:
    """Three ledgers (three connection pools) on one PostgreSQL database."""
    await upgrade(postgres_url)
    async with AsyncExitStack() as stack:
        opened = []
        for owner in "abc":
            ledger = await SqlLedger.connect(postgres_url, clock=clock)
            stack.push_async_callback(ledger.close)
            ledger.act_as(owner, lease_ttl=TTL)
            opened.append(ledger)
        yield opened


@pytest.mark.postgres
async def test_concurrent_orphan_claims_are_disjoint(
    pg_replicas: list[SqlLedger], clock: FakeClock
) -> None:
    """Replicas claiming at the same moment take disjoint jobs (SKIP LOCKED), none twice."""
    a, b, c = pg_replicas
    for index in range(40):
        await add(a, f"job-{index}")
    await a.admit("main", admit_all())
    for _ in range(3):
        clock.advance(TTL + 1)
        got: dict[str, list[int]] = {}

        async def claim(ledger: SqlLedger, owner: str, got: dict[str, list[int]] = got) -> None:
            got[owner] = [j.id for j in await ledger.claim_orphans(limit=15)]

        async with anyio.create_task_group() as tg:
            for ledger, owner in ((a, "a"), (b, "b"), (c, "c")):
                tg.start_soon(claim, ledger, owner)
        claimed = [job_id for ids in got.values() for job_id in ids]
        assert len(claimed) == len(set(claimed))  # nobody claimed a job twice
        assert all(len(ids) <= 15 for ids in got.values())
        assert len(claimed) >= 30  # SKIP LOCKED: nobody waited for the others' rows
        holders = {j.id: j.claimed_by for j in await a.list_jobs()}
        for owner, ids in got.items():
            assert all(holders[job_id] == owner for job_id in ids)


@pytest.mark.postgres
async def test_concurrent_admission_never_exceeds_the_budget(
    pg_replicas: list[SqlLedger], clock: FakeClock
) -> None:
    """Admission passes of three replicas at once, many rounds: Σpending <= budget always.

    Without the per-workspace advisory lock, two passes reading the same queue would each
    admit the head and overshoot.
    """
    budget = 100
    rng = random.Random(7)
    a = pg_replicas[0]
    for index in range(80):
        await a.add_job(
            make_spec(f"job-{index:02d}"),
            definition_hash=f"h{index}",
            request_count=rng.randint(5, 60),
        )
    peak = 0
    arrivals = itertools.count(1)

    async def arrive(ledger: SqlLedger) -> None:
        # New jobs of rising priority land while the passes run: a pass that missed one
        # would admit another head, which is what overshoots without the lock.
        for _ in range(2):
            number = next(arrivals)
            await ledger.add_job(
                make_spec(f"new-{number:03d}", priority=number),
                definition_hash=f"n{number}",
                request_count=rng.randint(30, 70),
            )

    for _ in range(40):
        async with anyio.create_task_group() as tg:
            for ledger in pg_replicas:
                tg.start_soon(arrive, ledger)
                tg.start_soon(ledger.admit, "main", admit_all(budget))
        in_flight = await a.list_jobs(states=(JobState.ADMITTED,))
        pending = sum(j.request_count for j in in_flight)
        peak = max(peak, pending)
        assert pending <= budget
        # Each replica finishes some of what it holds, releasing budget for the next round.
        for ledger in pg_replicas:
            for job in await ledger.list_jobs(states=(JobState.ADMITTED,), held=True):
                if rng.random() < 0.5:
                    await ledger.transition(
                        job.id, JobState.ADMITTED, JobState.DONE, outcome=Outcome.CANCELLED
                    )
    assert peak > budget // 2  # the passes did admit: the bound was exercised
    owners = {j.claimed_by for j in await a.list_jobs(states=(JobState.ADMITTED,))}
    assert owners <= {"a", "b", "c"}


@pytest.mark.postgres
async def test_a_replica_id_is_one_live_process(postgres_url: str, clock: FakeClock) -> None:
    """A second holder of the same replica id fails at once; another id is fine."""
    await upgrade(postgres_url)
    async with (
        await SqlLedger.connect(postgres_url, clock=clock) as first,
        await SqlLedger.connect(postgres_url, clock=clock) as second,
    ):
        async with first.replica_session("pod-0"):
            with anyio.fail_after(5), pytest.raises(ReplicaIdTaken, match="'pod-0'"):
                async with second.replica_session("pod-0"):
                    pytest.fail("the id was taken twice")
            async with second.replica_session("pod-1"):
                pass
        async with second.replica_session("pod-0"):
            pass


@pytest.mark.postgres
async def test_the_admission_lock_is_per_workspace(postgres_url: str, clock: FakeClock) -> None:
    """An admission pass holds its workspace's lock until commit, and only that workspace's."""
    await upgrade(postgres_url)
    async with await SqlLedger.connect(postgres_url, clock=clock) as ledger:
        await add(ledger, "one")
        await add(ledger, "two", workspace="other")
        entered = anyio.Event()
        release = anyio.Event()

        def slow(jobs: list[Job]) -> Admission:
            entered.set()
            return admit_all()(jobs)

        admitted: list[str] = []

        async def hold() -> None:
            async with ledger._write() as conn:  # a pass that does not commit yet
                await conn.execute(
                    sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": admission_lock_key("main")}
                )
                entered.set()
                await release.wait()

        async with anyio.create_task_group() as tg:
            tg.start_soon(hold)
            await entered.wait()
            with anyio.fail_after(5):
                _, other = await ledger.admit("other", slow)
            admitted.extend(j.name for j in other)

            async def blocked() -> None:
                _, main = await ledger.admit("main", admit_all())
                admitted.extend(j.name for j in main)

            tg.start_soon(blocked)
            await anyio.sleep(0.3)
            assert admitted == ["two"]  # main waits for the lock
            release.set()
        assert admitted == ["two", "one"]


@pytest.mark.postgres
async def test_admission_spreads_jobs_over_live_replicas(
    pg_replicas: list[SqlLedger], clock: FakeClock
) -> None:
    """Admitted jobs go to the least-loaded live replica; a replica gone gets none."""
    a, b, c = pg_replicas
    for index in range(6):
        await add(a, f"job-{index}")
    async with a.replica_session("a", unique=False), b.replica_session("b", unique=False):
        async with c.replica_session("c", unique=False):
            pass  # c came and went: not live any more
        _, admitted = await a.admit("main", admit_all())
    holders = Counter(j.claimed_by for j in admitted)
    assert holders == {"a": 3, "b": 3}
    events = await a.events(next(j.id for j in admitted if j.claimed_by == "b"))
    assert events[-1].detail == "budget admitted for b"
    assert [j.claimed_by for j in await b.list_jobs(held=True)] == ["b"] * 3
