"""What the read commands and the HTTP API report, as plain values: the ``--json`` objects.

Pure: no I/O and no clock (``now`` is passed in). The human renderings in
:mod:`orchestrator.cli._render` and the JSON API (:mod:`orchestrator.service.api`) are built
from the same values, so the table, ``status --json`` and ``GET /api/jobs`` never disagree.
It imports neither the daemon nor the CLI, so both the CLI and the service use it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs

from orchestrator.config import WorkspaceConfig
from orchestrator.ledger import JobEvent, ResultFile
from orchestrator.model import (
    IN_FLIGHT_STATES,
    STATE_ORDER,
    Job,
    JobState,
    pending,
    split_part_name,
)


def timestamp(at: float | None) -> str | None:
    """Epoch seconds as ISO 8601 UTC (``2026-01-31T12:00:00Z``), or None."""
    if at is None:
        return None
    moment = datetime.fromtimestamp(at, tz=UTC)
    text = moment.isoformat(timespec="milliseconds" if moment.microsecond else "seconds")
    return text.replace("+00:00", "Z")


def duration(seconds: float) -> str:
    """A short human duration: ``45s``, ``12m``, ``3h05m``, ``2d04h``."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, _ = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def total(job: Job) -> int:
    """Requests in the job: the provider's count once known, else the local count."""
    return job.total or job.request_count


def progress(job: Job) -> float | None:
    """Share of the job's requests processed (0 to 1), or None when it has none."""
    n = total(job)
    if n <= 0:
        return None
    done = job.completed
    if job.state is JobState.DONE and not done:
        done = job.succeeded + job.failed
    return min(1.0, done / n)


def parent_name(job: Job) -> str | None:
    """The name of a part's parent (None for any other job)."""
    if job.parent_id is None:
        return None
    split = split_part_name(job.name)
    return split[0] if split else None


def status_row(job: Job, *, now: float, parent_field: bool = False) -> dict[str, Any]:
    """The ``status --json`` object of one job (design.md §9, plus a few more fields).

    A split job's parent has ``part_count`` (how many parts; 0 for any other job); with
    ``parent_field`` every row also has ``parent`` (the parent's name for a part, else null).
    """
    share = progress(job)
    row = {
        "name": job.name,
        "state": job.state.value,
        "outcome": job.outcome.value if job.outcome else None,
        "remote_id": job.remote_id,
        "remote_status": job.remote_status,
        "total": total(job),
        "completed": job.completed,
        "succeeded": job.succeeded,
        "failed": job.failed,
        "pending": pending(job),
        "error": job.error,
        "progress": None if share is None else round(share, 4),
        "workspace": job.workspace,
        "requests": job.request_count,
        "prompt_tokens": job.prompt_tokens,
        "priority": job.priority,
        "cancel_requested": job.cancel_requested,
        "created_at": timestamp(job.created_at),
        "updated_at": timestamp(job.updated_at),
        "age_seconds": round(max(0.0, now - job.created_at), 3),
        "part_count": job.part_count,
    }
    if parent_field:
        row["parent"] = parent_name(job)
    return row


def show_detail(
    job: Job,
    files: Sequence[ResultFile],
    events: Sequence[JobEvent],
    *,
    now: float,
    parts: Sequence[Job] = (),
) -> dict[str, Any]:
    """The ``show --json`` object: the status row, the definition, remote ids, files, history.

    A split job's parent also lists its ``parts`` (their status rows); a part names its
    ``parent``.
    """
    return {
        **status_row(job, now=now, parent_field=True),
        "parts": [status_row(part, now=now, parent_field=True) for part in parts],
        "id": job.id,
        "model": job.model,
        "endpoint": job.endpoint,
        "inputs": list(job.inputs),
        "metadata": dict(job.metadata),
        "timeout_hours": job.timeout_hours,
        "definition_hash": job.definition_hash,
        "input_file_ids": list(job.input_file_ids),
        "output_file_id": job.output_file_id,
        "error_file_id": job.error_file_id,
        "attempts": job.attempts,
        "not_before": timestamp(job.not_before),
        "submitted_at": timestamp(job.submitted_at),
        "finished_at": timestamp(job.finished_at),
        "claimed_by": job.claimed_by,
        "lease_until": timestamp(job.lease_until),
        "files": [file_row(f) for f in files],
        "events": [
            {
                "at": timestamp(e.at),
                "from": e.from_state.value if e.from_state else None,
                "to": e.to_state.value,
                "remote_status": e.remote_status,
                "detail": e.detail,
            }
            for e in events
        ],
    }


