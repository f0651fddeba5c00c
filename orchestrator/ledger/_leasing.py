"""The lease methods of :class:`~orchestrator.ledger.SqlLedger` (SQL in :mod:`.leases`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import anyio
import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from orchestrator.errors import JobNotFound, LeaseLost, ReplicaIdTaken
from orchestrator.ledger import leases
from orchestrator.ledger._base import LedgerBase
from orchestrator.ledger.engine import display_url
from orchestrator.ledger.leases import EXCLUSIVE_TTL, fence
from orchestrator.ledger.schema import jobs
from orchestrator.model import Job, JobState
from orchestrator.usage import Usage

log = structlog.get_logger("orchestrator.ledger.store")

SCAN_LOCK_KEY = 0x6F72_6368_7363_616E & 0x7FFF_FFFF_FFFF_FFFF
"""The advisory-lock key of intake scans on PostgreSQL ("orchscan")."""

D = TypeVar("D", bound=leases.Decision)


class LeaseMethods(LedgerBase):
    """Replica identity, fencing and leases (design §8)."""

    def act_as(self, owner: str, *, lease_ttl: float | None) -> None:
        """Write as replica ``owner`` from now on.

        Transitions into a claimed state claim the job for ``owner``. With ``lease_ttl``
        (several replicas on PostgreSQL), leases last that long and every write about a
        claimed job is fenced on ``claimed_by = owner``; with None (a daemon that holds the
        whole ledger) leases never expire and nothing is fenced.
        """
        self._owner = owner
        self._fenced = lease_ttl is not None
        self._ttl = EXCLUSIVE_TTL if lease_ttl is None else lease_ttl

    @property
    def owner(self) -> str | None:
        """The replica this ledger writes as (None: not a daemon)."""
        return self._owner

    @property
    def shared(self) -> bool:
        """True on PostgreSQL, where several replicas may share the ledger."""
        return self._engine.dialect.name == "postgresql"

    def _fence(self, expected: JobState) -> sa.ColumnElement[bool] | None:
        return fence(self._owner, expected) if self._fenced else None

    def _held(self, query: sa.Select[Any], held: bool) -> sa.Select[Any]:
        if not held or not self._fenced or self._owner is None:
            return query
        return query.where(leases.held(self._owner, self._clock.now()))

    async def _require_held(self, conn: AsyncConnection, job_id: int) -> None:
        row = (
            await conn.execute(
                sa.select(jobs.c.state, jobs.c.claimed_by)
                .where(jobs.c.id == job_id)
                .with_for_update()
            )
        ).first()
        if row is None:
            raise JobNotFound(job_id)
        state = JobState(row.state)
        if fence(self._owner, state) is not None and row.claimed_by != self._owner:
            raise LeaseLost(job_id, state.value, state.value, str(self._owner))

    def _require_owner(self) -> str:
        if self._owner is None:
            raise RuntimeError("lease operations need act_as(owner) first")
        return self._owner

    @asynccontextmanager
    async def replica_session(self, replica_id: str, *, unique: bool = True) -> AsyncIterator[None]:
        """Announce replica ``replica_id`` on this PostgreSQL ledger for the block.

        A session of its own, kept open for the block, carries ``application_name`` =
        ``PRESENCE_PREFIX + replica_id``: admission gives work to the replicas it sees there
        (:func:`leases.live_replicas`), and the server ends the session when the process dies.
        With ``unique`` (a configured id), a session advisory lock on the id keeps it to one
        live process.

        Raises:
            ReplicaIdTaken: ``unique`` and another live process runs with this id.
        """
        url = display_url(self._url)
        async with self._engine.connect() as conn:
            await conn.execute(
                sa.text("SELECT set_config('application_name', :name, false)"),
                {"name": leases.PRESENCE_PREFIX + replica_id},
            )
            if unique:
                held = await conn.scalar(
                    sa.text("SELECT pg_try_advisory_lock(:key)"),
                    {"key": leases.replica_lock_key(replica_id)},
                )
                if not held:
                    await conn.rollback()
                    raise ReplicaIdTaken(replica_id, url)
            await conn.commit()  # the settings and the lock are the session's
            log.debug("ledger.replica_announced", replica=replica_id, url=url)
            try:
                yield
            finally:
                # Invalidating closes the connection instead of pooling it: the session ends,
                # and the name and the lock go with it.
                with anyio.CancelScope(shield=True):
                    await conn.invalidate()

    @asynccontextmanager
    async def scan_lock(self) -> AsyncIterator[None]:
        """Serialise intake scans across the replicas of a PostgreSQL ledger (else a no-op).

        A session advisory lock, waited for and held for the block on a connection of its own:
        a split job writes its part files outside any transaction, so two replicas scanning
        the same config at once would write them side by side.
        """
        if not self.shared:
            yield
            return
        async with self._engine.connect() as conn:
            await conn.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": SCAN_LOCK_KEY})
            await conn.commit()
            try:
                yield
            finally:
                with anyio.CancelScope(shield=True):
                    await conn.execute(
                        sa.text("SELECT pg_advisory_unlock(:key)"), {"key": SCAN_LOCK_KEY}
                    )
                    await conn.commit()

    async def renew_leases(self) -> int:
        """Extend every lease this replica holds by the ttl, in one statement; how many."""
        owner = self._require_owner()
        async with self._write() as conn:
            return await leases.renew(conn, owner, until=self._clock.now() + self._ttl)

    async def claim_all(self) -> int:
        """Claim every in-flight job (a daemon that holds the whole ledger); how many."""
        owner = self._require_owner()
        async with self._write() as conn:
            return await leases.claim_all(conn, owner, until=self._clock.now() + self._ttl)

    async def claim_orphans(self, limit: int = leases.ORPHAN_BATCH) -> list[Job]:
        """Claim up to ``limit`` in-flight jobs whose lease expired or that have none."""
        owner = self._require_owner()
        now = self._clock.now()
        async with self._write() as conn:
            claimed = await leases.claim_orphans(
                conn, owner, now=now, until=now + self._ttl, limit=limit
            )
        if claimed:
            log.info("ledger.orphans_claimed", replica=owner, jobs=[j.name for j in claimed])
        return claimed

    async def release_leases(self) -> int:
        """End this replica's leases now (a graceful stop); how many."""
        owner = self._require_owner()
        async with self._write() as conn:
            return await leases.release(conn, owner, now=self._clock.now())

    async def held_count(self) -> int:
        """How many unfinished jobs this replica holds a live lease on."""
        owner = self._require_owner()
        query = (
            sa.select(sa.func.count())
            .select_from(jobs)
            .where(
                jobs.c.claimed_by == owner,
                jobs.c.state.in_([s.value for s in leases.CLAIMED_STATES]),
                jobs.c.lease_until > self._clock.now(),
            )
        )
        async with self._read() as conn:
            return int(await conn.scalar(query) or 0)

    async def admit(self, workspace: str, decide: Callable[[list[Job]], D]) -> tuple[D, list[Job]]:
        """One serialised admission pass of ``workspace`` (see :func:`leases.admit_workspace`).

        ``decide`` gets the workspace's unfinished jobs (every replica's) and returns the
        decision; its ``admit`` ids move ``queued -> admitted``, claimed by this replica.
        """
        return await self.admit_spending(workspace, lambda jobs, _: decide(jobs), since=None)

    async def admit_spending(
        self,
        workspace: str,
        decide: Callable[[list[Job], Mapping[str, Usage]], D],
        *,
        since: float | None,
    ) -> tuple[D, list[Job]]:
        """:meth:`admit`, where ``decide`` also gets per model the usage of the workspace's
        jobs done since ``since`` (a month's actual spend), read in the same transaction."""
        now = self._clock.now()
        async with self._write() as conn:
            decision, admitted = await leases.admit_workspace(
                conn,
                workspace,
                decide,
                owner=self._owner,
                now=now,
                until=now + self._ttl,
                finished_since=since,
            )
        return decision, admitted
