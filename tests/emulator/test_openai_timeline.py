"""The core timeline's parts the OpenAI wire relies on: FINALIZING, refused inputs, enqueued."""

from __future__ import annotations

import pytest

from orchestrator.emulator.simulation import (
    SimParams,
    State,
    Timeline,
    Validation,
    enqueued_at,
    pending_at,
    phase_at,
)

T0 = 1_000_000.0
OK = Validation(usable=True, failed_total=0)
REFUSED = Validation(usable=False, failed_total=0)


def timeline(n: int = 100, *, finalizing: float = 3.0, cancel_at: float | None = None) -> Timeline:
    """V = 5 s, 10 lines/s, ``finalizing`` seconds of FINALIZING."""
    params = SimParams(
        time_scale=1.0, throughput=10.0, validation_seconds=5.0, cancel_seconds=2.0,
        failure_fraction=0.0, seed=0, finalizing_seconds=finalizing,
    )  # fmt: skip
    return Timeline(created_at=T0, requests=n, timeout_hours=24, params=params, cancel_at=cancel_at)


@pytest.mark.parametrize(
    ("at", "state", "processed", "terminal_at"),
    [
        (4.0, State.VALIDATING, 0, None),
        (10.0, State.RUNNING, 50, None),
        (15.0, State.FINALIZING, 100, None),
        (17.9, State.FINALIZING, 100, None),
        (18.0, State.SUCCEEDED, 100, 18.0),
    ],
)
def test_finalizing_between_the_last_line_and_the_end(
    at: float, state: State, processed: int, terminal_at: float | None
) -> None:
    """With finalizing_seconds F the job is FINALIZING from E to E + F, then terminal."""
    phase = phase_at(timeline(), T0 + at, OK)
    assert (phase.state, phase.processed, phase.terminal_at) == (state, processed, terminal_at)
    assert pending_at(timeline(), T0 + at, OK) == 100 - processed


def test_no_finalizing_by_default() -> None:
    """finalizing_seconds 0 (Mistral, and jobs stored before it existed): terminal at E."""
    assert phase_at(timeline(finalizing=0.0), T0 + 15.0, OK).state is State.SUCCEEDED


def test_an_input_refused_as_a_whole_processes_nothing() -> None:
    """usable False with failed_total 0: FAILED at V with no line judged."""
    phase = phase_at(timeline(), T0 + 5.0, REFUSED)
    assert (phase.state, phase.total, phase.processed, phase.terminal_at) == (
        State.FAILED, 0, 0, 5.0,
    )  # fmt: skip
    # Mistral's unusable inputs (every line invalid) still report every line.
    every = phase_at(timeline(), T0 + 5.0, Validation(usable=False, failed_total=100))
    assert (every.total, every.processed) == (100, 100)


@pytest.mark.parametrize(
    ("at", "validation", "cancel_at", "counts"),
    [
        (1.0, None, None, True),
        (10.0, OK, None, True),
        (16.0, OK, None, True),
        (18.0, OK, None, False),
        (1.0, REFUSED, None, False),
        (8.0, OK, T0 + 7.0, False),
    ],
)
def test_enqueued_states(
    at: float, validation: Validation | None, cancel_at: float | None, counts: bool
) -> None:
    """Tokens count while validating, running or finalizing; not refused, cancelling or done."""
    assert enqueued_at(timeline(cancel_at=cancel_at), T0 + at, validation) is counts
