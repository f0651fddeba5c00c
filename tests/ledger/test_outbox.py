"""The outbox: events written with the state change that causes them, claimed one at a time."""

from __future__ import annotations

import json

import anyio
import pytest

from orchestrator.clock import FakeClock
from orchestrator.errors import StaleTransition
from orchestrator.ledger import SqlLedger
from orchestrator.ledger.migrate import upgrade
from orchestrator.model import JobState, Outcome
from orchestrator.webhooks import EVENT_TYPES, JOB_DONE, JOB_SUBMITTED, Subscription
from tests.ledger.factories import add, bring_to, make_spec

pytestmark = pytest.mark.anyio

HOOKED = Subscription(endpoint="https://example.com/hook", events=frozenset(EVENT_TYPES))
DONE_ONLY = Subscription(endpoint='hook:["/bin/true"]', events=frozenset({JOB_DONE}))


async def test_no_subscription_writes_no_event(ledger: SqlLedger) -> None:
    """A ledger nobody subscribed to keeps no outbox rows."""
    job = await bring_to(ledger, await add(ledger), JobState.COLLECTING)
    await ledger.transition(job.id, JobState.COLLECTING, JobState.DONE, outcome=Outcome.SUCCEEDED)
    assert await ledger.deliveries() == []


async def test_events_follow_the_transitions_per_endpoint(ledger: SqlLedger) -> None:
    """submitted and done, one delivery per endpoint that wants the event, one id per event."""
    woken: list[int] = []
    ledger.subscribe([HOOKED, DONE_ONLY], notify=lambda: woken.append(1))
    job = await bring_to(ledger, await add(ledger), JobState.COLLECTING)
    assert [(d.type, d.endpoint) for d in await ledger.deliveries()] == [
        (JOB_SUBMITTED, HOOKED.endpoint)
    ]
    submitted = (await ledger.deliveries())[0]
    assert submitted.body is not None
    body = json.loads(submitted.body)
    assert body["type"] == JOB_SUBMITTED
    assert body["data"]["name"] == "cheese-survey"
    await ledger.transition(job.id, JobState.COLLECTING, JobState.DONE, outcome=Outcome.PARTIAL)
    done = [d for d in await ledger.deliveries() if d.type == JOB_DONE]
    assert sorted(d.endpoint for d in done) == sorted([HOOKED.endpoint, DONE_ONLY.endpoint])
    assert len({d.webhook_id for d in done}) == 1  # one event, two deliveries
    assert all(d.body is None and d.state == "pending" for d in done)  # built on first delivery
    assert woken == [1, 1]
    assert [d.type for d in await ledger.deliveries(job_id=job.id)] == [
        JOB_SUBMITTED,
        JOB_DONE,
        JOB_DONE,
    ]


async def test_a_lost_compare_and_set_writes_no_event(ledger: SqlLedger) -> None:
    """The event commits with its transition or not at all."""
    ledger.subscribe([HOOKED])
    job = await bring_to(ledger, await add(ledger), JobState.COLLECTING)
    before = len(await ledger.deliveries())
    with pytest.raises(StaleTransition):
        await ledger.transition(job.id, JobState.RUNNING, JobState.COLLECTING)
    assert len(await ledger.deliveries()) == before


async def test_intake_rejection_carries_the_report(ledger: SqlLedger) -> None:
    """A job rejected at intake emits job.rejected with its summary and problems."""
    ledger.subscribe([HOOKED])
    report = "input has 2 invalid lines\n  a.jsonl:3: no custom_id\n  a.jsonl:9: not JSON"
    job, _ = await ledger.add_job(
        make_spec("bad"),
        definition_hash="raw-1",
        request_count=0,
        state=JobState.REJECTED,
        error=report,
    )
    (delivery,) = await ledger.deliveries(job_id=job.id)
    assert delivery.body is not None
    data = json.loads(delivery.body)["data"]
    assert data["name"] == "bad"
    assert data["error"] == "input has 2 invalid lines"
    assert data["problems"] == ["a.jsonl:3: no custom_id", "a.jsonl:9: not JSON"]


