"""The rows the emulator stores (files, jobs, the light index of jobs) and the values around them.

Everything here is wire-neutral. The one place a vendor's spelling survives is
:data:`STORED_STATES`: state folders written before the simulation had neutral states hold
Mistral's status strings in ``jobs.final_status`` and in the ``final`` snapshot, so they are
kept as the stored spelling and translated here, and an old ``--state-dir`` carries on.
"""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Mapping
from typing import Any

import attrs

from orchestrator.emulator.simulation import SimParams, State, Timeline, Validation

STORED_STATES: Mapping[State, str] = {
    State.VALIDATING: "QUEUED",
    State.RUNNING: "RUNNING",
    State.SUCCEEDED: "SUCCESS",
    State.FAILED: "FAILED",
    State.EXPIRED: "TIMEOUT_EXCEEDED",
    State.CANCELLING: "CANCELLATION_REQUESTED",
    State.CANCELLED: "CANCELLED",
}
"""How each state is spelled in the state database (schema version 1; do not change).
``FINALIZING`` is never stored: only terminal states are."""

_FROM_STORED = {stored: state for state, stored in STORED_STATES.items()}


def stored_state(text: str) -> State:
    """The state a stored spelling stands for."""
    return _FROM_STORED[text]


@attrs.frozen(kw_only=True)
class FileRow:
    """A stored file (uploaded input, or a generated result)."""

    id: str
    workspace: str
    filename: str
    purpose: str
    sample_type: str
    source: str
    bytes: int
    num_lines: int | None
    mimetype: str | None
    signature: str | None
    created_at: int
    expires_at: int | None = None
    visibility: str | None = None
    deleted: bool = False


@attrs.frozen(kw_only=True)
class JobSpec:
    """What a create asks for, once the wire has parsed and checked it."""

    endpoint: str
    input_files: list[str]
    """Ids of uploaded input files (empty when the requests come inline)."""
    inline: list[dict[str, Any]] | None
    """Inline ``{custom_id?, body}`` requests, for a wire that takes them in the create."""
    model: str | None
    agent_id: str | None
    """Mistral's agent, or ``None`` (kept as a column for the existing state format)."""
    metadata: dict[str, str] | None
    timeout_hours: int


@attrs.frozen(kw_only=True)
class Snapshot:
    """A job's progress and outcome at one instant, as every wire reports it."""

    state: State
    total: int
    succeeded: int
    failed: int
    started_at: int | None
    completed_at: int | None = None
    output_file: str | None = None
    error_file: str | None = None
    errors: list[dict[str, Any]] = attrs.field(factory=list)
    """Job-level errors in the wire's shape (Mistral ``[{message, count}]``): an unusable or
    refused input says why here."""
    usage: dict[str, int] | None = None
    """Tokens summed over the successful lines, once terminal (``None`` before, and for jobs
    finished before the field existed)."""

    @property
    def completed(self) -> int:
        """Lines processed: always succeeded + failed."""
        return self.succeeded + self.failed

    def to_final(self) -> dict[str, Any]:
        """The stored form of a terminal snapshot (the state in its stored spelling)."""
        data = attrs.asdict(self)
        data["status"] = STORED_STATES[data.pop("state")]
        return data

    @classmethod
    def from_final(cls, data: Mapping[str, Any]) -> Snapshot:
        """Rebuild a terminal snapshot from its stored form."""
        fields = dict(data)
        return cls(state=stored_state(fields.pop("status")), **fields)


@attrs.frozen(kw_only=True)
class JobRow:
    """A stored batch job: what it was created with and what is known so far."""

    id: str
    workspace: str
    endpoint: str
    model: str | None
    agent_id: str | None
    metadata: dict[str, str] | None
    timeout_hours: int
    input_files: list[str]
    created_at: float
    requests: int
    params: SimParams
    cancel_at: float | None = None
    validation: Validation | None = None
    job_errors: list[dict[str, Any]] = attrs.field(factory=list)
    final: dict[str, Any] | None = None
    """The frozen outcome once the job is terminal and its result files exist."""
    deleted: bool = False
    prompt_tokens: int = 0
    """The input's prompt tokens by the wire's estimate at create (0: not estimated)."""

    @property
    def timeline(self) -> Timeline:
        """The inputs of :func:`~orchestrator.emulator.simulation.phase_at`."""
        return Timeline(
            created_at=self.created_at,
            requests=self.requests,
            timeout_hours=self.timeout_hours,
            params=self.params,
            cancel_at=self.cancel_at,
        )


@attrs.frozen(kw_only=True)
class JobIndex:
    """The light form of a job: enough to place it on its timeline, without its payload."""

    id: str
    timeline: Timeline
    validation: Validation | None
    final_state: State | None
    model: str | None = None
    prompt_tokens: int = 0


INDEX_COLUMNS = (
    "id, created_at, requests, timeout_hours, params, cancel_at, usable, failed_total, "
    "final_status, model, prompt_tokens"
)


@functools.lru_cache(maxsize=256)
def _params(text: str) -> SimParams:
    # Jobs created under the same settings share one JSON text: parse it once.
    return SimParams(**json.loads(text))


def _validation(row: sqlite3.Row) -> Validation | None:
    if row["usable"] is None:
        return None
    return Validation(usable=bool(row["usable"]), failed_total=row["failed_total"])


def index_from(row: sqlite3.Row) -> JobIndex:
    return JobIndex(
        id=row["id"],
        timeline=Timeline(
            created_at=row["created_at"],
            requests=row["requests"],
            timeout_hours=row["timeout_hours"],
            params=_params(row["params"]),
            cancel_at=row["cancel_at"],
        ),
        validation=_validation(row),
        final_state=stored_state(row["final_status"]) if row["final_status"] else None,
        model=row["model"],
        prompt_tokens=row["prompt_tokens"] or 0,
    )


def file_from(row: sqlite3.Row) -> FileRow:
    return FileRow(
        id=row["id"],
        workspace=row["workspace"],
        filename=row["filename"],
        purpose=row["purpose"],
        sample_type=row["sample_type"],
        source=row["source"],
        bytes=row["bytes"],
        num_lines=row["num_lines"],
        mimetype=row["mimetype"],
        signature=row["signature"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        visibility=row["visibility"],
        deleted=bool(row["deleted"]),
    )


def job_from(row: sqlite3.Row) -> JobRow:
    return JobRow(
        id=row["id"],
        workspace=row["workspace"],
        endpoint=row["endpoint"],
        model=row["model"],
        agent_id=row["agent_id"],
        metadata=json.loads(row["metadata"]) if row["metadata"] is not None else None,
        timeout_hours=row["timeout_hours"],
        input_files=json.loads(row["input_files"]),
        created_at=row["created_at"],
        requests=row["requests"],
        params=_params(row["params"]),
        cancel_at=row["cancel_at"],
        validation=_validation(row),
        job_errors=json.loads(row["job_errors"]) if row["job_errors"] else [],
        final=json.loads(row["final"]) if row["final"] else None,
        deleted=bool(row["deleted"]),
        prompt_tokens=row["prompt_tokens"] or 0,
    )
