"""OpenAI's routes: ``/v1/files…`` and ``/v1/batches…`` over the shared simulation.

Each handler checks the request (:mod:`.validation`), calls the core services and shapes the
answer (:mod:`.wire`). Route names are the core's vocabulary (``jobs.get`` is
``GET /v1/batches/{id}``), so fault settings and counters work as for every dialect.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.responses import Response

from orchestrator.emulator.content import FileBody
from orchestrator.emulator.dialect import Call, Route, Services, json_response, route
from orchestrator.emulator.errors import ApiError
from orchestrator.emulator.openai.validation import (
    Page,
    bad,
    file_expiry,
    missing,
    parse_batches_query,
    parse_create,
    parse_files_query,
    upload_purpose,
)
from orchestrator.emulator.openai.wire import FILE_TTL, batch_json, file_json, new_file_id
from orchestrator.emulator.rows import FileRow, JobSpec
from orchestrator.emulator.settings import MIB
from orchestrator.emulator.upload import Upload, receive_upload


def page_json(data: Sequence[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    """A cursor page: ``{object: "list", data, first_id, last_id, has_more}``."""
    return {
        "object": "list",
        "data": list(data),
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }


def cursor_slice(ids: Sequence[str], page: Page) -> tuple[int, int]:
    """The ``[start, stop)`` of the page after ``page.after`` (an unknown cursor: nothing)."""
    start = 0
    if page.after is not None:
        try:
            start = list(ids).index(page.after) + 1
        except ValueError:
            start = len(ids)
    return start, min(len(ids), start + page.limit)


class OpenAIRoutes:
    """The handlers of OpenAI's Files and Batch routes, bound to the simulation."""

    def __init__(self, services: Services) -> None:
        self.files = services.files
        self.jobs = services.jobs
        self.store = services.store
        self.settings = services.settings
        self.clock = services.clock

    def table(self) -> list[Route]:
        """Every route, by name."""
        oid = r"(?P<id>[^/]+)"
        return [
            route("files.upload", "POST", "/v1/files", self._upload),
            route("files.list", "GET", "/v1/files", self._list_files),
            route("files.retrieve", "GET", f"/v1/files/{oid}", self._retrieve_file),
            route("files.delete", "DELETE", f"/v1/files/{oid}", self._delete_file),
            route("files.content", "GET HEAD", f"/v1/files/{oid}/content", self._content),
            route("jobs.create", "POST", "/v1/batches", self._create),
            route("jobs.list", "GET", "/v1/batches", self._list_batches),
            route("jobs.get", "GET", f"/v1/batches/{oid}", self._get),
            route("jobs.cancel", "POST", f"/v1/batches/{oid}/cancel", self._cancel),
        ]

    # files -----------------------------------------------------------------------------------

    async def _upload(self, call: Call) -> Response:
        upload = await receive_upload(
            call.request, self.store.files_dir, self.settings.max_file_bytes
        )
        try:
            row = self._file_row(call.workspace, upload)
        except ApiError:
            if upload.tmp_path is not None:
                upload.tmp_path.unlink(missing_ok=True)
            raise
        return json_response(file_json(self.files.add(upload, row)))

    def _file_row(self, workspace: str, upload: Upload) -> FileRow:
        """Check an upload against the Files and Batch API limits; describe the new file."""
        if upload.tmp_path is None and not upload.too_large:
            raise missing("file")
        purpose = upload_purpose(upload.fields)
        expiry = file_expiry(upload.fields)
        limit = self.settings.max_file_bytes
        if upload.too_large:
            raise bad(
                f"File is too large. The maximum file size is {limit // MIB} MB.",
                "file",
                "file_too_large",
            )
        name = upload.filename or "file"
        if purpose == "batch":
            if not name.endswith(".jsonl"):
                raise bad("Invalid file format for Batch API. Must be .jsonl", "file")
            batch_limit = self.settings.max_batch_file_bytes
            if upload.bytes > batch_limit:
                raise bad(
                    f"File is too large. The Batch API accepts .jsonl files up to "
                    f"{batch_limit // MIB} MB.",
                    "file",
                    "file_too_large",
                )
            expiry = expiry or FILE_TTL
        created = int(self.clock.now())
        return FileRow(
            id=new_file_id(),
            workspace=workspace,
            filename=name,
            purpose=purpose,
            sample_type="batch_request" if purpose == "batch" else "instruct",
            source="upload",
            bytes=upload.bytes,
            num_lines=upload.lines,
            mimetype="application/jsonl" if name.endswith(".jsonl") else upload.content_type,
            signature=upload.sha256[:16],
            created_at=created,
            expires_at=created + expiry if expiry is not None else None,
        )

    async def _list_files(self, call: Call) -> Response:
        page = parse_files_query(call.request.query_params)
        rows, _ = self.store.list_files(
            call.workspace, sample_types=(), sources=(), search=None, purpose=page.purpose,
            mimetypes=(), limit=-1, offset=0,
        )  # fmt: skip
        if not page.descending:
            rows.reverse()
        start, stop = cursor_slice([r.id for r in rows], page)
        data = [file_json(r) for r in rows[start:stop]]
        return json_response(page_json(data, stop < len(rows)))

    async def _retrieve_file(self, call: Call) -> Response:
        return json_response(file_json(self.files.live_file(call.workspace, call.params["id"])))

    async def _delete_file(self, call: Call) -> Response:
        file_id = call.params["id"]
        self.files.delete_file(call.workspace, file_id)
        return json_response({"id": file_id, "object": "file", "deleted": True})

    async def _content(self, call: Call) -> FileBody:
        row = self.files.live_file(call.workspace, call.params["id"])
        return FileBody(
            self.store.blob_path(row.id),
            size=row.bytes,
            filename=row.filename,
            range_header=call.request.headers.get("range"),
            head=call.request.method == "HEAD",
        )

    # batches ---------------------------------------------------------------------------------

    async def _create(self, call: Call) -> Response:
        req = parse_create(await call.request.body())
        source = self.files.live_file(call.workspace, req.input_file_id)
        if source.purpose != "batch":
            raise bad(
                f"The input file {source.id} has purpose '{source.purpose}'; a batch needs a "
                "file uploaded with purpose 'batch'.",
                "input_file_id",
            )
        spec = JobSpec(
            endpoint=req.endpoint,
            input_files=[source.id],
            inline=None,
            model=None,
            agent_id=None,
            metadata=req.metadata,
            timeout_hours=24,
        )
        return json_response(batch_json(*await self.jobs.create_job(call.workspace, spec)))

    async def _list_batches(self, call: Call) -> Response:
        page = parse_batches_query(call.request.query_params)
        index = await self.jobs.select(call.workspace, descending=True)
        start, stop = cursor_slice([entry.id for entry in index], page)
        data = []
        for entry in index[start:stop]:
            view = await self.jobs.view(call.workspace, entry.id)
            if view is not None:
                data.append(batch_json(*view))
        return json_response(page_json(data, stop < len(index)))

    async def _get(self, call: Call) -> Response:
        return json_response(
            batch_json(*await self.jobs.get_job(call.workspace, call.params["id"]))
        )

    async def _cancel(self, call: Call) -> Response:
        view = await self.jobs.cancel_job(call.workspace, call.params["id"])
        return json_response(batch_json(*view))
