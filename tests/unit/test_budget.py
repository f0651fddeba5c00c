"""Budget admission: a table of decisions and a property test of the invariant."""

from __future__ import annotations

import attrs
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.budget import (
    LEARN_MARGIN,
    MAX_TOKEN_SCALE,
    UNKNOWN_LIMIT_STEP,
    Misfit,
    TokenBudget,
    TokenScale,
    TokenWait,
    admit,
    in_flight_pending,
    in_flight_tokens,
    learn_token_scale,
    queue_order,
)
from orchestrator.model import Job, JobState
from tests.unit.jobs import make_job

NOW = 1_000.0


def test_admits_heads_while_they_fit() -> None:
    """600k + 300k fit in 1M; the next 200k must wait."""
    queued = [
        make_job(1, request_count=600_000),
        make_job(2, request_count=300_000),
        make_job(3, request_count=200_000),
    ]
    decision = admit(queued, in_flight=0, budget=1_000_000, now=NOW)
    assert decision.admit == (1, 2)
    assert decision.pending_after == 900_000


def test_head_that_does_not_fit_blocks_the_rest() -> None:
    """The docs' example: a second 600k job waits while the first holds more than 400k."""
    queued = [make_job(2, request_count=600_000), make_job(3, request_count=1)]
    decision = admit(queued, in_flight=500_000, budget=1_000_000, now=NOW)
    assert decision.admit == ()
    assert (decision.blocked, decision.shortfall) == (2, 100_000)


def test_shortfall_counts_what_was_admitted_before_the_head_and_external() -> None:
    """The head's shortfall is what it lacks after the jobs admitted ahead of it."""
    queued = [make_job(1, request_count=300), make_job(2, request_count=500)]
    decision = admit(queued, in_flight=200, budget=1_000, external=100, now=NOW)
    assert decision.admit == (1,)
    assert (decision.blocked, decision.shortfall) == (2, 100)


def test_nothing_blocked_means_no_shortfall() -> None:
    """Everything fits, or a head waits out its backoff: no head is blocked."""
    assert admit([make_job(1)], in_flight=0, budget=1_000, now=NOW).blocked is None
    backoff = admit([make_job(1, not_before=NOW + 5)], in_flight=999, budget=1_000, now=NOW)
    assert (backoff.blocked, backoff.shortfall) == (None, 0)


def test_priority_then_fifo() -> None:
    """Higher priority first; equal priority in id order."""
    jobs = [make_job(1), make_job(2, priority=5), make_job(3, priority=5), make_job(4)]
    assert [job.id for job in queue_order(jobs)] == [2, 3, 1, 4]


def test_job_larger_than_budget_never_fits() -> None:
    """It is reported for rejection and does not block the queue."""
    queued = [make_job(1, request_count=2_000_000), make_job(2, request_count=10)]
    decision = admit(queued, in_flight=0, budget=1_000_000, now=NOW)
    assert decision.never_fits == (1,)
    assert decision.admit == (2,)


def test_external_pending_counts() -> None:
    """Jobs this ledger did not create still use the workspace's budget."""
    decision = admit([make_job(1, request_count=10)], in_flight=0, budget=100, external=95, now=NOW)
    assert decision.admit == ()


def test_backoff_skips_without_blocking() -> None:
    """A job refused for capacity waits out its backoff; others may go meanwhile."""
    queued = [make_job(1, not_before=NOW + 60), make_job(2)]
    assert admit(queued, in_flight=0, budget=1_000, now=NOW).admit == (2,)
    assert admit(queued, in_flight=0, budget=1_000, now=NOW + 61).admit == (1, 2)


def test_cancel_requested_is_not_admitted() -> None:
    """A queued job with a cancel request is cancelled locally, never admitted."""
    decision = admit([make_job(1, cancel_requested=True)], in_flight=0, budget=1_000, now=NOW)
    assert decision.admit == ()


def test_in_flight_pending_uses_live_progress() -> None:
    """Running jobs release budget as they complete requests."""
    jobs = [
        make_job(1, state=JobState.RUNNING, request_count=100, total=100, completed=60),
        make_job(2, state=JobState.ADMITTED, request_count=50),
        make_job(3, state=JobState.DONE, request_count=500),
        make_job(4, state=JobState.QUEUED, request_count=70),
    ]
    assert in_flight_pending(jobs) == 40 + 50


