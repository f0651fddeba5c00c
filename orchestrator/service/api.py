"""The JSON API and the dashboard of a running daemon (design §10), read through its view.

Routes (see :data:`ApiRoute` list in :meth:`Api.routes`; ``/api/openapi.json`` is made from
the same list):

- ``GET /api/jobs``: the ``status --json`` rows, filtered (``state``, ``workspace``, ``parts``)
  and paged (``limit``, ``cursor``; the next page is in the ``Link`` header, the count of all
  matching jobs in ``X-Total-Count``).
- ``GET /api/jobs/{name}``: ``show --json`` plus links; ``.../files/{kind}`` serves a result
  file (``output``, ``error``, ``summary`` for ``job.json``).
- ``GET /api/workspaces``: per workspace its budget, in flight, queued demand and one gauge per
  budget dimension.
- ``GET /api/events``: server-sent events (:mod:`orchestrator.service.feed`).
- ``POST /api/jobs``, ``POST /api/jobs/{name}/cancel``: :mod:`orchestrator.service.uploads`
  and :meth:`Api.cancel`.

Every answer is JSON, errors too (``{"error": ..., "problems": [...]}``), and every JSON body
passes through the secret redactor, so an API key, the ledger's password or the API token
that somehow reached a job's error text is never shown.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import structlog
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Route

from orchestrator import __version__
from orchestrator.costs import JobCost, job_costs, money, spend_rows
from orchestrator.errors import JobNotFound
from orchestrator.model import FINAL_STATES, Job
from orchestrator.rows import budget_dimensions, budgets, show_detail, status_row
from orchestrator.service import feed, uploads
from orchestrator.service.access import Access
from orchestrator.service.commands import JobCommands
from orchestrator.service.openapi import ApiRoute, document, error, name_parameter
from orchestrator.service.params import MAX_PAGE, cursor, flag, limit, states
from orchestrator.service.responses import SECURITY_HEADERS, ApiError, json_response
from orchestrator.service.view import DaemonView

log = structlog.get_logger(__name__)

PAGE_HEADERS = {
    **SECURITY_HEADERS,
    # Everything the page needs ships in the package: nothing from elsewhere, no inline code.
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
}
STATIC_FILES = {"app.js": "text/javascript", "style.css": "text/css", "index.html": "text/html"}
"""The dashboard's files, served by name from this fixed list (never a path from the URL)."""
RESULT_KINDS = {"output": "output", "error": "error"}


