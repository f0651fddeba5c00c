"""Telling the world about jobs: event types, Standard Webhooks signatures, retry schedule.

Pure: no I/O, no clock reads, no logging. The ledger records events in the transaction of the
state change that causes them (:mod:`orchestrator.ledger.outbox`); the daemon delivers them
(:mod:`orchestrator.daemon.deliver`). What a receiver gets follows Standard Webhooks
(standardwebhooks.com): a POST of ``{"type", "timestamp", "data"}`` JSON with the headers
``webhook-id`` (the same on every redelivery), ``webhook-timestamp`` (the attempt's time, epoch
seconds) and ``webhook-signature`` (``v1,`` + base64 of the HMAC-SHA256 of
``"{id}.{timestamp}.{body}"`` keyed with the endpoint's secret).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import attrs

from orchestrator.model import Job, JobState

JOB_DONE = "job.done"
JOB_REJECTED = "job.rejected"
JOB_SUBMITTED = "job.submitted"
EVENT_TYPES = (JOB_SUBMITTED, JOB_DONE, JOB_REJECTED)
"""Every event a webhook or hook may subscribe to (``events = [...]``)."""

SECRET_PREFIX = "whsec_"  # noqa: S105 (the prefix of every secret, not one)
MIN_SECRET_BYTES = 24
MAX_SECRET_BYTES = 64
"""Standard Webhooks secrets are 24 to 64 random bytes, base64-encoded after ``whsec_``."""

JITTER = 0.2
"""A retry waits its exponential delay times a factor drawn from ``[1 - JITTER, 1 + JITTER]``."""


@attrs.frozen(kw_only=True)
class Subscription:
    """An endpoint (a webhook URL or a hook command) and the event types it wants."""

    endpoint: str
    """The endpoint's stable name in the ledger (see :func:`webhook_endpoint`)."""
    events: frozenset[str]


def webhook_endpoint(url: str) -> str:
    """The ledger's name for the webhook at ``url``: the URL itself."""
    return url


def hook_endpoint(command: tuple[str, ...]) -> str:
    """The ledger's name for a command hook: ``hook:`` and its argument vector, JSON."""
    return "hook:" + json.dumps(list(command), separators=(",", ":"))


def events_for(before: JobState | None, job: Job) -> tuple[str, ...]:
    """The events a job's move from ``before`` to its current state causes.

    Only jobs the operator defined count: a split job's part (``parent_id``) and a follow-up
    attempt (``retry_of``) are the orchestrator's own business, the job they serve tells.
    Entering ``running`` is a submission (a parent's first part leaving the queue included; a
    job requeued for capacity and submitted again is submitted again), reaching ``done`` or
    ``rejected`` is the job's end.
    """
    if job.parent_id is not None or job.retry_of is not None or before is job.state:
        return ()
    if job.state is JobState.RUNNING:
        return (JOB_SUBMITTED,)
    if job.state is JobState.DONE:
        return (JOB_DONE,)
    if job.state is JobState.REJECTED:
        return (JOB_REJECTED,)
    return ()


def event_data(event: str, job: Job) -> dict[str, Any] | None:
    """The ``data`` of ``event`` taken from the job row, or None when it is not made so.

    ``job.done`` carries the job's ``job.json`` fields, which the daemon writes beside the
    results: the daemon builds that body once, on first delivery (a done job never changes
    again, so building it then is the same as building it now).
    """
    if event == JOB_SUBMITTED:
        return {
            "name": job.name,
            "workspace": job.workspace,
            "model": job.model,
            "endpoint": job.endpoint,
            "requests": job.request_count,
            "remote_id": job.remote_id,
            "remote_status": job.remote_status,
            "parts": job.part_count,
            "submitted_at": _iso(job.submitted_at) if job.submitted_at else None,
        }
    if event == JOB_REJECTED:
        summary, *problems = (job.error or "").splitlines() or [""]
        return {
            "name": job.name,
            "workspace": job.workspace,
            "model": job.model,
            "endpoint": job.endpoint,
            "inputs": list(job.inputs),
            "error": summary,
            "problems": [problem.strip() for problem in problems],
            "report": job.error,
        }
    return None


def new_webhook_id() -> str:
    """A fresh ``webhook-id``: ``msg_`` and 32 random hex digits."""
    return "msg_" + secrets.token_hex(16)


def event_body(event: str, occurred_at: float, data: Mapping[str, Any]) -> str:
    """The JSON body of an event, as it is signed and sent (compact, keys in order)."""
    return json.dumps(
        {"type": event, "timestamp": _iso(occurred_at), "data": data},
        separators=(",", ":"),
        ensure_ascii=False,
    )


def _iso(epoch: float) -> str:
    """ISO 8601 in UTC with milliseconds and a ``Z``: ``2026-01-01T00:00:00.000Z``."""
    return datetime.fromtimestamp(epoch, tz=UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def parse_secret(value: str) -> bytes:
    """The key bytes of a Standard Webhooks secret ``whsec_<base64>``.

    Raises:
        ValueError: no ``whsec_`` prefix, not base64, or not 24 to 64 bytes (the message
            never contains the secret).
    """
    if not value.startswith(SECRET_PREFIX):
        raise ValueError(f"a webhook secret starts with {SECRET_PREFIX!r} followed by base64")
    try:
        key = base64.b64decode(value[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(
            f"the part after {SECRET_PREFIX!r} is not valid base64 (standard alphabet, padded)"
        ) from None
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        raise ValueError(
            f"a webhook secret holds {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} random bytes, "
            f"this one {len(key)}; make one with: "
            'python -c \'import base64,os; print("whsec_" + base64.b64encode(os.urandom(32))'
            ".decode())'"
        )
    return key


def sign(key: bytes, webhook_id: str, timestamp: int, body: str) -> str:
    """The ``webhook-signature`` header: ``v1,`` + base64 HMAC-SHA256 of id.timestamp.body."""
    digest = hmac.new(key, f"{webhook_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def headers(key: bytes, webhook_id: str, timestamp: int, body: str) -> dict[str, str]:
    """The headers of one delivery attempt made at ``timestamp`` (epoch seconds)."""
    return {
        "content-type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(key, webhook_id, timestamp, body),
    }


def next_attempt(
    *,
    attempts: int,
    since: float,
    now: float,
    backoff: float,
    max_age: float,
    draw: float,
) -> float | None:
    """When to try again after the ``attempts``-th failed attempt, or None: dead.

    The delay starts at ``backoff`` and doubles with each attempt, times a jitter factor
    (``draw`` in [0, 1) picks it from ``[1 - JITTER, 1 + JITTER]``), so receivers that come back
    are not hit by every sender at once. Deliveries are tried for ``max_age`` after ``since``
    (the event, or the operator's redelivery): the last try is at that deadline, and a failure
    at or after it is final.
    """
    deadline = since + max_age
    if now >= deadline:
        return None
    delay = backoff * 2.0 ** min(max(0, attempts - 1), 40)
    delay *= 1.0 - JITTER + 2.0 * JITTER * draw
    return min(now + delay, deadline)
