"""Mistral's wire shapes: files, jobs, errors and result lines, as Mistral sends them.

SDK 3.7.0 is strict about some details (see ``batch-apis.md`` M9): HTTP 200 only, integer
timestamps, ``errors`` always present, ``object`` values, an integer ``bytes``, ``sample_type``
and ``source`` on files, ``deleted`` on a retrieved file, ``total`` on lists. The simulation's
neutral states map onto ``BatchJobStatus`` here, and its refusals get Mistral's wording.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from starlette.responses import Response

from orchestrator.emulator.dialect import json_response
from orchestrator.emulator.errors import (
    ApiError,
    BudgetExceeded,
    JobNotFinished,
    OutputsTooLarge,
    Refusal,
    RequestInvalid,
    SignatureRefused,
    UnknownFile,
    UnknownJob,
)
from orchestrator.emulator.lines import Line, LineError
from orchestrator.emulator.results import ResultKind
from orchestrator.emulator.rows import STORED_STATES, FileRow, JobRow, Snapshot
from orchestrator.emulator.simulation import State

STATUS_OF: Mapping[State, str] = STORED_STATES
"""Mistral's ``BatchJobStatus`` of each simulation state. The state database stores exactly
these spellings (it predates the neutral states), so the one table serves both."""

STATUSES: tuple[str, ...] = tuple(STATUS_OF.values())
"""Every status, in the order the 422 for an unknown one lists them."""

_STATE_OF = {status: state for state, status in STATUS_OF.items()}


def state_of(status: str) -> State:
    """The simulation state of a Mistral status (one of :data:`STATUSES`)."""
    return _STATE_OF[status]


def error_body(error: ApiError) -> dict[str, Any]:
    """Mistral's error object."""
    return {
        "object": "error",
        "message": error.message,
        "type": error.type,
        "param": error.param,
        "code": error.code,
    }


def error_response(error: ApiError) -> Response:
    """The response for an :class:`ApiError`."""
    return json_response(error_body(error), status=error.status)


def invalid_response(error: RequestInvalid) -> Response:
    """FastAPI's 422 for a malformed request."""
    return json_response({"detail": [e.to_json() for e in error.errors]}, status=422)


def unauthorized_response() -> Response:
    """Mistral's 401 for a missing, empty or unknown key."""
    return Response(
        json.dumps({"message": "Unauthorized", "request_id": uuid.uuid4().hex}),
        status_code=401,
        media_type="application/json; charset=utf-8",
    )


def rate_limit_body() -> dict[str, Any]:
    """Mistral's 429 body (2026 shape)."""
    return {
        "object": "error",
        "message": "Rate limit exceeded",
        "type": "rate_limited",
        "param": None,
        "code": "1300",
        "raw_status_code": 429,
    }


def server_error_body(status: int) -> dict[str, Any]:
    """A 5xx body in Mistral's error shape."""
    return {
        "object": "error",
        "message": f"Service unavailable (injected fault, HTTP {status}); retry later",
        "type": "server_error",
        "param": None,
        "code": str(status),
    }


def refusal_error(refusal: Refusal) -> ApiError:
    """Mistral's wording of a simulation refusal.

    Raises:
        TypeError: a refusal this wire does not know (a new one needs wording here).
    """
    if isinstance(refusal, UnknownJob):
        return ApiError(
            404, f"Batch job {refusal.job_id} not found.", code="job_not_found", param="job_id"
        )
    if isinstance(refusal, UnknownFile):
        return ApiError(
            404, f"File {refusal.file_id} not found.", code="file_not_found", param="file_id"
        )
    if isinstance(refusal, BudgetExceeded):
        return ApiError(
            400,
            f"Pending requests limit exceeded: the workspace has {refusal.pending:,} pending "
            f"requests and this job adds {refusal.requests:,}, over the limit of "
            f"{refusal.budget:,}. Wait for running jobs to progress, or submit a smaller job.",
            code="pending_requests_limit_exceeded",
        )
    if isinstance(refusal, JobNotFinished):
        return ApiError(
            400,
            f"Batch job {refusal.job_id} is {STATUS_OF[State(refusal.state)]}; only a finished "
            "job can be deleted (cancel it first).",
            code="job_not_finished",
            param="job_id",
        )
    if isinstance(refusal, OutputsTooLarge):
        return ApiError(
            400,
            f"The results are {refusal.size:,} bytes, over the {refusal.limit:,} bytes "
            "`inline=true` returns; download the output and error files instead.",
            code="inline_outputs_too_large",
            param="inline",
        )
    if isinstance(refusal, SignatureRefused):
        if refusal.expired:
            return ApiError(
                403, "This signed URL has expired; ask for a new one.", code="signed_url_expired"
            )
        return ApiError(
            403,
            "The signature of this URL is not valid; ask for a new signed URL.",
            code="invalid_signature",
        )
    raise TypeError(f"no Mistral wording for {type(refusal).__name__}")


