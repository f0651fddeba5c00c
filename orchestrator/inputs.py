"""Streaming validation of a job's JSONL input files, and the job's definition hash. Pure.

Every input file is read once, in binary, in 1 MiB chunks: the sha256 is fed from the same
chunks, whole runs of lines are decoded as UTF-8 at once, and each line is parsed with
:func:`json.loads`' C scanner. Memory stays flat whatever the file size, except for the
``custom_id`` index: 8 bytes per request (a 64-bit hash in an :class:`array.array`), about
8 MB for a million requests. Duplicates are found from the hashes at the end of the pass; only
then, and only if there are any, a second pass finds the exact ids and the line of each first
occurrence (so a hash collision can never reject a valid file).

Measured on the reference machine (2 cores, Python 3.11): a 1,000,000-line, 515 MB chat file
validates in about 3 s (about 170 MB/s) with a peak RSS of about 32 MB. ``orjson`` parses the
same lines about 1.8x faster (1.9 s instead of 3.3 s per million), which is not worth a
compiled dependency for a check that runs once per job whose batch then runs for hours.

Two encoding decisions, both following from one rule: the file is uploaded byte for byte, so we
accept exactly what a strict JSON Lines reader accepts, and never normalise anything:

- CRLF line endings are accepted as they are: the ``\\r`` before each ``\\n`` is JSON
  whitespace, so every JSON parser reads such a line unchanged (and JSON Lines allows it).
- A UTF-8 byte order mark is rejected: RFC 8259 forbids emitting one, and a strict reader (for
  example Python's ``json.loads`` on text) fails on it, so the provider might reject the whole
  batch after the upload. The error says how to remove it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from orchestrator._inputscan import InputLimits as InputLimits
from orchestrator._inputscan import InputSummary as InputSummary
from orchestrator._inputscan import _Scan
from orchestrator.errors import InputError
from orchestrator.model import JobSpec

MISTRAL_ENDPOINTS: tuple[str, ...] = (
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
"""Mistral's batch ``ApiEndpoint`` enum (OpenAPI ``CreateBatchJobRequest.endpoint``)."""

OPENAI_ENDPOINTS: tuple[str, ...] = (
    "/v1/responses",
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/completions",
    "/v1/moderations",
    "/v1/images/generations",
    "/v1/images/edits",
    "/v1/videos",
)
"""OpenAI's batch endpoints (``POST /v1/batches``)."""

ENDPOINTS_BY_PROVIDER: Mapping[str, tuple[str, ...]] = {
    "mistral": MISTRAL_ENDPOINTS,
    "openai": OPENAI_ENDPOINTS,
}
"""The endpoints each provider's batch API accepts."""

ENDPOINTS: tuple[str, ...] = tuple(dict.fromkeys(MISTRAL_ENDPOINTS + OPENAI_ENDPOINTS))
"""Every endpoint :func:`validate_input` knows (the union over providers)."""


_MISTRAL_LIMITS = InputLimits()
"""Mistral's limits, the default (frozen, so one instance serves every call)."""


def validate_input(
    path: str | os.PathLike[str], *, endpoint: str, limits: InputLimits = _MISTRAL_LIMITS
) -> InputSummary:
    """Validate one JSONL input file in one streaming pass.

    Args:
        path: The file to read.
        endpoint: The batch endpoint the requests are for, e.g. ``/v1/chat/completions``; it
            decides which ``body`` keys are required.
        limits: File size, request count and how many problems to list.

    Returns:
        The file's request count, size and sha256.

    Raises:
        InputError: the endpoint is unknown, the file cannot be read, is empty, too large,
            holds too many requests, or has invalid lines. ``problems`` lists up to
            ``limits.max_problems`` entries ``file:line: what is wrong (field)``; the summary
            says how many there are in all.
    """
    return validate_inputs((path,), endpoint=endpoint, limits=limits)[0]


def validate_inputs(
    paths: Sequence[str | os.PathLike[str]],
    *,
    endpoint: str,
    limits: InputLimits = _MISTRAL_LIMITS,
) -> tuple[InputSummary, ...]:
    """Validate all the input files of one job; ``custom_id`` must be unique across them.

    Args:
        paths: The job's input files, in order.
        endpoint: The batch endpoint, as for :func:`validate_input`.
        limits: ``max_file_bytes`` applies per file, ``max_requests`` to the job's total.

    Returns:
        One summary per file, in the order given.

    Raises:
        InputError: as for :func:`validate_input`, over every file (the job is rejected as a
            whole); also when no file or the same file twice is given.
    """
    if endpoint not in ENDPOINTS:
        raise InputError(
            f"unknown endpoint {endpoint!r}: use one of {', '.join(ENDPOINTS)}",
        )
    files = [Path(p) for p in paths]
    if not files:
        raise InputError("a job needs at least one input file; none was given")
    seen_paths: dict[Path, int] = {}
    for index, file in enumerate(files):
        first = seen_paths.setdefault(Path(os.path.abspath(file)), index)
        if first != index:
            raise InputError(
                f"{file}: listed twice in the job's inputs (positions {first + 1} and "
                f"{index + 1}): every request would be a duplicate; list each file once",
            )
    scan = _Scan(files, endpoint=endpoint, limits=limits)
    return scan.run()


def definition_hash(
    spec: JobSpec, summaries: Sequence[InputSummary], *, split_requests: int | None = None
) -> str:
    """The job's identity: equal definitions give equal hashes, whatever their names or paths.

    The hash is the hex sha256 of the canonical JSON (sorted keys, no spaces, ASCII) of
    ``{"endpoint", "inputs": [sha256 of each input, in order], "metadata", "model",
    "timeout_hours"}``, plus ``"split_requests"`` only for a job that is split into parts
    (so the hash of every job that is not split is what it always was). The name, priority,
    workspace and input paths are not part of it: moving or renaming an input file does not
    change the job.

    Raises:
        ValueError: ``summaries`` does not have one entry per input of ``spec``.
    """
    if len(summaries) != len(spec.inputs):
        raise ValueError(
            f"job {spec.name!r} has {len(spec.inputs)} inputs but {len(summaries)} summaries"
        )
    canonical = {
        "endpoint": spec.endpoint,
        "inputs": [summary.sha256 for summary in summaries],
        "metadata": dict(spec.metadata),
        "model": spec.model,
        "timeout_hours": spec.timeout_hours,
    }
    if split_requests is not None:
        canonical["split_requests"] = split_requests
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("ascii")).hexdigest()
