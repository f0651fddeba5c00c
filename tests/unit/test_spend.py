"""The spend limit as an admission dimension, prices and costs, and usage roll-ups. Pure."""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.budget import SpendBudget, admit, spend_used
from orchestrator.inputs import output_cap
from orchestrator.model import Job, JobState, Outcome
from orchestrator.pricing import (
    ModelPrice,
    Pricing,
    month_bounds,
    month_of,
    month_start,
    next_month_start,
    rolled_up,
    rolled_up_cost,
)
from orchestrator.usage import Usage
from tests.unit.jobs import make_job

JAN = 1_767_225_600.0  # 2026-01-01T00:00:00Z
FEB = 1_769_904_000.0  # 2026-02-01T00:00:00Z
PRICING = Pricing(
    models={"m": ModelPrice(input=2.0, output=6.0), "cheap": ModelPrice(input=1.0, output=1.0)},
    batch_discount=0.5,
    max_tokens=10,
)


def _job(job_id: int, **overrides: object) -> Job:
    fields: dict[str, object] = {"model": "m", "request_count": 100, "prompt_tokens": 1_000}
    fields.update(overrides)
    return make_job(job_id, **fields)


def test_cost_is_usage_times_prices_times_discount() -> None:
    """1M prompt tokens at 2.0 and 0.5M completion at 6.0, half price: 1.0 + 1.5."""
    usage = Usage(prompt_tokens=1_000_000, completion_tokens=500_000, total_tokens=1_500_000)
    assert PRICING.cost("m", usage) == pytest.approx(2.5)
    assert PRICING.cost("m", usage, discount=1.0) == pytest.approx(5.0)
    assert PRICING.cost("unknown", usage) is None  # no price: unknown, never 0


def test_estimate_is_prompt_as_input_plus_max_tokens_per_request_as_output() -> None:
    """1,000 prompt tokens + 100 requests x 10 output tokens, discounted."""
    expected = (1_000 * 2.0 + 100 * 10 * 6.0) / 1_000_000 * 0.5
    assert PRICING.estimate(_job(1)) == pytest.approx(expected)
    per_model = attrs.evolve(
        PRICING, models={"m": ModelPrice(input=2.0, output=6.0, max_tokens=20)}
    )
    assert per_model.estimate(_job(1)) == pytest.approx((2_000 + 100 * 20 * 6.0) / 1e6 * 0.5)
    assert PRICING.estimate(_job(1, model="nope")) is None


def test_estimate_prices_the_caps_requests_set_and_a_default_for_the_rest() -> None:
    """60 requests capped at 5 tokens each (300), 40 without a cap at the default (10 each)."""
    job = _job(1, max_output_tokens=300, uncapped_requests=40)
    assert PRICING.estimate(job) == pytest.approx((1_000 * 2.0 + (300 + 400) * 6.0) / 1e6 * 0.5)


def test_output_cap_of_each_dialect_form() -> None:
    """max_tokens, max_completion_tokens, max_output_tokens in body, params.max_tokens."""
    assert output_cap({"body": {"max_tokens": 7}}) == 7
    assert output_cap({"body": {"max_completion_tokens": 8}}) == 8
    assert output_cap({"body": {"max_output_tokens": 9}}) == 9
    assert output_cap({"params": {"max_tokens": 10}}) == 10
    assert output_cap({"body": {"max_tokens": True}}) is None
    assert output_cap({"body": {}}) is None


def test_months_are_utc_calendar_months() -> None:
    """Month bounds, a leap February, and the month after December."""
    assert month_of(JAN) == "2026-01"
    assert month_bounds("2026-01") == (JAN, FEB)
    assert month_start(FEB - 1) == JAN and next_month_start(FEB - 1) == FEB
    start, end = month_bounds("2028-02")
    assert (end - start) / 86_400 == 29
    assert month_of(month_bounds("2026-12")[1]) == "2027-01"
    for bad in ("2026-13", "2026-1", "26-01", "january"):
        with pytest.raises(ValueError, match="YYYY-MM"):
            month_bounds(bad)


