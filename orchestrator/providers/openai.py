"""The OpenAI Batch API provider (Files + Batches), over httpx.

Wire format: ``/work/shared/api/openai-batch.md``. Only what OpenAI's wire says lives here:
paths, the ``Batch`` object and its statuses, the create body and its limits, the cursor list
without filters, and the input lines OpenAI needs (rewritten while they stream: see
:mod:`._openai_lines`). Retries, error mapping, the streamed upload and the verified download
come from :mod:`orchestrator.providers._transport`.

What differs from Mistral, and how the port absorbs it:

- One input file per batch: :meth:`OpenAIProvider.input_groups` makes a job's files one upload.
- ``GET /v1/batches`` has no status, metadata or time filter and lists newest first
  (observed, not documented): :attr:`~OpenAIProvider.lists_by_status` is False, and
  :meth:`~OpenAIProvider.list_jobs` filters client-side and stops paging once a page reaches
  jobs created before ``created_after`` (for ``active_only``, before the completion window
  plus :data:`ACTIVE_SLACK`: an older batch cannot still be active).
- ``request_counts.completed`` counts successes: the port's ``succeeded``; its ``completed``
  (progress) is ``completed + failed``.
- Validation failures come back as a ``failed`` batch with ``errors.data[]`` (the create
  itself succeeds); every entry is kept, readable, in ``RemoteJob.errors`` and its raw code
  in ``RemoteJob.error_codes`` (the daemon requeues on ``token_limit_exceeded``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import aclosing
from pathlib import Path
from typing import Any

import httpx
import structlog

from orchestrator.errors import CapacityRefused, PermanentProviderError, ProviderError
from orchestrator.model import TOKEN_LIMIT_CODE, RemotePhase
from orchestrator.providers._openai_lines import OpenAILines
from orchestrator.providers._transport import (
    HttpProvider,
    Page,
    expect_object,
    int_field,
    iterate_pages,
    malformed,
    optional_str,
    parse_error_body,
    string_map,
)
from orchestrator.providers._transport.upload import UploadBody
from orchestrator.providers.base import RemoteJob, UploadedFile
from orchestrator.retries import HttpStatusLines

log = structlog.get_logger(__name__)

STATUS_PHASES: Mapping[str, RemotePhase] = {
    "validating": RemotePhase.VALIDATING,
    "in_progress": RemotePhase.RUNNING,
    "finalizing": RemotePhase.RUNNING,
    "cancelling": RemotePhase.CANCELLING,
    "completed": RemotePhase.SUCCEEDED,
    "failed": RemotePhase.FAILED,
    "expired": RemotePhase.EXPIRED,
    "cancelled": RemotePhase.CANCELLED,
}
"""OpenAI's raw batch ``status`` onto the provider-neutral phase (§4)."""

COMPLETION_WINDOWS: Mapping[str, int] = {"24h": 24 * 3600}
"""The ``completion_window`` values OpenAI accepts (only ``"24h"`` today), in seconds."""

ACTIVE_SLACK = 6 * 3600
"""Beyond its completion window a batch may still be finalizing or cancelling for a while;
an active-only list looks back this much further before it stops paging."""

MAX_PAGE = 100
"""``GET /v1/batches`` takes ``limit`` 1-100."""

MAX_METADATA_PAIRS = 16
MAX_FILE_BYTES = 200 * 1000 * 1000
"""The Batch API takes ``.jsonl`` files up to 200 MB (§3), for intake checks."""

_TERMINAL_TIMES = ("completed_at", "failed_at", "expired_at", "cancelled_at")


def phase_for(status: str, *, job_id: str = "?") -> RemotePhase:
    """The phase of a raw OpenAI status.

    Raises:
        PermanentProviderError: the status is unknown (never silently treated as running).
    """
    try:
        return STATUS_PHASES[status]
    except KeyError:
        known = ", ".join(STATUS_PHASES)
        raise PermanentProviderError(
            f"openai batch {job_id} has unknown status {status!r} (known: {known}); "
            "the API changed: upgrade the orchestrator"
        ) from None


