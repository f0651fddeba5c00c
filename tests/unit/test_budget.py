"""Budget admission: a table of decisions and a property test of the invariant."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from orchestrator.budget import admit, in_flight_pending, queue_order
from orchestrator.model import JobState
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
