"""Anthropic's routes: ``/v1/messages/batches…`` over the shared simulation.

Route names are the core's vocabulary, so fault settings and counters work as for every
dialect: ``jobs.create`` … ``jobs.delete``, and ``files.content`` for a batch's results stream.
Every route checks ``anthropic-version`` first (400 without a known one).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import IO

import anyio
import anyio.to_thread
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from orchestrator.emulator.anthropic import wire
from orchestrator.emulator.anthropic.validation import (
    MAX_BODY_BYTES,
    check_version,
    parse_list_query,
    parse_requests,
)
from orchestrator.emulator.content import FileBody
from orchestrator.emulator.dialect import Call, Handler, Route, Services, route
from orchestrator.emulator.errors import ApiError
from orchestrator.emulator.rows import JobSpec
from orchestrator.emulator.simulation import TERMINAL

CHUNK = 1 << 20


class ResultsBody:
    """An ASGI response streaming a batch's results: its output lines, then its error lines."""

    def __init__(self, paths: Sequence[Path], size: int) -> None:
        self.paths = paths
        self.size = size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [
            (b"content-type", b"application/x-jsonl"),
            (b"content-length", str(self.size).encode()),
            (b"request-id", wire.new_request_id().encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for path in self.paths:
            handle: IO[bytes] = await anyio.to_thread.run_sync(path.open, "rb")
            try:
                while data := await anyio.to_thread.run_sync(handle.read, CHUNK):
                    await send({"type": "http.response.body", "body": data, "more_body": True})
            finally:
                handle.close()
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _too_large() -> ApiError:
    return ApiError(413, "Request exceeds the maximum size", code="", type="request_too_large")


class AnthropicRoutes:
    """The handlers of the Message Batches routes, bound to the simulation."""

    def __init__(self, services: Services) -> None:
        self.jobs = services.jobs
        self.store = services.store
        self.settings = services.settings

    def table(self) -> list[Route]:
        bid = r"(?P<id>[^/]+)"
        base = "/v1/messages/batches"
        return [
            route("jobs.create", "POST", base, self._versioned(self._create)),
            route("jobs.list", "GET", base, self._versioned(self._list)),
            route("jobs.get", "GET", f"{base}/{bid}", self._versioned(self._get)),
            route("jobs.cancel", "POST", f"{base}/{bid}/cancel", self._versioned(self._cancel)),
            route("jobs.delete", "DELETE", f"{base}/{bid}", self._versioned(self._delete)),
            route("files.content", "GET", f"{base}/{bid}/results", self._versioned(self._results)),
        ]

    @staticmethod
    def _versioned(handler: Handler) -> Handler:
        async def checked(call: Call) -> Response | FileBody:
            check_version(call.request.headers)
            return await handler(call)

        return checked

    def _json(self, call: Call, view: tuple[object, object]) -> Response:
        job, snap = view
        base = str(call.request.base_url)
        return wire.ok_json(wire.batch_json(job, snap, results_base=base))  # type: ignore[arg-type]

    async def _create(self, call: Call) -> Response:
        declared = call.request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            raise _too_large()
        raw = await call.request.body()
        if len(raw) > MAX_BODY_BYTES:
            raise _too_large()
        items = await anyio.to_thread.run_sync(parse_requests, raw)
        spec = JobSpec(
            endpoint="/v1/messages",
            input_files=[],
            inline=items,
            model=None,
            agent_id=None,
            metadata=None,
            timeout_hours=24,
        )
        return self._json(call, await self.jobs.create_job(call.workspace, spec))

    async def _list(self, call: Call) -> Response:
        page = parse_list_query(call.request.query_params)
        index = await self.jobs.select(call.workspace, descending=True)
        ids = [entry.id for entry in index]
        if page.before_id is not None:
            stop = ids.index(page.before_id) if page.before_id in ids else 0
            start = max(0, stop - page.limit)
            has_more = start > 0
        else:
            start = ids.index(page.after_id) + 1 if page.after_id in ids else 0
            if page.after_id is not None and page.after_id not in ids:
                start = len(ids)
            stop = min(len(ids), start + page.limit)
            has_more = stop < len(ids)
        data = []
        for entry in index[start:stop]:
            view = await self.jobs.view(call.workspace, entry.id)
            if view is not None:
                data.append(wire.batch_json(*view, results_base=str(call.request.base_url)))
        return wire.ok_json(
            {
                "data": data,
                "has_more": has_more,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            }
        )

    async def _get(self, call: Call) -> Response:
        return self._json(call, await self.jobs.get_job(call.workspace, call.params["id"]))

    async def _cancel(self, call: Call) -> Response:
        return self._json(call, await self.jobs.cancel_job(call.workspace, call.params["id"]))

    async def _delete(self, call: Call) -> Response:
        job, _ = await self.jobs.delete_job(call.workspace, call.params["id"])
        return wire.ok_json({"id": job.id, "type": "message_batch_deleted"})

    async def _results(self, call: Call) -> Response:
        job, snap = await self.jobs.get_job(call.workspace, call.params["id"])
        if snap.state not in TERMINAL:
            return wire.error_json(
                404,
                f"Results for message batch {job.id} are not available until processing ends.",
            )
        paths = [
            self.store.blob_path(file_id)
            for file_id in (snap.output_file, snap.error_file)
            if file_id is not None
        ]
        size = sum(path.stat().st_size for path in paths)
        return ResultsBody(paths, size)  # type: ignore[return-value]