def strip_v1(base_url: str) -> str:
    """``base_url`` without a trailing ``/v1`` (the SDK's root; this client adds ``/v1/...``)."""
    trimmed = base_url.rstrip("/")
    return trimmed[: -len("/v1")] if trimmed.endswith("/v1") else trimmed


def _malformed(operation: str, what: str) -> PermanentProviderError:
    return malformed("openai", operation, what)


def _errors(data: Mapping[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Readable messages and raw codes of a batch's ``errors.data[]`` (§4 ``BatchError``)."""
    errors = data.get("errors")
    items = errors.get("data") if isinstance(errors, Mapping) else errors
    messages: list[str] = []
    codes: list[str] = []
    for item in items if isinstance(items, list) else ():
        if not isinstance(item, Mapping):
            messages.append(str(item))
            continue
        code, message, line = item.get("code"), item.get("message"), item.get("line")
        text = ": ".join(str(part) for part in (code, message) if part not in (None, ""))
        if item.get("param") not in (None, ""):
            text += f" (param {item['param']})"
        if isinstance(line, int) and not isinstance(line, bool):
            text += f" (line {line})"
        messages.append(text or "unspecified error")
        if code not in (None, ""):
            codes.append(str(code))
    return tuple(messages), tuple(codes)


def parse_job(data: object, *, operation: str = "get_job") -> RemoteJob:
    """A :class:`RemoteJob` from a ``Batch`` JSON object.

    Raises:
        PermanentProviderError: a required field is missing or of the wrong type, or the
            status is unknown.
    """
    data = expect_object(data, "a batch", provider="openai", operation=operation)
    job_id, status = data.get("id"), data.get("status")
    if not isinstance(job_id, str) or not job_id:
        raise _malformed(operation, f"batch without an id: {str(data)[:200]}")
    if not isinstance(status, str):
        raise _malformed(operation, f"batch {job_id} has no status")
    metadata = data.get("metadata") or {}
    if not isinstance(metadata, Mapping):
        raise _malformed(operation, f"batch {job_id} metadata is not an object")
    counts = data.get("request_counts") or {}
    if not isinstance(counts, Mapping):
        raise _malformed(operation, f"batch {job_id} request_counts is not an object")

    def count(key: str) -> int:
        return int_field(
            counts, key, provider="openai", operation=f"{operation} request_counts", default=0
        )

    total, succeeded, failed = count("total"), count("completed"), count("failed")
    ended = [data.get(key) for key in _TERMINAL_TIMES]
    completed_at = next((t for t in ended if isinstance(t, int) and not isinstance(t, bool)), None)
    messages, codes = _errors(data)
    return RemoteJob(
        id=job_id,
        status=status,
        phase=phase_for(status, job_id=job_id),
        total=total,
        completed=succeeded + failed,
        succeeded=succeeded,
        failed=failed,
        output_file=optional_str(data.get("output_file_id")),
        error_file=optional_str(data.get("error_file_id")),
        metadata=string_map(metadata),
        created_at=int_field(data, "created_at", provider="openai", operation=operation, default=0),
        completed_at=completed_at,
        errors=messages,
        error_codes=codes,
    )


def check_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    """``metadata`` once it fits OpenAI's rules: 16 pairs, keys ≤ 64, string values ≤ 512.

    Raises:
        PermanentProviderError: it does not (names the pair).
    """
    if len(metadata) > MAX_METADATA_PAIRS:
        raise PermanentProviderError(
            f"openai create_job: metadata has {len(metadata)} pairs; OpenAI takes at most "
            f"{MAX_METADATA_PAIRS} (one is the orchestrator's token: 15 are the operator's)"
        )
    checked = {}
    for key, value in metadata.items():
        if not isinstance(key, str) or not 1 <= len(key) <= 64:
            raise PermanentProviderError(
                f"openai create_job: metadata key {key!r} must be a string of 1 to 64 characters"
            )
        if not isinstance(value, str) or len(value) > 512:
            raise PermanentProviderError(
                f"openai create_job: metadata[{key!r}] must be a string of at most 512 "
                f"characters, got {value!r}"[:300]
            )
        checked[key] = value
    return checked


def _check_header(value: str | None, what: str) -> str | None:
    if value is None:
        return None
    if not value or not value.isascii() or not value.isprintable() or " " in value:
        raise ValueError(f"the OpenAI {what} must be a non-empty id without spaces, got {value!r}")
    return value


def _capacity_refusal(
    response: httpx.Response, redact: Callable[[str], str]
) -> ProviderError | None:
    """``CapacityRefused`` if a refused create says the enqueued-token limit is reached.

    OpenAI reports that limit on the batch it fails (§5); a create refused for it (as a proxy
    or a newer API might) goes back to the queue too, instead of rejecting the job.
    """
    error = parse_error_body(response)
    if 400 <= response.status_code < 500 and (
        error.code == TOKEN_LIMIT_CODE or "enqueued token limit" in error.message.lower()
    ):
        return CapacityRefused(
            redact(
                f"openai create_job: HTTP {response.status_code}: the enqueued-token limit "
                f"is reached: {error.message}"
            ),
            status_code=response.status_code,
        )
    return None


class _OpenAIResultLines(HttpStatusLines):
    """OpenAI's lines; a failed batch is resubmitted whole only for a code that passes."""

    def retries_job_failure(self, error_codes: Sequence[str]) -> bool:
        # Validation codes (invalid_json_line, url_mismatch...) blame the input; a capacity
        # refusal (token_limit_exceeded) is requeued before it ever gets here.
        return all(code in self.transient_codes for code in error_codes)


OPENAI_RESULT_LINES = _OpenAIResultLines(
    transient_codes=frozenset({"server_error", "rate_limit_exceeded", "internal_error", "timeout"}),
    # An expired batch writes each unreached request as a batch_expired line (§5).
    not_processed_codes=frozenset({"batch_expired"}),
)
"""How OpenAI's result lines read (``response.status_code``, else ``error.code``)."""


class OpenAIProvider(HttpProvider):
    """One OpenAI project (API key + base URL); arguments as :class:`HttpProvider`, plus:

    Args:
        organization: sent as ``OpenAI-Organization`` when given.
        project: sent as ``OpenAI-Project`` when given.
        completion_window: the batches' window (:data:`COMPLETION_WINDOWS`).

    A trailing ``/v1`` on ``base_url`` is accepted and dropped (the SDK's form).

    Raises:
        ValueError: as :class:`HttpProvider`, or an unknown window or a malformed header id.
    """

    name = "openai"
    result_lines = OPENAI_RESULT_LINES
    vendor = "OpenAI"
    example_url = "https://api.openai.com"
    lists_by_status = False
    transient_statuses = frozenset({409})  # the SDK retries a conflict (§1)
    jobs_url = "/v1/batches"

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        organization: str | None = None,
        project: str | None = None,
        completion_window: str = "24h",
        **kwargs: Any,
    ) -> None:
        if completion_window not in COMPLETION_WINDOWS:
            known = ", ".join(repr(w) for w in COMPLETION_WINDOWS)
            raise ValueError(
                f"OpenAI completion_window must be one of {known}, got {completion_window!r}"
            )
        self.completion_window = completion_window
        self._organization = _check_header(organization, "organization")
        self._project = _check_header(project, "project")
        super().__init__(strip_v1(base_url), api_key, **kwargs)

    def auth_headers(self, api_key: str) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {api_key}"}
        if self._organization:
            headers["OpenAI-Organization"] = self._organization
        if self._project:
            headers["OpenAI-Project"] = self._project
        return headers

    def input_groups(self, inputs: Sequence[Path]) -> list[tuple[Path, ...]]:
        # One input file per batch: every file of the job goes into one upload.
        return [tuple(Path(path) for path in inputs)] if inputs else []

    async def upload_input(
        self, paths: Sequence[Path], *, endpoint: str, model: str, filename: str
    ) -> UploadedFile:
        if not paths:
            raise ValueError("openai upload_input needs at least one input file")
        if not filename.endswith(".jsonl"):
            filename += ".jsonl"  # the Batch API refuses other names (§3)
        body = UploadBody(
            paths=tuple(Path(path) for path in paths),
            transform=lambda path: OpenAILines(endpoint=endpoint, model=model, source=path),
        )
        return await self._upload_body(body, url=self.files_url, filename=filename)

    async def create_job(
        self,
        *,
        input_file_ids: Sequence[str],
        model: str,
        endpoint: str,
        metadata: Mapping[str, str],
        timeout_hours: int,
        inputs: Sequence[Path] = (),
    ) -> RemoteJob:
        # timeout_hours is Mistral's; an OpenAI batch runs within the workspace's window.
        if isinstance(input_file_ids, str) or len(input_file_ids) != 1:
            raise PermanentProviderError(
                "openai create_job: a batch takes exactly one input file "
                f"(input_groups makes one upload per job), got {list(input_file_ids)!r}"[:300]
            )
        body: dict[str, object] = {
            "input_file_id": input_file_ids[0],
            "endpoint": endpoint,
            "completion_window": self.completion_window,
        }
        if metadata:
            body["metadata"] = check_metadata(metadata)
        data = await self._api.json_once(
            "create_job",
            "POST",
            self.jobs_url,
            json=body,
            refine=lambda response: _capacity_refusal(response, self._api.redact),
        )
        job = parse_job(data, operation="create_job")
        log.info("provider.job_created", provider=self.name, remote_id=job.id, status=job.status)
        return job

    async def list_jobs(
        self,
        *,
        active_only: bool = False,
        metadata: Mapping[str, str] | None = None,
        page_size: int = MAX_PAGE,
        created_after: float | None = None,
    ) -> AsyncIterator[RemoteJob]:
        if not 1 <= page_size <= MAX_PAGE:
            raise ValueError(f"page_size must be between 1 and {MAX_PAGE}, got {page_size}")
        horizon = created_after
        if active_only:
            window = COMPLETION_WINDOWS[self.completion_window]
            oldest_active = self._clock.now() - window - ACTIVE_SLACK
            horizon = oldest_active if horizon is None else max(horizon, oldest_active)

        async def fetch(cursor: str | None) -> Page[str]:
            params = [("limit", str(page_size))]
            if cursor is not None:
                params.append(("after", cursor))
            data = await self._api.get_json("list_jobs", self.jobs_url, params=params)
            if not isinstance(data, Mapping) or not isinstance(data.get("data", []), list):
                raise _malformed("list_jobs", "expected an object with a 'data' list")
            jobs = [parse_job(item, operation="list_jobs") for item in data.get("data") or []]
            # Newest first: once a page reaches jobs older than the horizon, no later page
            # holds a job the caller needs. The SDK pages with after = the last id (§2).
            done = (
                not jobs
                or data.get("has_more") is not True
                or (horizon is not None and min(j.created_at for j in jobs) < horizon)
            )
            return Page(jobs, None if done else jobs[-1].id)

        async with aclosing(iterate_pages(fetch, provider=self.name)) as pages:
            async for job in pages:
                if horizon is not None and job.created_at < horizon:
                    continue
                if active_only and job.phase.terminal:
                    continue
                if metadata and any(job.metadata.get(k) != v for k, v in metadata.items()):
                    continue
                yield job

    def parse_job(self, data: object, *, operation: str) -> RemoteJob:
        """:func:`parse_job`: the shared get and cancel read this dialect's job object."""
        return parse_job(data, operation=operation)


__all__ = [
    "COMPLETION_WINDOWS",
    "MAX_FILE_BYTES",
    "STATUS_PHASES",
    "TOKEN_LIMIT_CODE",
    "OpenAIProvider",
    "check_metadata",
    "parse_job",
    "phase_for",
    "strip_v1",
]