def test_never_fits_and_no_price_are_rejected_with_figures() -> None:
    """An estimate above the whole limit, and a model without a price, never fit."""
    big, unpriced = _job(1, prompt_tokens=10_000_000), _job(2, model="nope")
    spend = SpendBudget(limit=1.0, used=0.0, estimates={1: PRICING.estimate(big), 2: None})
    decision = admit([big, unpriced], in_flight=0, budget=10**6, now=JAN, spend=spend)
    assert decision.admit == ()
    misfits = {m.job_id: m for m in decision.misfits}
    assert misfits[1].dimension == "spend" and misfits[1].needed > misfits[1].limit == 1.0
    assert misfits[2].dimension == "price"


def test_a_head_short_of_spend_holds_back_the_queue_and_says_what_is_left() -> None:
    """The head waits with the figures; the cheaper job behind it does not jump the queue."""
    first, head, cheap = _job(1), _job(2), _job(3, model="cheap", prompt_tokens=1)
    estimates = {job.id: PRICING.estimate(job) for job in (first, head, cheap)}
    one = estimates[1]
    assert one is not None
    spend = SpendBudget(limit=one * 1.5, used=0.0, estimates=estimates)
    decision = admit([first, head, cheap], in_flight=0, budget=10**6, now=JAN, spend=spend)
    assert decision.admit == (1,)
    assert decision.spend_wait is not None
    assert decision.spend_wait.job_id == 2
    assert decision.spend_wait.left == pytest.approx(one * 0.5)
    assert decision.spend_after == pytest.approx(one)


def test_spend_used_counts_this_months_actuals_and_in_flight_estimates() -> None:
    """Done this month: actual; done last month: nothing; in flight or collecting: estimate."""
    usage = Usage(prompt_tokens=1_000_000, completion_tokens=0, total_tokens=1_000_000)
    jobs = [
        _job(1, state=JobState.DONE, outcome=Outcome.SUCCEEDED, usage=usage, finished_at=FEB + 5),
        _job(2, state=JobState.DONE, outcome=Outcome.SUCCEEDED, usage=usage, finished_at=FEB - 5),
        _job(3, state=JobState.RUNNING),
        _job(4, state=JobState.COLLECTING),
        _job(5, state=JobState.QUEUED),
        _job(6, state=JobState.REJECTED),
        _job(7, state=JobState.RUNNING, part_count=2),  # a parent: its parts count
    ]
    estimate = PRICING.estimate(jobs[2])
    assert estimate is not None
    used = spend_used(jobs, pricing=PRICING, discount=None, since=FEB)
    assert used == pytest.approx(1.0 + 2 * estimate)
    # The month rolls over: in March, February's actual counts nothing.
    march = month_bounds("2026-03")[0]
    assert spend_used(jobs, pricing=PRICING, discount=None, since=march) == pytest.approx(
        2 * estimate
    )


def test_splitting_lets_part_of_a_large_job_run() -> None:
    """A job above what is left waits whole; as parts, those that fit run now."""
    whole = _job(1, request_count=1_000, prompt_tokens=10_000)
    estimate = PRICING.estimate(whole)
    assert estimate is not None
    limit = estimate * 0.45  # the whole job never fits; each of ten parts does
    alone = SpendBudget(limit=limit, used=0.0, estimates={1: estimate})
    assert admit([whole], in_flight=0, budget=10**6, now=JAN, spend=alone).never_fits == (1,)
    parts = [_job(10 + i, request_count=100, prompt_tokens=1_000, parent_id=1) for i in range(10)]
    spend = SpendBudget(limit=limit, used=0.0, estimates={p.id: PRICING.estimate(p) for p in parts})
    decision = admit(parts, in_flight=0, budget=10**6, now=JAN, spend=spend)
    assert decision.admit == (10, 11, 12, 13)
    assert decision.spend_wait is not None and decision.spend_wait.job_id == 14


