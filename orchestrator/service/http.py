"""The HTTP endpoint of a running daemon: ``/healthz``, ``/readyz``, ``/metrics``, the dashboard
at ``/`` and the JSON API under ``/api`` (:mod:`orchestrator.service.api`).

Served by uvicorn as one more task of the daemon's task group (no thread, nothing that outlives
the daemon), on the address of ``[http] listen`` (or ``ORCH_HTTP_LISTEN``):

- ``GET /healthz``: 200 while every loop's heartbeat is fresh (also while draining after
  SIGTERM), 503 when a loop stalled. Body: JSON, per loop its age and limit.
- ``GET /readyz``: 200 when the ledger answers and is at the migration head and the daemon is
  not stopping, else 503 with the reason.
- ``GET /metrics``: Prometheus text format (or OpenMetrics when the scraper asks for it).
- ``/`` and ``/api/*``: see :mod:`orchestrator.service.api`; who may use them is
  :mod:`orchestrator.service.access`. Unknown paths and refused requests answer JSON errors.

The socket is bound before the loops start (:meth:`HttpService.bind`), so a taken port fails
the start with a configuration error instead of surfacing later.
"""

from __future__ import annotations

import socket
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import anyio
import attrs
import structlog
import uvicorn
from anyio.abc import TaskStatus
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.exposition import choose_encoder
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from orchestrator.errors import ConfigError, OrchestratorError
from orchestrator.ledger.engine import display_url
from orchestrator.ledger.migrate import current_revision, head_revision
from orchestrator.logging import redactor
from orchestrator.service.access import Access, Need
from orchestrator.service.api import Api
from orchestrator.service.commands import JobCommands
from orchestrator.service.health import STALL_ALLOWANCE, HealthReport, evaluate, loop_limits
from orchestrator.service.metrics import DaemonCollector
from orchestrator.service.openapi import Handler
from orchestrator.service.responses import ApiError, error_response
from orchestrator.service.view import DaemonView

log = structlog.get_logger(__name__)

READY_TIMEOUT = 5.0
"""Seconds ``/readyz`` waits for the ledger before answering 503."""
SHUTDOWN_TIMEOUT = 2.0
"""Seconds open connections get to finish when the daemon stops."""
NO_STORE = {"Cache-Control": "no-store"}
MAX_HEAD = 32 * 1024
"""Bytes a request line and its headers may have (uvicorn answers 400 beyond)."""
DEFAULT_MAX_BODY = 512 * 1024 * 1024 + (1 << 20)
"""Bytes a request body may have by default: the largest input file a provider takes
(512 MiB) and room for the definition."""


@attrs.frozen(kw_only=True)
class Readiness:
    """The answer of ``/readyz``."""

    ready: bool
    reason: str
    revision: str | None = None
    head: str | None = None

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready body."""
        return {
            "status": "ready" if self.ready else "not ready",
            "reason": self.reason,
            "revision": self.revision,
            "head": self.head,
        }


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: the daemon owns SIGTERM, SIGINT and SIGHUP."""

    def capture_signals(self) -> AbstractContextManager[None]:  # type: ignore[override]
        return nullcontext()


