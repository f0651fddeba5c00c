"""Reading and judging the request lines of a job's input, streamed.

The validation pass (which lines fail) and the result pass (what each line's result is) both
run :func:`classify` over the same files, so they always agree line for line.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import attrs

ENDPOINTS: tuple[str, ...] = (
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/fim/completions",
    "/v1/moderations",
    "/v1/chat/moderations",
    "/v1/ocr",
    "/v1/classifications",
    "/v1/chat/classifications",
    "/v1/conversations",
    "/v1/audio/transcriptions",
)

# Which body field each endpoint cannot do without, and what it must look like.
_REQUIRED_FIELD: dict[str, tuple[str, tuple[type, ...], str]] = {
    "/v1/chat/completions": ("messages", (list,), "a non-empty list of messages"),
    "/v1/embeddings": ("input", (str, list), "a string or a non-empty list of strings"),
    "/v1/fim/completions": ("prompt", (str,), "a string"),
    "/v1/moderations": ("input", (str, list), "a string or a non-empty list of strings"),
    "/v1/chat/moderations": ("input", (list,), "a non-empty list of messages or conversations"),
    "/v1/ocr": ("document", (dict,), "an object such as {'document_url': ...}"),
    "/v1/classifications": ("input", (str, list), "a string or a non-empty list of strings"),
    "/v1/chat/classifications": ("input", (list, dict), "messages or a list of conversations"),
    "/v1/conversations": ("inputs", (str, list), "a string or a non-empty list of entries"),
}


@attrs.frozen(kw_only=True)
class LineError:
    """Why one request line failed; the wire's result format spells it in the error file."""

    status_code: int
    message: str
    type: str = "invalid_request_error"
    code: str = "invalid_request"
    param: str | None = None


@attrs.frozen(kw_only=True)
class Line:
    """One request line: its position, identity, body and, if it fails, why."""

    index: int
    custom_id: str | None
    body: dict[str, Any] | None
    error: LineError | None


def iter_raw_lines(paths: Iterable[Path]) -> Iterator[bytes]:
    """Yield the non-blank lines of ``paths`` in order, without their line endings."""
    for path in paths:
        with path.open("rb") as handle:
            for raw in handle:
                line = raw.strip()
                if line:
                    yield line


class LineCounter:
    """Counts the non-blank lines of a byte stream fed chunk by chunk (for ``num_lines``).

    Uses the same rule as :func:`iter_raw_lines`, so a job's line count from the upload always
    matches what validation reads.
    """

    def __init__(self) -> None:
        self.count = 0
        self._carry = b""

    def feed(self, chunk: bytes) -> None:
        """Count the complete lines in ``chunk`` (the tail waits for the next chunk)."""
        parts = (self._carry + chunk).split(b"\n")
        self._carry = parts.pop()
        self.count += sum(1 for part in parts if part.strip())

    def finish(self) -> int:
        """Count the last, unterminated line and return the total."""
        if self._carry.strip():
            self.count += 1
            self._carry = b""
        return self.count


