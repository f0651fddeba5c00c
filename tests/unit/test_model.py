"""The transition table, outcomes and pending counts."""

from __future__ import annotations

import pytest

from orchestrator.errors import IllegalTransition
from orchestrator.model import (
    FINAL_STATES,
    TRANSITIONS,
    JobState,
    Outcome,
    RemotePhase,
    check_transition,
    outcome_for,
    pending,
    requeues_after,
)
from tests.unit.jobs import make_job

S = JobState
LEGAL = [
    (S.QUEUED, S.ADMITTED),
    (S.QUEUED, S.REJECTED),
    (S.QUEUED, S.DONE),
    (S.ADMITTED, S.SUBMITTING),
    (S.ADMITTED, S.QUEUED),
    (S.ADMITTED, S.REJECTED),
    (S.ADMITTED, S.DONE),
    (S.SUBMITTING, S.RUNNING),
    (S.SUBMITTING, S.QUEUED),
    (S.SUBMITTING, S.REJECTED),
    (S.RUNNING, S.COLLECTING),
    # A remote job that failed for capacity before processing anything (OpenAI's
    # token_limit_exceeded) goes back to the queue: see requeues_after.
    (S.RUNNING, S.QUEUED),
    (S.COLLECTING, S.DONE),
]


@pytest.mark.parametrize(("source", "target"), LEGAL)
def test_legal_transitions_pass(source: JobState, target: JobState) -> None:
    """Every move in the design's picture is allowed."""
    check_transition(source, target)


@pytest.mark.parametrize(
    ("source", "target"),
    [(s, t) for s in JobState for t in JobState if (s, t) not in LEGAL],
)
def test_every_other_transition_is_illegal(source: JobState, target: JobState) -> None:
    """Anything not in the table raises, including staying put and leaving a final state."""
    with pytest.raises(IllegalTransition, match=f"{source.value} -> {target.value}"):
        check_transition(source, target)


@pytest.mark.parametrize(
    ("phase", "codes", "completed", "expected"),
    [
        (RemotePhase.FAILED, ("token_limit_exceeded",), 0, True),
        (RemotePhase.FAILED, ("invalid_json_line", "token_limit_exceeded"), 0, True),
        (RemotePhase.FAILED, ("token_limit_exceeded",), 1, False),
        (RemotePhase.FAILED, ("invalid_json_line",), 0, False),
        (RemotePhase.FAILED, (), 0, False),
        (RemotePhase.SUCCEEDED, ("token_limit_exceeded",), 0, False),
        (RemotePhase.EXPIRED, ("token_limit_exceeded",), 0, False),
    ],
)
def test_only_a_capacity_failure_before_processing_requeues(
    phase: RemotePhase, codes: tuple[str, ...], completed: int, expected: bool
) -> None:
    """Back to the queue only when nothing ran and the provider named a capacity code."""
    assert requeues_after(phase, error_codes=codes, completed=completed) is expected


def test_final_states_have_no_exit() -> None:
    """done and rejected are forever."""
    assert all(not TRANSITIONS[state] for state in FINAL_STATES)


@pytest.mark.parametrize(
    ("phase", "succeeded", "failed", "expected"),
    [
        (RemotePhase.SUCCEEDED, 10, 0, Outcome.SUCCEEDED),
        (RemotePhase.SUCCEEDED, 9, 1, Outcome.PARTIAL),
        (RemotePhase.SUCCEEDED, 0, 9, Outcome.FAILED),  # OpenAI: every line failed, completed
        (RemotePhase.SUCCEEDED, 0, 0, Outcome.SUCCEEDED),
        (RemotePhase.FAILED, 0, 10, Outcome.FAILED),
        (RemotePhase.EXPIRED, 5, 0, Outcome.EXPIRED),
        (RemotePhase.CANCELLED, 3, 0, Outcome.CANCELLED),
    ],
)
def test_outcome_for_terminal_phases(
    phase: RemotePhase, succeeded: int, failed: int, expected: Outcome
) -> None:
    """A terminal remote phase and its counts give one outcome."""
    assert outcome_for(phase, succeeded=succeeded, failed=failed) is expected


@pytest.mark.parametrize("phase", [RemotePhase.VALIDATING, RemotePhase.RUNNING])
def test_outcome_for_non_terminal_phase_raises(phase: RemotePhase) -> None:
    """Asking for the outcome of a live job is a bug."""
    with pytest.raises(ValueError, match="not terminal"):
        outcome_for(phase, succeeded=0, failed=0)


@pytest.mark.parametrize(
    ("state", "total", "completed", "expected"),
    [
        (S.QUEUED, 0, 0, 0),
        (S.ADMITTED, 0, 0, 100),
        (S.SUBMITTING, 0, 0, 100),
        (S.RUNNING, 0, 0, 100),  # provider still validating: local count
        (S.RUNNING, 100, 30, 70),
        (S.RUNNING, 100, 100, 0),
        (S.COLLECTING, 100, 100, 0),
        (S.DONE, 100, 40, 0),
        (S.REJECTED, 0, 0, 0),
    ],
)
def test_pending_by_state(state: JobState, total: int, completed: int, expected: int) -> None:
    """Pending follows design.md §3 in every state."""
    job = make_job(state=state, request_count=100, total=total, completed=completed)
    assert pending(job) == expected
