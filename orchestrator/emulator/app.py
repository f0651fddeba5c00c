"""The ASGI app: routing, bearer auth, injected faults, request accounting, introspection.

Each Mistral route has a name (``jobs.get`` ...) used by the fault settings and the counters.
A request goes: route lookup → auth (its key's hash is the workspace) → fault draw → handler;
the outcome (status, or ``dropped``) is counted per workspace and route.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import structlog
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from orchestrator.clock import Clock
from orchestrator.emulator import faults as f
from orchestrator.emulator.content import FileBody
from orchestrator.emulator.files import Files
from orchestrator.emulator.jobs import Jobs
from orchestrator.emulator.settings import EmulatorSettings, FaultSettings
from orchestrator.emulator.store import Store
from orchestrator.emulator.validation import (
    Checker,
    parse_create,
    parse_files_query,
    parse_jobs_query,
    path_id,
)
from orchestrator.emulator.wire import (
    ApiError,
    RequestInvalid,
    error_response,
    invalid_response,
    json_response,
    unauthorized_response,
)

log = structlog.get_logger(__name__)

UNAUTHENTICATED = "-"
"""The counters' workspace for requests that carried no acceptable key."""

Handler = Callable[["Call"], Awaitable[Response | FileBody]]


def workspace_id(api_key: str) -> str:
    """The workspace an API key stands for: a hash, so keys are never stored or shown."""
    return "ws-" + hashlib.sha256(api_key.encode()).hexdigest()[:16]


@attrs.frozen(kw_only=True)
class Call:
    """One routed request."""

    request: Request
    workspace: str
    params: dict[str, str]


@attrs.frozen(kw_only=True)
class Route:
    """A path pattern, its methods, its name and whether it needs the bearer key."""

    name: str
    methods: frozenset[str]
    pattern: re.Pattern[str]
    handler: Handler
    auth: bool = True
    faults: bool = True


