"""The provider port: what the daemon needs from a Batch API, whatever the vendor.

Implementations map their wire format onto these values and their HTTP errors onto
:mod:`orchestrator.errors` (``TransientProviderError`` is retried, the rest is not).
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

import attrs

from orchestrator.model import RemotePhase


@attrs.frozen(kw_only=True)
class RemoteJob:
    """A remote batch job as the provider reported it."""

    id: str
    status: str
    """The provider's raw status, e.g. ``RUNNING``."""
    phase: RemotePhase
    total: int
    completed: int
    succeeded: int
    failed: int
    output_file: str | None = None
    error_file: str | None = None
    metadata: Mapping[str, str] = attrs.field(factory=dict)
    created_at: int = 0
    completed_at: int | None = None
    errors: tuple[str, ...] = ()
    """Job-level error messages."""


@attrs.frozen(kw_only=True)
class DownloadedFile:
    """A file written to disk by :meth:`Provider.download_file`, verified."""

    path: Path
    bytes: int
    sha256: str
    lines: int


class Provider(abc.ABC):
    """One workspace of one Batch API (an API key + base URL)."""

    name: str
    """Short provider name, e.g. ``mistral``."""

    @abc.abstractmethod
    async def upload_file(self, path: Path, *, filename: str | None = None) -> str:
        """Upload a JSONL input file, streamed; return the provider's file id.

        Raises:
            TransientProviderError: retries were exhausted on network faults, 429 or 5xx.
            PermanentProviderError: the provider refused the file.
        """

    @abc.abstractmethod
    async def create_job(
        self,
        *,
        input_file_ids: Sequence[str],
        model: str,
        endpoint: str,
        metadata: Mapping[str, str],
        timeout_hours: int,
    ) -> RemoteJob:
        """Create a batch job. Not idempotent: callers record intent first.

        Raises:
            CapacityRefused: the workspace's pending budget is full.
            TransientProviderError: the outcome is unknown (the job may exist).
            PermanentProviderError: the provider refused the job.
        """

    @abc.abstractmethod
    async def get_job(self, remote_id: str) -> RemoteJob:
        """Fetch one job.

        Raises:
            PermanentProviderError: unknown job (404) or another refusal.
            TransientProviderError: retries were exhausted.
        """

    @abc.abstractmethod
    def list_jobs(
        self,
        *,
        active_only: bool = False,
        metadata: Mapping[str, str] | None = None,
        page_size: int = 100,
    ) -> AsyncIterator[RemoteJob]:
        """Yield the workspace's jobs, page by page (one request per page).

        ``active_only`` filters on the provider's non-terminal statuses; ``metadata`` filters
        on exact metadata values (used to find the job a crashed create may have made).
        """

    @abc.abstractmethod
    async def cancel_job(self, remote_id: str) -> RemoteJob:
        """Ask the provider to cancel a job; return its new state."""

    @abc.abstractmethod
    async def download_file(
        self, file_id: str, dest: Path, *, writer: str | None = None
    ) -> DownloadedFile:
        """Stream a result file to ``dest`` atomically and verify it.

        Writes ``dest.part`` (``dest.<writer>.part`` when several processes may download
        into the same folder), fsyncs, renames onto ``dest`` and fsyncs the folder; resumes
        with ``Range`` after a transient fault where the server honours it. Never leaves a
        partial file under ``dest``.

        Raises:
            DownloadIntegrityError: the body is short, or longer than announced.
            TransientProviderError: retries were exhausted.
            PermanentProviderError: unknown file.
        """

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Release connections."""
