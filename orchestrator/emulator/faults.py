"""Injected faults: which request gets which, and how a connection is dropped or cut short.

The n-th request on a route draws from ``blake2b(seed, route, n)``, so a given seed gives the
same faults on each route in the same order, however requests on different routes interleave.

Dropping a connection needs the socket. The emulator's own uvicorn server
(:mod:`orchestrator.emulator.server`) puts the connection's transport into the ASGI scope under
:data:`TRANSPORT_KEY`; a drop then closes it without a response, and a truncation closes it
after part of the body. In-process (``httpx.ASGITransport``) there is no socket: the app raises
the error httpx raises for the same event on a real socket, ``httpx.RemoteProtocolError``,
which ``ASGITransport`` passes on to the caller.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import threading
from collections.abc import Callable
from typing import Any

import anyio.lowlevel
import attrs
import httpx
from starlette.types import Message, Scope, Send

from orchestrator.emulator.settings import FaultSettings

TRANSPORT_KEY = "orchestrator.emulator.transport"
"""Scope extension holding the connection's ``asyncio.Transport`` (set by our server)."""

RATE_LIMIT = "rate_limit"
SERVER_ERROR = "server_error"
DROP_BEFORE = "drop_before"
DROP_AFTER = "drop_after"
TRUNCATE = "truncate"
LATENCY = "latency"


@attrs.frozen(kw_only=True)
class Decision:
    """What happens to one request."""

    kind: str | None
    """One of the fault kinds above, or ``None``."""
    latency: float = 0.0
    status: int = 0
    """The status of a ``server_error``."""
    retry_after: float = 0.0
    cut: float = 0.0
    """For ``truncate``: the fraction of the body sent before the connection closes."""


class FaultInjector:
    """Draws a :class:`Decision` per request; thread-safe.

    Args:
        settings: the initial fault settings.
    """

    def __init__(self, settings: FaultSettings) -> None:
        self._lock = threading.Lock()
        self._settings = settings
        self._counts: dict[str, int] = {}

    @property
    def settings(self) -> FaultSettings:
        """The settings in force."""
        return self._settings

    def replace(self, settings: FaultSettings) -> None:
        """Put new settings in force and restart every route's sequence."""
        with self._lock:
            self._settings = settings
            self._counts = {}

    def decide(self, route: str) -> Decision:
        """The fate of the next request on ``route``."""
        with self._lock:
            settings = self._settings.for_route(route)
            if settings is None or not settings.active:
                return Decision(kind=None)
            n = self._counts.get(route, 0)
            self._counts[route] = n + 1
        digest = hashlib.blake2b(f"{settings.seed}\x00{route}\x00{n}".encode(), digest_size=16)
        raw = digest.digest()
        u = int.from_bytes(raw[:8], "big") / 2**64
        v = int.from_bytes(raw[8:], "big") / 2**64
        latency = settings.latency
        edge = settings.rate_limit_rate
        if u < edge:
            return Decision(kind=RATE_LIMIT, latency=latency, retry_after=settings.retry_after)
        edge += settings.server_error_rate
        if u < edge:
            return Decision(kind=SERVER_ERROR, latency=latency, status=(500, 502, 503)[int(v * 3)])
        edge += settings.drop_rate
        if u < edge:
            return Decision(kind=DROP_AFTER if v >= 0.5 else DROP_BEFORE, latency=latency)
        edge += settings.truncate_rate
        if u < edge:
            return Decision(kind=TRUNCATE, latency=latency, cut=0.1 + 0.8 * v)
        return Decision(kind=None, latency=latency)


def rate_limit_headers(retry_after: float) -> dict[str, str]:
    """``Retry-After`` (whole seconds, as HTTP wants) and the finer ``retry-after-ms``."""
    return {
        "Retry-After": str(math.ceil(retry_after)),
        "retry-after-ms": str(round(retry_after * 1000)),
    }


class Cut(Exception):
    """Raised by a truncating ``send`` once the body has been cut (internal signal)."""

    def __init__(self, sent: int, expected: int) -> None:
        super().__init__(f"response cut after {sent} of {expected} bytes")
        self.sent = sent
        self.expected = expected


def truncating_send(send: Send, cut: float) -> Callable[[Message], Any]:
    """Wrap ``send`` so a 200/206 body stops at ``cut`` of its ``Content-Length``.

    The wrapper raises :class:`Cut` once the cut point is reached; responses of another
    status, or without a length, or empty, pass through untouched.
    """
    state: dict[str, int | None] = {"limit": None, "sent": 0, "expected": 0}

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            length = None
            for name, value in message.get("headers", []):
                if name.lower() == b"content-length":
                    length = int(value)
            if message["status"] in (200, 206) and length:
                state["expected"] = length
                state["limit"] = min(length - 1, int(length * cut))
            await send(message)
            return
        limit = state["limit"]
        if limit is None or message["type"] != "http.response.body":
            await send(message)
            return
        body: bytes = message.get("body", b"")
        sent = state["sent"] or 0
        room = limit - sent
        if len(body) < room or (len(body) == room and message.get("more_body", False)):
            state["sent"] = sent + len(body)
            await send(message)
            return
        if room > 0:
            await send({"type": "http.response.body", "body": body[:room], "more_body": True})
        raise Cut(limit, state["expected"] or 0)

    return wrapped


async def close_connection(scope: Scope, *, graceful: bool, reason: str) -> None:
    """End the connection now: over a socket close it, in-process raise like httpx would.

    Args:
        scope: the request's scope.
        graceful: flush what was already sent (a truncation) rather than abort (a drop).
        reason: the message of the in-process ``httpx.RemoteProtocolError``.

    Raises:
        httpx.RemoteProtocolError: in-process, where no socket can be closed.
    """
    transport: asyncio.Transport | None = (scope.get("extensions") or {}).get(TRANSPORT_KEY)
    if transport is None:
        raise httpx.RemoteProtocolError(reason)
    if graceful:
        transport.close()
    else:
        transport.abort()
    # Let the server notice the lost connection before the app returns, so it does not try
    # to answer on a closed socket (and log that it had to).
    for _ in range(3):
        await anyio.lowlevel.checkpoint()
