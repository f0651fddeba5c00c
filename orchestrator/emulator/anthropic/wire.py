"""Anthropic's wire shapes: message batches, errors, result lines (``anthropic-batches.md``).

The simulation's neutral states map onto ``processing_status`` here: validating and running are
``in_progress``, cancelling is ``canceling``, every terminal state is ``ended``. The counts stay
``{processing: n}`` until the batch ends, as the API documents; then every request is
succeeded, errored, canceled (a cancelled batch's unprocessed ones) or expired (an expired
batch's).
"""

from __future__ import annotations

import hashlib
import secrets
import string
from datetime import UTC, datetime
from typing import Any

from starlette.responses import Response

from orchestrator.emulator.dialect import json_response
from orchestrator.emulator.errors import (
    ApiError,
    BudgetExceeded,
    JobNotFinished,
    Refusal,
    RequestInvalid,
    UnknownFile,
    UnknownJob,
)
from orchestrator.emulator.lines import Line, LineError
from orchestrator.emulator.results import ResultKind
from orchestrator.emulator.rows import FileRow, JobRow, Snapshot
from orchestrator.emulator.simulation import TERMINAL, State, clock_at

RESULTS_TTL = 29 * 24 * 3600
"""Results stay downloadable for 29 days after creation."""
_BASE62 = string.digits + string.ascii_letters

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
"""The error ``type`` of each status (the Errors page)."""


def _base62(n: int) -> str:
    return "".join(secrets.choice(_BASE62) for _ in range(n))


def new_batch_id() -> str:
    """``msgbatch_01`` and 22 base62 characters, like ``msgbatch_01HkcTjaV5uDC8jWR4ZsDV8d``."""
    return "msgbatch_01" + _base62(22)


def new_request_id() -> str:
    """``req_01`` and 22 base62 characters."""
    return "req_01" + _base62(22)


