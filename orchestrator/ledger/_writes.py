"""SQL of the compare-and-set writes about one job, each run on the caller's write transaction."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from orchestrator.ledger._attempts import flag_attempts
from orchestrator.ledger._queries import add_event, job_row, raise_missing_or_stale
from orchestrator.ledger.schema import jobs
from orchestrator.ledger.values import job_from_row
from orchestrator.model import FINAL_STATES, Job, JobState, check_transition

log = structlog.get_logger("orchestrator.ledger.store")


async def cas_transition(
    conn: AsyncConnection,
    job_id: int,
    expected: JobState,
    target: JobState,
    values: dict[str, Any],
    *,
    kinds: list[bool],
    now: float,
    detail: str | None,
    guard: sa.ColumnElement[bool] | None = None,
    owner: str | None = None,
) -> Job:
    """Move job ``job_id`` from ``expected`` to ``target`` with ``values``, plus its event.

    ``kinds`` says which kinds of job allow the move (False: an ordinary job, True: a split
    job's parent). ``guard`` is the lease fence (with ``owner``, who it names). Raises as
    :meth:`SqlLedger.transition <orchestrator.ledger.SqlLedger>`.
    """
    values["state"] = target.value
    values["updated_at"] = now
    if target in FINAL_STATES and "finished_at" not in values:
        values["finished_at"] = sa.func.coalesce(jobs.c.finished_at, now)
    if target is JobState.RUNNING and "submitted_at" not in values:
        values["submitted_at"] = sa.func.coalesce(jobs.c.submitted_at, now)
    statement = (
        jobs.update()
        .where(jobs.c.id == job_id, jobs.c.state == expected.value)
        .values(values)
        .returning(*jobs.c)
    )
    if kinds == [False]:
        statement = statement.where(jobs.c.part_count == 0)
    elif kinds == [True]:
        statement = statement.where(jobs.c.part_count > 0)
    if guard is not None:
        statement = statement.where(guard)
    row = (await conn.execute(statement)).first()
    if row is None:
        is_parent = await conn.scalar(sa.select(jobs.c.part_count > 0).where(jobs.c.id == job_id))
        if is_parent is not None and bool(is_parent) not in kinds:
            check_transition(expected, target, parent=bool(is_parent))  # raises
        await raise_missing_or_stale(
            conn, job_id, expected, target, owner=None if guard is None else owner
        )
    job = job_from_row(row)
    if target is JobState.DONE and job.outcome is None:
        # Raising inside the transaction rolls the update back.
        raise ValueError(
            f"job {job_id}: a job reaches done with an outcome: pass outcome=Outcome.…"
        )
    await add_event(conn, row, expected, at=now, detail=detail)
    return job


async def cas_update(
    conn: AsyncConnection,
    job_id: int,
    expected: JobState,
    values: dict[str, Any],
    *,
    now: float,
    detail: str | None,
    owner: str | None = None,
) -> Any:
    """Set ``values`` on job ``job_id`` if it is still in ``expected``; return the new row.

    An event is recorded when ``detail`` is given or the remote status changed. With
    ``owner`` (a fenced write) the job must also be claimed by it, else :class:`LeaseLost`.
    """
    values["updated_at"] = now
    # FOR UPDATE holds the row on PostgreSQL until commit, so the status comparison below
    # cannot be overtaken (SQLite already holds its write lock).
    before = (
        await conn.execute(
            sa.select(jobs.c.state, jobs.c.remote_status, jobs.c.claimed_by)
            .where(jobs.c.id == job_id)
            .with_for_update()
        )
    ).first()
    if (
        before is None
        or before.state != expected.value
        or (owner is not None and before.claimed_by != owner)
    ):
        await raise_missing_or_stale(conn, job_id, expected, expected, owner=owner)
    row = (
        await conn.execute(
            jobs.update()
            .where(jobs.c.id == job_id, jobs.c.state == expected.value)
            .values(values)
            .returning(*jobs.c)
        )
    ).one()
    status_changed = row.remote_status != before.remote_status
    if detail is None and status_changed:
        detail = f"remote status {before.remote_status or 'none'} -> {row.remote_status}"
    if detail is not None:
        await add_event(conn, row, expected, at=now, detail=detail)
    return row


async def flag_cancel(conn: AsyncConnection, name: str, *, now: float) -> Any:
    """Flag the unfinished job ``name`` (and a parent's unfinished parts) for cancellation.

    Returns the job's row (flagged now, or as it was), or None when no job has that name.
    """
    unfinished = jobs.c.state.not_in([s.value for s in FINAL_STATES])
    row = (
        await conn.execute(
            jobs.update()
            .where(jobs.c.name == name, unfinished, jobs.c.cancel_requested.is_(False))
            .values(cancel_requested=True, updated_at=now)
            .returning(*jobs.c)
        )
    ).first()
    if row is None:
        return await job_row(conn, jobs.c.name == name)
    await add_event(conn, row, JobState(row.state), at=now, detail="cancel requested")
    log.info("ledger.cancel_requested", job=name, job_id=row.id, state=row.state)
    roots = [row.id]
    if row.part_count > 0:
        parts = (
            await conn.execute(
                jobs.update()
                .where(jobs.c.parent_id == row.id, unfinished, jobs.c.cancel_requested.is_(False))
                .values(cancel_requested=True, updated_at=now)
                .returning(*jobs.c)
            )
        ).all()
        for part in parts:
            await add_event(
                conn, part, JobState(part.state), at=now, detail=f"cancel requested (with {name})"
            )
        roots += [part.id for part in parts]
    await flag_attempts(conn, roots, now=now, name=name)  # no further attempt runs either
    return row