def fails_by_chance(seed: int, custom_id: str, fraction: float) -> bool:
    """Whether a valid request fails in the simulation: fixed by ``seed`` and ``custom_id``."""
    if fraction <= 0.0:
        return False
    if fraction >= 1.0:
        return True
    digest = hashlib.blake2b(f"{seed}\x00{custom_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < fraction


def fails_transiently(seed: int, custom_id: str, run: int, fraction: float) -> bool:
    """Whether a valid request fails transiently on its ``run``-th run (1 = first job that
    holds it): drawn afresh for every run, fixed by ``seed``, ``custom_id`` and ``run``."""
    if fraction <= 0.0:
        return False
    digest = hashlib.blake2b(f"{seed}\x00{custom_id}\x00{run}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < fraction


SIMULATED_FAILURE = LineError(
    status_code=422,
    message="The request was refused (simulated permanent failure).",
    type="invalid_request_error",
    code="simulated_failure",
)
"""A ``failure_fraction`` line: the same request fails on every run (never worth a retry)."""

SIMULATED_TRANSIENT = LineError(
    status_code=503,
    message="The service was overloaded while processing this request (simulated).",
    type="server_error",
    code="simulated_transient",
)
"""A ``transient_fraction`` line: this run failed; another run of it may succeed."""


def _check_body(endpoint: str, body: dict[str, Any], model: str | None) -> LineError | None:
    if model is None and not isinstance(body.get("model"), str):
        return LineError(
            status_code=400,
            message="No model given: set `model` on the batch job or in each request body.",
            code="missing_model",
            param="model",
        )
    if endpoint == "/v1/audio/transcriptions":
        if not any(isinstance(body.get(k), str) for k in ("file_url", "file_id")):
            return LineError(
                status_code=422,
                message="/v1/audio/transcriptions needs `file_url` or `file_id` in the body.",
                code="invalid_request_body",
                param="file_url",
            )
        return None
    required = _REQUIRED_FIELD.get(endpoint)
    if required is None:
        return None
    field, types, shape = required
    value = body.get(field)
    if value is None:
        return LineError(
            status_code=422,
            message=f"Field `{field}` is required in the body for {endpoint}.",
            code="invalid_request_body",
            param=field,
        )
    if not isinstance(value, types) or (isinstance(value, list | str) and not value):
        return LineError(
            status_code=422,
            message=f"Field `{field}` for {endpoint} must be {shape}.",
            code="invalid_request_body",
            param=field,
        )
    return None


def classify(
    paths: Iterable[Path],
    *,
    endpoint: str,
    model: str | None,
    seed: int,
    failure_fraction: float,
) -> Iterator[Line]:
    """Judge every non-blank line of ``paths``, in order.

    A line fails when it is not a JSON object, has a ``custom_id`` that is not a non-empty
    string or repeats an earlier one, lacks an object ``body``, misses what the endpoint needs,
    or (if valid) is picked by :func:`fails_by_chance`. A missing ``custom_id`` becomes the
    line's 0-based index.

    Memory: one 64-bit hash per custom id, to find duplicates.
    """
    seen: set[int] = set()
    for index, raw in enumerate(iter_raw_lines(paths)):
        custom_id: str | None = None
        try:
            data = json.loads(raw)
        except ValueError as exc:
            yield Line(
                index=index,
                custom_id=None,
                body=None,
                error=LineError(
                    status_code=400,
                    message=f"Line {index + 1} is not valid JSON: {exc}",
                    code="invalid_json_line",
                ),
            )
            continue
        if not isinstance(data, dict):
            error = LineError(
                status_code=400,
                message=f"Line {index + 1} must be a JSON object with a `body`.",
                code="invalid_json_line",
            )
            yield Line(index=index, custom_id=None, body=None, error=error)
            continue
        raw_id = data.get("custom_id")
        if raw_id is None:
            custom_id = str(index)
        elif isinstance(raw_id, str) and raw_id:
            custom_id = raw_id
        else:
            error = LineError(
                status_code=400,
                message=f"Line {index + 1}: `custom_id` must be a non-empty string.",
                code="invalid_custom_id",
                param="custom_id",
            )
            yield Line(index=index, custom_id=None, body=None, error=error)
            continue
        # Python's string hash is fixed within a process, which is all one pass needs; a
        # collision among a million 64-bit hashes is a 1-in-30-million event.
        key = hash(custom_id)
        if key in seen:
            error = LineError(
                status_code=400,
                message=f"Line {index + 1}: duplicate custom_id {custom_id!r}.",
                code="duplicate_custom_id",
                param="custom_id",
            )
            yield Line(index=index, custom_id=custom_id, body=None, error=error)
            continue
        seen.add(key)
        body = data.get("body")
        if not isinstance(body, dict):
            error = LineError(
                status_code=400,
                message=f"Line {index + 1}: `body` must be a JSON object.",
                code="invalid_body",
                param="body",
            )
            yield Line(index=index, custom_id=custom_id, body=None, error=error)
            continue
        problem = _check_body(endpoint, body, model)
        if problem is None and fails_by_chance(seed, custom_id, failure_fraction):
            problem = SIMULATED_FAILURE
        yield Line(index=index, custom_id=custom_id, body=body, error=problem)
