"""The pure side of splitting: the parent's transition table, aggregate and part names."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.budget import admit
from orchestrator.errors import IllegalTransition
from orchestrator.model import (
    FINAL_STATES,
    PARENT_TRANSITIONS,
    TRANSITIONS,
    Job,
    JobState,
    Outcome,
    check_transition,
    parent_aggregate,
    part_name,
    pending,
    split_part_name,
)
from tests.unit.jobs import make_job

_PART_STATES: list[tuple[JobState, Outcome | None]] = [
    (JobState.QUEUED, None),
    (JobState.ADMITTED, None),
    (JobState.SUBMITTING, None),
    (JobState.RUNNING, None),
    (JobState.COLLECTING, None),
    (JobState.REJECTED, None),
    *((JobState.DONE, outcome) for outcome in Outcome),
]

parts_strategy = st.lists(
    st.tuples(
        st.sampled_from(_PART_STATES),
        st.integers(0, 1000),
        st.integers(0, 1000),
        st.integers(0, 1000),
    ),
    min_size=1,
    max_size=12,
).map(
    lambda rows: [
        make_job(
            i + 1,
            state=state,
            outcome=outcome,
            total=total,
            completed=min(done, total),
            succeeded=ok,
            failed=bad,
            parent_id=99,
        )
        for i, ((state, outcome), total, done, ok) in enumerate(rows)
        for bad in (total - min(ok, total),)
    ]
)


def test_parent_table_is_separate_from_the_ordinary_one() -> None:
    """queued -> running is a parent's move only; queued -> admitted an ordinary job's only."""
    check_transition(JobState.QUEUED, JobState.RUNNING, parent=True)
    check_transition(JobState.RUNNING, JobState.DONE, parent=True)
    with pytest.raises(IllegalTransition):
        check_transition(JobState.QUEUED, JobState.RUNNING)
    with pytest.raises(IllegalTransition):
        check_transition(JobState.QUEUED, JobState.ADMITTED, parent=True)
    # running -> queued is an ordinary job's requeue after a capacity failure, not a parent's.
    assert TRANSITIONS[JobState.RUNNING] == frozenset({JobState.COLLECTING, JobState.QUEUED})
    assert JobState.QUEUED not in PARENT_TRANSITIONS[JobState.RUNNING]
    assert set(PARENT_TRANSITIONS) == set(JobState)
    for final in FINAL_STATES:
        assert PARENT_TRANSITIONS[final] == frozenset()


def test_a_parent_holds_no_budget_and_is_never_admitted() -> None:
    """pending(parent) == 0 in every state; admission skips a queued parent."""
    for state in JobState:
        assert pending(make_job(1, state=state, part_count=3, total=10)) == 0
    parent = make_job(1, part_count=2, request_count=5000)
    part = make_job(2, parent_id=1, request_count=1000)
    decision = admit([parent, part], in_flight=0, budget=1500, now=0.0)
    assert decision.admit == (2,)
    assert decision.never_fits == ()


def test_part_names_round_trip() -> None:
    """A part's name gives back its parent and number; a job name gives None."""
    assert part_name("survey", 3) == "survey/part-0003"
    assert split_part_name("survey/part-0003") == ("survey", 3)
    assert split_part_name("survey/part-12345") == ("survey", 12345)
    assert split_part_name("survey") is None
    assert split_part_name("survey/part-x") is None


@given(parts_strategy)
def test_aggregate_sums_counts_and_follows_the_parts(parts: list[Job]) -> None:
    """Counts are sums; the state and outcome follow the documented rules."""
    agg = parent_aggregate(parts)
    assert agg.total == sum(p.total for p in parts)
    assert agg.completed == sum(p.completed for p in parts)
    assert agg.succeeded == sum(p.succeeded for p in parts)
    assert agg.failed == sum(p.failed for p in parts)
    assert agg.remote_status.startswith("parts: ")
    assert len(agg.remote_status) <= 64
    final = all(p.state in FINAL_STATES for p in parts)
    if final:
        assert agg.state is JobState.COLLECTING
        outcomes = [Outcome.FAILED if p.state is JobState.REJECTED else p.outcome for p in parts]
        if all(o is Outcome.SUCCEEDED for o in outcomes):
            assert agg.outcome is Outcome.SUCCEEDED
        elif Outcome.CANCELLED in outcomes:
            assert agg.outcome is Outcome.CANCELLED
        elif Outcome.EXPIRED in outcomes:
            assert agg.outcome is Outcome.EXPIRED
        elif all(o is Outcome.FAILED for o in outcomes):
            assert agg.outcome is Outcome.FAILED
        else:
            assert agg.outcome is Outcome.PARTIAL
    else:
        assert agg.outcome is None
        if all(p.state is JobState.QUEUED for p in parts):
            assert agg.state is JobState.QUEUED
        else:
            assert agg.state is JobState.RUNNING
    # The aggregate's next state is always reachable from the previous one by the parent table.
    if agg.state is not JobState.QUEUED:
        assert (
            agg.state in PARENT_TRANSITIONS[JobState.QUEUED] | PARENT_TRANSITIONS[JobState.RUNNING]
        )


def test_aggregate_summary_names_the_states() -> None:
    """The summary lists the parts' states, moving ones first."""
    parts = [
        make_job(1, state=JobState.RUNNING),
        make_job(2, state=JobState.RUNNING),
        make_job(3, state=JobState.DONE, outcome=Outcome.SUCCEEDED),
        make_job(4, state=JobState.QUEUED),
    ]
    assert parent_aggregate(parts).remote_status == "parts: 2 running, 1 queued, 1 done"
    with pytest.raises(ValueError, match="at least one part"):
        parent_aggregate([])
