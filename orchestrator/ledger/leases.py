"""Leases: which replica works on which in-flight job (design §8), on the caller's connection.

A job in ``admitted``, ``submitting``, ``running`` or ``collecting`` (a split job's parent once
it left ``queued``) is worked on only by the replica that holds its lease: ``claimed_by`` is
that replica's id and ``lease_until`` (epoch seconds, the ledger clock) is in the future.
Admission claims what it admits; the holder renews all its claims in one statement every
``ttl / 3``; a job whose lease expired (or that has none) is an orphan that any replica may
claim, ``FOR UPDATE SKIP LOCKED`` and a bounded number per pass, so replicas share them.
Reaching ``done``/``rejected`` or going back to ``queued`` clears the claim.

Every write a replica makes about a claimed job carries the owner and is a compare-and-set on
``claimed_by`` as well as on the state (see :func:`fence`): a replica that lost its lease
changes nothing and gets :class:`~orchestrator.errors.LeaseLost`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from orchestrator.ledger._queries import add_event
from orchestrator.ledger._usage import usage_by_model
from orchestrator.ledger.schema import jobs
from orchestrator.ledger.values import job_from_row
from orchestrator.model import FINAL_STATES, Job, JobState
from orchestrator.usage import Usage

log = structlog.get_logger("orchestrator.ledger.store")

CLAIMED_STATES = frozenset(
    {JobState.ADMITTED, JobState.SUBMITTING, JobState.RUNNING, JobState.COLLECTING}
)
"""States in which a job is worked on by its lease holder only."""

_CLAIMED = sorted(state.value for state in CLAIMED_STATES)

EXCLUSIVE_TTL = 1e9
"""The lease of a daemon that holds the whole ledger (SQLite, file lock): ~31 years."""

ORPHAN_BATCH = 25
"""Most orphans one heartbeat claims, so the replicas alive share a dead one's jobs."""

_ADMISSION_LOCK_PREFIX = b"orchestrator admission "

PRESENCE_PREFIX = "orch-replica:"
"""``application_name`` of a replica's presence session: ``<prefix><replica id>``."""


class Decision(Protocol):
    """What admission needs of a decision (:class:`orchestrator.budget.Admission` fits)."""

    @property
    def admit(self) -> tuple[int, ...]: ...


def admission_lock_key(workspace: str) -> int:
    """The transaction advisory-lock key of ``workspace``'s admission (a signed 63-bit int)."""
    digest = hashlib.sha256(_ADMISSION_LOCK_PREFIX + workspace.encode()).digest()
    return int.from_bytes(digest[:8], "big") & 0x7FFF_FFFF_FFFF_FFFF