@given(
    sizes=st.lists(st.integers(min_value=1, max_value=1_500), max_size=30),
    priorities=st.lists(st.integers(min_value=-2, max_value=2), max_size=30),
    in_flight=st.integers(min_value=0, max_value=1_000),
    external=st.integers(min_value=0, max_value=1_000),
)
def test_admission_never_exceeds_budget(
    sizes: list[int], priorities: list[int], in_flight: int, external: int
) -> None:
    """Whatever the queue, admitted work plus what is in flight stays within the budget."""
    budget = 1_000
    queued = [
        make_job(i + 1, request_count=n, priority=priorities[i] if i < len(priorities) else 0)
        for i, n in enumerate(sizes)
    ]
    decision = admit(queued, in_flight=in_flight, budget=budget, external=external, now=NOW)
    by_id = {job.id: job for job in queued}
    admitted_total = sum(by_id[i].request_count for i in decision.admit)
    if in_flight + external <= budget:
        assert in_flight + external + admitted_total <= budget
    # Admitted jobs are a prefix of the fitting queue: no job jumps one that fits ahead of it.
    order = [job.id for job in queue_order(queued) if job.request_count <= budget]
    assert list(decision.admit) == order[: len(decision.admit)]
    assert set(decision.never_fits) == {job.id for job in queued if job.request_count > budget}
    # The blocked head is the next fitting job, exactly ``shortfall`` short of room.
    if decision.blocked is None:
        assert list(decision.admit) == order
        assert decision.shortfall == 0
    else:
        assert decision.blocked == order[len(decision.admit)]
        needed = decision.pending_after + by_id[decision.blocked].request_count - budget
        assert decision.shortfall == needed > 0


GPT = "gpt-4o"
MINI = "gpt-4o-mini"
TOKENS = TokenBudget(default=1_000, per_model={GPT: 300})


def test_token_budget_per_model_overrides_the_default() -> None:
    """A model listed in per_model has its own budget; others the default; None: unlimited."""
    assert (TOKENS.limit(GPT), TOKENS.limit(MINI), TokenBudget().limit(GPT)) == (300, 1_000, None)


def test_tokens_admit_while_each_model_fits() -> None:
    """200 + 100 tokens of gpt-4o fit in 300; the third waits, gpt-4o-mini goes on."""
    queued = [
        make_job(1, model=GPT, prompt_tokens=200),
        make_job(2, model=GPT, prompt_tokens=100),
        make_job(3, model=GPT, prompt_tokens=50),
        make_job(4, model=MINI, prompt_tokens=900),
        make_job(5, model=GPT, prompt_tokens=1),
    ]
    decision = admit(
        queued, in_flight=0, budget=1_000, now=NOW, tokens=TOKENS, tokens_in_flight={MINI: 50}
    )
    assert decision.admit == (1, 2, 4)
    assert decision.tokens_after == {GPT: 300, MINI: 950}
    assert decision.token_waits == (TokenWait(job_id=3, model=GPT, shortfall=50),)
    assert decision.blocked is None


def test_a_job_over_its_model_token_budget_never_fits_with_figures() -> None:
    """400 tokens against gpt-4o's 300: rejected with both figures; the queue moves on."""
    queued = [make_job(1, model=GPT, prompt_tokens=400), make_job(2, model=GPT, prompt_tokens=9)]
    decision = admit(queued, in_flight=0, budget=1_000, now=NOW, tokens=TOKENS)
    assert decision.never_fits == (1,)
    assert decision.misfits == (
        Misfit(job_id=1, dimension="tokens", needed=400, limit=300, model=GPT),
    )
    assert decision.admit == (2,)


def test_running_jobs_hold_their_tokens_until_they_leave_running() -> None:
    """Admitted, submitting and running jobs count in full, scaled; others and parents not."""
    jobs = [
        make_job(1, model=GPT, state=JobState.RUNNING, prompt_tokens=100, total=10, completed=9),
        make_job(2, model=GPT, state=JobState.SUBMITTING, prompt_tokens=10),
        make_job(3, model=MINI, state=JobState.ADMITTED, prompt_tokens=7),
        make_job(4, model=GPT, state=JobState.COLLECTING, prompt_tokens=1_000),
        make_job(5, model=GPT, state=JobState.RUNNING, prompt_tokens=1_000, part_count=2),
        make_job(6, model=GPT, state=JobState.QUEUED, prompt_tokens=1_000),
    ]
    assert in_flight_tokens(jobs) == {GPT: 110, MINI: 7}
    assert in_flight_tokens(jobs, TokenScale(factor=1.5)) == {GPT: 165, MINI: 11}


def test_the_learnt_scale_charges_more_but_never_rejects_what_the_estimate_fits() -> None:
    """At x1.5, 250 tokens charge 300 (gpt-4o's whole budget): it runs alone, not rejected."""
    scaled = attrs.evolve(TOKENS, scale=TokenScale(factor=1.5))
    queued = [make_job(1, model=GPT, prompt_tokens=250)]
    busy = admit(
        queued, in_flight=0, budget=1_000, now=NOW, tokens=scaled, tokens_in_flight={GPT: 1}
    )
    assert (busy.admit, busy.never_fits) == ((), ())
    alone = admit(queued, in_flight=0, budget=1_000, now=NOW, tokens=scaled)
    assert alone.admit == (1,)
    assert alone.tokens_after == {GPT: 300}


def test_requests_still_block_the_whole_queue() -> None:
    """A head short of requests holds back every model; tokens do not change that."""
    queued = [
        make_job(1, model=GPT, request_count=900, prompt_tokens=1),
        make_job(2, model=MINI, request_count=10, prompt_tokens=1),
    ]
    decision = admit(queued, in_flight=200, budget=1_000, now=NOW, tokens=TOKENS)
    assert (decision.admit, decision.blocked, decision.shortfall) == ((), 1, 100)


