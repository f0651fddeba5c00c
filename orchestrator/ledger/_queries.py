"""Small SQL steps shared by the ledger's operations, each run on the caller's connection."""

from __future__ import annotations

from typing import Any, NoReturn

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from orchestrator.errors import JobNotFound, LeaseLost, StaleTransition
from orchestrator.ledger.schema import job_events, jobs
from orchestrator.model import JobState


async def job_row(conn: AsyncConnection, where: sa.ColumnElement[bool]) -> Any:
    """The ``jobs`` row matching ``where``, or None."""
    return (await conn.execute(sa.select(jobs).where(where))).first()


async def require_job(conn: AsyncConnection, job_id: int) -> None:
    """Raise :class:`JobNotFound` unless job ``job_id`` exists."""
    if await conn.scalar(sa.select(jobs.c.id).where(jobs.c.id == job_id)) is None:
        raise JobNotFound(job_id)


async def raise_missing_or_stale(
    conn: AsyncConnection,
    job_id: int,
    expected: JobState,
    target: JobState,
    *,
    owner: str | None = None,
) -> NoReturn:
    """Raise JobNotFound or StaleTransition for a compare-and-set that matched nothing.

    With ``owner`` (a fenced write): :class:`LeaseLost` when the job is still in ``expected``
    but another replica holds it.
    """
    row = (
        await conn.execute(sa.select(jobs.c.state, jobs.c.claimed_by).where(jobs.c.id == job_id))
    ).first()
    if row is None:
        raise JobNotFound(job_id)
    if owner is not None and row.state == expected.value and row.claimed_by != owner:
        raise LeaseLost(job_id, expected.value, target.value, owner)
    raise StaleTransition(job_id, expected.value, target.value)


async def add_event(
    conn: AsyncConnection,
    row: Any,
    from_state: JobState | None,
    *,
    at: float,
    detail: str | None,
) -> None:
    """Append a history entry for ``row`` (the job as it is now) to ``job_events``."""
    await conn.execute(
        job_events.insert().values(
            job_id=row.id,
            at=at,
            from_state=None if from_state is None else from_state.value,
            to_state=row.state,
            remote_status=row.remote_status,
            detail=detail,
        )
    )
