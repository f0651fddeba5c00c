"""The read methods of :class:`~orchestrator.ledger.SqlLedger`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from orchestrator.errors import (
    JobNotFound,
)
from orchestrator.ledger._files import job_files
from orchestrator.ledger._leasing import LeaseMethods
from orchestrator.ledger._queries import job_row, require_job
from orchestrator.ledger._usage import usage_by_model
from orchestrator.ledger.schema import job_events, jobs
from orchestrator.ledger.values import (
    JobEvent,
    ResultFile,
    event_from_row,
    job_from_row,
)
from orchestrator.model import (
    Job,
    JobState,
)
from orchestrator.usage import Usage


class ReadMethods(LeaseMethods):
    """Reads: jobs, parents and parts, files, history, counts."""

    async def parts(self, parent_id: int) -> list[Job]:
        """The parts of the split job ``parent_id``, in part order (empty for another job)."""
        query = sa.select(jobs).where(jobs.c.parent_id == parent_id).order_by(jobs.c.id)
        async with self._read() as conn:
            rows = (await conn.execute(query)).all()
        return [job_from_row(row) for row in rows]

    async def descendants(self, job_id: int) -> list[Job]:
        """Every job below ``job_id`` through ``parent_id`` links, whatever their kind (parts,
        retry attempts, their own children...), by id; empty for a job without children."""
        found: list[Job] = []
        level = [job_id]
        async with self._read() as conn:
            while level:
                query = sa.select(jobs).where(jobs.c.parent_id.in_(level)).order_by(jobs.c.id)
                below = [job_from_row(row) for row in (await conn.execute(query)).all()]
                known = {job.id for job in found}
                below = [job for job in below if job.id not in known]
                found.extend(below)
                level = [job.id for job in below]
        return found

    async def parents(
        self,
        states: Iterable[JobState] | None = None,
        workspace: str | None = None,
        *,
        held: bool = False,
    ) -> list[Job]:
        """Split jobs' parents in any of ``states`` (all by default), oldest first.

        ``held`` as in :meth:`list_jobs`.
        """
        query = sa.select(jobs).where(jobs.c.part_count > 0).order_by(jobs.c.id)
        return await self._select_jobs(query, states, workspace, held=held)

    async def get(self, job_id: int) -> Job:
        """The job with id ``job_id``.

        Raises:
            JobNotFound: no such job.
        """
        async with self._read() as conn:
            row = await job_row(conn, jobs.c.id == job_id)
        if row is None:
            raise JobNotFound(job_id)
        return job_from_row(row)

    async def get_by_name(self, name: str) -> Job:
        """The job named ``name``.

        Raises:
            JobNotFound: no such job.
        """
        async with self._read() as conn:
            row = await job_row(conn, jobs.c.name == name)
        if row is None:
            raise JobNotFound(name)
        return job_from_row(row)

    async def jobs_by_tokens(self, tokens: Iterable[str], *, held: bool = False) -> dict[str, Job]:
        """Our jobs whose client token is one of ``tokens``, by token (unknown ones absent).

        ``held`` as in :meth:`list_jobs`.
        """
        wanted = sorted(set(tokens))
        if not wanted:
            return {}
        query = self._held(sa.select(jobs), held).where(jobs.c.client_token.in_(wanted))
        async with self._read() as conn:
            rows = (await conn.execute(query)).all()
        return {row.client_token: job_from_row(row) for row in rows}

    async def list_jobs(
        self,
        states: Iterable[JobState] | None = None,
        workspace: str | None = None,
        *,
        held: bool = False,
    ) -> list[Job]:
        """Jobs in any of ``states`` (all by default), of one workspace or all.

        Ordered by priority (highest first), then id (oldest first): admission order. With
        ``held``, a job in a claimed state is listed only if this replica holds its lease.
        """
        query = sa.select(jobs).order_by(jobs.c.priority.desc(), jobs.c.id)
        return await self._select_jobs(query, states, workspace, held=held)

    async def _select_jobs(
        self,
        query: sa.Select[Any],
        states: Iterable[JobState] | None,
        workspace: str | None,
        *,
        held: bool,
    ) -> list[Job]:
        """The jobs ``query`` selects, narrowed to ``states``, ``workspace`` and ``held``."""
        query = self._held(query, held)
        if states is not None:
            query = query.where(jobs.c.state.in_([JobState(s).value for s in states]))
        if workspace is not None:
            query = query.where(jobs.c.workspace == workspace)
        async with self._read() as conn:
            rows = (await conn.execute(query)).all()
        return [job_from_row(row) for row in rows]

    async def files(self, job_id: int) -> list[ResultFile]:
        """The job's recorded result files, output first.

        Raises:
            JobNotFound: no such job.
        """
        async with self._read() as conn:
            return await job_files(conn, job_id)

    async def events(self, job_id: int) -> list[JobEvent]:
        """The job's history, oldest first.

        Raises:
            JobNotFound: no such job.
        """
        async with self._read() as conn:
            rows = (
                await conn.execute(
                    sa.select(job_events)
                    .where(job_events.c.job_id == job_id)
                    .order_by(job_events.c.at, job_events.c.id)
                )
            ).all()
            if not rows:
                await require_job(conn, job_id)
        return [event_from_row(row) for row in rows]

    async def usage_totals(self) -> dict[tuple[str, str], Usage]:
        """Tokens every job's own results reported, summed per ``(workspace, model)``.

        Each result counts once (a split job's parent holds none of its own: its parts do),
        so the sums only grow as jobs finish: what a Prometheus counter reports.
        """
        async with self._read() as conn:
            return await usage_by_model(conn)

    async def counts_by_state(self) -> dict[tuple[str, str | None], int]:
        """How many jobs are in each ``(state, outcome)``; absent pairs have none."""
        query = sa.select(jobs.c.state, jobs.c.outcome, sa.func.count()).group_by(
            jobs.c.state, jobs.c.outcome
        )
        async with self._read() as conn:
            rows = (await conn.execute(query)).all()
        return {(state, outcome): count for state, outcome, count in rows}
