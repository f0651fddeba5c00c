"""The pure timeline: where a job stands at any instant."""

from __future__ import annotations

import pytest

from orchestrator.emulator.simulation import (
    SimParams,
    State,
    Timeline,
    Validation,
    pending_at,
    phase_at,
)

T0 = 1_000_000.0
OK = Validation(usable=True, failed_total=0)


def timeline(
    n: int = 1000,
    *,
    scale: float = 1.0,
    throughput: float = 10.0,
    timeout_hours: int = 24,
    cancel_at: float | None = None,
) -> Timeline:
    params = SimParams(
        time_scale=scale,
        throughput=throughput,
        validation_seconds=5.0,
        cancel_seconds=2.0,
        failure_fraction=0.0,
        seed=0,
    )
    return Timeline(
        created_at=T0, requests=n, timeout_hours=timeout_hours, params=params, cancel_at=cancel_at
    )


@pytest.mark.parametrize(
    ("elapsed", "status", "total", "processed"),
    [
        (0.0, State.VALIDATING, 0, 0),
        (4.99, State.VALIDATING, 0, 0),
        (5.0, State.RUNNING, 1000, 0),
        (5.35, State.RUNNING, 1000, 3),
        (55.0, State.RUNNING, 1000, 500),
        (104.99, State.RUNNING, 1000, 999),
        (105.0, State.SUCCEEDED, 1000, 1000),
        (1e6, State.SUCCEEDED, 1000, 1000),
    ],
)
def test_progress_table(elapsed: float, status: State, total: int, processed: int) -> None:
    """Validation delay, then throughput-bound progress, then success at V + n/throughput."""
    phase = phase_at(timeline(), T0 + elapsed, OK)
    assert (phase.state, phase.total, phase.processed) == (status, total, processed)


def test_time_scale_compresses_the_timeline() -> None:
    """With time_scale=3600, one clock second is an hour of simulated work."""
    tl = timeline(36_000, scale=3600.0)
    assert phase_at(tl, T0 + 0.5, OK).processed == 18_000 - 50
    assert phase_at(tl, T0 + 1.01, OK).state == State.SUCCEEDED


def test_timeout_keeps_partial_progress() -> None:
    """A job slower than its timeout stops at timeout_hours with what it processed."""
    tl = timeline(1_000_000, throughput=1.0, timeout_hours=1)
    phase = phase_at(tl, T0 + 3600.0, OK)
    assert phase.state == State.EXPIRED
    assert phase.processed == 3595
    assert phase.terminal_at == 3600.0
    assert phase_at(tl, T0 + 3599.0, OK).state == State.RUNNING


def test_cancel_freezes_then_cancels() -> None:
    """A cancel freezes progress; State.CANCELLED follows after cancel_seconds."""
    tl = timeline(cancel_at=T0 + 25.0)
    requested = phase_at(tl, T0 + 26.0, OK)
    assert (requested.state, requested.processed) == (State.CANCELLING, 200)
    done = phase_at(tl, T0 + 27.0, OK)
    assert (done.state, done.processed, done.terminal_at) == (State.CANCELLED, 200, 27.0)


def test_cancel_while_validating_reports_no_total() -> None:
    """A job cancelled before validation ended never gets a total."""
    phase = phase_at(timeline(cancel_at=T0 + 1.0), T0 + 10.0, None)
    assert (phase.state, phase.total, phase.needs_validation) == (State.CANCELLED, 0, False)


def test_unusable_input_fails_at_validation() -> None:
    """Every line invalid: State.FAILED as soon as validation ends."""
    phase = phase_at(timeline(10), T0 + 5.0, Validation(usable=False, failed_total=10))
    assert (phase.state, phase.total, phase.processed) == (State.FAILED, 10, 10)


def test_every_line_failing_ends_failed() -> None:
    """A usable input whose every request fails ends State.FAILED, not State.SUCCEEDED."""
    phase = phase_at(timeline(10), T0 + 100.0, Validation(usable=True, failed_total=10))
    assert phase.state == State.FAILED


def test_unknown_validation_is_asked_for() -> None:
    """Past the validation delay the caller must supply the validation outcome."""
    assert phase_at(timeline(), T0 + 6.0, None).needs_validation
    assert not phase_at(timeline(), T0 + 4.0, None).needs_validation


@pytest.mark.parametrize(
    ("elapsed", "pending"), [(0.0, 1000), (5.0, 1000), (55.0, 500), (105.0, 0)]
)
def test_pending(elapsed: float, pending: int) -> None:
    """Pending is the line count while validating, then total minus completed, then 0."""
    assert pending_at(timeline(), T0 + elapsed, None) == pending
