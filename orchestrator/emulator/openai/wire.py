"""OpenAI's wire shapes: file and batch objects, errors, result lines (``openai-batch.md``).

The simulation's neutral states map onto the Batch API's statuses here: ``FINALIZING`` is
``finalizing``, and the core's ``FAILED`` is ``failed`` only for an input refused at validation
(it then has ``errors``); a batch whose every line failed is ``completed`` with a null
``output_file_id``, as observed on the real service.
"""

from __future__ import annotations

import hashlib
import secrets
import string
from collections.abc import Mapping
from typing import Any

from starlette.responses import Response

from orchestrator.emulator.dialect import json_response
from orchestrator.emulator.errors import (
    ApiError,
    BudgetExceeded,
    Refusal,
    RequestInvalid,
    UnknownFile,
    UnknownJob,
)
from orchestrator.emulator.lines import Line, LineError
from orchestrator.emulator.results import ResultKind
from orchestrator.emulator.rows import FileRow, JobRow, Snapshot
from orchestrator.emulator.simulation import State, clock_at, finalizing_from, running_from

FILE_TTL = 30 * 24 * 3600
"""Batch input and output files expire 30 days after creation (reported, never reaped)."""

STATUS_OF: Mapping[State, str] = {
    State.VALIDATING: "validating",
    State.RUNNING: "in_progress",
    State.FINALIZING: "finalizing",
    State.SUCCEEDED: "completed",
    State.FAILED: "failed",
    State.EXPIRED: "expired",
    State.CANCELLING: "cancelling",
    State.CANCELLED: "cancelled",
}

_BASE62 = string.digits + string.ascii_letters


def new_file_id() -> str:
    """``file-`` and 22 base62 characters, like ``file-2qvouj6sKUCGTbu3odouhk``."""
    return "file-" + "".join(secrets.choice(_BASE62) for _ in range(22))


def new_batch_id() -> str:
    """``batch_`` and 32 hex digits."""
    return "batch_" + secrets.token_hex(16)