MODELS = (GPT, MINI, "o3")


@given(
    jobs=st.lists(
        st.tuples(
            st.integers(min_value=1, max_value=600),  # requests
            st.integers(min_value=0, max_value=400),  # prompt tokens
            st.sampled_from(MODELS),
            st.integers(min_value=-1, max_value=1),  # priority
        ),
        max_size=25,
    ),
    in_flight=st.integers(min_value=0, max_value=1_000),
    held=st.fixed_dictionaries({model: st.integers(0, 350) for model in MODELS}),
    factor=st.floats(min_value=1.0, max_value=3.0),
)
def test_admission_never_exceeds_either_budget(
    jobs: list[tuple[int, int, str, int]],
    in_flight: int,
    held: dict[str, int],
    factor: float,
) -> None:
    """Requests and every model's tokens stay within budget; order is FIFO within each rule."""
    budget = 1_000
    tokens = TokenBudget(default=300, per_model={MINI: 200}, scale=TokenScale(factor=factor))
    queued = [
        make_job(i + 1, request_count=n, prompt_tokens=t, model=model, priority=priority)
        for i, (n, t, model, priority) in enumerate(jobs)
    ]
    decision = admit(
        queued, in_flight=in_flight, budget=budget, now=NOW, tokens=tokens, tokens_in_flight=held
    )
    by_id = {job.id: job for job in queued}
    admitted = [by_id[i] for i in decision.admit]

    def charged(job: Job) -> int:
        limit = tokens.limit(job.model)
        assert limit is not None
        return min(limit, tokens.scale.charge(job.prompt_tokens))

    if in_flight <= budget:
        assert in_flight + sum(job.request_count for job in admitted) <= budget
    for model in MODELS:
        limit = tokens.limit(model)
        assert limit is not None
        used = held[model] + sum(charged(job) for job in admitted if job.model == model)
        if held[model] <= limit:
            assert used <= limit
            assert decision.tokens_after.get(model, held[model]) == used
    # Never fits: exactly the jobs over a whole budget, with their figures.
    expected = {
        job.id
        for job in queued
        if job.request_count > budget or job.prompt_tokens > (tokens.limit(job.model) or 0)
    }
    assert set(decision.never_fits) == expected
    assert [m.job_id for m in decision.misfits] == list(decision.never_fits)
    # Order: a job is admitted only if every fitting job ahead of it was admitted, or waits
    # for its own model's tokens (then the admitted job is of another model).
    order = [job for job in queue_order(queued) if job.id not in expected]
    waiting = {wait.model: wait.job_id for wait in decision.token_waits}
    seen_waits: set[str] = set()
    for job in order:
        if job.id in decision.admit:
            assert job.model not in seen_waits
        elif waiting.get(job.model) == job.id:
            seen_waits.add(job.model)
        else:
            # held back: behind a token wait of its model, or the queue is blocked
            assert job.model in seen_waits or decision.blocked is not None
    if decision.blocked is not None:
        blocked_index = [job.id for job in order].index(decision.blocked)
        assert all(job.id not in decision.admit for job in order[blocked_index:])


def test_learning_from_a_stated_limit() -> None:
    """2,000,000 stated against 1,600,000 estimated: x1.25 (plus the margin)."""
    scale = learn_token_scale(TokenScale(), provider_limit=2_000_000, estimated_in_flight=1_600_000)
    assert scale == TokenScale(factor=1.25 * LEARN_MARGIN, refusals=1)


def test_learning_without_a_limit_steps_and_clamps() -> None:
    """No stated limit: one step up; never past the largest scale."""
    once = learn_token_scale(TokenScale(), provider_limit=None, estimated_in_flight=10)
    assert once.factor == UNKNOWN_LIMIT_STEP
    many = TokenScale(factor=MAX_TOKEN_SCALE)
    assert learn_token_scale(many, provider_limit=None, estimated_in_flight=0).factor == (
        MAX_TOKEN_SCALE
    )


@given(
    factor=st.floats(min_value=1.0, max_value=MAX_TOKEN_SCALE),
    limit=st.none() | st.integers(min_value=0, max_value=10**10),
    estimated=st.integers(min_value=0, max_value=10**10),
)
def test_learnt_scale_only_grows_within_its_bounds(
    factor: float, limit: int | None, estimated: int
) -> None:
    """Never below 1.0 nor the scale before, never above the maximum; each refusal counts."""
    before = TokenScale(factor=factor, refusals=2)
    after = learn_token_scale(before, provider_limit=limit, estimated_in_flight=estimated)
    assert factor <= after.factor <= MAX_TOKEN_SCALE
    assert after.refusals == 3
    if limit and estimated and limit / estimated * LEARN_MARGIN <= MAX_TOKEN_SCALE:
        # the refused set, charged at the new scale, now reaches the stated limit
        assert after.charge(estimated) >= limit
