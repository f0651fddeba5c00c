"""The Mistral Batch API provider (Files + Batch jobs), over httpx.

Wire format: ``/work/shared/api/batch-apis.md`` sections M1-M7. Everything except ``create_job``
retries transient faults; a create is sent once because a lost response may still have created
the job (the daemon reconciles by listing with the client token in ``metadata``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import structlog

from orchestrator.clock import Clock, SystemClock
from orchestrator.errors import (
    CapacityRefused,
    PermanentProviderError,
    TransientProviderError,
)
from orchestrator.model import RemotePhase
from orchestrator.providers._download import ResumableDownload
from orchestrator.providers._http import (
    ApiClient,
    CallCounter,
    RetryPolicy,
    decode_json,
    parse_error_body,
    with_unknown_outcome,
)
from orchestrator.providers._upload import MultipartUpload
from orchestrator.providers.base import DownloadedFile, Provider, RemoteJob

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
    return PermanentProviderError(f"mistral {operation}: unexpected response: {what}")


def _int_field(
    data: Mapping[str, Any], key: str, operation: str, *, default: int | None = None
) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, str) and value.isdigit():
            return int(value)
        raise _malformed(operation, f"field {key!r} should be an integer, got {value!r}")
    return value


def _optional_str(value: object) -> str | None:
    return str(value) if value not in (None, "") else None


def parse_job(data: object, *, operation: str = "get_job") -> RemoteJob:
    """A :class:`RemoteJob` from a ``BatchJob`` JSON object.

    Raises:
        PermanentProviderError: a required field is missing or of the wrong type, or the
            status is unknown.
    """
    if not isinstance(data, Mapping):
        raise _malformed(operation, f"a batch job should be an object, got {type(data).__name__}")
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
        total=_int_field(data, "total_requests", operation),
        completed=_int_field(data, "completed_requests", operation),
        succeeded=_int_field(data, "succeeded_requests", operation),
        failed=_int_field(data, "failed_requests", operation),
        output_file=_optional_str(data.get("output_file")),
        error_file=_optional_str(data.get("error_file")),
        metadata={str(k): v if isinstance(v, str) else str(v) for k, v in metadata.items()},
        created_at=_int_field(data, "created_at", operation, default=0),
        completed_at=completed_at if isinstance(completed_at, int) else None,
        errors=tuple(errors),
    )


def _path_id(value: str, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} must be a non-empty string, got {value!r}")
    return quote(value, safe="")


def _check_api_key(api_key: str) -> None:
    # Never echo the key: the message only says what is wrong with it.
    if not isinstance(api_key, str) or not api_key:
        raise ValueError("the Mistral API key is empty: set the variable named by api_key_env")
    if not api_key.isascii() or not api_key.isprintable() or any(c.isspace() for c in api_key):
        raise ValueError(
            "the Mistral API key contains whitespace, control or non-ASCII characters "
            "(a stray newline from a key file?): fix the key's source"
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


class MistralProvider(Provider):
    """One Mistral workspace (API key + base URL).

    Args:
        base_url: the API root, e.g. ``https://api.mistral.ai`` (no ``/v1``).
        api_key: the workspace key; sent only in the ``Authorization`` header.
        transport: an httpx transport (tests pass ``httpx.ASGITransport(app=emulator.app)``).
        timeout: seconds for each connect, read, write and pool wait of one request.
        attempts: total attempts for retried calls (create is never retried).
        max_wait: longest backoff between attempts; a ``Retry-After`` above it is not waited
            for inside the call (the ``RateLimited`` error carries it to the caller).
        clock: the injected clock (call durations, ``Retry-After`` dates).

    Raises:
        ValueError: the base URL is not an http(s) URL, or the key is empty or malformed.
    """

    name = "mistral"

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 60.0,
        attempts: int = 5,
        max_wait: float = 60.0,
        clock: Clock | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(
                f"Mistral base_url must be an http(s) URL such as https://api.mistral.ai, "
                f"got {base_url!r}"
            )
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ValueError(
                "Mistral base_url must not carry a query, fragment or credentials "
                "(the API key goes in api_key_env)"
            )
        _check_api_key(api_key)
        if not timeout > 0:
            raise ValueError(f"timeout must be positive seconds, got {timeout}")
        self.base_url = base_url.rstrip("/")
        self._api = ApiClient(
            provider=self.name,
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json"},
            secrets=(api_key,),
            transport=transport,
            timeout=timeout,
            policy=RetryPolicy(attempts=attempts, max_wait=max_wait),
            clock=clock or SystemClock(),
        )

    def __repr__(self) -> str:
        return f"MistralProvider(base_url={self.base_url!r})"

    @property
    def calls(self) -> CallCounter:
        """API calls so far per ``(operation, HTTP status or error class)``: for metrics."""
        return self._api.calls

    async def _get_json(self, operation: str, url: str, **kwargs: Any) -> Any:
        async def once() -> Any:
            response = await self._api.send(operation, "GET", url, **kwargs)
            return decode_json(response, provider=self.name, operation=operation)

        return await self._api.retrying(operation, once)

    async def upload_file(self, path: Path, *, filename: str | None = None) -> str:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"cannot upload {path}: no such file")
        name = filename or path.name

        form = MultipartUpload(path=path, filename=name, fields=(("purpose", "batch"),))

        async def once() -> str:
            size = path.stat().st_size
            body = form.stream(size)
            try:
                response = await self._api.send(
                    "upload_file", "POST", "/v1/files", headers=form.headers(size), content=body
                )
            finally:
                await body.aclose()  # a server may answer before reading it all: close the file
            data = decode_json(response, provider=self.name, operation="upload_file")
            file_id = data.get("id") if isinstance(data, Mapping) else None
            if not isinstance(file_id, str) or not file_id:
                raise _malformed("upload_file", "no file id in the response")
            stored = data.get("bytes")
            if isinstance(stored, int) and not isinstance(stored, bool) and stored != size:
                raise TransientProviderError(
                    f"mistral upload_file: the provider stored {stored} bytes of {path} "
                    f"but the file has {size}; uploading again"
                )
            return file_id

        file_id = await self._api.retrying("upload_file", once)
        log.info("provider.uploaded", provider=self.name, path=str(path), file_id=file_id)
        return file_id

    async def create_job(
        self,
        *,
        input_file_ids: Sequence[str],
        model: str,
        endpoint: str,
        metadata: Mapping[str, str],
        timeout_hours: int,
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
        response = await self._api.send(
            "create_job", "POST", "/v1/batch/jobs", json=body, check=False, unknown_outcome=True
        )
        if not response.is_success:
            error = parse_error_body(response)
            text = error.message.lower()
            if 400 <= response.status_code < 500 and (
                error.code in _CAPACITY_CODES
                or ("pending request" in text and ("limit" in text or "exceed" in text))
            ):
                raise CapacityRefused(
                    self._api.redact(
                        f"mistral create_job: HTTP {response.status_code}: the workspace's "
                        f"pending-request budget is full: {error.message}"
                    ),
                    status_code=response.status_code,
                )
            raise self._api.error_for(response, "create_job", unknown_outcome=True)
        try:
            data = decode_json(response, provider=self.name, operation="create_job")
        except TransientProviderError as exc:
            raise with_unknown_outcome(exc) from None
        job = parse_job(data, operation="create_job")
        log.info("provider.job_created", provider=self.name, remote_id=job.id, status=job.status)
        return job

    async def get_job(self, remote_id: str) -> RemoteJob:
        url = f"/v1/batch/jobs/{_path_id(remote_id, 'remote_id')}"
        return parse_job(await self._get_json("get_job", url), operation="get_job")

    async def list_jobs(
        self,
        *,
        active_only: bool = False,
        metadata: Mapping[str, str] | None = None,
        page_size: int = 100,
    ) -> AsyncIterator[RemoteJob]:
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
        seen: set[str] = set()
        page = 0
        while True:
            params = [
                ("page", str(page)),
                ("page_size", str(page_size)),
                ("order_by", "created"),  # oldest first: new jobs do not shift earlier pages
                *filters,
            ]
            data = await self._get_json("list_jobs", "/v1/batch/jobs", params=params)
            if not isinstance(data, Mapping) or not isinstance(data.get("data", []), list):
                raise _malformed("list_jobs", "expected an object with a 'data' list")
            items = data.get("data") or []
            total = data.get("total")
            new = 0
            for item in items:
                job = parse_job(item, operation="list_jobs")
                if job.id in seen:
                    continue  # the list shifted between pages
                seen.add(job.id)
                new += 1
                yield job
            if len(items) < page_size:
                return
            if isinstance(total, int) and (page + 1) * page_size >= total:
                return
            if new == 0:
                log.warning("provider.list_no_progress", provider=self.name, page=page)
                return
            page += 1

    async def cancel_job(self, remote_id: str) -> RemoteJob:
        url = f"/v1/batch/jobs/{_path_id(remote_id, 'remote_id')}/cancel"

        async def once() -> Any:
            response = await self._api.send("cancel_job", "POST", url)
            return decode_json(response, provider=self.name, operation="cancel_job")

        job = parse_job(await self._api.retrying("cancel_job", once), operation="cancel_job")
        log.info(
            "provider.job_cancel_requested", provider=self.name, remote_id=job.id, status=job.status
        )
        return job

    async def file_size(self, file_id: str) -> int | None:
        """The size in bytes the provider records for a file (``GET /v1/files/{id}``)."""
        url = f"/v1/files/{_path_id(file_id, 'file_id')}"
        data = await self._get_json("get_file", url)
        size = data.get("bytes") if isinstance(data, Mapping) else None
        if isinstance(size, int) and not isinstance(size, bool) and size >= 0:
            return size
        return None

    async def download_file(
        self, file_id: str, dest: Path, *, writer: str | None = None
    ) -> DownloadedFile:
        url = f"/v1/files/{_path_id(file_id, 'file_id')}/content"
        download = ResumableDownload(
            self._api,
            operation="download_file",
            url=url,
            dest=Path(dest),
            source=f"{self.name}:{self.base_url}:{file_id}",
            size_hint=lambda: self.file_size(file_id),
            writer=writer,
        )
        return await download.run()

    async def aclose(self) -> None:
        await self._api.aclose()


__all__ = [
    "ACTIVE_STATUSES",
    "MAX_FILE_BYTES",
    "STATUS_PHASES",
    "MistralProvider",
    "parse_job",
    "phase_for",
]
