"""A small in-memory OpenAI Files + Batch API, written from ``shared/api/openai-batch.md``.

It stands in for the emulator's OpenAI wire (not written yet) in provider and daemon tests:
an ``httpx.MockTransport`` handler that keeps files and batches, lists batches newest first by
an ``after`` cursor (``limit`` 1-100, no other parameter accepted), answers errors in OpenAI's
``{"error": {message, type, param, code}}`` shape, and records every request. Tests seed
batches directly (:meth:`FakeOpenAI.add_batch`) and move them by hand (:meth:`set_status`).
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from typing import Any

import attrs
import httpx

from orchestrator.clock import Clock

ACTIVE = frozenset({"validating", "in_progress", "finalizing", "cancelling"})
ENDPOINTS = frozenset({"/v1/chat/completions", "/v1/embeddings", "/v1/responses"})


def error(status: int, message: str, *, code: str | None = None) -> httpx.Response:
    """An OpenAI error response."""
    body = {"error": {"message": message, "type": "invalid_request_error", "param": None}}
    body["error"]["code"] = code
    return httpx.Response(status, json=body)


def parse_multipart(request: httpx.Request) -> dict[str, tuple[dict[str, str], bytes]]:
    """The parts of a multipart/form-data body: ``{name: (disposition params, bytes)}``."""
    boundary = request.headers["content-type"].split("boundary=", 1)[1].encode()
    parts: dict[str, tuple[dict[str, str], bytes]] = {}
    for chunk in request.content.split(b"--" + boundary)[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, data = chunk[2:].partition(b"\r\n\r\n")
        params: dict[str, str] = {}
        for line in head.decode().split("\r\n"):
            if line.lower().startswith("content-disposition:"):
                for item in line.split(";")[1:]:
                    key, _, value = item.strip().partition("=")
                    params[key] = value.strip('"')
        parts[params["name"]] = (params, data.removesuffix(b"\r\n"))
    return parts


@attrs.define
class FakeOpenAI:
    """The fake API's state; call it as a MockTransport handler."""

    clock: Clock
    api_key: str = "sk-fake"
    files: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    contents: dict[str, bytes] = attrs.field(factory=dict)
    batches: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    """By id, in creation order (listing reverses it: newest first)."""
    requests: list[httpx.Request] = attrs.field(factory=list)
    calls: Counter[str] = attrs.field(factory=Counter)
    """Requests per route name: files.create, batches.list, batches.get, ..."""
    _ids: itertools.count[int] = attrs.field(factory=itertools.count)

    def transport(self) -> httpx.MockTransport:
        """A transport for an ``OpenAIProvider``."""
        return httpx.MockTransport(self)

    def add_batch(self, **fields: Any) -> dict[str, Any]:
        """Store a batch as if it had been created (defaults: completed, 1 of 1 succeeded)."""
        number = next(self._ids)
        batch: dict[str, Any] = {
            "id": f"batch_{number:032x}",
            "object": "batch",
            "endpoint": "/v1/chat/completions",
            "errors": None,
            "input_file_id": "file-seed",
            "completion_window": "24h",
            "status": "completed",
            "output_file_id": None,
            "error_file_id": None,
            "created_at": int(self.clock.now()),
            "in_progress_at": None,
            "expires_at": int(self.clock.now()) + 86_400,
            "completed_at": None,
            "failed_at": None,
            "request_counts": {"total": 1, "completed": 1, "failed": 0},
            "metadata": None,
        }
        batch.update(fields)
        self.batches[batch["id"]] = batch
        return batch

    def set_status(self, batch_id: str, status: str, **fields: Any) -> None:
        """Move a batch (as OpenAI would)."""
        self.batches[batch_id].update(status=status, **fields)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return error(401, "Incorrect API key provided.", code="invalid_api_key")
        parts = request.url.path.strip("/").split("/")
        if parts[:1] != ["v1"]:
            return error(404, f"Invalid URL ({request.method} {request.url.path})")
        route = (request.method, *parts[1:])
        match route:
            case ("POST", "files"):
                return self._upload(request)
            case ("GET", "files", file_id):
                self.calls["files.get"] += 1
                if file_id not in self.files:
                    return error(404, f"No such File object: {file_id}")
                return httpx.Response(200, json=self.files[file_id])
            case ("GET", "files", file_id, "content"):
                self.calls["files.content"] += 1
                if file_id not in self.contents:
                    return error(404, f"No such File object: {file_id}")
                return httpx.Response(200, content=self.contents[file_id])
            case ("POST", "batches"):
                return self._create(request)
            case ("GET", "batches"):
                return self._list(request)
            case ("GET", "batches", batch_id):
                self.calls["batches.get"] += 1
                if batch_id not in self.batches:
                    return error(404, f"No batch found with id '{batch_id}'.")
                return httpx.Response(200, json=self.batches[batch_id])
            case ("POST", "batches", batch_id, "cancel"):
                self.calls["batches.cancel"] += 1
                batch = self.batches.get(batch_id)
                if batch is None:
                    return error(404, f"No batch found with id '{batch_id}'.")
                if batch["status"] in ACTIVE:
                    batch["status"] = "cancelling"
                return httpx.Response(200, json=batch)
        return error(404, f"Invalid URL ({request.method} {request.url.path})")

    def _upload(self, request: httpx.Request) -> httpx.Response:
        self.calls["files.create"] += 1
        form = parse_multipart(request)
        if form.get("purpose", ({}, b""))[1] != b"batch" or "file" not in form:
            return error(400, "purpose and file are required")
        params, data = form["file"]
        if not params.get("filename", "").endswith(".jsonl"):
            return error(400, "Invalid file format for Batch API. Must be .jsonl")
        file_id = f"file-{next(self._ids):022d}"
        self.files[file_id] = {
            "id": file_id,
            "object": "file",
            "bytes": len(data),
            "created_at": int(self.clock.now()),
            "filename": params["filename"],
            "purpose": "batch",
            "status": "processed",
        }
        self.contents[file_id] = data
        return httpx.Response(200, json=self.files[file_id])

    def _create(self, request: httpx.Request) -> httpx.Response:
        self.calls["batches.create"] += 1
        body = json.loads(request.content)
        if set(body) - {"input_file_id", "endpoint", "completion_window", "metadata"}:
            return error(400, f"Unknown parameters: {sorted(body)}")
        if body.get("completion_window") != "24h":
            return error(400, "completion_window must be '24h'", code="invalid_value")
        if body.get("endpoint") not in ENDPOINTS:
            return error(400, "invalid endpoint", code="invalid_value")
        if body.get("input_file_id") not in self.files:
            return error(404, f"No such File object: {body.get('input_file_id')}")
        metadata = body.get("metadata")
        if metadata is not None and len(metadata) > 16:
            return error(400, "metadata: at most 16 pairs", code="invalid_value")
        batch = self.add_batch(
            endpoint=body["endpoint"],
            input_file_id=body["input_file_id"],
            status="validating",
            metadata=metadata,
            request_counts={"total": 0, "completed": 0, "failed": 0},
        )
        return httpx.Response(200, json=batch)

    def _list(self, request: httpx.Request) -> httpx.Response:
        self.calls["batches.list"] += 1
        params = request.url.params
        if set(params) - {"limit", "after"}:
            return error(400, f"Unrecognized request arguments: {sorted(params)}")
        limit = int(params.get("limit", "20"))
        if not 1 <= limit <= 100:
            return error(400, "limit must be between 1 and 100", code="invalid_value")
        ordered = list(reversed(self.batches.values()))
        start = 0
        if "after" in params:
            ids = [batch["id"] for batch in ordered]
            if params["after"] not in ids:
                return error(404, f"No batch found with id '{params['after']}'.")
            start = ids.index(params["after"]) + 1
        page = ordered[start : start + limit]
        return httpx.Response(
            200,
            json={
                "object": "list",
                "data": page,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
                "has_more": start + limit < len(ordered),
            },
        )
