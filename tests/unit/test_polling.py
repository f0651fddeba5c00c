"""The poll schedule as tables."""

from __future__ import annotations

import pytest

from orchestrator.polling import PollPolicy, Progress, estimate_completion, next_base, poll_delay

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
