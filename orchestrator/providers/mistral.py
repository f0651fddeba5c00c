"""The Mistral Batch API provider (Files + Batch jobs), over httpx.

Wire format: ``/work/shared/api/batch-apis.md`` sections M1-M7. Only what Mistral's wire says
lives here: paths, the create body and its limits, the ``BatchJob`` object and its statuses,
the capacity refusal and the page-numbered list with metadata filters. Retries, error mapping,
the upload and the verified download come from :mod:`orchestrator.providers._transport`.
Everything except ``create_job`` retries transient faults; a create is sent once because a lost
response may still have created the job (the daemon reconciles by listing with the client
token in ``metadata``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path

import httpx
import structlog

from orchestrator.errors import CapacityRefused, PermanentProviderError, ProviderError
from orchestrator.model import RemotePhase
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
from orchestrator.providers.base import RemoteJob
from orchestrator.retries import HttpStatusLines

log = structlog.get_logger(__name__)

STATUS_PHASES: Mapping[str, RemotePhase] = {
    "QUEUED": RemotePhase.VALIDATING,
    "RUNNING": RemotePhase.RUNNING,
    "CANCELLATION_REQUESTED": RemotePhase.CANCELLING,
    "SUCCESS": RemotePhase.SUCCEEDED,
    "FAILED": RemotePhase.FAILED,
    "TIMEOUT_EXCEEDED": RemotePhase.EXPIRED,
    "CANCELLED": RemotePhase.CANCELLED,
}
"""Mistral's raw ``BatchJobStatus`` onto the provider-neutral phase."""

ACTIVE_STATUSES = ("QUEUED", "RUNNING", "CANCELLATION_REQUESTED")
"""The non-terminal statuses (``list_jobs(active_only=True)``)."""

MAX_FILE_BYTES = 512 * 1024 * 1024
"""Mistral's documented upload limit ("512 MB"), for intake checks."""

RESERVED_QUERY_KEYS = frozenset(
    {
        "page",
        "page_size",
        "model",
        "agent_id",
        "metadata",
        "created_after",
        "created_by_me",
        "status",
        "order_by",
    }
)
"""List parameters: a metadata filter key with one of these names cannot be expressed."""

_CAPACITY_CODES = frozenset({"pending_requests_limit_exceeded"})


def phase_for(status: str, *, job_id: str = "?") -> RemotePhase:
    """The phase of a raw Mistral status.

    Raises:
        PermanentProviderError: the status is unknown (never silently treated as running).
    """
    try:
        return STATUS_PHASES[status]
    except KeyError:
        known = ", ".join(STATUS_PHASES)
        raise PermanentProviderError(
            f"mistral batch job {job_id} has unknown status {status!r} (known: {known}); "
            "the API changed: upgrade the orchestrator"
        ) from None


def _malformed(operation: str, what: str) -> PermanentProviderError:
    return malformed("mistral", operation, what)


def parse_job(data: object, *, operation: str = "get_job") -> RemoteJob:
    """A :class:`RemoteJob` from a ``BatchJob`` JSON object.

    Raises:
        PermanentProviderError: a required field is missing or of the wrong type, or the
            status is unknown.
    """
    data = expect_object(data, "a batch job", provider="mistral", operation=operation)

    def integer(key: str, default: int | None = None) -> int:
        return int_field(data, key, provider="mistral", operation=operation, default=default)

    job_id = data.get("id")
    status = data.get("status")
    if not isinstance(job_id, str) or not job_id:
        raise _malformed(operation, f"batch job without an id: {str(data)[:200]}")
    if not isinstance(status, str):
        raise _malformed(operation, f"batch job {job_id} has no status")
    metadata = data.get("metadata") or {}
    if not isinstance(metadata, Mapping):
        raise _malformed(operation, f"batch job {job_id} metadata is not an object")
    errors = []
    for item in data.get("errors") or ():
        if isinstance(item, Mapping):
            count = item.get("count", 1)
            message = str(item.get("message", item))
            errors.append(
                f"{message} (x{count})" if isinstance(count, int) and count > 1 else message
            )
        else:
            errors.append(str(item))
    completed_at = data.get("completed_at")
    return RemoteJob(
        id=job_id,
        status=status,
        phase=phase_for(status, job_id=job_id),
        total=integer("total_requests"),
        completed=integer("completed_requests"),
        succeeded=integer("succeeded_requests"),
        failed=integer("failed_requests"),
        output_file=optional_str(data.get("output_file")),
        error_file=optional_str(data.get("error_file")),
        metadata=string_map(metadata),
        created_at=integer("created_at", default=0),
        completed_at=completed_at if isinstance(completed_at, int) else None,
        errors=tuple(errors),
    )


def _check_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    checked = {}
    for key, value in metadata.items():
        if not isinstance(key, str) or not 1 <= len(key) <= 32:
            raise PermanentProviderError(
                f"mistral create_job: metadata key {key!r} must be a string of 1 to 32 characters"
            )
        if not isinstance(value, str) or not 1 <= len(value) <= 512:
            raise PermanentProviderError(
                f"mistral create_job: metadata[{key!r}] must be a string of 1 to 512 "
                f"characters, got {value!r}"[:300]
            )
        checked[key] = value
    return checked


