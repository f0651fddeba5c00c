"""Values the ledger returns besides :class:`orchestrator.model.Job`; rows to values; no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import attrs

from orchestrator.model import Job, JobChanges, JobSpec, JobState, Outcome
from orchestrator.usage import Usage

FileKind = Literal["output", "error"]
"""A job's result file: the provider's output file or its error file."""


@attrs.frozen(kw_only=True)
class ResultFile:
    """A downloaded result file as the ledger recorded it (after fsync and rename)."""

    job_id: int
    kind: FileKind
    path: str
    bytes: int
    """Size of the file on disk."""
    sha256: str
    """Lowercase hex digest of the whole file."""
    lines: int
    """Newline-terminated lines (JSONL records) in the file."""
    recorded_at: float
    usage: Usage | None = None
    """Tokens its lines reported (None: recorded before usage was read)."""


@attrs.frozen(kw_only=True)
class JobEvent:
    """One entry of a job's history: a creation, a transition or a noteworthy update."""

    id: int
    job_id: int
    at: float
    from_state: JobState | None
    """None for the creation event."""
    to_state: JobState
    """Equal to ``from_state`` for an update within a state."""
    remote_status: str | None
    """The provider's raw status as of this event."""
    detail: str | None


CHANGE_KEYS = frozenset(JobChanges.__required_keys__ | JobChanges.__optional_keys__)
"""The fields :meth:`SqlLedger.transition` and :meth:`SqlLedger.update` may change."""


def encode_changes(changes: Mapping[str, Any]) -> dict[str, Any]:
    """Column values for ``changes``: enum values, lists for JSON columns.

    Raises:
        TypeError: a key is not a :class:`orchestrator.model.JobChanges` field.
        ValueError: ``outcome`` is not an :class:`Outcome` value.
    """
    unknown = set(changes) - CHANGE_KEYS
    if unknown:
        raise TypeError(
            f"cannot change job field(s) {', '.join(sorted(unknown))}: "
            f"the ledger changes only {', '.join(sorted(CHANGE_KEYS))} (and state by transition)"
        )
    values = dict(changes)
    if values.get("outcome") is not None:
        values["outcome"] = Outcome(values["outcome"]).value
    for listed in ("input_file_ids", "input_file_sha256s"):
        if listed in values:
            values[listed] = list(values[listed])
    if "usage" in values:
        values.update(job_usage_columns(values.pop("usage")))
    return values


_JOB_USAGE = {
    "usage_prompt_tokens": "prompt_tokens",
    "usage_completion_tokens": "completion_tokens",
    "usage_total_tokens": "total_tokens",
    "usage_lines": "lines",
    "usage_lines_without": "lines_without_usage",
}
"""``jobs`` column -> :class:`Usage` field."""
_FILE_USAGE = {
    "prompt_tokens": "prompt_tokens",
    "completion_tokens": "completion_tokens",
    "total_tokens": "total_tokens",
    "usage_lines_without": "lines_without_usage",
}
"""``result_files`` column -> :class:`Usage` field (its lines are the file's ``lines``)."""


def job_usage_columns(usage: Usage | None) -> dict[str, int | None]:
    """The ``jobs`` columns that hold ``usage`` (all NULL for None)."""
    return {
        column: None if usage is None else getattr(usage, field)
        for column, field in _JOB_USAGE.items()
    }


def file_usage_columns(usage: Usage | None) -> dict[str, int | None]:
    """The ``result_files`` columns that hold ``usage`` (all NULL for None)."""
    return {
        column: None if usage is None else getattr(usage, field)
        for column, field in _FILE_USAGE.items()
    }


def _usage_from(row: Any, columns: Mapping[str, str], **more: int) -> Usage | None:
    if getattr(row, "usage_lines_without", None) is None:
        return None
    return Usage(**{field: getattr(row, column) or 0 for column, field in columns.items()}, **more)


def job_from_row(row: Any) -> Job:
    """The :class:`Job` for a ``jobs`` row (lease columns are the daemon's, not the job's)."""
    return Job(
        id=row.id,
        name=row.name,
        workspace=row.workspace,
        model=row.model,
        endpoint=row.endpoint,
        inputs=tuple(row.inputs),
        metadata=dict(row.metadata),
        timeout_hours=row.timeout_hours,
        priority=row.priority,
        definition_hash=row.definition_hash,
        client_token=row.client_token,
        request_count=row.request_count,
        state=JobState(row.state),
        outcome=None if row.outcome is None else Outcome(row.outcome),
        remote_id=row.remote_id,
        remote_status=row.remote_status,
        input_file_ids=tuple(row.input_file_ids),
        output_file_id=row.output_file_id,
        error_file_id=row.error_file_id,
        total=row.total,
        completed=row.completed,
        succeeded=row.succeeded,
        failed=row.failed,
        error=row.error,
        cancel_requested=bool(row.cancel_requested),
        attempts=row.attempts,
        not_before=row.not_before,
        created_at=row.created_at,
        updated_at=row.updated_at,
        submitted_at=row.submitted_at,
        finished_at=row.finished_at,
        parent_id=row.parent_id,
        part_count=row.part_count,
        claimed_by=row.claimed_by,
        lease_until=row.lease_until,
        prompt_tokens=row.prompt_tokens,
        input_file_sha256s=tuple(row.input_file_sha256s),
        max_output_tokens=row.max_output_tokens,
        uncapped_requests=row.uncapped_requests,
        usage=_usage_from(row, _JOB_USAGE),
    )


def event_from_row(row: Any) -> JobEvent:
    """The :class:`JobEvent` for a ``job_events`` row."""
    return JobEvent(
        id=row.id,
        job_id=row.job_id,
        at=row.at,
        from_state=None if row.from_state is None else JobState(row.from_state),
        to_state=JobState(row.to_state),
        remote_status=row.remote_status,
        detail=row.detail,
    )


def file_from_row(row: Any) -> ResultFile:
    """The :class:`ResultFile` for a ``result_files`` row."""
    return ResultFile(
        job_id=row.job_id,
        kind=row.kind,
        path=row.path,
        bytes=row.bytes,
        sha256=row.sha256,
        lines=row.lines,
        recorded_at=row.recorded_at,
        usage=_usage_from(row, _FILE_USAGE, lines=row.lines),
    )


def definition_differences(
    existing: Job, spec: JobSpec, *, splits: bool = False
) -> tuple[str, ...]:
    """Which parts of the definition differ between a recorded job and a new spec.

    ``splits`` says whether the new definition is split into parts: the part size is part of
    a split job's hash, so when nothing else differs it may be what changed.
    """
    fields = {
        "workspace": (existing.workspace, spec.workspace),
        "model": (existing.model, spec.model),
        "endpoint": (existing.endpoint, spec.endpoint),
        "inputs": (tuple(existing.inputs), tuple(spec.inputs)),
        "metadata": (dict(existing.metadata), dict(spec.metadata)),
        "timeout_hours": (existing.timeout_hours, spec.timeout_hours),
    }
    differences = tuple(name for name, (old, new) in fields.items() if old != new)
    # The hash also covers the input files' bytes: same paths, other contents.
    if differences:
        return differences
    if splits or existing.is_parent:
        return ("input contents or split_requests",)
    return ("input contents",)