def rfc3339(epoch: float | None) -> str | None:
    """``2024-09-24T18:37:24.100435Z`` (microseconds, UTC), or None."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def error_body(message: str, type: str, request_id: str) -> dict[str, Any]:
    """``{"type": "error", "error": {type, message}, "request_id"}``."""
    return {"type": "error", "error": {"type": type, "message": message}, "request_id": request_id}


def error_json(status: int, message: str, type: str | None = None) -> Response:
    """An error response with its ``request-id`` header and the matching body."""
    request_id = new_request_id()
    body = error_body(message, type or ERROR_TYPES.get(status, "api_error"), request_id)
    return json_response(body, status, {"request-id": request_id})


def ok_json(data: Any) -> Response:
    """A 200 with a ``request-id`` header (every response has one)."""
    return json_response(data, 200, {"request-id": new_request_id()})


def error_response(error: ApiError) -> Response:
    response = error_json(error.status, error.message, error.type if error.status != 400 else None)
    if error.status == 429:  # the processing queue is full: come back once batches drain
        response.headers["retry-after"] = "60"
    return response


def invalid_response(error: RequestInvalid) -> Response:
    """A malformed request: 400 naming the first problem as ``a.b.c: message``."""
    first = error.errors[0]
    names = [str(part) for part in first.loc if part not in ("body", "query", "path")]
    where = ".".join(names)
    return error_json(400, f"{where}: {first.msg}" if where else first.msg)


def refusal_error(refusal: Refusal) -> ApiError:
    """Anthropic's wording of a simulation refusal.

    Raises:
        TypeError: a refusal this wire does not know (a new one needs wording here).
    """
    if isinstance(refusal, UnknownJob):
        return ApiError(
            404, f"Message batch not found: {refusal.job_id}", code="", type="not_found_error"
        )
    if isinstance(refusal, UnknownFile):
        return ApiError(404, "Not found", code="", type="not_found_error")
    if isinstance(refusal, BudgetExceeded):
        return ApiError(
            429,
            f"Number of batch requests in the processing queue would exceed your organization's "
            f"rate limit of {refusal.budget:,} (currently {refusal.pending:,}, this batch adds "
            f"{refusal.requests:,}). Please wait for batches to finish processing.",
            code="",
            type="rate_limit_error",
        )
    if isinstance(refusal, JobNotFinished):
        return ApiError(
            400,
            f"Message batch {refusal.job_id} cannot be deleted while it is in progress; "
            "cancel it first.",
            code="",
        )
    raise TypeError(f"no Anthropic wording for {type(refusal).__name__}")


def counts(job: JobRow, snap: Snapshot) -> dict[str, int]:
    """``request_counts``: frozen at ``{processing: n}`` until the batch ends."""
    zero = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
    if snap.state not in TERMINAL:
        return {**zero, "processing": job.requests}
    rest = max(0, job.requests - snap.succeeded - snap.failed)
    return {
        **zero,
        "succeeded": snap.succeeded,
        "errored": snap.failed,
        "canceled": rest if snap.state is State.CANCELLED else 0,
        "expired": rest if snap.state is not State.CANCELLED else 0,
    }


def status_of(snap: Snapshot) -> str:
    if snap.state in TERMINAL:
        return "ended"
    if snap.state is State.CANCELLING:
        return "canceling"
    return "in_progress"


def batch_json(job: JobRow, snap: Snapshot, *, results_base: str) -> dict[str, Any]:
    """A ``MessageBatch`` (``results_base``: the server's root URL, for ``results_url``)."""
    tl = job.timeline
    status = status_of(snap)
    ended = status == "ended"
    return {
        "id": job.id,
        "type": "message_batch",
        "processing_status": status,
        "request_counts": counts(job, snap),
        "ended_at": rfc3339(snap.completed_at) if ended else None,
        "created_at": rfc3339(job.created_at),
        # On the emulator's clock, like every timestamp: 24 h simulated, shorter with time_scale.
        "expires_at": rfc3339(clock_at(tl, job.timeout_hours * 3600.0)),
        "archived_at": None,
        "cancel_initiated_at": rfc3339(job.cancel_at),
        "results_url": (
            f"{results_base.rstrip('/')}/v1/messages/batches/{job.id}/results" if ended else None
        ),
    }


def _message_id(job_id: str, custom_id: str) -> str:
    digest = hashlib.blake2b(f"{job_id}\x00{custom_id}".encode(), digest_size=16).hexdigest()
    return f"msg_01{digest[:22]}"


class AnthropicResults:
    """Anthropic's result lines: ``{custom_id, result: {type, ...}}``."""

    def new_file_id(self) -> str:
        return "results_" + secrets.token_hex(12)

    def success(self, job: JobRow, line: Line, custom_id: str, body: dict[str, Any]) -> Any:
        return {"custom_id": custom_id, "result": {"type": "succeeded", "message": body}}

    def failure(self, job: JobRow, line: Line, error: LineError) -> Any:
        custom_id = line.custom_id if line.custom_id is not None else str(line.index)
        kind = "invalid_request_error" if error.status_code < 500 else "api_error"
        return {
            "custom_id": custom_id,
            "result": {
                "type": "errored",
                "error": error_body(error.message, kind, new_request_id()),
            },
        }

    def expired(self, job: JobRow, line: Line) -> Any | None:
        custom_id = line.custom_id if line.custom_id is not None else str(line.index)
        return {"custom_id": custom_id, "result": {"type": "expired"}}

    def canceled(self, job: JobRow, line: Line) -> Any | None:
        custom_id = line.custom_id if line.custom_id is not None else str(line.index)
        return {"custom_id": custom_id, "result": {"type": "canceled"}}

    def file_row(
        self, job: JobRow, kind: ResultKind, *, file_id: str, bytes: int, lines: int,
        sha256: str, created_at: int,
    ) -> FileRow:  # fmt: skip
        """A stored half of the results (never listed: this wire has no Files API)."""
        return FileRow(
            id=file_id,
            workspace=job.workspace,
            filename=f"{job.id}_{kind}.jsonl",
            purpose="batch_results",
            sample_type="batch_result" if kind == "output" else "batch_error",
            source="anthropic",
            bytes=bytes,
            num_lines=lines,
            mimetype="application/x-jsonl",
            signature=sha256[:16],
            created_at=created_at,
            expires_at=int(job.created_at) + RESULTS_TTL,
        )


def message_id(job_id: str, custom_id: str) -> str:
    """The ``msg_…`` id of one request's answer (stable per batch and request)."""
    return _message_id(job_id, custom_id)
