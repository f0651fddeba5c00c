"""``GET /api/events``: job changes as server-sent events, resumable with ``Last-Event-ID``.

Three kinds of message:

- ``job``: one entry of a job's history (a creation, a transition, a cancel request, a change
  of remote status), with the job's status row as it is now. Its ``id`` is the ledger's event
  id, so a client that reconnects with ``Last-Event-ID: N`` (browsers do it by themselves) gets
  every event after N, also those it missed while away. A fresh connection first replays the
  last :data:`BACKLOG` events.
- ``progress``: a status row whose counts moved without a history entry (live progress of a
  running job). No id: progress is a state, not history; a reconnecting client reads it anew.
- ``ping``: a comment every :data:`PING_EVERY` seconds, so proxies keep the connection open.

The stream looks at the ledger every ``interval`` seconds of the daemon's clock; each look is
one query by primary key (events after the cursor) and one for jobs updated since the last.

On PostgreSQL several replicas write events at once, and an id can become visible after a
higher one (transactions commit in another order than they took their ids). The stream holds
back events after such a gap for up to :data:`GAP_WAIT` seconds (:func:`deliverable`), so a
resumed client does not skip an event that was about to commit.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from orchestrator.ledger.values import JobEvent
from orchestrator.logging import redactor
from orchestrator.model import Job
from orchestrator.rows import status_row, timestamp
from orchestrator.service.responses import SECURITY_HEADERS, ApiError
from orchestrator.service.view import DaemonView

BACKLOG = 50
"""Events a fresh connection (no ``Last-Event-ID``) replays first: the dashboard's recent list."""
BATCH = 500
"""Most events one look at the ledger sends."""
GAP_WAIT = 5.0
"""Seconds events after a missing id are held back, waiting for it to commit."""
PING_EVERY = 15.0
RETRY_MS = 2000
"""How long a browser waits before it reconnects (the ``retry:`` field)."""


def deliverable(
    cursor: int, ids: Sequence[int], gap_since: float | None, now: float, wait: float = GAP_WAIT
) -> tuple[int, float | None]:
    """How many of ``ids`` (ascending, all above ``cursor``) may be sent now (pure).

    Events are sent up to the first missing id; past it only once the gap is ``wait`` seconds
    old (a rolled-back insert leaves a gap for good).

    Returns:
        ``(count, gap_since)``: how many of the first ``ids`` to send, and since when the
        stream waits on a gap (None: no gap holds it back).
    """
    expected = cursor + 1
    for count, ident in enumerate(ids):
        if ident != expected:
            if gap_since is None:
                return count, now
            if now - gap_since < wait:
                return count, gap_since
            return len(ids), None
        expected = ident + 1
    return len(ids), None


def event_row(event: JobEvent, job: Job | None) -> dict[str, Any]:
    """One history entry as ``/api/events`` and the job page show it."""
    return {
        "id": event.id,
        "job": job.name if job is not None else None,
        "at": timestamp(event.at),
        "from": event.from_state.value if event.from_state else None,
        "to": event.to_state.value,
        "remote_status": event.remote_status,
        "detail": event.detail,
    }


def message(kind: str, data: Any, ident: int | None = None) -> bytes:
    """One server-sent event (the data is one line of JSON, scrubbed of secrets)."""
    lines = [f"event: {kind}"]
    if ident is not None:
        lines.append(f"id: {ident}")
    lines.append("data: " + redactor.scrub(json.dumps(data, ensure_ascii=False)))
    return ("\n".join(lines) + "\n\n").encode()


def _start(request: Request) -> int | None:
    text = request.headers.get("last-event-id") or request.query_params.get("since")
    if text is None or not text.strip():
        return None
    if not text.strip().isdigit():
        raise ApiError(400, f"Last-Event-ID: expected an event id (a whole number), got {text!r}")
    return int(text.strip())


async def stream(request: Request, view: DaemonView, *, interval: float) -> Response:
    """The ``/api/events`` response (the stream ends when the daemon stops)."""
    start = _start(request)
    return StreamingResponse(
        _events(view, start, interval),
        media_type="text/event-stream",
        headers={**SECURITY_HEADERS, "X-Accel-Buffering": "no"},
    )


async def _events(view: DaemonView, start: int | None, interval: float) -> AsyncIterator[bytes]:
    ledger, clock = view.ledger, view.clock
    yield f"retry: {RETRY_MS}\n: connected\n\n".encode()
    if start is None:
        recent = await ledger.recent_events(BACKLOG)
        cursor = recent[0].id - 1 if recent else 0
        pending = recent
    else:
        cursor, pending = start, []
    watermark = clock.now()
    sent_at: dict[int, float] = {}  # job id -> updated_at last sent (progress)
    gap_since: float | None = None
    last_ping = clock.now()
    while not view.stopping:
        if not pending:
            pending = await ledger.events_after(cursor, limit=BATCH)
        count, gap_since = deliverable(cursor, [e.id for e in pending], gap_since, clock.now())
        ready, pending = pending[:count], []
        jobs = await ledger.jobs_by_ids({e.job_id for e in ready})
        now = clock.now()
        for event in ready:
            job = jobs.get(event.job_id)
            row = status_row(job, now=now, parent_field=True) if job else None
            yield message("job", {"event": event_row(event, job), "job": row}, event.id)
            cursor = event.id
            if job is not None:
                sent_at[job.id] = job.updated_at
        for job in await ledger.changed_since(watermark):
            watermark = max(watermark, job.updated_at)
            if sent_at.get(job.id) != job.updated_at:
                sent_at[job.id] = job.updated_at
                yield message("progress", status_row(job, now=now, parent_field=True))
        if len(sent_at) > 10_000:  # only recent ones matter: updated_at only grows
            sent_at.clear()
        if now - last_ping >= PING_EVERY:
            last_ping = now
            yield b": ping\n\n"
        if count < BATCH or gap_since is not None:
            await clock.sleep(interval)