def file_row(record: ResultFile) -> dict[str, Any]:
    """One downloaded file as the ledger recorded it, and whether it is still on disk."""
    return {
        "kind": record.kind,
        "path": record.path,
        "bytes": record.bytes,
        "sha256": record.sha256,
        "lines": record.lines,
        "exists": Path(record.path).is_file(),
    }


def results_detail(job: Job, files: Sequence[ResultFile], folder: Path) -> dict[str, Any]:
    """The ``results --json`` object: where the job's results are (``folder``), and counts."""
    summary = folder / "job.json"
    return {
        "name": job.name,
        "state": job.state.value,
        "outcome": job.outcome.value if job.outcome else None,
        "folder": str(folder),
        "total": total(job),
        "succeeded": job.succeeded,
        "failed": job.failed,
        "files": [file_row(f) for f in files],
        "summary": str(summary) if summary.is_file() else None,
    }


@attrs.frozen(kw_only=True)
class ModelTokens:
    """One model's prompt tokens in flight in a workspace, and its token budget."""

    model: str
    in_flight: int
    """Estimated prompt tokens of its admitted, submitting and running jobs (unscaled)."""
    budget: int | None
    """The model's token budget (None: not limited)."""

    def as_json(self) -> dict[str, Any]:
        """One entry of ``budget --json``'s ``tokens``."""
        free = None if self.budget is None else max(0, self.budget - self.in_flight)
        return {
            "model": self.model,
            "in_flight": self.in_flight,
            "budget": self.budget,
            "free": free,
        }


@attrs.frozen(kw_only=True)
class WorkspaceBudget:
    """One workspace's budget as the ledger sees it."""

    name: str
    budget: int | None
    """None for a workspace that is in the ledger but no longer in the config."""
    in_flight: int
    """Σpending of its admitted, submitting and running jobs."""
    in_flight_jobs: int
    queued: int
    """Requests of its queued jobs (the demand waiting for room)."""
    queued_jobs: int
    count_external: bool
    external: int | None = None
    """Pending requests of jobs this ledger did not create: only a running daemon knows."""
    next_job: str | None = None
    """The head of the queue (priority, then FIFO)."""
    next_requests: int = 0
    never_fits: tuple[str, ...] = ()
    """Queued jobs larger than the whole budget (the daemon rejects them)."""
    tokens: tuple[ModelTokens, ...] = ()
    """Per model with jobs in flight or a token budget: its prompt tokens in flight."""
    never_fits_tokens: tuple[str, ...] = ()
    """Queued jobs estimated above their model's whole token budget (rejected too)."""

    @property
    def free(self) -> int | None:
        """Budget not held by in-flight jobs (or external ones, when known)."""
        if self.budget is None:
            return None
        return max(0, self.budget - self.in_flight - (self.external or 0))

    def as_json(self) -> dict[str, Any]:
        """The ``budget --json`` object."""
        return {
            "workspace": self.name,
            "budget": self.budget,
            "in_flight": self.in_flight,
            "in_flight_jobs": self.in_flight_jobs,
            "free": self.free,
            "queued": self.queued,
            "queued_jobs": self.queued_jobs,
            "count_external": self.count_external,
            "external": self.external,
            "next_job": self.next_job,
            "next_requests": self.next_requests if self.next_job else None,
            "never_fits": list(self.never_fits),
            "tokens": [entry.as_json() for entry in self.tokens],
            "never_fits_tokens": list(self.never_fits_tokens),
            "in_config": self.budget is not None,
        }