_ACTIONS = st.lists(
    st.tuples(
        st.sampled_from(["submit", "admit", "finish", "month"]),
        st.integers(1, 2_000),  # requests of a submitted job
        st.floats(0.0, 1.0),  # share of its estimate a finished job really cost
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(actions=_ACTIONS, limit=st.floats(0.0005, 0.05), over=st.booleans())
def test_property_actual_plus_in_flight_never_exceeds_the_limit(
    actions: list[tuple[str, int, float]], limit: float, over: bool
) -> None:
    """At every admission decision, actual + estimated in flight <= the limit.

    A model of the daemon: jobs are submitted, admitted by the pure rule, finish with an
    actual cost at most their estimate (or, with ``over``, up to twice it: then the rule must
    still admit nothing that takes the month over), and the month rolls over.
    """
    jobs: dict[int, Job] = {}
    now = JAN + 3_600
    for step, (action, requests, share) in enumerate(actions, start=1):
        if action == "submit":
            jobs[step] = _job(step, request_count=requests, prompt_tokens=requests * 7)
        elif action == "finish":
            flying = [j for j in jobs.values() if j.state is JobState.RUNNING]
            if flying:
                job = flying[0]
                estimate = PRICING.estimate(job) or 0.0
                actual = estimate * share * (2.0 if over else 1.0)
                # Back to tokens: output tokens that cost ``actual`` at 6.0 per 1M, halved.
                completion = int(actual / 0.5 * 1_000_000 / 6.0)
                jobs[job.id] = attrs.evolve(
                    job,
                    state=JobState.DONE,
                    outcome=Outcome.SUCCEEDED,
                    finished_at=now,
                    usage=Usage(completion_tokens=completion, total_tokens=completion),
                )
        elif action == "month":
            now = next_month_start(now) + 60
        else:
            since = month_start(now)
            used = spend_used(jobs.values(), pricing=PRICING, discount=None, since=since)
            queued = [j for j in jobs.values() if j.state is JobState.QUEUED]
            spend = SpendBudget(
                limit=limit, used=used, estimates={j.id: PRICING.estimate(j) for j in queued}
            )
            decision = admit(queued, in_flight=0, budget=10**9, now=now, spend=spend)
            if decision.admit:
                assert decision.spend_after is not None
                assert decision.spend_after <= limit
            if not over:
                assert used <= limit + 1e-12
            for job_id in decision.admit:
                jobs[job_id] = attrs.evolve(jobs[job_id], state=JobState.RUNNING)
            for job_id in decision.never_fits:
                jobs[job_id] = attrs.evolve(jobs[job_id], state=JobState.REJECTED)
            after = spend_used(jobs.values(), pricing=PRICING, discount=None, since=since)
            if decision.admit:
                assert after == pytest.approx(decision.spend_after)
                assert after <= limit * (1 + 1e-9)


def test_usage_rolls_up_over_any_kind_of_child() -> None:
    """A parent sums its parts; a part's own child (a retry attempt, say) adds to both."""
    one = Usage(prompt_tokens=1, completion_tokens=2, total_tokens=3, lines=1)
    parent = _job(1, part_count=2)
    part_a = _job(2, parent_id=1, usage=one)
    part_b = _job(3, parent_id=1, usage=one)
    attempt = _job(4, parent_id=3, usage=one)  # a new kind of child: no code of its own
    waiting = _job(5)
    totals = rolled_up([parent, part_a, part_b, attempt, waiting])
    assert totals[1] == Usage(prompt_tokens=3, completion_tokens=6, total_tokens=9, lines=3)
    assert totals[3].total_tokens == 6
    assert 5 not in totals  # no results yet: no usage (not zero)
    costs = rolled_up_cost([parent, part_a, part_b, attempt], PRICING)
    assert costs[1] == pytest.approx(3 * (2.0 + 12.0) / 1e6 * 0.5)
    unpriced = rolled_up_cost([parent, part_a, attrs.evolve(part_b, model="nope")], PRICING)
    assert unpriced[1] is None and unpriced[2] is not None
