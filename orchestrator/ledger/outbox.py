"""The outbox: events about jobs, written with the state change, delivered at least once.

One event row per event (its ``webhook-id`` and, once made, its frozen body: the same on
every delivery and redelivery, to every endpoint) and one delivery row per subscribed endpoint
(its own attempts, schedule, last answer and claim), so a dead receiver's retries never touch
another receiver's. :meth:`OutboxMethods.subscribe` tells the ledger which endpoints want
which events; from then on :meth:`SqlLedger.transition <orchestrator.ledger.SqlLedger>` and
the intake's rejections write the events in their own transaction (nothing is written for an
event nobody subscribed to), which is what makes a ``kill -9`` at any moment lose none.

A delivery is claimed for one attempt (``claimed_by``/``lease_until``, ``FOR UPDATE SKIP
LOCKED`` on PostgreSQL), so with replicas one replica at a time delivers it; a replica that
dies mid-attempt leaves a claim that expires, and another one tries again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import attrs
import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from orchestrator.ledger._base import LedgerBase
from orchestrator.ledger.schema import jobs, outbox_deliveries, outbox_events
from orchestrator.model import Job, JobState
from orchestrator.webhooks import (
    Subscription,
    event_body,
    event_data,
    events_for,
    new_webhook_id,
)

log = structlog.get_logger("orchestrator.ledger.store")

PENDING, DELIVERED, DEAD = "pending", "delivered", "dead"


@attrs.frozen(kw_only=True)
class Delivery:
    """One event for one endpoint, as the ledger holds it."""

    id: int
    event_id: int
    job_id: int
    job_name: str
    type: str
    occurred_at: float
    webhook_id: str
    body: str | None
    """The frozen JSON body; None until the first attempt makes it (job.done)."""
    endpoint: str
    state: str
    """``pending``, ``delivered`` or ``dead``."""
    attempts: int
    since: float
    """Start of the retry window (the event, or the last redelivery)."""
    next_attempt_at: float
    last_attempt_at: float | None
    last_status: str | None
    """``HTTP 200``, ``HTTP 503``, ``exit 0``, ``timeout``, ``connection refused``, ..."""
    last_error: str | None
    """Why the last attempt failed (None once one succeeded)."""
    last_output: str | None
    """The tail of a hook's output, or the start of a receiver's answer, last attempt."""
    delivered_at: float | None

    def as_json(self) -> dict[str, Any]:
        """The delivery for ``--json`` output (the body is left out: it can be large)."""
        fields = attrs.asdict(self)
        del fields["body"]
        return fields


_COLUMNS = (
    outbox_deliveries.c.id,
    outbox_deliveries.c.event_id,
    outbox_events.c.job_id,
    jobs.c.name.label("job_name"),
    outbox_events.c.type,
    outbox_events.c.occurred_at,
    outbox_events.c.webhook_id,
    outbox_events.c.body,
    outbox_deliveries.c.endpoint,
    outbox_deliveries.c.state,
    outbox_deliveries.c.attempts,
    outbox_deliveries.c.since,
    outbox_deliveries.c.next_attempt_at,
    outbox_deliveries.c.last_attempt_at,
    outbox_deliveries.c.last_status,
    outbox_deliveries.c.last_error,
    outbox_deliveries.c.last_output,
    outbox_deliveries.c.delivered_at,
)
_FROM = outbox_deliveries.join(
    outbox_events, outbox_events.c.id == outbox_deliveries.c.event_id
).join(jobs, jobs.c.id == outbox_events.c.job_id)


def _select() -> sa.Select[Any]:
    return sa.select(*_COLUMNS).select_from(_FROM)


def _delivery(row: Any) -> Delivery:
    return Delivery(**{name: getattr(row, name) for name in attrs.fields_dict(Delivery)})


async def record_events(
    conn: AsyncConnection,
    job: Job,
    before: JobState | None,
    subscriptions: Sequence[Subscription],
    *,
    now: float,
) -> int:
    """Write the events ``job``'s move from ``before`` causes, in the caller's transaction.

    One event row per event someone subscribed to, and one delivery per subscribed endpoint,
    due now. Returns how many deliveries were written.
    """
    written = 0
    for event in events_for(before, job):
        endpoints = [s.endpoint for s in subscriptions if event in s.events]
        if not endpoints:
            continue
        data = event_data(event, job)
        event_id = await conn.scalar(
            outbox_events.insert()
            .values(
                job_id=job.id,
                type=event,
                occurred_at=now,
                webhook_id=new_webhook_id(),
                body=None if data is None else event_body(event, now, data),
            )
            .returning(outbox_events.c.id)
        )
        await conn.execute(
            outbox_deliveries.insert(),
            [
                {
                    "event_id": event_id,
                    "endpoint": endpoint,
                    "state": PENDING,
                    "attempts": 0,
                    "since": now,
                    "next_attempt_at": now,
                }
                for endpoint in endpoints
            ],
        )
        written += len(endpoints)
    return written


class OutboxMethods(LedgerBase):
    """The outbox's side of :class:`~orchestrator.ledger.SqlLedger`."""

    _subscriptions: tuple[Subscription, ...] = ()
    _on_outbox: Callable[[], None] | None = None

    def subscribe(
        self, subscriptions: Iterable[Subscription], *, notify: Callable[[], None] | None = None
    ) -> None:
        """Record events for these endpoints from now on; call ``notify`` after each commit
        that wrote some (the delivery loop's wake-up)."""
        self._subscriptions = tuple(subscriptions)
        self._on_outbox = notify

    async def _record_events(
        self, conn: AsyncConnection, job: Job, before: JobState | None, now: float
    ) -> int:
        if not self._subscriptions:
            return 0
        return await record_events(conn, job, before, self._subscriptions, now=now)

    def _outbox_written(self, count: int) -> None:
        if count and self._on_outbox is not None:
            self._on_outbox()

    async def claim_deliveries(self, endpoint: str, *, limit: int, lease: float) -> list[Delivery]:
        """Claim up to ``limit`` due pending deliveries to ``endpoint`` for one attempt each.

        Due: ``next_attempt_at`` has come and no live claim holds it. Rows locked by another
        replica's claim are skipped (``SKIP LOCKED``), so replicas take disjoint ones.
        """
        owner = self._owner or "cli"
        now = self._clock.now()
        d = outbox_deliveries.c
        async with self._write() as conn:
            ids = list(
                await conn.scalars(
                    sa.select(d.id)
                    .where(
                        d.endpoint == endpoint,
                        d.state == PENDING,
                        d.next_attempt_at <= now,
                        sa.or_(d.lease_until.is_(None), d.lease_until <= now),
                    )
                    .order_by(d.next_attempt_at, d.id)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                )
            )
            if not ids:
                return []
            await conn.execute(
                outbox_deliveries.update()
                .where(d.id.in_(ids))
                .values(claimed_by=owner, lease_until=now + lease)
            )
            rows = (await conn.execute(_select().where(d.id.in_(ids)).order_by(d.id))).all()
        return [_delivery(row) for row in rows]

    async def freeze_body(self, event_id: int, body: str) -> str:
        """Store ``body`` as the event's body unless one is stored already; return the stored one.

        Two replicas building the same body at once both get the first one written.
        """
        e = outbox_events.c
        async with self._write() as conn:
            await conn.execute(
                outbox_events.update().where(e.id == event_id, e.body.is_(None)).values(body=body)
            )
            stored = await conn.scalar(sa.select(e.body).where(e.id == event_id))
        return str(stored)

    async def finish_attempt(
        self,
        delivery_id: int,
        *,
        status: str,
        error: str | None,
        output: str | None = None,
        delivered: bool,
        next_attempt_at: float | None,
    ) -> bool:
        """Record one attempt's end and drop the claim: delivered, retried later, or dead.

        ``next_attempt_at`` None on a failure marks it dead (with ``error`` as the last error).
        Returns False when this replica no longer held the claim (nothing written: the holder
        now records its own attempt).
        """
        now = self._clock.now()
        d = outbox_deliveries.c
        values: dict[str, Any] = {
            "attempts": d.attempts + 1,
            "last_attempt_at": now,
            "last_status": status[:64],
            "last_error": error,
            "last_output": output,
            "claimed_by": None,
            "lease_until": None,
        }
        if delivered:
            values.update(state=DELIVERED, delivered_at=now)
        elif next_attempt_at is None:
            values.update(state=DEAD)
        else:
            values.update(next_attempt_at=next_attempt_at)
        async with self._write() as conn:
            result = await conn.execute(
                outbox_deliveries.update()
                .where(
                    d.id == delivery_id,
                    d.state == PENDING,
                    d.claimed_by == (self._owner or "cli"),
                )
                .values(values)
            )
        return bool(result.rowcount)

    async def release_delivery_claims(self) -> int:
        """Drop every claim on a pending delivery (a daemon that holds the whole ledger, at
        start: its predecessor's claims died with it)."""
        d = outbox_deliveries.c
        async with self._write() as conn:
            result = await conn.execute(
                outbox_deliveries.update()
                .where(d.state == PENDING, d.claimed_by.is_not(None))
                .values(claimed_by=None, lease_until=None)
            )
        return int(result.rowcount)

    async def next_delivery_at(self, endpoint: str) -> float | None:
        """When the earliest pending delivery to ``endpoint`` is due (None: none pending)."""
        d = outbox_deliveries.c
        async with self._read() as conn:
            value = await conn.scalar(
                sa.select(sa.func.min(sa.func.coalesce(d.lease_until, d.next_attempt_at))).where(
                    d.endpoint == endpoint, d.state == PENDING
                )
            )
        return None if value is None else float(value)

    async def deliveries(
        self,
        *,
        job_id: int | None = None,
        states: Iterable[str] | None = None,
        endpoints: Iterable[str] | None = None,
        webhook_id: str | None = None,
        limit: int | None = None,
    ) -> list[Delivery]:
        """Deliveries, oldest event first: of one job, in some states, to some endpoints."""
        d = outbox_deliveries.c
        query = _select().order_by(outbox_events.c.occurred_at, d.id)
        if job_id is not None:
            query = query.where(outbox_events.c.job_id == job_id)
        if states is not None:
            query = query.where(d.state.in_(list(states)))
        if endpoints is not None:
            query = query.where(d.endpoint.in_(list(endpoints)))
        if webhook_id is not None:
            query = query.where(outbox_events.c.webhook_id == webhook_id)
        if limit is not None:
            query = query.limit(limit)
        async with self._read() as conn:
            rows = (await conn.execute(query)).all()
        return [_delivery(row) for row in rows]

    async def delivery_counts(self) -> dict[tuple[str, str], int]:
        """How many deliveries each ``(endpoint, state)`` has; absent pairs have none."""
        d = outbox_deliveries.c
        query = sa.select(d.endpoint, d.state, sa.func.count()).group_by(d.endpoint, d.state)
        async with self._read() as conn:
            rows = (await conn.execute(query)).all()
        return {(endpoint, state): count for endpoint, state, count in rows}

    async def redeliver(self, ident: str) -> list[Delivery]:
        """Deliver again: the delivery with id ``ident``, or every delivery of the event whose
        ``webhook-id`` is ``ident``; due now, with a fresh retry window, same id and body.

        Returns the deliveries as they are now (empty: no such delivery or event).
        """
        now = self._clock.now()
        d = outbox_deliveries.c
        if ident.isdigit():
            where: sa.ColumnElement[bool] = d.id == int(ident)
        else:
            where = d.event_id.in_(
                sa.select(outbox_events.c.id).where(outbox_events.c.webhook_id == ident)
            )
        async with self._write() as conn:
            ids = list(await conn.scalars(sa.select(d.id).where(where)))
            if ids:
                await conn.execute(
                    outbox_deliveries.update()
                    .where(d.id.in_(ids))
                    .values(
                        state=PENDING,
                        since=now,
                        next_attempt_at=now,
                        delivered_at=None,
                        claimed_by=None,
                        lease_until=None,
                    )
                )
            rows = (await conn.execute(_select().where(d.id.in_(ids)).order_by(d.id))).all()
        if ids:
            log.info("ledger.redelivery_requested", deliveries=ids)
        return [_delivery(row) for row in rows]
