"""The HTTP endpoint of a running daemon: ``/healthz``, ``/readyz`` and ``/metrics``.

Served by uvicorn as one more task of the daemon's task group (no thread, nothing that outlives
the daemon), on the address of ``[http] listen`` (or ``ORCH_HTTP_LISTEN``):

- ``GET /healthz``: 200 while every loop's heartbeat is fresh (also while draining after
  SIGTERM), 503 when a loop stalled. Body: JSON, per loop its age and limit.
- ``GET /readyz``: 200 when the ledger answers and is at the migration head and the daemon is
  not stopping, else 503 with the reason.
- ``GET /metrics``: Prometheus text format (or OpenMetrics when the scraper asks for it).

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
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from orchestrator.errors import ConfigError, OrchestratorError
from orchestrator.ledger.engine import display_url
from orchestrator.ledger.migrate import current_revision, head_revision
from orchestrator.service.health import STALL_ALLOWANCE, HealthReport, evaluate, loop_limits
from orchestrator.service.metrics import DaemonCollector
from orchestrator.service.view import DaemonView

log = structlog.get_logger(__name__)

READY_TIMEOUT = 5.0
"""Seconds ``/readyz`` waits for the ledger before answering 503."""
SHUTDOWN_TIMEOUT = 2.0
"""Seconds open connections get to finish when the daemon stops."""
NO_STORE = {"Cache-Control": "no-store"}


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
    ) -> None:
        """Prepare the endpoint (nothing is bound yet).

        Args:
            view: what the endpoint reports: the daemon's loops, workspaces and ledger.
            host: address to listen on (an IPv6 address without brackets).
            port: TCP port; 0 picks a free one (see :attr:`url`).
            stall_allowance: seconds a loop's cycle may take beyond its longest sleep
                before ``/healthz`` reports the loop stalled.
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
        self.app = Starlette(
            routes=[
                Route("/healthz", self._healthz, methods=["GET"]),
                Route("/readyz", self._readyz, methods=["GET"]),
                Route("/metrics", self._metrics, methods=["GET"]),
            ]
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
            log.info("http.listening", url=self.url, endpoints=["/healthz", "/readyz", "/metrics"])
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