def file_json(row: FileRow, *, with_deleted: bool = False) -> dict[str, Any]:
    """A ``FileSchema`` (plus ``deleted`` for a retrieve)."""
    data: dict[str, Any] = {
        "id": row.id,
        "object": "file",
        "bytes": row.bytes,
        "created_at": row.created_at,
        "filename": row.filename,
        "purpose": row.purpose,
        "sample_type": row.sample_type,
        "source": row.source,
        "num_lines": row.num_lines,
        "mimetype": row.mimetype,
        "signature": row.signature,
        "expires_at": row.expires_at,
        "visibility": row.visibility,
    }
    if with_deleted:
        data["deleted"] = row.deleted
    return data


def job_json(
    job: JobRow, snap: Snapshot, outputs: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """A ``BatchJob``."""
    return {
        "id": job.id,
        "object": "batch",
        "input_files": job.input_files,
        "metadata": job.metadata,
        "endpoint": job.endpoint,
        "model": job.model,
        "agent_id": job.agent_id,
        "output_file": snap.output_file,
        "error_file": snap.error_file,
        "errors": snap.errors,
        "outputs": outputs,
        "status": STATUS_OF[snap.state],
        "created_at": int(job.created_at),
        "total_requests": snap.total,
        "completed_requests": snap.completed,
        "succeeded_requests": snap.succeeded,
        "failed_requests": snap.failed,
        "started_at": snap.started_at,
        "completed_at": snap.completed_at,
    }


def list_json(data: Sequence[dict[str, Any]], total: int | None) -> dict[str, Any]:
    """A list answer: ``{data, object: "list", total}``."""
    return {"data": list(data), "object": "list", "total": total}


def _line_id(job_id: str, index: int, custom_id: str) -> str:
    h = hashlib.blake2b(f"{job_id}\x00{custom_id}".encode(), digest_size=16).hexdigest()
    return f"batch-{job_id[:8]}-{index}-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_SAMPLE_TYPES: Mapping[ResultKind, str] = {"output": "batch_result", "error": "batch_error"}


class MistralResults:
    """Mistral's result lines (``{id, custom_id, response: {status_code, body}, error}``)
    and result files (``<job>_output.jsonl``, ``batch_result`` / ``batch_error``)."""

    def new_file_id(self) -> str:
        """A UUID, like every Mistral file id."""
        return str(uuid.uuid4())

    def success(self, job: JobRow, line: Line, custom_id: str, body: dict[str, Any]) -> Any:
        """A 200 line with the synthetic body."""
        return {
            "id": _line_id(job.id, line.index, custom_id),
            "custom_id": custom_id,
            "response": {"status_code": 200, "body": body},
            "error": None,
        }

    def failure(self, job: JobRow, line: Line, error: LineError) -> Any:
        """A failed line: the endpoint's status and Mistral's error object as the body."""
        custom_id = line.custom_id if line.custom_id is not None else str(line.index)
        return {
            "id": _line_id(job.id, line.index, custom_id),
            "custom_id": line.custom_id,
            "response": {
                "status_code": error.status_code,
                "body": {
                    "object": "error",
                    "message": error.message,
                    "type": error.type,
                    "param": error.param,
                    "code": error.code,
                },
            },
            "error": None,
        }

    def expired(self, job: JobRow, line: Line) -> Any | None:
        """Mistral's lines a timed-out job never reached appear in neither file."""
        return None

    def canceled(self, job: JobRow, line: Line) -> Any | None:
        """A cancelled job's unprocessed lines appear in neither file."""
        return None

    def file_row(
        self, job: JobRow, kind: ResultKind, *, file_id: str, bytes: int, lines: int,
        sha256: str, created_at: int,
    ) -> FileRow:  # fmt: skip
        """A result file as Mistral lists it (``source: mistral``)."""
        return FileRow(
            id=file_id,
            workspace=job.workspace,
            filename=f"{job.id}_{kind}.jsonl",
            purpose="batch",
            sample_type=_SAMPLE_TYPES[kind],
            source="mistral",
            bytes=bytes,
            num_lines=lines,
            mimetype="application/jsonl",
            signature=sha256[:16],
            created_at=created_at,
            visibility="workspace",
        )