class HttpService:
    """The health, readiness and metrics endpoint of one running daemon, seen through its view.

    Create it once the daemon's runtime exists (the composition root passes its
    :class:`~orchestrator.service.view.DaemonView`), :meth:`bind`, then run :meth:`serve` in
    the daemon's task group; cancelling that task stops the server (within
    :data:`SHUTDOWN_TIMEOUT`) and :meth:`close` releases the socket.
    """

    def __init__(
        self,
        view: DaemonView,
        *,
        host: str,
        port: int,
        stall_allowance: float = STALL_ALLOWANCE,
        commands: JobCommands | None = None,
        token: str | None = None,
        max_body: int = DEFAULT_MAX_BODY,
        feed_interval: float = 1.0,
    ) -> None:
        """Prepare the endpoint (nothing is bound yet).

        Args:
            view: what the endpoint reports: the daemon's loops, workspaces and ledger.
            host: address to listen on (an IPv6 address without brackets).
            port: TCP port; 0 picks a free one (see :attr:`url`).
            stall_allowance: seconds a loop's cycle may take beyond its longest sleep
                before ``/healthz`` reports the loop stalled.
            commands: what ``POST /api/*`` asks the daemon to do (None: writes answer 403).
            token: the API's bearer token (the value of ``[http] token_env``); None: none.
            max_body: bytes a request body may have (413 beyond).
            feed_interval: seconds between two looks at the ledger of ``/api/events``.
        """
        self._view = view
        self._host = host
        self._port = port
        self._socket: socket.socket | None = None
        self._started_at = view.clock.now()
        waits = view.idle_waits
        self._limits = loop_limits(
            view.config.workspaces, idle_waits=waits, allowance=stall_allowance
        )
        if "leases" in waits:  # the lease heartbeat of a replica (shared ledger) must beat
            self._limits["leases"] = waits["leases"] + stall_allowance
        # A loop with a heartbeat but no limit of its own (intake) gets the longest.
        self._default_limit = max(waits.values()) + stall_allowance
        self._head = head_revision()
        self._collector = DaemonCollector(view)
        self.registry = CollectorRegistry(auto_describe=False)
        """The metrics registry: the daemon's collector plus process, platform and GC metrics."""
        self.registry.register(self._collector)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self._scrape_lock = anyio.Lock()
        http = view.config.http
        # Never shown: the token and the ledger's password join the API keys the redactor hides.
        redactor.add([secret for secret in (token, _password(view.config.ledger.url)) if secret])
        self.access = Access.of(
            token=token,
            token_env=http.token_env,
            host=host,
            allow_anonymous_reads=http.allow_anonymous_reads,
        )
        self.api = Api(view, commands, self.access, max_body=max_body, feed_interval=feed_interval)
        self.app = Starlette(
            routes=[
                Route("/healthz", self._healthz, methods=["GET"]),
                Route("/readyz", self._readyz, methods=["GET"]),
                Route("/metrics", self._metrics, methods=["GET"]),
                *self.api.routes(self._guard),
            ],
            middleware=[Middleware(HeadLimit, limit=MAX_HEAD)],
            exception_handlers={
                ApiError: _api_error,
                HTTPException: _http_error,
                Exception: _unexpected,
            },
        )
        """The ASGI application (usable on its own, e.g. with ``httpx.ASGITransport``)."""

    def bind(self) -> None:
        """Listen on the configured address.

        Raises:
            ConfigError: the address cannot be bound (taken port, unknown host); the message
                names ``http.listen`` and the reason.
        """
        if self._socket is not None:
            return
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self._host, self._port))
            sock.listen(128)
        except OSError as exc:
            sock.close()
            raise ConfigError(
                f"cannot listen on {self._host}:{self._port}: {exc.strerror or exc}; "
                "choose a free port or unset the endpoint (ORCH_HTTP_LISTEN='')",
                file=str(self._view.config.path),
                key="http.listen",
            ) from exc
        self._socket = sock

    @property
    def url(self) -> str:
        """The base URL clients use (``http://host:port``; the real port when 0 was asked).

        Raises:
            RuntimeError: :meth:`bind` has not been called.
        """
        if self._socket is None:
            raise RuntimeError("HttpService.url is known only after bind()")
        host, port = self._socket.getsockname()[:2]
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def close(self) -> None:
        """Release the listening socket (idempotent)."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled, then stop the server cleanly (shielded, bounded).

        Raises:
            RuntimeError: :meth:`bind` has not been called.
        """
        if self._socket is None:
            raise RuntimeError("HttpService.serve() needs bind() first")
        sock = self._socket
        server = _Server(
            uvicorn.Config(
                self.app,
                lifespan="off",
                log_config=None,
                access_log=False,
                http="h11",
                # Headers beyond this (an incomplete request head) are a 400 before the app.
                h11_max_incomplete_event_size=MAX_HEAD,
                ws="none",
                server_header=False,
                timeout_keep_alive=5,
                timeout_graceful_shutdown=int(SHUTDOWN_TIMEOUT),
            )
        )
        finished = anyio.Event()

        async def run_server() -> None:
            try:
                # Shielded: uvicorn must run its own shutdown (close sockets, connections),
                # which a cancellation in the middle of its loop would skip.
                with anyio.CancelScope(shield=True):
                    await server.serve(sockets=[sock])
            finally:
                finished.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(run_server)
            log.info(
                "http.listening",
                url=self.url,
                endpoints=["/healthz", "/readyz", "/metrics", "/", "/api"],
                reads_need_token=self.access.reads_need_token,
                writes=self.access.token is not None,
            )
            task_status.started()
            try:
                await anyio.sleep_forever()
            finally:
                server.should_exit = True
                with anyio.CancelScope(shield=True):
                    await finished.wait()
                log.info("http.stopped")

    # The checks, usable without a server -------------------------------------------------

    def health(self) -> HealthReport:
        """Judge the loops' heartbeats now."""
        view = self._view
        return evaluate(
            view.heartbeats,
            self._limits,
            now=view.clock.now(),
            started_at=self._started_at,
            stopping=view.stopping,
            default_limit=self._default_limit,
        )

    async def readiness(self) -> Readiness:
        """Whether the daemon should receive work: running, ledger reachable and at head."""
        if self._view.stopping:
            return Readiness(ready=False, reason="the daemon is stopping", head=self._head)
        url = self._view.config.ledger.url
        try:
            with anyio.fail_after(READY_TIMEOUT):
                revision = await current_revision(url)
        except TimeoutError:
            return Readiness(
                ready=False,
                reason=f"the ledger {display_url(url)} did not answer within {READY_TIMEOUT:g} s",
                head=self._head,
            )
        except OrchestratorError as exc:
            return Readiness(ready=False, reason=str(exc), head=self._head)
        if revision != self._head:
            return Readiness(
                ready=False,
                reason=f"the ledger is at schema revision {revision or 'none'}, expected "
                f"{self._head}: run `orchestrator migrate`",
                revision=revision,
                head=self._head,
            )
        return Readiness(
            ready=True, reason="ledger reachable and at head", revision=revision, head=self._head
        )

    async def scrape(self, accept: str = "") -> tuple[bytes, str]:
        """The metrics page and its content type, in the format ``accept`` asks for."""
        encoder, content_type = choose_encoder(accept)
        async with self._scrape_lock:  # one snapshot per scrape, never interleaved
            await self._collector.refresh()
            return encoder(self.registry), content_type

    # Routes -------------------------------------------------------------------------------

    def _guard(self, need: Need, handler: Handler) -> Handler:
        """``handler`` behind the access check of ``need``."""
        access = self.access

        async def guarded(request: Request) -> Response:
            denied = access.check(need, request.headers.get("authorization"))
            if denied is not None:
                headers = {"WWW-Authenticate": "Bearer"} if denied.status == 401 else None
                response = error_response(denied.status, denied.error)
                if headers:
                    response.headers.update(headers)
                return response
            return await handler(request)

        return guarded

    async def _healthz(self, request: Request) -> Response:
        report = self.health()
        return JSONResponse(
            report.as_json(), status_code=200 if report.healthy else 503, headers=NO_STORE
        )

    async def _readyz(self, request: Request) -> Response:
        readiness = await self.readiness()
        return JSONResponse(
            readiness.as_json(), status_code=200 if readiness.ready else 503, headers=NO_STORE
        )

    async def _metrics(self, request: Request) -> Response:
        body, content_type = await self.scrape(request.headers.get("accept", ""))
        return Response(body, media_type=content_type, headers=NO_STORE)


class HeadLimit:
    """Refuse a request whose headers hold more than ``limit`` bytes: a 431 with a JSON error.

    uvicorn refuses a head that arrives in pieces past its own limit (400); one that arrives
    in a single read reaches the application, and stops here.
    """

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            size = sum(len(name) + len(value) for name, value in scope["headers"])
            if size > self.limit:
                response = error_response(
                    431, f"the request headers hold {size:,} bytes; the limit is {self.limit:,}"
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _password(url: str) -> str | None:
    try:
        return make_url(url).password
    except ArgumentError:
        return None


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.message, exc.problems)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message = f"no such endpoint: {request.url.path} (see /api/openapi.json)"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    response = error_response(exc.status_code, message)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.error("http.unexpected_error", path=request.url.path, error=repr(exc))
    return error_response(500, "unexpected error in the daemon's API (it is logged)")
