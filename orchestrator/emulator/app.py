"""The ASGI app: routing, auth, injected faults, request accounting, introspection.

Wire-neutral: the routes, the way a key is read and every response body come from the
:class:`~orchestrator.emulator.dialect.Dialect`. Each route has a name (``jobs.get`` ...) used
by the fault settings and the counters. A request goes: route lookup → auth (its key's hash is
the workspace) → fault draw → handler; the outcome (status, or ``dropped``) is counted per
workspace and route. The ``/_emulator/…`` introspection routes are the same for every dialect.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from typing import Any

import structlog
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from orchestrator.emulator import faults as f
from orchestrator.emulator.dialect import Call, Dialect, Route, Services, json_response, route
from orchestrator.emulator.errors import ApiError, Refusal, RequestInvalid
from orchestrator.emulator.settings import FaultSettings

log = structlog.get_logger(__name__)

UNAUTHENTICATED = "-"
"""The counters' workspace for requests that carried no acceptable key."""


def workspace_id(api_key: str) -> str:
    """The workspace an API key stands for: a hash, so keys are never stored or shown."""
    return "ws-" + hashlib.sha256(api_key.encode()).hexdigest()[:16]


class EmulatorApp:
    """The ASGI application (see :class:`orchestrator.emulator.Emulator`)."""

    def __init__(self, *, dialect: Dialect, services: Services, injector: f.FaultInjector) -> None:
        self.dialect = dialect
        self.services = services
        self.store = services.store
        self.clock = services.clock
        self.injector = injector
        api_keys = services.settings.api_keys
        self._allowed = (
            {hashlib.sha256(k.encode()).digest() for k in api_keys}
            if api_keys is not None
            else None
        )
        self.routes: list[Route] = list(dialect.routes(services))
        # The introspection routes: no key, no faults, not counted, alike for every dialect.
        self.routes += [
            route(name, methods, path, handler, auth=False, faults=False)
            for name, methods, path, handler in (
                ("emulator.stats", "GET", "/_emulator/stats", self._stats),
                ("emulator.faults", "GET PUT", "/_emulator/faults", self._faults),
                ("emulator.health", "GET", "/_emulator/health", self._health),
            )
        ]
        self._known: set[str] = set()
        self.stats_provider: Callable[[str | None], dict[str, Any]] = lambda _ws: {}

    # dispatch --------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        method: str = scope["method"]
        matched = [(r, m) for r in self.routes if (m := r.pattern.match(path))]
        if not matched:
            await self.dialect.not_found()(scope, receive, send)
            return
        allowed = [(r, m) for r, m in matched if method in r.methods]
        if not allowed:
            methods = sorted({x for r, _ in matched for x in r.methods})
            await self.dialect.method_not_allowed(methods)(scope, receive, send)
            return
        route, match = allowed[0]
        request = Request(scope, receive)
        workspace = UNAUTHENTICATED
        # Replaced by the status actually sent; a drop marks itself; anything else is a crash.
        status: list[str] = ["error"]

        async def recording_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = str(message["status"])
            await send(message)

        try:
            if route.auth:
                key = self._api_key(request)
                if key is None:
                    await self.dialect.unauthorized()(scope, receive, recording_send)
                    return
                workspace = workspace_id(key)
                if workspace not in self._known:
                    self.store.touch_workspace(workspace, self.clock.now())
                    self._known.add(workspace)
            call = Call(request=request, workspace=workspace, params=match.groupdict())
            if route.faults:
                await self._with_faults(route, call, scope, receive, recording_send, status)
            else:
                await self._respond(route, call, scope, receive, recording_send)
        finally:
            if route.faults:
                self.store.count(workspace, "requests", route.name, status[0])

    def _api_key(self, request: Request) -> str | None:
        """The request's key if the dialect finds one and it is accepted."""
        key = self.dialect.api_key(request)
        if key is None:
            return None
        if self._allowed is not None:
            digest = hashlib.sha256(key.encode()).digest()
            if not any(hmac.compare_digest(digest, allowed) for allowed in self._allowed):
                return None
        return key

    async def _respond(
        self, route: Route, call: Call, scope: Scope, receive: Receive, send: Send
    ) -> None:
        try:
            response = await route.handler(call)
        except Refusal as exc:
            response = self.dialect.error(self.dialect.refusal(exc))
        except ApiError as exc:
            response = self.dialect.error(exc)
        except RequestInvalid as exc:
            response = self.dialect.invalid(exc)
        await response(scope, receive, send)

    async def _with_faults(
        self,
        route: Route,
        call: Call,
        scope: Scope,
        receive: Receive,
        send: Send,
        status: list[str],
    ) -> None:
        decision = self.injector.decide(route.name)
        if decision.latency > 0:
            self._count_fault(call.workspace, route.name, f.LATENCY)
            await self.clock.sleep(decision.latency)
        kind = decision.kind
        if kind is not None:
            self._count_fault(call.workspace, route.name, kind)
            log.debug("emulator.fault_injected", route=route.name, kind=kind)
        if kind == f.RATE_LIMIT:
            await self.dialect.rate_limited(decision.retry_after)(scope, receive, send)
        elif kind == f.SERVER_ERROR:
            await self.dialect.server_error(decision.status)(scope, receive, send)
        elif kind == f.DROP_BEFORE:
            status[0] = "dropped"
            await f.close_connection(
                scope, graceful=False, reason="Server disconnected without sending a response."
            )
        elif kind == f.DROP_AFTER:

            async def swallow(message: Message) -> None:
                return None

            await self._respond(route, call, scope, receive, swallow)
            status[0] = "dropped"
            await f.close_connection(
                scope, graceful=False, reason="Server disconnected without sending a response."
            )
        elif kind == f.TRUNCATE:
            try:
                await self._respond(
                    route, call, scope, receive, f.truncating_send(send, decision.cut)
                )
            except f.Cut as cut:
                await f.close_connection(
                    scope,
                    graceful=True,
                    reason=(
                        "peer closed connection without sending complete message body: "
                        f"received {cut.sent} bytes, expected {cut.expected}"
                    ),
                )
        else:
            await self._respond(route, call, scope, receive, send)

    def _count_fault(self, workspace: str, route: str, kind: str) -> None:
        self.store.count(workspace, "faults", route, kind)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    # introspection ---------------------------------------------------------------------------

    async def _stats(self, call: Call) -> Response:
        key = self._api_key(call.request)
        caller = workspace_id(key) if key is not None else None
        data = self.stats_provider(call.request.query_params.get("workspace"))
        data["caller_workspace"] = caller
        return json_response(data)

    async def _faults(self, call: Call) -> Response:
        if call.request.method == "PUT":
            try:
                settings = FaultSettings.from_dict(await call.request.json())
            except ValueError as exc:
                raise ApiError(400, str(exc), code="invalid_fault_settings") from exc
            self.injector.replace(settings)
            log.info("emulator.faults_changed", faults=settings.to_dict())
        return json_response(self.injector.settings.to_dict())

    async def _health(self, call: Call) -> Response:
        return json_response({"status": "ok"})
