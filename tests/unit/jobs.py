"""Builders of Job values for pure-core tests."""

from __future__ import annotations

from typing import Any

from orchestrator.model import Job, JobState


def make_job(job_id: int = 1, **overrides: Any) -> Job:
    """A job with plausible defaults; ``overrides`` replace any field."""
    fields: dict[str, Any] = {
        "id": job_id,
        "name": f"job-{job_id}",
        "workspace": "main",
        "model": "mistral-small-latest",
        "endpoint": "/v1/chat/completions",
        "inputs": (f"/data/{job_id}.jsonl",),
        "metadata": {},
        "timeout_hours": 24,
        "priority": 0,
        "definition_hash": f"hash-{job_id}",
        "client_token": f"orch-test-{job_id}",
        "request_count": 100,
        "state": JobState.QUEUED,
    }
    fields.update(overrides)
    return Job(**fields)
