"""The attempts of a job (issue #14): rows that run a job's failed lines again.

An attempt is an ordinary job row (queued, then admitted, submitted with intent, polled,
collected, recovered like any other) named ``<job>/attempt-NN`` with ``retry_of`` pointing at
the job it retries. Recording one is a single transaction with a compare-and-set on the job's
``attempt`` number, so a crash or a second replica can never record the same attempt twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
import structlog

from orchestrator.errors import JobNotFound, StaleTransition
from orchestrator.ledger._leasing import LeaseMethods
from orchestrator.ledger._queries import add_event, job_row
from orchestrator.ledger.schema import jobs
from orchestrator.ledger.values import job_from_row
from orchestrator.model import FINAL_STATES, Job, JobState, new_client_token
from orchestrator.retries import attempt_name

log = structlog.get_logger("orchestrator.ledger.store")


class AttemptMethods(LeaseMethods):
    """Attempts: record the next one, list a job's, flag them with a cancel."""

    async def add_attempt(
        self,
        job: Job,
        *,
        number: int,
        inputs: tuple[str, ...],
        request_count: int,
        prompt_tokens: int,
        not_before: float,
        info: Mapping[str, Any],
        job_info: Mapping[str, Any] | None = None,
    ) -> Job:
        """Record attempt ``number`` of ``job`` (queued, due at ``not_before``).

        In the same transaction the job's ``attempt`` moves from ``number - 1`` to ``number``
        (and, with ``job_info``, its ``attempt_info`` is set: how attempt 1 ended).

        Raises:
            StaleTransition: the job is no longer collecting its attempt ``number - 1``
                (another replica or an earlier run recorded it; nothing is changed).
            JobNotFound: no such job.
        """
        now = self._clock.now()
        changes: dict[str, Any] = {"attempt": number, "updated_at": now}
        if job_info is not None:
            changes["attempt_info"] = dict(job_info)
        where = [
            jobs.c.id == job.id,
            jobs.c.state == JobState.COLLECTING.value,
            jobs.c.attempt == number - 1,
        ]
        guard = self._fence(JobState.COLLECTING)
        if guard is not None:
            where.append(guard)
        async with self._write() as conn:
            root = (
                await conn.execute(jobs.update().where(*where).values(changes).returning(*jobs.c))
            ).first()
            if root is None:
                if await job_row(conn, jobs.c.id == job.id) is None:
                    raise JobNotFound(job.id)
                raise StaleTransition(job.id, "collecting", f"attempt {number}")
            values = {
                "name": attempt_name(job.name, number),
                "workspace": job.workspace,
                "model": job.model,
                "endpoint": job.endpoint,
                "inputs": list(inputs),
                "metadata": dict(job.metadata),
                "timeout_hours": job.timeout_hours,
                "priority": job.priority,
                "definition_hash": f"{job.definition_hash}:attempt-{number}",
                "client_token": new_client_token(),
                "request_count": request_count,
                "prompt_tokens": prompt_tokens,
                "state": JobState.QUEUED.value,
                "input_file_ids": [],
                "input_file_sha256s": [],
                "cancel_requested": False,
                "not_before": not_before,
                "created_at": now,
                "updated_at": now,
                "retry_of": job.id,
                "attempt": number,
                "max_attempts": job.max_attempts,
                "attempt_info": dict(info),
            }
            row = (await conn.execute(jobs.insert().values(values).returning(*jobs.c))).one()
            detail = f"attempt {number} of {job.name}: {request_count} request(s) to run again"
            await add_event(conn, row, None, at=now, detail=f"created, {detail}")
            await add_event(conn, root, JobState.COLLECTING, at=now, detail=detail)
        log.info("ledger.attempt_added", job=job.name, attempt=number, requests=request_count)
        return job_from_row(row)

    async def attempts_of(self, job_id: int) -> list[Job]:
        """The attempts (2, 3, ...) of job ``job_id``, in order (empty when it has none)."""
        query = sa.select(jobs).where(jobs.c.retry_of == job_id).order_by(jobs.c.attempt)
        async with self._read() as conn:
            rows = (await conn.execute(query)).all()
        return [job_from_row(row) for row in rows]

    async def retrying(self, workspace: str, *, held: bool = False) -> list[Job]:
        """The workspace's jobs that are collecting while an attempt of theirs runs."""
        query = self._held(sa.select(jobs), held).where(
            jobs.c.workspace == workspace,
            jobs.c.state == JobState.COLLECTING.value,
            jobs.c.retry_of.is_(None),
            jobs.c.attempt > 1,
        )
        async with self._read() as conn:
            rows = (await conn.execute(query.order_by(jobs.c.id))).all()
        return [job_from_row(row) for row in rows]


async def flag_attempts(conn: Any, root_ids: list[int], *, now: float, name: str) -> None:
    """Flag the unfinished attempts of ``root_ids`` for cancellation (``cancel NAME``)."""
    if not root_ids:
        return
    unfinished = jobs.c.state.not_in([s.value for s in FINAL_STATES])
    rows = (
        await conn.execute(
            jobs.update()
            .where(jobs.c.retry_of.in_(root_ids), unfinished, jobs.c.cancel_requested.is_(False))
            .values(cancel_requested=True, updated_at=now)
            .returning(*jobs.c)
        )
    ).all()
    for row in rows:
        await add_event(
            conn, row, JobState(row.state), at=now, detail=f"cancel requested (with {name})"
        )
