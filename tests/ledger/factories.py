"""Builders of job specs and ledger rows for the ledger tests."""

from __future__ import annotations

from typing import Any

from orchestrator.ledger import SqlLedger
from orchestrator.model import Job, JobSpec, JobState, Outcome

SHA = "ab" * 32
"""A well-formed sha256 hex digest."""


def make_spec(name: str = "cheese-survey", **overrides: Any) -> JobSpec:
    """A plausible job definition; ``overrides`` replace any field."""
    fields: dict[str, Any] = {
        "name": name,
        "workspace": "main",
        "model": "mistral-small-latest",
        "endpoint": "/v1/chat/completions",
        "inputs": ("/data/cheese.jsonl",),
        "metadata": {"team": "research"},
        "timeout_hours": 24,
        "priority": 0,
    }
    fields.update(overrides)
    return JobSpec(**fields)


async def add(ledger: SqlLedger, name: str = "cheese-survey", **overrides: Any) -> Job:
    """Add a queued job of 100 requests and return it."""
    job, created = await ledger.add_job(
        make_spec(name, **overrides), definition_hash=f"hash-{name}", request_count=100
    )
    assert created
    return job


PATH_TO: dict[JobState, tuple[JobState, ...]] = {
    JobState.QUEUED: (),
    JobState.ADMITTED: (JobState.ADMITTED,),
    JobState.SUBMITTING: (JobState.ADMITTED, JobState.SUBMITTING),
    JobState.RUNNING: (JobState.ADMITTED, JobState.SUBMITTING, JobState.RUNNING),
    JobState.COLLECTING: (
        JobState.ADMITTED,
        JobState.SUBMITTING,
        JobState.RUNNING,
        JobState.COLLECTING,
    ),
}
"""Legal moves that bring a new (queued) job to each non-final state."""


async def bring_to(ledger: SqlLedger, job: Job, state: JobState) -> Job:
    """Move a queued ``job`` along legal transitions until it is in ``state``."""
    for target in PATH_TO[state]:
        job = await ledger.transition(job.id, job.state, target, detail=f"to {target}")
    return job


def final_changes(target: JobState) -> dict[str, Any]:
    """Changes a transition to ``target`` needs (``done`` carries an outcome)."""
    return {"outcome": Outcome.SUCCEEDED} if target is JobState.DONE else {}