async def test_parts_tell_nothing(ledger: SqlLedger) -> None:
    """Only a job the operator defined emits events; its parts are internal."""
    from orchestrator.ledger import PartSpec

    ledger.subscribe([HOOKED])
    parent, _ = await ledger.add_split_job(
        make_spec("big"),
        definition_hash="split",
        request_count=4,
        parts=[
            PartSpec(inputs=("/p1",), request_count=2),
            PartSpec(inputs=("/p2",), request_count=2),
        ],
    )
    part = (await ledger.parts(parent.id))[0]
    await bring_to(ledger, part, JobState.RUNNING)
    assert await ledger.deliveries() == []
    await ledger.transition(parent.id, JobState.QUEUED, JobState.RUNNING)
    assert [d.type for d in await ledger.deliveries()] == [JOB_SUBMITTED]


async def test_claims_attempts_and_redelivery(ledger: SqlLedger, clock: FakeClock) -> None:
    """A claimed delivery is not claimed again until its attempt ends or its lease expires."""
    ledger.act_as("replica-a", lease_ttl=None)
    ledger.subscribe([DONE_ONLY])
    job = await bring_to(ledger, await add(ledger), JobState.COLLECTING)
    await ledger.transition(job.id, JobState.COLLECTING, JobState.DONE, outcome=Outcome.FAILED)
    (first,) = await ledger.claim_deliveries(DONE_ONLY.endpoint, limit=5, lease=30)
    assert await ledger.claim_deliveries(DONE_ONLY.endpoint, limit=5, lease=30) == []
    body = await ledger.freeze_body(first.event_id, '{"a":1}')
    assert await ledger.freeze_body(first.event_id, '{"b":2}') == body == '{"a":1}'
    assert await ledger.finish_attempt(
        first.id, status="exit 1", error="boom", delivered=False, next_attempt_at=clock.now() + 60
    )
    assert await ledger.claim_deliveries(DONE_ONLY.endpoint, limit=5, lease=30) == []
    assert await ledger.next_delivery_at(DONE_ONLY.endpoint) == clock.now() + 60
    clock.advance(61)
    (again,) = await ledger.claim_deliveries(DONE_ONLY.endpoint, limit=5, lease=30)
    assert (again.attempts, again.last_status, again.body) == (1, "exit 1", '{"a":1}')
    clock.advance(31)  # the claim expired: another replica may take it
    other = await SqlLedger.connect(ledger._url, clock=clock)
    try:
        other.act_as("replica-b", lease_ttl=None)
        (taken,) = await other.claim_deliveries(DONE_ONLY.endpoint, limit=5, lease=30)
        assert taken.id == again.id
        # The first claimer's late answer is not recorded over the new holder's claim.
        assert not await ledger.finish_attempt(
            again.id, status="exit 0", error=None, delivered=True, next_attempt_at=None
        )
        assert await other.finish_attempt(
            again.id, status="exit 2", error="boom", delivered=False, next_attempt_at=None
        )
    finally:
        await other.close()
    (dead,) = await ledger.deliveries(states=["dead"])
    assert (dead.attempts, dead.last_error) == (2, "boom")
    (redone,) = await ledger.redeliver(dead.webhook_id)
    assert (redone.state, redone.since, redone.webhook_id) == (
        "pending",
        clock.now(),
        dead.webhook_id,
    )
    assert await ledger.redeliver("999") == []
    assert await ledger.delivery_counts() == {(DONE_ONLY.endpoint, "pending"): 1}


@pytest.mark.postgres
async def test_replicas_claim_disjoint_deliveries(postgres_url: str, clock: FakeClock) -> None:
    """Two replicas claiming at once on PostgreSQL never take the same delivery."""
    await upgrade(postgres_url)
    ledgers = [await SqlLedger.connect(postgres_url, clock=clock) for _ in range(2)]
    try:
        for index, each in enumerate(ledgers):
            each.act_as(f"replica-{index}", lease_ttl=60)
            each.subscribe([DONE_ONLY])
        writer = ledgers[0]
        for n in range(20):
            job = await bring_to(writer, await add(writer, f"job-{n}"), JobState.COLLECTING)
            await writer.transition(
                job.id, JobState.COLLECTING, JobState.DONE, outcome=Outcome.SUCCEEDED
            )
        claims: dict[int, list[int]] = {0: [], 1: []}

        async def drain(index: int) -> None:
            while True:
                got = await ledgers[index].claim_deliveries(DONE_ONLY.endpoint, limit=3, lease=60)
                if not got:
                    return
                claims[index].extend(d.id for d in got)

        async with anyio.create_task_group() as tg:
            tg.start_soon(drain, 0)
            tg.start_soon(drain, 1)
        assert not set(claims[0]) & set(claims[1])
        assert len(claims[0]) + len(claims[1]) == 20
    finally:
        for each in ledgers:
            await each.close()