def _capacity_refusal(
    response: httpx.Response, redact: Callable[[str], str]
) -> ProviderError | None:
    """``CapacityRefused`` if a refused create says the pending budget is full (M5)."""
    error = parse_error_body(response)
    text = error.message.lower()
    if 400 <= response.status_code < 500 and (
        error.code in _CAPACITY_CODES
        or ("pending request" in text and ("limit" in text or "exceed" in text))
    ):
        return CapacityRefused(
            redact(
                f"mistral create_job: HTTP {response.status_code}: the workspace's "
                f"pending-request budget is full: {error.message}"
            ),
            status_code=response.status_code,
        )
    return None


MISTRAL_RESULT_LINES = HttpStatusLines(
    # Mistral's 429 bodies carry code "1300" (shared/api/batch-apis.md M7); a line whose
    # error names it without a status is rate limited like a 429.
    transient_codes=frozenset({"1300", "rate_limited", "server_error"}),
    # A timed-out job's unreached lines appear in neither file (no code names them).
    not_processed_codes=frozenset(),
)
"""How Mistral's result lines read (``response.status_code`` first; docs/retries.md)."""


class MistralProvider(HttpProvider):
    """One Mistral workspace (API key + base URL); arguments as :class:`HttpProvider`."""

    name = "mistral"
    result_lines = MISTRAL_RESULT_LINES
    vendor = "Mistral"
    example_url = "https://api.mistral.ai"
    jobs_url = "/v1/batch/jobs"

    async def upload_file(self, path: Path, *, filename: str | None = None) -> str:
        """Upload a JSONL file as it is, streamed; return its file id (see ``upload_input``)."""
        return await self._upload(
            path, url="/v1/files", fields=(("purpose", "batch"),), filename=filename
        )

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
        if isinstance(input_file_ids, str) or not input_file_ids:
            raise PermanentProviderError(
                "mistral create_job: input_file_ids must be a non-empty list"
            )
        if isinstance(timeout_hours, bool) or not isinstance(timeout_hours, int):
            raise PermanentProviderError(
                f"mistral create_job: timeout_hours must be an integer, got {timeout_hours!r}"
            )
        if not 1 <= timeout_hours <= 168:
            raise PermanentProviderError(
                f"mistral create_job: timeout_hours must be between 1 and 168, got {timeout_hours}"
            )
        body: dict[str, object] = {
            "input_files": list(input_file_ids),
            "model": model,
            "endpoint": endpoint,
            "timeout_hours": timeout_hours,
        }
        if metadata:
            body["metadata"] = _check_metadata(metadata)
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
        page_size: int = 100,
        created_after: float | None = None,
    ) -> AsyncIterator[RemoteJob]:
        # created_after is not sent: the status and metadata filters already run on the
        # server, so the lists the daemon asks for hold only what it needs (M4).
        if not 1 <= page_size <= 1000:
            raise ValueError(f"page_size must be between 1 and 1000, got {page_size}")
        filters: list[tuple[str, str]] = []
        if active_only:
            filters += [("status", status) for status in ACTIVE_STATUSES]
        for key, value in (metadata or {}).items():
            if key in RESERVED_QUERY_KEYS:
                raise ValueError(
                    f"cannot filter Mistral jobs on metadata key {key!r}: the API reads it as "
                    f"its own list parameter (reserved: {', '.join(sorted(RESERVED_QUERY_KEYS))})"
                )
            # M4: the SDK explodes the metadata dict into top-level query keys.
            filters.append((key, value))

        async def fetch(cursor: int | None) -> Page[int]:
            page = cursor or 0
            params = [
                ("page", str(page)),
                ("page_size", str(page_size)),
                ("order_by", "created"),  # oldest first: new jobs do not shift earlier pages
                *filters,
            ]
            data = await self._api.get_json("list_jobs", self.jobs_url, params=params)
            if not isinstance(data, Mapping) or not isinstance(data.get("data", []), list):
                raise _malformed("list_jobs", "expected an object with a 'data' list")
            items = data.get("data") or []
            jobs = [parse_job(item, operation="list_jobs") for item in items]
            total = data.get("total")
            last = len(items) < page_size or (
                isinstance(total, int) and (page + 1) * page_size >= total
            )
            return Page(jobs, None if last else page + 1)

        async for job in iterate_pages(fetch, provider=self.name):
            yield job

    def parse_job(self, data: object, *, operation: str) -> RemoteJob:
        """:func:`parse_job`: the shared get and cancel read this dialect's job object."""
        return parse_job(data, operation=operation)


__all__ = [
    "ACTIVE_STATUSES",
    "MAX_FILE_BYTES",
    "STATUS_PHASES",
    "MistralProvider",
    "parse_job",
    "phase_for",
]
