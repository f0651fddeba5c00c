"""The poll schedule as tables."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.polling import (
    PollPolicy,
    Progress,
    estimate_completion,
    next_base,
    poll_delay,
    release_eta,
)

POLICY = PollPolicy(initial=5.0, max=600.0, factor=1.5, jitter=0.1)


@pytest.mark.parametrize(
    ("previous", "changed", "expected"),
    [
        (None, False, 5.0),
        (5.0, False, 7.5),
        (7.5, False, 11.25),
        (500.0, False, 600.0),
        (600.0, False, 600.0),
        (600.0, True, 5.0),
        (1.0, False, 5.0),
    ],
)
def test_next_base(previous: float | None, changed: bool, expected: float) -> None:
    """Grows by the factor while idle, capped; resets on change."""
    assert next_base(previous, changed=changed, policy=POLICY) == pytest.approx(expected)


@pytest.mark.parametrize(("sample", "expected"), [(-1.0, 90.0), (0.0, 100.0), (1.0, 110.0)])
def test_jitter_bounds(sample: float, expected: float) -> None:
    """Jitter moves the delay by at most ±jitter of the base."""
    assert poll_delay(100.0, now=0.0, jobs=[], policy=POLICY, jitter_sample=sample) == (
        pytest.approx(expected)
    )


def test_delay_never_exceeds_max() -> None:
    """Jitter on a capped base stays under polling.max."""
    assert poll_delay(600.0, now=0.0, jobs=[], policy=POLICY, jitter_sample=1.0) == 600.0


def _progress(**overrides: float) -> Progress:
    fields = {
        "started_at": 0.0,
        "first_at": 100.0,
        "first_completed": 0,
        "last_at": 200.0,
        "last_completed": 100,
        "total": 400,
    }
    fields.update(overrides)
    return Progress(**fields)  # type: ignore[arg-type]


def test_estimate_completion_from_rate() -> None:
    """1 request/s observed, 300 left: done at t=500."""
    assert estimate_completion(_progress()) == pytest.approx(500.0)


@pytest.mark.parametrize(
    "overrides",
    [{"total": 0}, {"last_completed": 0}, {"last_at": 100.0}],
)
def test_estimate_unknown_without_rate(overrides: dict[str, float]) -> None:
    """No total or no progress yet: no estimate."""
    assert estimate_completion(_progress(**overrides)) is None


def test_delay_stops_at_estimated_completion() -> None:
    """A job due in 50 s cuts a 600 s base to 50 s."""
    delay = poll_delay(600.0, now=450.0, jobs=[_progress()], policy=POLICY, jitter_sample=0.0)
    assert delay == pytest.approx(50.0)


def test_delay_floor_is_initial() -> None:
    """A job due in 1 s does not make the daemon spin."""
    delay = poll_delay(600.0, now=499.0, jobs=[_progress()], policy=POLICY, jitter_sample=0.0)
    assert delay == pytest.approx(5.0)


def test_overdue_job_repolled_by_share_of_age() -> None:
    """Past its estimate, a job 4000 s old is re-polled after 2.5 % of that."""
    delay = poll_delay(600.0, now=4_000.0, jobs=[_progress()], policy=POLICY, jitter_sample=0.0)
    assert delay == pytest.approx(100.0)


def _released_by(at: float, jobs: list[Progress]) -> float:
    """What ``jobs`` have released by ``at``, job by job (the slow, obvious way)."""
    total = 0.0
    for p in jobs:
        elapsed, done = p.last_at - p.first_at, p.last_completed - p.first_completed
        remaining = p.total - p.last_completed
        if p.total <= 0 or remaining <= 0 or elapsed <= 0 or done <= 0:
            continue
        if at > p.last_at:
            total += min(remaining, done / elapsed * (at - p.last_at))
    return total


@pytest.mark.parametrize(
    ("shortfall", "jobs", "expected"),
    [
        # 1 request/s, 300 held at t=200: 50 are released by t=250, all 300 by t=500.
        (50, [{}], 250.0),
        (300, [{}], 500.0),
        (301, [{}], None),
        (0, [{}], -math.inf),
        (-5, [], -math.inf),
        (1, [], None),
        # Two jobs at 1/s from t=200: 100 released by t=250; the first ends at t=210 (10
        # held), so 30 takes 10 s of both, then 10 s of one.
        (100, [{}, {}], 250.0),
        (30, [{"total": 110}, {}], 220.0),
        # A job seen later (t=300) releases from there: 100 by A alone, then 50 at 2/s.
        (150, [{}, {"first_at": 200.0, "last_at": 300.0}], 325.0),
        # A rate too high for a float (seen twice 5e-324 s apart): the hold goes at once.
        (
            1,
            [{"first_at": 0.0, "last_at": 5e-324, "first_completed": 0, "last_completed": 1}],
            5e-324,
        ),
        # Without a rate (validating, no progress, seen once) a job releases nothing.
        (50, [{"total": 0}, {"last_completed": 0}, {"last_at": 100.0}], None),
    ],
)
def test_release_eta(shortfall: int, jobs: list[dict[str, float]], expected: float | None) -> None:
    """The time the running jobs' observed rates release the head's shortfall."""
    eta = release_eta(shortfall, jobs=[_progress(**job) for job in jobs])
    assert eta == (expected if expected is None else pytest.approx(expected))


_jobs = st.lists(
    st.builds(
        lambda first_at, seen_for, first_completed, done, left: Progress(
            started_at=0.0,
            first_at=first_at,
            first_completed=first_completed,
            last_at=first_at + seen_for,
            last_completed=first_completed + done,
            total=first_completed + done + left,
        ),
        st.floats(0.0, 1_000.0),
        # Two observations of a job are poll cycles apart (or the same one).
        st.one_of(st.just(0.0), st.floats(0.1, 1_000.0)),
        st.integers(0, 10_000),
        st.integers(0, 10_000),
        st.integers(0, 1_000_000),
    ),
    max_size=8,
)


@given(jobs=_jobs, shortfall=st.integers(1, 2_000_000))
def test_release_eta_is_the_first_time_enough_is_released(
    jobs: list[Progress], shortfall: int
) -> None:
    """At the estimate the jobs have released the shortfall; a little earlier they had not."""
    eta = release_eta(shortfall, jobs=jobs)
    if eta is None:
        assert _released_by(math.inf, jobs) < shortfall
        return
    assert _released_by(eta + 1e-6, jobs) >= shortfall - 1e-6 * shortfall
    assert _released_by(eta - 1e-3, jobs) < shortfall
    assert eta >= min(p.last_at for p in jobs)


@given(jobs=_jobs, smaller=st.integers(1, 1_000_000), more=st.integers(0, 1_000_000))
def test_release_eta_grows_with_the_shortfall(
    jobs: list[Progress], smaller: int, more: int
) -> None:
    """Needing more released never makes the head due sooner."""
    early, late = release_eta(smaller, jobs=jobs), release_eta(smaller + more, jobs=jobs)
    if late is not None:
        assert early is not None
        assert early <= late + 1e-9


@given(
    jobs=_jobs,
    shortfall=st.integers(-10, 2_000_000),
    now=st.floats(0.0, 3_000.0),
    base=st.floats(5.0, 600.0),
    jitter=st.floats(-1.0, 1.0),
)
def test_a_blocked_head_shortens_the_delay_but_never_below_initial(
    jobs: list[Progress], shortfall: int, now: float, base: float, jitter: float
) -> None:
    """The head's due time caps the delay; it never brings it under ``polling.initial``."""
    plain = poll_delay(base, now=now, jobs=jobs, policy=POLICY, jitter_sample=jitter)
    capped = poll_delay(
        base, now=now, jobs=jobs, policy=POLICY, jitter_sample=jitter, head_shortfall=shortfall
    )
    assert min(plain, POLICY.initial) <= capped <= plain
    eta = release_eta(shortfall, jobs=jobs)
    if eta is not None:
        assert capped <= max(POLICY.initial, eta - now) + 1e-9


def test_delay_stops_when_the_head_is_due_to_fit() -> None:
    """A head short of 60 requests, one job releasing 1/s since t=200: poll at t=260."""
    delay = poll_delay(
        600.0, now=200.0, jobs=[_progress()], policy=POLICY, jitter_sample=0.0, head_shortfall=60
    )
    assert delay == pytest.approx(60.0)
