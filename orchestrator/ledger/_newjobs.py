"""SQL of new jobs: a job row, or a split job's parent and parts, on the caller's connection."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from orchestrator.ledger._queries import add_event, job_row
from orchestrator.ledger.schema import jobs
from orchestrator.ledger.values import job_from_row
from orchestrator.model import JobSpec, JobState, new_client_token, part_name, redefinable

log = structlog.get_logger("orchestrator.ledger.store")


@attrs.frozen(kw_only=True)
class PartSpec:
    """One part of a split job as intake wrote it: its input file, requests and tokens."""

    inputs: tuple[str, ...]
    request_count: int
    prompt_tokens: int = 0
    """The part's prompt-token estimate (the sum over its lines)."""
    max_output_tokens: int = 0
    """Σ of the output caps its lines set."""
    uncapped_requests: int | None = None
    """Its lines that set no output cap (None: not counted; all of them count)."""


def split_totals(parts: Sequence[PartSpec]) -> dict[str, Any]:
    """A split job's parent's estimates: the sums over its parts (``uncapped_requests`` None
    when a part's is unknown)."""
    uncapped = [part.uncapped_requests for part in parts]
    return {
        "prompt_tokens": sum(part.prompt_tokens for part in parts),
        "max_output_tokens": sum(part.max_output_tokens for part in parts),
        "uncapped_requests": None if None in uncapped else sum(u or 0 for u in uncapped),
    }


def new_job_values(
    spec: JobSpec,
    *,
    definition_hash: str,
    request_count: int,
    state: JobState,
    error: str | None,
    at: float,
    prompt_tokens: int = 0,
    max_output_tokens: int = 0,
    uncapped_requests: int | None = None,
) -> dict[str, Any]:
    """The column values of a new job row."""
    return {
        "name": spec.name,
        "workspace": spec.workspace,
        "model": spec.model,
        "endpoint": spec.endpoint,
        "inputs": list(spec.inputs),
        "metadata": dict(spec.metadata),
        "timeout_hours": spec.timeout_hours,
        "priority": spec.priority,
        "definition_hash": definition_hash,
        "client_token": new_client_token(),
        "request_count": request_count,
        "prompt_tokens": prompt_tokens,
        "max_output_tokens": max_output_tokens,
        "uncapped_requests": uncapped_requests,
        "state": state.value,
        "input_file_ids": [],
        "input_file_sha256s": [],
        "error": error,
        "cancel_requested": False,
        "created_at": at,
        "updated_at": at,
        "finished_at": at if state is JobState.REJECTED else None,
    }


_RUN_COLUMNS_RESET: dict[str, Any] = {
    "input_file_sha256s": [],
    "outcome": None,
    "remote_id": None,
    "remote_status": None,
    "output_file_id": None,
    "error_file_id": None,
    "total": 0,
    "completed": 0,
    "succeeded": 0,
    "failed": 0,
    "attempts": 0,
    "not_before": None,
    "submitted_at": None,
    "claimed_by": None,
    "lease_until": None,
    "parent_id": None,
    "part_count": 0,
}
"""What a redefined job starts from again: nothing of the rejected definition's run is kept."""


async def insert_job(
    conn: AsyncConnection, values: dict[str, Any], *, detail: str
) -> tuple[Any, bool]:
    """Insert the job of ``values``, or replace the rejected job of that name: ``(row, written)``.

    A name that holds any other job, or a rejected job with this very definition, is left
    untouched and returned with ``written`` False. A rejected job under another definition is
    redefined in place (see :func:`orchestrator.model.redefinable`): same id and name, every
    other column from ``values``; its history keeps the rejection, and one event says what
    replaced it and why the old definition was refused.
    """
    at = values["created_at"]
    existing = await job_row(conn, jobs.c.name == values["name"])
    if existing is None:
        row = (await conn.execute(jobs.insert().values(values).returning(*jobs.c))).one()
        await add_event(conn, row, None, at=at, detail=detail)
        log.debug("ledger.job_added", job=row.name, job_id=row.id, state=row.state)
        return row, True
    old = job_from_row(existing)
    if not redefinable(old) or old.definition_hash == values["definition_hash"]:
        return existing, False
    changes = {**_RUN_COLUMNS_RESET, **values, "updated_at": at}
    del changes["name"], changes["created_at"]
    replaced = (
        await conn.execute(
            jobs.update()
            .where(
                jobs.c.id == old.id,
                jobs.c.state == JobState.REJECTED.value,
                jobs.c.definition_hash == old.definition_hash,
            )
            .values(changes)
            .returning(*jobs.c)
        )
    ).first()
    if replaced is None:  # redefined by another replica's intake within this instant
        return await job_row(conn, jobs.c.id == old.id), False
    await add_event(
        conn,
        replaced,
        JobState.REJECTED,
        at=at,
        detail=f"redefined, {detail}; the earlier definition was rejected: {old.error}",
    )
    log.info("ledger.job_redefined", job=replaced.name, job_id=replaced.id, state=replaced.state)
    return replaced, True


async def insert_split_job(
    conn: AsyncConnection,
    spec: JobSpec,
    values: dict[str, Any],
    *,
    definition_hash: str,
    parts: Sequence[PartSpec],
) -> tuple[Any, bool]:
    """Record a split job's parent and parts unless the name holds a job to keep.

    Returns ``(parent row, written)``; see :func:`insert_job` for a name that holds a rejected
    job (never a parent: parents are recorded queued and cannot be rejected).
    """
    at = values["created_at"]
    row, written = await insert_job(conn, values, detail=f"created, split into {len(parts)} parts")
    if not written:
        return row, False
    for number, part in enumerate(parts, start=1):
        part_spec = attrs.evolve(spec, name=part_name(spec.name, number), inputs=part.inputs)
        part_values = new_job_values(
            part_spec,
            definition_hash=f"{definition_hash}:{number}",
            request_count=part.request_count,
            state=JobState.QUEUED,
            error=None,
            at=at,
            prompt_tokens=part.prompt_tokens,
            max_output_tokens=part.max_output_tokens,
            uncapped_requests=part.uncapped_requests,
        )
        part_values["parent_id"] = row.id
        part_row = (await conn.execute(jobs.insert().values(part_values).returning(*jobs.c))).one()
        await add_event(conn, part_row, None, at=at, detail=f"created, part of {spec.name}")
    log.debug("ledger.split_job_added", job=spec.name, job_id=row.id, parts=len(parts))
    return row, True