class EmulatorApp:
    """The ASGI application (see :class:`orchestrator.emulator.Emulator`)."""

    def __init__(
        self,
        *,
        files: Files,
        jobs: Jobs,
        store: Store,
        settings: EmulatorSettings,
        clock: Clock,
        injector: f.FaultInjector,
    ) -> None:
        self.files = files
        self.jobs = jobs
        self.store = store
        self.settings = settings
        self.clock = clock
        self.injector = injector
        self._allowed = (
            {hashlib.sha256(k.encode()).digest() for k in settings.api_keys}
            if settings.api_keys is not None
            else None
        )
        uid = r"(?P<id>[^/]+)"
        table: list[tuple[str, str, str, Handler, bool]] = [
            ("files.upload", "POST", "/v1/files", self._upload, True),
            ("files.list", "GET", "/v1/files", self._list_files, True),
            ("files.retrieve", "GET", f"/v1/files/{uid}", self._retrieve_file, True),
            ("files.delete", "DELETE", f"/v1/files/{uid}", self._delete_file, True),
            ("files.content", "GET HEAD", f"/v1/files/{uid}/content", self._content, True),
            ("files.url", "GET", f"/v1/files/{uid}/url", self._signed_url, True),
            ("files.signed_content", "GET HEAD", f"/signed/files/{uid}", self._signed, False),
            ("jobs.create", "POST", "/v1/batch/jobs", self._create_job, True),
            ("jobs.list", "GET", "/v1/batch/jobs", self._list_jobs, True),
            ("jobs.get", "GET", f"/v1/batch/jobs/{uid}", self._get_job, True),
            ("jobs.delete", "DELETE", f"/v1/batch/jobs/{uid}", self._delete_job, True),
            ("jobs.cancel", "POST", f"/v1/batch/jobs/{uid}/cancel", self._cancel_job, True),
        ]
        self.routes = [
            Route(
                name=name,
                methods=frozenset(methods.split()),
                pattern=re.compile(f"^{path}/?$"),
                handler=handler,
                auth=auth,
            )
            for name, methods, path, handler, auth in table
        ]
        self.routes += [
            Route(
                name="emulator.stats",
                methods=frozenset({"GET"}),
                pattern=re.compile(r"^/_emulator/stats/?$"),
                handler=self._stats,
                auth=False,
                faults=False,
            ),
            Route(
                name="emulator.faults",
                methods=frozenset({"GET", "PUT"}),
                pattern=re.compile(r"^/_emulator/faults/?$"),
                handler=self._faults,
                auth=False,
                faults=False,
            ),
            Route(
                name="emulator.health",
                methods=frozenset({"GET"}),
                pattern=re.compile(r"^/_emulator/health/?$"),
                handler=self._health,
                auth=False,
                faults=False,
            ),
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
            await json_response({"detail": "Not Found"}, 404)(scope, receive, send)
            return
        allowed = [(r, m) for r, m in matched if method in r.methods]
        if not allowed:
            methods = sorted({x for r, _ in matched for x in r.methods})
            response = json_response(
                {"detail": "Method Not Allowed"}, 405, {"Allow": ", ".join(methods)}
            )
            await response(scope, receive, send)
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
                key = self._bearer(request)
                if key is None:
                    await unauthorized_response()(scope, receive, recording_send)
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

    def _bearer(self, request: Request) -> str | None:
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
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
        except ApiError as exc:
            response = error_response(exc)
        except RequestInvalid as exc:
            response = invalid_response(exc)
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
            response = json_response(
                f.rate_limit_body(), 429, f.rate_limit_headers(decision.retry_after)
            )
            await response(scope, receive, send)
        elif kind == f.SERVER_ERROR:
            await json_response(f.server_error_body(decision.status), decision.status)(
                scope, receive, send
            )
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

    # handlers --------------------------------------------------------------------------------

    async def _upload(self, call: Call) -> Response:
        return json_response(await self.files.upload(call.workspace, call.request))

    async def _list_files(self, call: Call) -> Response:
        query = parse_files_query(call.request.query_params.multi_items())
        return json_response(self.files.list_files(call.workspace, query))

    async def _retrieve_file(self, call: Call) -> Response:
        file_id = path_id(call.params["id"], "file_id")
        return json_response(self.files.retrieve_file(call.workspace, file_id))

    async def _delete_file(self, call: Call) -> Response:
        file_id = path_id(call.params["id"], "file_id")
        return json_response(self.files.delete_file(call.workspace, file_id))

    async def _content(self, call: Call) -> FileBody:
        file_id = path_id(call.params["id"], "file_id")
        row = self.files.live_file(call.workspace, file_id)
        return self._file_body(call, row.id, row.bytes, row.filename)

    def _file_body(self, call: Call, file_id: str, size: int, filename: str) -> FileBody:
        return FileBody(
            self.store.blob_path(file_id),
            size=size,
            filename=filename,
            range_header=call.request.headers.get("range"),
            head=call.request.method == "HEAD",
        )

    async def _signed_url(self, call: Call) -> Response:
        file_id = path_id(call.params["id"], "file_id")
        check = Checker()
        hours = check.integer(
            call.request.query_params.get("expiry", "24"), ("query", "expiry"), ge=1, le=168
        )
        check.raise_if_any()
        assert hours is not None
        base = str(call.request.base_url)
        return json_response({"url": self.files.signed_url(call.workspace, file_id, base, hours)})

    async def _signed(self, call: Call) -> FileBody:
        file_id = path_id(call.params["id"], "file_id")
        query = call.request.query_params
        row = self.files.signed_file(file_id, query.get("se", ""), query.get("sig", ""))
        return self._file_body(call, row.id, row.bytes, row.filename)

    async def _create_job(self, call: Call) -> Response:
        body = await call.request.body()
        req = parse_create(body, max_inline=self.settings.max_inline_requests)
        return json_response(await self.jobs.create_job(call.workspace, req))

    async def _list_jobs(self, call: Call) -> Response:
        query = parse_jobs_query(call.request.query_params.multi_items())
        return json_response(await self.jobs.list_jobs(call.workspace, query))

    async def _get_job(self, call: Call) -> Response:
        job_id = path_id(call.params["id"], "job_id")
        inline = False
        raw = call.request.query_params.get("inline")
        if raw not in (None, "", "null"):
            check = Checker()
            inline = bool(check.boolean(raw, ("query", "inline")))
            check.raise_if_any()
        return json_response(await self.jobs.get_job(call.workspace, job_id, inline=inline))

    async def _cancel_job(self, call: Call) -> Response:
        job_id = path_id(call.params["id"], "job_id")
        return json_response(await self.jobs.cancel_job(call.workspace, job_id))

    async def _delete_job(self, call: Call) -> Response:
        job_id = path_id(call.params["id"], "job_id")
        return json_response(await self.jobs.delete_job(call.workspace, job_id))

    # introspection ---------------------------------------------------------------------------

    async def _stats(self, call: Call) -> Response:
        key = self._bearer(call.request)
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