def budgets(
    workspaces: Mapping[str, WorkspaceConfig],
    jobs: Iterable[Job],
    *,
    external: Mapping[str, int] | None = None,
) -> list[WorkspaceBudget]:
    """Each workspace's budget, in-flight and queued sums: the config's, then any other.

    Args:
        workspaces: The config's workspaces.
        jobs: Every job of the ledger.
        external: Per workspace, the external pending a running daemon measured (the live
            view passes it; the ``budget`` command cannot know it).
    """
    by_workspace: dict[str, list[Job]] = {name: [] for name in workspaces}
    for job in jobs:
        by_workspace.setdefault(job.workspace, []).append(job)
    rows = []
    for name, members in by_workspace.items():
        ws = workspaces.get(name)
        members = [j for j in members if not j.is_parent]  # its parts hold and wait
        flying = [j for j in members if j.state in IN_FLIGHT_STATES]
        queued = sorted(
            (j for j in members if j.state is JobState.QUEUED and not j.cancel_requested),
            key=lambda j: (-j.priority, j.id),
        )
        budget = ws.pending_budget if ws else None
        counted = bool(ws and ws.count_external)
        rows.append(
            WorkspaceBudget(
                name=name,
                budget=budget,
                in_flight=sum(pending(j) for j in flying),
                in_flight_jobs=len(flying),
                queued=sum(j.request_count for j in queued),
                queued_jobs=len(queued),
                count_external=counted,
                external=(external or {}).get(name) if counted else None,
                next_job=queued[0].name if queued else None,
                next_requests=queued[0].request_count if queued else 0,
                never_fits=tuple(
                    j.name for j in queued if budget is not None and j.request_count > budget
                ),
                tokens=_model_tokens(ws, flying),
                never_fits_tokens=tuple(
                    j.name
                    for j in queued
                    if ws is not None and j.prompt_tokens > (ws.token_budget_for(j.model) or 2**63)
                ),
            )
        )
    return rows


def budget_dimensions(row: WorkspaceBudget) -> list[dict[str, Any]]:
    """One gauge per budget dimension of a workspace: what is used of what limit.

    Requests pending (design §3) always; prompt tokens in flight per model where the workspace
    has a token budget or tokens in flight. A new dimension (spend, ...) is one more entry:
    the dashboard draws every entry the same way.
    """
    dimensions: list[dict[str, Any]] = [
        {
            "name": "requests",
            "label": "requests pending",
            "used": row.in_flight + (row.external or 0),
            "limit": row.budget,
            "unit": "requests",
        }
    ]
    dimensions += [
        {
            "name": f"tokens:{entry.model}",
            "label": f"prompt tokens in flight, {entry.model}",
            "used": entry.in_flight,
            "limit": entry.budget,
            "unit": "tokens",
        }
        for entry in row.tokens
    ]
    return dimensions


def _model_tokens(ws: WorkspaceConfig | None, flying: Sequence[Job]) -> tuple[ModelTokens, ...]:
    """Tokens in flight per model: the models with in-flight jobs or their own budget."""
    held: dict[str, int] = {}
    for job in flying:
        held[job.model] = held.get(job.model, 0) + job.prompt_tokens
    for model in ws.token_budgets if ws is not None else ():
        held.setdefault(model, 0)
    return tuple(
        ModelTokens(
            model=model,
            in_flight=count,
            budget=None if ws is None else ws.token_budget_for(model),
        )
        for model, count in sorted(held.items())
    )


def state_counts(jobs: Iterable[Job]) -> str:
    """``3 jobs: 1 running, 2 done (1 succeeded, 1 partial)``."""
    jobs = list(jobs)
    if not jobs:
        return "no jobs"
    states: dict[JobState, int] = {}
    outcomes: dict[str, int] = {}
    for job in jobs:
        states[job.state] = states.get(job.state, 0) + 1
        if job.outcome is not None:
            outcomes[job.outcome.value] = outcomes.get(job.outcome.value, 0) + 1
    parts = []
    for state in (*reversed(STATE_ORDER[:5]), JobState.DONE, JobState.REJECTED):
        if state in states:
            text = f"{states[state]} {state.value}"
            if state is JobState.DONE and outcomes:
                text += " (" + ", ".join(f"{n} {o}" for o, n in sorted(outcomes.items())) + ")"
            parts.append(text)
    noun = "job" if len(jobs) == 1 else "jobs"
    return f"{len(jobs)} {noun}: " + ", ".join(parts)


def first_line(text: str | None) -> str:
    """The first line of a (possibly multi-line) message."""
    return (text or "").strip().splitlines()[0] if (text or "").strip() else ""
