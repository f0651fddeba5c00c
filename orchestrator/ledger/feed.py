"""The ledger's reads for the HTTP API: pages of jobs, and the history of every job as a feed.

A mixin of :class:`~orchestrator.ledger.SqlLedger`, kept beside the store so the store stays
small. Every read here is a single indexed query (primary keys), so a dashboard on a ledger of
10,000 jobs asks for a page, not for everything, and a stream of job changes asks only for the
events after the last one it sent.
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa

from orchestrator.ledger._base import LedgerBase
from orchestrator.ledger.schema import job_events, jobs
from orchestrator.ledger.values import JobEvent, event_from_row, job_from_row
from orchestrator.model import Job, JobState

PageKey = tuple[int, int]
"""Where a page of jobs ends: ``(priority, id)`` of its last job (jobs are listed by priority,
highest first, then id)."""


class FeedMethods(LedgerBase):
    """Paged job listings and the event feed."""

    async def jobs_page(
        self,
        *,
        states: Iterable[JobState] | None = None,
        workspace: str | None = None,
        parts: bool = False,
        after: PageKey | None = None,
        limit: int = 500,
    ) -> tuple[list[Job], int]:
        """One page of jobs in admission order (priority, highest first, then id), and the
        number of jobs matching the filters in all pages.

        Args:
            states: Only jobs in these states (all by default).
            workspace: Only this workspace's jobs.
            parts: Include split jobs' parts (left out by default, as ``status`` does).
            after: The :data:`PageKey` of the previous page's last job (None: the first page).
            limit: At most this many jobs.
        """
        where: list[sa.ColumnElement[bool]] = []
        if states is not None:
            where.append(jobs.c.state.in_([JobState(s).value for s in states]))
        if workspace is not None:
            where.append(jobs.c.workspace == workspace)
        if not parts:
            where.append(jobs.c.parent_id.is_(None))
        counted = sa.select(sa.func.count()).select_from(jobs).where(*where)
        if after is not None:
            priority, job_id = after
            where.append(
                sa.or_(
                    jobs.c.priority < priority,
                    sa.and_(jobs.c.priority == priority, jobs.c.id > job_id),
                )
            )
        query = (
            sa.select(jobs).where(*where).order_by(jobs.c.priority.desc(), jobs.c.id).limit(limit)
        )
        async with self._read() as conn:
            rows = (await conn.execute(query)).all()
            total = int(await conn.scalar(counted) or 0)
        return [job_from_row(row) for row in rows], total

    async def jobs_by_ids(self, ids: Iterable[int]) -> dict[int, Job]:
        """The jobs with these ids, by id (unknown ids are absent)."""
        wanted = sorted(set(ids))
        if not wanted:
            return {}
        async with self._read() as conn:
            rows = (await conn.execute(sa.select(jobs).where(jobs.c.id.in_(wanted)))).all()
        return {row.id: job_from_row(row) for row in rows}

    async def events_after(self, after: int, *, limit: int = 500) -> list[JobEvent]:
        """Events of every job with an id above ``after``, in id order (at most ``limit``)."""
        query = (
            sa.select(job_events)
            .where(job_events.c.id > after)
            .order_by(job_events.c.id)
            .limit(limit)
        )
        async with self._read() as conn:
            rows = (await conn.execute(query)).all()
        return [event_from_row(row) for row in rows]

    async def recent_events(self, count: int) -> list[JobEvent]:
        """The last ``count`` events of every job, oldest first."""
        query = sa.select(job_events).order_by(job_events.c.id.desc()).limit(count)
        async with self._read() as conn:
            rows = (await conn.execute(query)).all()
        return [event_from_row(row) for row in reversed(rows)]

    async def changed_since(self, since: float, *, limit: int = 1000) -> list[Job]:
        """Jobs updated at or after ``since`` (epoch seconds): what live progress has moved."""
        query = (
            sa.select(jobs)
            .where(jobs.c.updated_at >= since)
            .order_by(jobs.c.updated_at, jobs.c.id)
            .limit(limit)
        )
        async with self._read() as conn:
            rows = (await conn.execute(query)).all()
        return [job_from_row(row) for row in rows]

    async def fingerprint(self) -> tuple[int, float, int]:
        """``(jobs, latest updated_at, latest event id)``: it changes whenever a job does."""
        async with self._read() as conn:
            row = (
                await conn.execute(sa.select(sa.func.count(), sa.func.max(jobs.c.updated_at)))
            ).one()
            latest = await conn.scalar(sa.select(sa.func.max(job_events.c.id)))
        return int(row[0]), float(row[1] or 0.0), int(latest or 0)