def error_object(
    message: str, type: str = "invalid_request_error", param: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """``{"error": {message, type, param, code}}``."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_response(error: ApiError) -> Response:
    """The response for an :class:`ApiError` (its ``code`` empty: a null code)."""
    body = error_object(error.message, error.type, error.param, error.code or None)
    return json_response(body, error.status)


def invalid_response(error: RequestInvalid) -> Response:
    """A malformed request (the core's field errors): 400, naming the first problem."""
    first = error.errors[0]
    names = [str(part) for part in first.loc if part not in ("body", "query", "path")]
    return json_response(error_object(first.msg, param=".".join(names) or None), 400)


def unauthorized_response() -> Response:
    """401 for a missing or non-accepted key."""
    body = error_object(
        "Incorrect API key provided. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
        code="invalid_api_key",
    )
    return json_response(body, 401)


def rate_limit_body(retry_after: float) -> dict[str, Any]:
    """An injected 429."""
    return error_object(
        f"Rate limit reached for requests. Please try again in {retry_after:g}s.",
        type="requests",
        code="rate_limit_exceeded",
    )


def server_error_body() -> dict[str, Any]:
    """An injected 5xx."""
    return error_object(
        "The server had an error while processing your request. Sorry about that!",
        type="server_error",
    )


def refusal_error(refusal: Refusal) -> ApiError:
    """OpenAI's wording of a simulation refusal.

    Raises:
        TypeError: a refusal this wire does not know (a new one needs wording here).
    """
    if isinstance(refusal, UnknownJob):
        return ApiError(404, f"No such Batch object: {refusal.job_id}", code="", param="id")
    if isinstance(refusal, UnknownFile):
        return ApiError(404, f"No such File object: {refusal.file_id}", code="", param="id")
    if isinstance(refusal, BudgetExceeded):
        return ApiError(
            400,
            f"Enqueued request limit reached: the organization has {refusal.pending:,} enqueued "
            f"requests and this batch adds {refusal.requests:,}. Limit: {refusal.budget:,} "
            "enqueued requests. Please try again once some in_progress batches have been "
            "completed.",
            code="request_limit_exceeded",
        )
    raise TypeError(f"no OpenAI wording for {type(refusal).__name__}")


def file_json(row: FileRow) -> dict[str, Any]:
    """A ``FileObject``."""
    return {
        "id": row.id,
        "object": "file",
        "bytes": row.bytes,
        "created_at": row.created_at,
        "expires_at": row.expires_at,
        "filename": row.filename,
        "purpose": row.purpose,
        "status": "processed",
        "status_details": None,
    }


def status_of(snap: Snapshot) -> str:
    """The batch status of a snapshot (every line failed: ``completed``)."""
    if snap.state is State.FAILED and not snap.errors:
        return "completed"
    return STATUS_OF[snap.state]


def batch_json(job: JobRow, snap: Snapshot) -> dict[str, Any]:
    """A ``Batch``."""
    tl = job.timeline
    status = status_of(snap)
    ran = snap.started_at is not None and status != "failed"
    finished = status == "finalizing" or (status == "completed" and snap.total > 0)
    ended = {status: snap.completed_at} if snap.completed_at is not None else {}
    usage = None
    if snap.usage is not None:
        usage = {
            "input_tokens": snap.usage.get("prompt_tokens", 0),
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": snap.usage.get("completion_tokens", 0),
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": snap.usage.get("total_tokens", 0),
        }
    return {
        "id": job.id,
        "object": "batch",
        "endpoint": job.endpoint,
        "model": job.model,
        "errors": {"object": "list", "data": snap.errors} if snap.errors else None,
        "input_file_id": job.input_files[0] if job.input_files else "",
        "completion_window": "24h",
        "status": status,
        "output_file_id": snap.output_file,
        "error_file_id": snap.error_file,
        "created_at": int(job.created_at),
        "in_progress_at": int(running_from(tl)) if ran else None,
        # On the emulator's clock, like every timestamp: 24 h simulated, shorter with time_scale.
        "expires_at": int(clock_at(tl, job.timeout_hours * 3600.0)),
        "finalizing_at": int(finalizing_from(tl)) if finished else None,
        "completed_at": ended.get("completed"),
        "failed_at": ended.get("failed"),
        "expired_at": ended.get("expired"),
        "cancelling_at": int(job.cancel_at) if job.cancel_at is not None else None,
        "cancelled_at": ended.get("cancelled"),
        "request_counts": {"total": snap.total, "completed": snap.succeeded, "failed": snap.failed},
        "usage": usage,
        "metadata": job.metadata,
    }


def _line_ids(job_id: str, custom_id: str) -> tuple[str, str]:
    h = hashlib.blake2b(f"{job_id}\x00{custom_id}".encode(), digest_size=32).hexdigest()
    return f"batch_req_{h[:32]}", f"req_{h[32:]}"


_EXPIRED = {
    "code": "batch_expired",
    "message": "This request could not be executed before the completion window expired.",
}


class OpenAIResults:
    """OpenAI's result lines and ``batch_output`` files."""

    def new_file_id(self) -> str:
        """A ``file-…`` id."""
        return new_file_id()

    def success(self, job: JobRow, line: Line, custom_id: str, body: dict[str, Any]) -> Any:
        """``{id, custom_id, response: {status_code: 200, request_id, body}, error: null}``."""
        line_id, request_id = _line_ids(job.id, custom_id)
        return {
            "id": line_id,
            "custom_id": custom_id,
            "response": {"status_code": 200, "request_id": request_id, "body": body},
            "error": None,
        }

    def failure(self, job: JobRow, line: Line, error: LineError) -> Any:
        """A refused request: its HTTP status and OpenAI's error object as the body."""
        custom_id = line.custom_id if line.custom_id is not None else str(line.index)
        line_id, request_id = _line_ids(job.id, custom_id)
        body = error_object(error.message, error.type, error.param, error.code)
        return {
            "id": line_id,
            "custom_id": custom_id,
            "response": {"status_code": error.status_code, "request_id": request_id, "body": body},
            "error": None,
        }

    def expired(self, job: JobRow, line: Line) -> Any | None:
        """A request the completion window ended before: ``response`` null, ``batch_expired``."""
        custom_id = line.custom_id if line.custom_id is not None else str(line.index)
        return {
            "id": _line_ids(job.id, custom_id)[0],
            "custom_id": custom_id,
            "response": None,
            "error": dict(_EXPIRED),
        }

    def canceled(self, job: JobRow, line: Line) -> Any | None:
        """A cancelled job's unprocessed lines appear in neither file."""
        return None

    def file_row(
        self, job: JobRow, kind: ResultKind, *, file_id: str, bytes: int, lines: int,
        sha256: str, created_at: int,
    ) -> FileRow:  # fmt: skip
        """A ``batch_output`` file (the output and the error file alike)."""
        return FileRow(
            id=file_id,
            workspace=job.workspace,
            filename=f"{job.id}_{kind}.jsonl",
            purpose="batch_output",
            sample_type="batch_result" if kind == "output" else "batch_error",
            source="openai",
            bytes=bytes,
            num_lines=lines,
            mimetype="application/jsonl",
            signature=sha256[:16],
            created_at=created_at,
            expires_at=created_at + FILE_TTL,
        )