class Api:
    """The API's handlers, bound to one daemon's view and commands."""

    def __init__(
        self,
        view: DaemonView,
        commands: JobCommands | None,
        access: Access,
        *,
        max_body: int,
        feed_interval: float = 1.0,
    ) -> None:
        self.view = view
        self.commands = commands
        self.access = access
        self.max_body = max_body
        """Bytes a request body may have (a 413 beyond)."""
        self.feed_interval = feed_interval
        """Seconds between two looks at the ledger of ``/api/events``."""
        self._document: dict[str, Any] | None = None
        self._priced_cache: tuple[Any, list[Job], dict[int, JobCost]] | None = None

    # Reads ---------------------------------------------------------------------------

    async def jobs(self, request: Request) -> Response:
        wanted, workspace = states(request), request.query_params.get("workspace")
        parts, size, after = flag(request, "parts"), limit(request), cursor(request)
        page, total = await self.view.ledger.jobs_page(
            states=wanted, workspace=workspace, parts=parts, after=after, limit=size
        )
        now = self.view.clock.now()
        headers = {"X-Total-Count": str(total)}
        if len(page) == size:
            last = page[-1]
            query = [
                (key, value)
                for key, value in request.query_params.multi_items()
                if key not in ("cursor", "limit")
            ]
            query += [("cursor", f"{last.priority}:{last.id}"), ("limit", str(size))]
            headers["Link"] = f'<{request.url.path}?{urlencode(query)}>; rel="next"'
        _, costs = await self._priced()
        rows = [
            status_row(job, now=now, parent_field=parts) | costs.get(job.id, JobCost()).as_json()
            for job in page
        ]
        return json_response(rows, headers=headers)

    async def _priced(self) -> tuple[list[Job], dict[int, JobCost]]:
        """Every job and its usage, cost and spend wait, as ``status --json`` adds them.

        They sum over a job's children and read its whole workspace, so they come from the
        whole ledger; computed again only when a job changed (or a second passed).
        """
        view = self.view
        now = view.clock.now()
        key = (await view.ledger.fingerprint(), int(now))
        if self._priced_cache is None or self._priced_cache[0] != key:
            every = await view.ledger.list_jobs()
            self._priced_cache = (key, every, job_costs(view.config, every, now))
        return self._priced_cache[1], self._priced_cache[2]

    async def _job(self, request: Request) -> Job:
        name = request.path_params["name"]
        try:
            return await self.view.ledger.get_by_name(name)
        except JobNotFound:
            raise ApiError(404, f"no job {name!r} in the ledger") from None

    async def job(self, request: Request) -> Response:
        job = await self._job(request)
        ledger = self.view.ledger
        files = await ledger.files(job.id)
        events = await ledger.events(job.id)
        parts = await ledger.parts(job.id) if job.is_parent else []
        detail = show_detail(job, files, events, now=self.view.clock.now(), parts=parts)
        _, costs = await self._priced()  # as `show --json` adds them
        detail.update(costs.get(job.id, JobCost()).as_json())
        for row, part in zip(detail["parts"], parts, strict=True):
            row.update(costs.get(part.id, JobCost()).as_json())
        base = f"/api/jobs/{job.name}"
        links = {"self": base, "cancel": f"{base}/cancel"}
        for record in detail["files"]:
            record["url"] = f"{base}/files/{record['kind']}"
            links[record["kind"]] = record["url"]
        if self._summary(files) is not None:
            links["summary"] = f"{base}/files/summary"
        detail["links"] = links
        return json_response(detail)

    def _summary(self, files: list[Any]) -> Path | None:
        """The job's ``job.json``: beside its recorded result files, when it exists."""
        for record in files:
            path = Path(record.path).parent / "job.json"
            if path.is_file():
                return path
        return None

    async def result_file(self, request: Request) -> Response:
        job = await self._job(request)
        kind = request.path_params["kind"]
        files = await self.view.ledger.files(job.id)
        if kind == "summary":
            path = self._summary(files)
        elif kind in RESULT_KINDS:
            path = next((Path(f.path) for f in files if f.kind == kind), None)
        else:
            raise ApiError(404, f"no result file {kind!r}: use output, error or summary")
        if path is None or not path.is_file():
            raise ApiError(404, f"job {job.name!r} has no {kind} file (yet)")
        # The path comes from the ledger, not the URL; still, serve nothing outside results.
        root = self.view.config.results.dir.resolve()
        if not path.resolve().is_relative_to(root):
            raise ApiError(404, f"job {job.name!r} has no {kind} file under the results folder")
        media = "application/json" if kind == "summary" else "application/x-ndjson"
        return FileResponse(
            path,
            media_type=media,
            filename=path.name,
            content_disposition_type="inline",
            headers=SECURITY_HEADERS,
        )

    async def workspaces(self, request: Request) -> Response:
        view = self.view
        every, _ = await self._priced()
        now = view.clock.now()
        external = {name: ws.stats().external_pending for name, ws in view.workspaces.items()}
        spends = spend_rows(view.config, every, now)
        rows = []
        for row in budgets(view.config.workspaces, every, external=external):
            ws = view.config.workspaces.get(row.name)
            dimensions = budget_dimensions(row)
            answer = {**row.as_json(), "provider": ws.provider if ws else None}
            if row.name in spends:  # as `budget --json`: only under a spend limit
                spend = spends[row.name]
                answer["spend"] = spend.as_json()
                dimensions.append(
                    {
                        "name": "spend",
                        "label": f"spend {spend.month} (spent + in flight)",
                        "used": money(spend.spent + spend.in_flight),
                        "limit": spend.limit,
                        "unit": view.config.pricing.currency or "",
                    }
                )
            rows.append({**answer, "dimensions": dimensions})
        return json_response(rows)

    async def openapi(self, request: Request) -> Response:
        if self._document is None:
            self._document = document(self.routes_table(), version=__version__)
        return json_response(self._document)

    # Writes --------------------------------------------------------------------------

    async def cancel(self, request: Request) -> Response:
        if self.commands is None:
            raise ApiError(403, "this endpoint takes no commands")
        name = request.path_params["name"]
        try:
            result = await self.commands.cancel(name)
        except JobNotFound:
            raise ApiError(404, f"no job {name!r} in the ledger") from None
        log.info(
            "api.cancel_requested",
            job=result.job.name,
            job_id=result.job.id,
            state=result.job.state,
            already_requested=result.already_requested,
        )
        body = {
            "job": status_row(result.job, now=self.view.clock.now()),
            "message": result.message,
            "already_requested": result.already_requested,
        }
        return json_response(body, 202 if result.job.state not in FINAL_STATES else 200)

    async def submit(self, request: Request) -> Response:
        if self.commands is None:
            raise ApiError(403, "this endpoint takes no commands")
        job, created = await uploads.submit(request, self.view.config, self.commands, self.max_body)
        log.info(
            "api.job_submitted",
            job=job.name,
            job_id=job.id,
            created=created,
            requests=job.request_count,
            workspace=job.workspace,
        )
        body = {**status_row(job, now=self.view.clock.now()), "created": created}
        return json_response(body, 201 if created else 200)

    async def events(self, request: Request) -> Response:
        return await feed.stream(request, self.view, interval=self.feed_interval)

    # The dashboard -------------------------------------------------------------------

    async def page(self, request: Request) -> Response:
        return self._static("index.html")

    async def static(self, request: Request) -> Response:
        name = request.path_params["file"]
        if name not in STATIC_FILES:
            raise ApiError(404, f"no file {name!r}")
        return self._static(name)

    def _static(self, name: str) -> Response:
        body = resources.files("orchestrator.service").joinpath("dashboard", name).read_bytes()
        return Response(body, media_type=STATIC_FILES[name], headers=PAGE_HEADERS)

    # Routes --------------------------------------------------------------------------

    def routes_table(self) -> list[ApiRoute]:
        """Every API route, with what the OpenAPI document says of it."""
        job_row = {"$ref": "#/components/schemas/JobRow"}
        json_of = _content
        return [
            ApiRoute(
                method="GET",
                path="/api/jobs",
                handler=self.jobs,
                operation_id="listJobs",
                summary="The status --json rows, filtered and paged",
                need="read",
                parameters=[
                    _query("state", {"type": "string"}, "States, comma-separated or repeated"),
                    _query("workspace", {"type": "string"}, "Only this workspace's jobs"),
                    _query("parts", {"type": "boolean"}, "Include split jobs' parts"),
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}, ""),
                    _query("cursor", {"type": "string"}, "From the previous page's Link header"),
                ],
                responses={
                    "200": {
                        "description": "One page of jobs, in admission order",
                        "headers": {
                            "X-Total-Count": {"schema": {"type": "string"}},
                            "Link": {"schema": {"type": "string"}},
                        },
                        **json_of({"type": "array", "items": job_row}),
                    },
                    "400": error("A filter, limit or cursor is not valid"),
                },
            ),
            ApiRoute(
                method="POST",
                path="/api/jobs",
                handler=self.submit,
                operation_id="submitJob",
                summary="Submit a job: a JSON definition and its JSONL inputs (multipart)",
                need="write",
                request_body={
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "required": ["definition", "input"],
                                "properties": {
                                    "definition": {"type": "string"},
                                    "input": {
                                        "type": "array",
                                        "items": {"type": "string", "format": "binary"},
                                    },
                                },
                            }
                        }
                    },
                },
                responses={
                    "201": {
                        "description": "Queued",
                        **json_of({"$ref": "#/components/schemas/Submitted"}),
                    },
                    "200": {
                        "description": "Already in the ledger with this definition",
                        **json_of({"$ref": "#/components/schemas/Submitted"}),
                    },
                    "400": error("Not a multipart body, or a definition that is not JSON"),
                    "409": error("The name is taken by another definition"),
                    "413": error("The body is larger than the limit"),
                    "415": error("Not multipart/form-data"),
                    "422": error("The definition or an input is invalid (file:line problems)"),
                },
            ),
            ApiRoute(
                method="POST",
                path="/api/jobs/{name:path}/cancel",
                handler=self.cancel,
                operation_id="cancelJob",
                summary="Flag a job for cancellation (the daemon acts on it at once)",
                need="write",
                parameters=[name_parameter()],
                responses={
                    "202": {
                        "description": "Requested",
                        **json_of({"$ref": "#/components/schemas/CancelResult"}),
                    },
                    "200": {
                        "description": "Already final: nothing to cancel",
                        **json_of({"$ref": "#/components/schemas/CancelResult"}),
                    },
                    "404": error("No such job"),
                },
            ),
            ApiRoute(
                method="GET",
                path="/api/jobs/{name:path}/files/{kind}",
                handler=self.result_file,
                operation_id="getResultFile",
                summary="A result file: output, error or summary (job.json)",
                need="read",
                parameters=[
                    name_parameter(),
                    {
                        "name": "kind",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "enum": ["output", "error", "summary"]},
                    },
                ],
                responses={
                    "200": {
                        "description": "The file",
                        "content": {
                            "application/x-ndjson": {"schema": {"type": "string"}},
                            "application/json": {"schema": {"type": "object"}},
                        },
                    },
                    "404": error("No such job or file"),
                },
            ),
            ApiRoute(
                method="GET",
                path="/api/jobs/{name:path}",
                handler=self.job,
                operation_id="getJob",
                summary="One job with its history, files and parts (show --json)",
                need="read",
                parameters=[name_parameter()],
                responses={
                    "200": {
                        "description": "The job",
                        **json_of({"$ref": "#/components/schemas/JobDetail"}),
                    },
                    "404": error("No such job"),
                },
            ),
            ApiRoute(
                method="GET",
                path="/api/workspaces",
                handler=self.workspaces,
                operation_id="listWorkspaces",
                summary="Per workspace: budget, in flight, queued demand, one gauge per dimension",
                need="read",
                responses={
                    "200": {
                        "description": "Every workspace",
                        **json_of(
                            {"type": "array", "items": {"$ref": "#/components/schemas/Workspace"}}
                        ),
                    }
                },
            ),
            ApiRoute(
                method="GET",
                path="/api/events",
                handler=self.events,
                operation_id="streamEvents",
                summary="Server-sent events of job changes (resume with Last-Event-ID)",
                need="read",
                parameters=[
                    {"name": "Last-Event-ID", "in": "header", "schema": {"type": "string"}},
                    _query("since", {"type": "integer", "minimum": 0}, "Same as Last-Event-ID"),
                ],
                responses={
                    "200": {
                        "description": "`job` events (with ids), `progress` and `ping`",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    "400": error("Last-Event-ID is not an event id"),
                },
            ),
            ApiRoute(
                method="GET",
                path="/api/openapi.json",
                handler=self.openapi,
                operation_id="openapi",
                summary="This document",
                need="read",
                responses={"200": {"description": "OpenAPI 3.1", **json_of({"type": "object"})}},
            ),
        ]

    def routes(self, guard: Any) -> list[BaseRoute]:
        """The Starlette routes: the API's (each wrapped by ``guard(need, handler)``), then the
        dashboard's page and files (open: they hold no data)."""
        routes: list[BaseRoute] = [
            Route(r.path, guard(r.need, r.handler), methods=[r.method], name=r.operation_id)
            for r in self.routes_table()
        ]
        routes += [
            Route("/", guard("open", self.page), methods=["GET"]),
            Route("/static/{file}", guard("open", self.static), methods=["GET"]),
        ]
        return routes


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def _content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}
