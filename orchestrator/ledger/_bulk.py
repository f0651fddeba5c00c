"""Compare-and-set updates of many jobs in one transaction (the poller's progress writes).

One transaction per poll cycle instead of one per progressed job: at 1,000 running jobs the
per-job commits were nearly all of a cycle's CPU (docs/benchmarks.md, section 5). The number
of statements is constant too: one locking read per chunk of ids, one ``executemany`` per set
of changed columns, one for the events.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import attrs
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from orchestrator.ledger.leases import CLAIMED_STATES
from orchestrator.ledger.schema import job_events, jobs
from orchestrator.model import JobState

CHUNK = 500
"""Ids per locking read: far below SQLite's and asyncpg's limits on bound parameters."""


@attrs.frozen(kw_only=True)
class BulkUpdate:
    """What :meth:`SqlLedger.update_many <orchestrator.ledger.SqlLedger.update_many>` did."""

    updated: tuple[int, ...] = ()
    """Jobs that were still in their expected state: their changes are stored."""
    stale: tuple[int, ...] = ()
    """Jobs that had moved to another state: left untouched (a lost race)."""
    missing: tuple[int, ...] = ()
    """Ids no job has."""


async def update_many(
    conn: AsyncConnection,
    updates: Sequence[tuple[int, JobState, dict[str, Any]]],
    *,
    now: float,
    owner: str | None = None,
) -> BulkUpdate:
    """Apply each ``(job id, expected state, column values)`` whose job is still in that state.

    Runs on the caller's write transaction. Rows are read ``FOR UPDATE`` (in id order, so two
    bulk writers cannot deadlock) before they are written, so on PostgreSQL a row checked here
    cannot move before the commit; on SQLite the transaction already holds the write lock.
    The ``UPDATE`` still carries the state guard. An event is recorded for each row whose
    remote status changes, as :meth:`SqlLedger.update` does. With ``owner`` (fenced writes),
    a job in a claimed state that another replica holds is stale too, and left untouched.
    """

    ids = [job_id for job_id, _, _ in updates]
    before: dict[int, Any] = {}
    for start in range(0, len(ids), CHUNK):
        query = (
            sa.select(jobs.c.id, jobs.c.state, jobs.c.remote_status, jobs.c.claimed_by)
            .where(jobs.c.id.in_(ids[start : start + CHUNK]))
            .order_by(jobs.c.id)
            .with_for_update()
        )
        before.update((row.id, row) for row in await conn.execute(query))
    updated: list[int] = []
    stale: list[int] = []
    missing: list[int] = []
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    events: list[dict[str, Any]] = []
    for job_id, expected, values in updates:
        row = before.get(job_id)
        if row is None:
            missing.append(job_id)
            continue
        if row.state != expected.value or (
            owner is not None and expected in CLAIMED_STATES and row.claimed_by != owner
        ):
            stale.append(job_id)
            continue
        updated.append(job_id)
        groups[tuple(sorted(values))].append(
            {"b_id": job_id, "b_expected": expected.value, "b_now": now}
            | {f"v_{column}": value for column, value in values.items()}
        )
        status = values.get("remote_status", row.remote_status)
        if status != row.remote_status:
            events.append(
                {
                    "job_id": job_id,
                    "at": now,
                    "from_state": expected.value,
                    "to_state": expected.value,
                    "remote_status": status,
                    "detail": f"remote status {row.remote_status or 'none'} -> {status}",
                }
            )
    for columns, params in groups.items():
        statement = (
            jobs.update()
            .where(jobs.c.id == sa.bindparam("b_id"), jobs.c.state == sa.bindparam("b_expected"))
            .values(
                {jobs.c.updated_at: sa.bindparam("b_now", type_=jobs.c.updated_at.type)}
                | {
                    jobs.c[column]: sa.bindparam(f"v_{column}", type_=jobs.c[column].type)
                    for column in columns
                }
            )
        )
        await conn.execute(statement, params)
    if events:
        await conn.execute(job_events.insert(), events)
    return BulkUpdate(updated=tuple(updated), stale=tuple(stale), missing=tuple(missing))
