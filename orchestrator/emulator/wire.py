"""The emulator's wire shapes: JSON bodies of files, jobs and errors, as Mistral sends them.

SDK 3.7.0 is strict about some details (see ``batch-apis.md`` M9): HTTP 200 only, integer
timestamps, ``errors`` always present, ``object`` values, an integer ``bytes``, ``sample_type``
and ``source`` on files, ``deleted`` on a retrieved file, ``total`` on lists.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
from starlette.responses import Response

from orchestrator.emulator.rows import FileRow, JobRow

JSON_TYPE = "application/json"


class ApiError(Exception):
    """A refusal answered with Mistral's error object.

    Args:
        status: the HTTP status.
        message: what went wrong and what to do.
        code: a stable machine-readable code.
        type: the error type (``invalid_request_error`` unless said otherwise).
        param: the offending parameter, if one.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str,
        type: str = "invalid_request_error",
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.type = type
        self.param = param

    def body(self) -> dict[str, Any]:
        """The JSON error object."""
        return {
            "object": "error",
            "message": self.message,
            "type": self.type,
            "param": self.param,
            "code": self.code,
        }


@attrs.frozen(kw_only=True)
class FieldError:
    """One entry of a 422 ``detail`` list (pydantic's shape, as FastAPI sends it)."""

    type: str
    loc: tuple[str | int, ...]
    msg: str
    input: Any
    ctx: Mapping[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON entry."""
        data: dict[str, Any] = {
            "type": self.type,
            "loc": list(self.loc),
            "msg": self.msg,
            "input": self.input,
        }
        if self.ctx is not None:
            data["ctx"] = dict(self.ctx)
        return data


class RequestInvalid(Exception):
    """A malformed request, answered 422 ``{"detail": [...]}``."""

    def __init__(self, errors: Sequence[FieldError]) -> None:
        super().__init__("; ".join(f"{'.'.join(map(str, e.loc))}: {e.msg}" for e in errors))
        self.errors = list(errors)


def json_response(
    data: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """A JSON response with an exact ``Content-Length``."""
    body = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
    return Response(body, status_code=status, media_type=JSON_TYPE, headers=dict(headers or {}))


def error_response(error: ApiError) -> Response:
    """The response for an :class:`ApiError`."""
    return json_response(error.body(), status=error.status)


def invalid_response(error: RequestInvalid) -> Response:
    """The 422 response for a :class:`RequestInvalid`."""
    return json_response({"detail": [e.to_json() for e in error.errors]}, status=422)


def unauthorized_response() -> Response:
    """Mistral's 401 for a missing, empty or unknown key."""
    return Response(
        json.dumps({"message": "Unauthorized", "request_id": uuid.uuid4().hex}),
        status_code=401,
        media_type="application/json; charset=utf-8",
    )


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


@attrs.frozen(kw_only=True)
class Snapshot:
    """A job's reported progress and outcome at one instant."""

    status: str
    total: int
    succeeded: int
    failed: int
    started_at: int | None
    completed_at: int | None = None
    output_file: str | None = None
    error_file: str | None = None
    errors: list[dict[str, Any]] = attrs.field(factory=list)

    @property
    def completed(self) -> int:
        """``completed_requests``: always succeeded + failed."""
        return self.succeeded + self.failed

    def to_final(self) -> dict[str, Any]:
        """The stored form of a terminal snapshot."""
        return attrs.asdict(self)

    @classmethod
    def from_final(cls, data: Mapping[str, Any]) -> Snapshot:
        """Rebuild a terminal snapshot from its stored form."""
        return cls(**data)


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
        "status": snap.status,
        "created_at": int(job.created_at),
        "total_requests": snap.total,
        "completed_requests": snap.completed,
        "succeeded_requests": snap.succeeded,
        "failed_requests": snap.failed,
        "started_at": snap.started_at,
        "completed_at": snap.completed_at,
    }