def replica_lock_key(replica_id: str) -> int:
    """The session advisory-lock key that keeps a replica id to one live process."""
    digest = hashlib.sha256(b"orchestrator replica " + replica_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") & 0x7FFF_FFFF_FFFF_FFFF


def fence(owner: str | None, expected: JobState) -> sa.ColumnElement[bool] | None:
    """The owner guard of a write about a job in ``expected`` (None: no guard).

    Queued and finished jobs have no holder; a claimed state needs ``claimed_by = owner``.
    """
    if owner is None or expected not in CLAIMED_STATES:
        return None
    return jobs.c.claimed_by == owner


def claim_changes(
    owner: str | None, ttl: float, expected: JobState, target: JobState, now: float
) -> dict[str, Any]:
    """Lease columns a transition sets: claim on entering a claimed state, clear on leaving."""
    if target in FINAL_STATES or target is JobState.QUEUED:
        return {"claimed_by": None, "lease_until": None}
    if owner is not None and target in CLAIMED_STATES and expected not in CLAIMED_STATES:
        return {"claimed_by": owner, "lease_until": now + ttl}
    return {}


def held(owner: str, now: float) -> sa.ColumnElement[bool]:
    """Jobs ``owner`` holds a live lease on, or that have no holder (queued, finished)."""
    return sa.or_(
        jobs.c.state.not_in(_CLAIMED),
        sa.and_(jobs.c.claimed_by == owner, jobs.c.lease_until > now),
    )


async def renew(conn: AsyncConnection, owner: str, *, until: float) -> int:
    """Extend every claim of ``owner`` on an unfinished job to ``until``; how many (one UPDATE)."""
    result = await conn.execute(
        jobs.update()
        .where(jobs.c.claimed_by == owner, jobs.c.state.in_(_CLAIMED))
        .values(lease_until=until)
    )
    return int(result.rowcount)


async def claim_all(conn: AsyncConnection, owner: str, *, until: float) -> int:
    """Claim every in-flight job for ``owner`` (a daemon that holds the whole ledger)."""
    result = await conn.execute(
        jobs.update().where(jobs.c.state.in_(_CLAIMED)).values(claimed_by=owner, lease_until=until)
    )
    return int(result.rowcount)


async def release(conn: AsyncConnection, owner: str, *, now: float) -> int:
    """End ``owner``'s leases now, so other replicas take its jobs over at once."""
    return await renew(conn, owner, until=now)


async def claim_orphans(
    conn: AsyncConnection, owner: str, *, now: float, until: float, limit: int
) -> list[Job]:
    """Claim up to ``limit`` in-flight jobs whose lease expired or that have none.

    The candidates are locked ``FOR UPDATE SKIP LOCKED`` (PostgreSQL): two replicas claiming
    at once take disjoint jobs instead of waiting for each other. One event per job names the
    new holder and the previous one.
    """
    candidates = (
        await conn.execute(
            sa.select(jobs.c.id, jobs.c.claimed_by)
            .where(
                jobs.c.state.in_(_CLAIMED),
                sa.or_(
                    jobs.c.claimed_by.is_(None),
                    jobs.c.lease_until.is_(None),
                    jobs.c.lease_until <= now,
                ),
            )
            .order_by(jobs.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    ).all()
    if not candidates:
        return []
    previous = {row.id: row.claimed_by for row in candidates}
    rows = (
        await conn.execute(
            jobs.update()
            .where(jobs.c.id.in_(list(previous)))
            .values(claimed_by=owner, lease_until=until)
            .returning(*jobs.c)
        )
    ).all()
    for row in rows:
        before = previous[row.id]
        detail = f"claimed by {owner}" + (f" (lease of {before} expired)" if before else "")
        await add_event(conn, row, JobState(row.state), at=now, detail=detail)
    return [job_from_row(row) for row in rows]


async def live_replicas(conn: AsyncConnection) -> set[str]:
    """Replica ids with a live presence session on this database (PostgreSQL; else empty).

    Each replica keeps one session open for its life with ``application_name`` set to
    ``PRESENCE_PREFIX + id``; the server drops it when the process dies, however it dies.
    """
    if conn.dialect.name != "postgresql":
        return set()
    rows = await conn.execute(
        sa.text(
            "SELECT DISTINCT application_name FROM pg_stat_activity "
            "WHERE datname = current_database() AND starts_with(application_name, :prefix)"
        ),
        {"prefix": PRESENCE_PREFIX},
    )
    return {str(name)[len(PRESENCE_PREFIX) :] for (name,) in rows}


def least_loaded(loads: dict[str, int], owner: str) -> str:
    """The replica to give the next admitted job: fewest in-flight jobs, the admitter first."""
    return min(loads, key=lambda replica: (loads[replica], replica != owner, replica))


async def admit_workspace(
    conn: AsyncConnection,
    workspace: str,
    decide: Callable[[list[Job], Mapping[str, Usage]], Decision],
    *,
    owner: str | None,
    now: float,
    until: float,
    finished_since: float | None = None,
) -> tuple[Any, list[Job]]:
    """One admission pass of ``workspace`` in the caller's write transaction.

    ``decide`` also gets, per model, the usage of the workspace's jobs done since
    ``finished_since`` (epoch seconds; empty without it), summed in the same transaction:
    what a spend limit counts as this month's actual cost.

    PostgreSQL: ``pg_advisory_xact_lock`` on the workspace's key serialises the passes of
    every replica until commit; SQLite: ``BEGIN IMMEDIATE`` already does. Reads the
    workspace's unfinished jobs (every replica's), asks ``decide`` (the pure budget rule),
    and moves each admitted job ``queued -> admitted``, compare-and-set (a job cancelled
    meanwhile is skipped), claimed for the least-loaded live replica (:func:`live_replicas`;
    ``owner`` on a tie, and always on SQLite).

    Returns:
        ``(decision, admitted jobs)``.
    """
    if conn.dialect.name == "postgresql":
        await conn.execute(
            sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": admission_lock_key(workspace)}
        )
    unfinished = [s.value for s in JobState if s not in FINAL_STATES]
    rows = (
        await conn.execute(
            sa.select(jobs)
            .where(jobs.c.workspace == workspace, jobs.c.state.in_(unfinished))
            .order_by(jobs.c.priority.desc(), jobs.c.id)
        )
    ).all()
    finished: dict[str, Usage] = {}
    if finished_since is not None:
        sums = await usage_by_model(conn, workspace=workspace, finished_since=finished_since)
        finished = {model: usage for (_, model), usage in sums.items()}
    decision = decide([job_from_row(row) for row in rows], finished)
    admitted: list[Job] = []
    # Spread the work: each admitted job goes to the live replica holding the fewest in-flight
    # jobs of the workspace (the admitter on a tie); it picks it up on its next pass.
    loads: dict[str, int] = {}
    if owner is not None:
        loads = dict.fromkeys(await live_replicas(conn) | {owner}, 0)
        for held_row in rows:
            if (
                held_row.claimed_by in loads
                and held_row.state in _CLAIMED
                and not held_row.part_count
            ):
                loads[held_row.claimed_by] += 1
    for job_id in decision.admit:
        holder = least_loaded(loads, owner) if owner is not None else None
        row = (
            await conn.execute(
                jobs.update()
                .where(jobs.c.id == job_id, jobs.c.state == JobState.QUEUED.value)
                .values(
                    state=JobState.ADMITTED.value,
                    updated_at=now,
                    claimed_by=holder,
                    lease_until=None if holder is None else until,
                )
                .returning(*jobs.c)
            )
        ).first()
        if row is None:
            continue
        if holder is not None:
            loads[holder] += 1
        detail = "budget admitted" + ("" if holder in (None, owner) else f" for {holder}")
        await add_event(conn, row, JobState.QUEUED, at=now, detail=detail)
        admitted.append(job_from_row(row))
    return decision, admitted
