"""Mistral's routes: ``/v1/files…`` and ``/v1/batch/jobs…`` over the shared simulation.

Each handler parses the request (:mod:`.validation`), calls the core services, and shapes the
answer (:mod:`.wire`). The route names are the fault settings' and counters' (``jobs.get`` ...).
"""

from __future__ import annotations

import uuid

from starlette.responses import Response

from orchestrator.emulator.checks import Checker
from orchestrator.emulator.content import FileBody
from orchestrator.emulator.dialect import Call, Route, Services, json_response, route
from orchestrator.emulator.errors import ApiError
from orchestrator.emulator.mistral.validation import (
    PURPOSES,
    VISIBILITIES,
    parse_create,
    parse_files_query,
    parse_jobs_query,
    path_id,
)
from orchestrator.emulator.mistral.wire import file_json, job_json, list_json
from orchestrator.emulator.rows import FileRow
from orchestrator.emulator.upload import receive_upload


class MistralRoutes:
    """The handlers of Mistral's Files and Batch routes, bound to the simulation."""

    def __init__(self, services: Services) -> None:
        self.files = services.files
        self.jobs = services.jobs
        self.store = services.store
        self.settings = services.settings
        self.clock = services.clock

    def table(self) -> list[Route]:
        """Every route, by name (the order decides nothing: patterns do not overlap)."""
        uid = r"(?P<id>[^/]+)"
        return [
            route("files.upload", "POST", "/v1/files", self._upload),
            route("files.list", "GET", "/v1/files", self._list_files),
            route("files.retrieve", "GET", f"/v1/files/{uid}", self._retrieve_file),
            route("files.delete", "DELETE", f"/v1/files/{uid}", self._delete_file),
            route("files.content", "GET HEAD", f"/v1/files/{uid}/content", self._content),
            route("files.url", "GET", f"/v1/files/{uid}/url", self._signed_url),
            route(
                "files.signed_content", "GET HEAD", f"/signed/files/{uid}", self._signed, auth=False
            ),
            route("jobs.create", "POST", "/v1/batch/jobs", self._create_job),
            route("jobs.list", "GET", "/v1/batch/jobs", self._list_jobs),
            route("jobs.get", "GET", f"/v1/batch/jobs/{uid}", self._get_job),
            route("jobs.delete", "DELETE", f"/v1/batch/jobs/{uid}", self._delete_job),
            route("jobs.cancel", "POST", f"/v1/batch/jobs/{uid}/cancel", self._cancel_job),
        ]

    # files -----------------------------------------------------------------------------------

    async def _upload(self, call: Call) -> Response:
        limit = self.settings.max_file_bytes
        upload = await receive_upload(call.request, self.store.files_dir, limit)
        check = Checker()
        if upload.tmp_path is None and not upload.too_large:
            check.fail("missing", ("body", "file"), "Field required", None)
        purpose = upload.fields.get("purpose") or "fine-tune"
        check.enum(purpose, PURPOSES, ("body", "purpose"))
        visibility = upload.fields.get("visibility") or "workspace"
        check.enum(visibility, VISIBILITIES, ("body", "visibility"))
        expiry = None
        if upload.fields.get("expiry") not in (None, "", "null"):
            expiry = check.integer(upload.fields["expiry"], ("body", "expiry"), ge=1)
        try:
            check.raise_if_any()
        except Exception:
            if upload.tmp_path is not None:
                upload.tmp_path.unlink(missing_ok=True)
            raise
        if upload.too_large:
            raise ApiError(
                400,
                f"File too large: the limit is {limit:,} bytes ({limit // (1 << 20)} MB); "
                "split the input into several files.",
                code="file_too_large",
                param="file",
            )
        assert upload.tmp_path is not None and upload.filename is not None
        created = int(self.clock.now())
        name = upload.filename
        row = FileRow(
            id=str(uuid.uuid4()),
            workspace=call.workspace,
            filename=name,
            purpose=purpose,
            sample_type="batch_request" if purpose == "batch" else "instruct",
            source="upload",
            bytes=upload.bytes,
            num_lines=upload.lines,
            mimetype="application/jsonl" if name.endswith(".jsonl") else upload.content_type,
            signature=upload.sha256[:16],
            created_at=created,
            expires_at=created + expiry * 3600 if expiry is not None else None,
            visibility=visibility,
        )
        return json_response(file_json(self.files.add(upload, row)))

    async def _list_files(self, call: Call) -> Response:
        query = parse_files_query(call.request.query_params.multi_items())
        rows, total = self.store.list_files(
            call.workspace,
            sample_types=query.sample_types,
            sources=query.sources,
            search=query.search,
            purpose=query.purpose,
            mimetypes=query.mimetypes,
            limit=query.page_size,
            offset=query.page * query.page_size,
        )
        data = [file_json(r) for r in rows]
        return json_response(list_json(data, total if query.include_total else None))

    async def _retrieve_file(self, call: Call) -> Response:
        file_id = path_id(call.params["id"], "file_id")
        row = self.files.any_file(call.workspace, file_id)
        return json_response(file_json(row, with_deleted=True))

    async def _delete_file(self, call: Call) -> Response:
        file_id = path_id(call.params["id"], "file_id")
        self.files.delete_file(call.workspace, file_id)
        return json_response({"id": file_id, "object": "file", "deleted": True})

    async def _content(self, call: Call) -> FileBody:
        file_id = path_id(call.params["id"], "file_id")
        return self._file_body(call, self.files.live_file(call.workspace, file_id))

    def _file_body(self, call: Call, row: FileRow) -> FileBody:
        return FileBody(
            self.store.blob_path(row.id),
            size=row.bytes,
            filename=row.filename,
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
        return self._file_body(call, row)

    # jobs ------------------------------------------------------------------------------------

    async def _create_job(self, call: Call) -> Response:
        body = await call.request.body()
        spec = parse_create(body, max_inline=self.settings.max_inline_requests)
        if bool(spec.input_files) == bool(spec.inline):
            raise ApiError(
                400,
                "Provide exactly one of `input_files` (uploaded JSONL file ids) or `requests` "
                "(inline requests).",
                code="invalid_batch_input",
                param="input_files",
            )
        return json_response(job_json(*await self.jobs.create_job(call.workspace, spec)))

    async def _list_jobs(self, call: Call) -> Response:
        query = parse_jobs_query(call.request.query_params.multi_items())
        index = await self.jobs.select(
            call.workspace,
            model=query.model,
            agent_id=query.agent_id,
            created_after=query.created_after,
            metadata=query.metadata,
            states=query.states,
            descending=query.descending,
        )
        start = query.page * query.page_size
        data = []
        for entry in index[start : start + query.page_size]:
            view = await self.jobs.view(call.workspace, entry.id)
            if view is not None:  # deleted meanwhile
                data.append(job_json(*view))
        return json_response(list_json(data, len(index)))

    async def _get_job(self, call: Call) -> Response:
        job_id = path_id(call.params["id"], "job_id")
        inline = False
        raw = call.request.query_params.get("inline")
        if raw not in (None, "", "null"):
            check = Checker()
            inline = bool(check.boolean(raw, ("query", "inline")))
            check.raise_if_any()
        job, snap = await self.jobs.get_job(call.workspace, job_id)
        outputs = await self.jobs.outputs(snap) if inline else None
        return json_response(job_json(job, snap, outputs))

    async def _cancel_job(self, call: Call) -> Response:
        job_id = path_id(call.params["id"], "job_id")
        return json_response(job_json(*await self.jobs.cancel_job(call.workspace, job_id)))

    async def _delete_job(self, call: Call) -> Response:
        job_id = path_id(call.params["id"], "job_id")
        await self.jobs.delete_job(call.workspace, job_id)
        return json_response({"id": job_id, "object": "batch", "deleted": True})
