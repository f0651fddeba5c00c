"""What the emulator's services refuse, as values; each wire words and shapes them.

::

    ApiError          a refusal already described for the client (status, message, code, ...);
                      the wire renders it in its own error shape
    RequestInvalid    a malformed request: a list of FieldError (pydantic's shape); the wire
                      renders it (Mistral: FastAPI's 422 ``detail``)
    Refusal           a simulation rule said no; the wire turns it into an ApiError
      UnknownJob, UnknownFile, BudgetExceeded, JobNotFinished, OutputsTooLarge,
      SignatureRefused

The core (jobs, files, upload) raises these and never builds a response body, so a second
dialect reuses it and only writes its own wording and shapes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs


class ApiError(Exception):
    """A refusal answered with the wire's error object.

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


@attrs.frozen(kw_only=True)
class FieldError:
    """One problem of a malformed request, in pydantic's terms (``type``, ``loc``, ``msg``)."""

    type: str
    loc: tuple[str | int, ...]
    msg: str
    input: Any
    ctx: Mapping[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """The entry as FastAPI's ``detail`` lists it."""
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
    """A malformed request, with every problem found in it."""

    def __init__(self, errors: Sequence[FieldError]) -> None:
        super().__init__("; ".join(f"{'.'.join(map(str, e.loc))}: {e.msg}" for e in errors))
        self.errors = list(errors)


class Refusal(Exception):
    """A request the simulation refuses; the wire says so in its own words."""


class UnknownJob(Refusal):
    """No such job in the workspace (or it was deleted)."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"unknown job {job_id}")
        self.job_id = job_id


class UnknownFile(Refusal):
    """No such live file in the workspace."""

    def __init__(self, file_id: str) -> None:
        super().__init__(f"unknown file {file_id}")
        self.file_id = file_id


class BudgetExceeded(Refusal):
    """The new job's requests do not fit the workspace's pending budget."""

    def __init__(self, *, pending: int, requests: int, budget: int) -> None:
        super().__init__(f"{pending} pending + {requests} > {budget}")
        self.pending = pending
        self.requests = requests
        self.budget = budget


class JobNotFinished(Refusal):
    """The job must be terminal for this (a delete)."""

    def __init__(self, job_id: str, state: str) -> None:
        super().__init__(f"job {job_id} is {state}")
        self.job_id = job_id
        self.state = state


class OutputsTooLarge(Refusal):
    """The results are too large to return inline."""

    def __init__(self, *, size: int, limit: int) -> None:
        super().__init__(f"{size} > {limit} bytes")
        self.size = size
        self.limit = limit


class SignatureRefused(Refusal):
    """A signed URL whose signature is wrong, or which has expired."""

    def __init__(self, *, expired: bool) -> None:
        super().__init__("expired" if expired else "bad signature")
        self.expired = expired
