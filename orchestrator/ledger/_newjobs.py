"""SQL of new jobs: a job row, or a split job's parent and parts, on the caller's connection."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from orchestrator.ledger._queries import add_event, job_row
from orchestrator.ledger.schema import jobs
from orchestrator.model import JobSpec, JobState, new_client_token, part_name

log = structlog.get_logger("orchestrator.ledger.store")


@attrs.frozen(kw_only=True)
class PartSpec:
    """One part of a split job as intake wrote it: its input file and request count."""

    inputs: tuple[str, ...]
    request_count: int


def new_job_values(
    spec: JobSpec,
    *,
    definition_hash: str,
    request_count: int,
    state: JobState,
    error: str | None,
    at: float,
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
        "state": state.value,
        "input_file_ids": [],
        "error": error,
        "cancel_requested": False,
        "created_at": at,
        "updated_at": at,
        "finished_at": at if state is JobState.REJECTED else None,
    }


async def insert_job(
    conn: AsyncConnection, values: dict[str, Any], *, detail: str
) -> tuple[Any, bool]:
    """Insert the job of ``values`` unless its name exists: ``(row, inserted)``."""
    existing = await job_row(conn, jobs.c.name == values["name"])
    if existing is not None:
        return existing, False
    row = (await conn.execute(jobs.insert().values(values).returning(*jobs.c))).one()
    await add_event(conn, row, None, at=values["created_at"], detail=detail)
    log.debug("ledger.job_added", job=row.name, job_id=row.id, state=row.state)
    return row, True


async def insert_split_job(
    conn: AsyncConnection,
    spec: JobSpec,
    values: dict[str, Any],
    *,
    definition_hash: str,
    parts: Sequence[PartSpec],
) -> tuple[Any, bool]:
    """Insert a split job's parent and parts unless the name exists: ``(parent row, inserted)``."""
    at = values["created_at"]
    existing = await job_row(conn, jobs.c.name == spec.name)
    if existing is not None:
        return existing, False
    row = (await conn.execute(jobs.insert().values(values).returning(*jobs.c))).one()
    await add_event(conn, row, None, at=at, detail=f"created, split into {len(parts)} parts")
    for number, part in enumerate(parts, start=1):
        part_spec = attrs.evolve(spec, name=part_name(spec.name, number), inputs=part.inputs)
        part_values = new_job_values(
            part_spec,
            definition_hash=f"{definition_hash}:{number}",
            request_count=part.request_count,
            state=JobState.QUEUED,
            error=None,
            at=at,
        )
        part_values["parent_id"] = row.id
        part_row = (await conn.execute(jobs.insert().values(part_values).returning(*jobs.c))).one()
        await add_event(conn, part_row, None, at=at, detail=f"created, part of {spec.name}")
    log.debug("ledger.split_job_added", job=spec.name, job_id=row.id, parts=len(parts))
    return row, True
