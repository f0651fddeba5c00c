"""The provider port: what the daemon needs from a Batch API, whatever the vendor.

Implementations map their wire format onto these values and their HTTP errors onto
:mod:`orchestrator.errors` (``TransientProviderError`` is retried, the rest is not).
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import ClassVar

import attrs

from orchestrator.model import RemotePhase
from orchestrator.retries import ResultLines
from orchestrator.usage import ZERO_USAGE, Usage


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
    """Job-level error messages, readable (OpenAI: ``code: message (line N)`` each)."""
    error_codes: tuple[str, ...] = ()
    """The raw codes of those errors where the provider gives them (OpenAI's
    ``errors.data[].code``, e.g. ``token_limit_exceeded``), for the daemon to react to."""


@attrs.frozen(kw_only=True)
class UploadedFile:
    """A file stored by :meth:`Provider.upload_input`: the bytes the provider really got."""

    id: str
    bytes: int
    """How many bytes were uploaded (after any rewriting the dialect needs)."""
    sha256: str
    """Hex sha256 of exactly those bytes."""


@attrs.frozen(kw_only=True)
class DownloadedFile:
    """A file written to disk by :meth:`Provider.download_file`, verified."""

    path: Path
    bytes: int
    sha256: str
    lines: int
    usage: Usage = ZERO_USAGE
    """Tokens its lines report, summed in the download's pass (dialect's field names mapped)."""


class Provider(abc.ABC):
    """One workspace of one Batch API (an API key + base URL)."""

    name: str
    """Short provider name, e.g. ``mistral``."""

    lists_by_status: ClassVar[bool] = True
    """Whether :meth:`list_jobs` filters on the server. True (Mistral): ``active_only`` and
    ``metadata`` are query filters, so the active list read to its end costs
    ⌈active/page⌉ calls whatever the workspace's history. False (OpenAI): the API lists every
    job newest first without filters, the adapter filters client-side, and a caller should
    bound the walk with ``created_after`` or stop reading once it has what it needs."""

    finds_by_metadata: ClassVar[bool] = True
    """Whether a job a crashed create made can be found by its metadata (the client token).
    False (Anthropic: batches carry no metadata, creates take no idempotency key): the daemon
    records the request count and the custom_id set's digest (the upload's id) before the
    create, keeps one create in flight per workspace, and reconciles by size and creation
    time, confirming the adoption when the results arrive."""
    result_lines: ClassVar[ResultLines]
    """How this dialect's result lines read: which custom_id, succeeded, retried (and why)
    or final. Line retries (:mod:`orchestrator.retries`) rest on it; ``docs/retries.md``
    has each dialect's table."""

    def input_groups(self, inputs: Sequence[Path]) -> list[tuple[Path, ...]]:
        """How a job's input files become uploads, in order: one upload per group.

        The default is one upload per file (Mistral takes a list of files per job); a
        dialect whose batch takes one file (OpenAI) returns a single group of them all.
        """
        return [(Path(path),) for path in inputs]

    @abc.abstractmethod
    async def upload_input(
        self, paths: Sequence[Path], *, endpoint: str, model: str, filename: str
    ) -> UploadedFile:
        """Upload one group of :meth:`input_groups` as one file, streamed.

        The dialect writes what its batch needs (Mistral: the file as it is; OpenAI: each
        line rewritten with ``method``, ``url`` and ``model``, the files concatenated), never
        holding a whole file in memory, and reports the size and sha256 of the bytes sent.

        Raises:
            FileNotFoundError: an input file is missing.
            TransientProviderError: retries were exhausted on network faults, 429 or 5xx.
            PermanentProviderError: the provider refused the file, or an input changed (or
                holds a line that cannot be rewritten) since it was validated.
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
        inputs: Sequence[Path] = (),
    ) -> RemoteJob:
        """Create a batch job. Not idempotent: callers record intent first.

        ``inputs`` are the job's validated input files, for a dialect whose create carries
        the requests inline (Anthropic streams them from there); others ignore them.

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
        created_after: float | None = None,
    ) -> AsyncIterator[RemoteJob]:
        """Yield the workspace's jobs, page by page (one request per page).

        ``active_only`` keeps the provider's non-terminal statuses; ``metadata`` keeps exact
        metadata values (used to find the job a crashed create may have made);
        ``created_after`` (epoch seconds) says the caller needs no job created before it.
        A dialect that lists newest first without filters (:attr:`lists_by_status` False)
        stops paging once a page reaches older jobs and applies all three filters itself;
        one that filters on the server may ignore ``created_after`` (Mistral does).
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

    async def download_results(
        self,
        remote_id: str,
        files: Mapping[str, str],
        dests: Mapping[str, Path],
        *,
        writer: str | None = None,
        submitted: Sequence[str] = (),
    ) -> dict[str, DownloadedFile]:
        """Download the result files ``files`` (kind -> file id) of ``remote_id`` to ``dests``.

        The default downloads each file on its own (:meth:`download_file`). A dialect whose
        results are one stream (Anthropic) splits it into every kind of ``dests`` at once,
        returns them all, and checks the results against ``submitted`` (the ids its upload
        step returned for the job).

        Raises:
            ForeignResults: the results are another batch's than the one submitted.
            DownloadIntegrityError, TransientProviderError, PermanentProviderError: as
                :meth:`download_file`.
        """
        return {
            kind: await self.download_file(file_id, dests[kind], writer=writer)
            for kind, file_id in files.items()
        }

    async def results_match(self, remote_id: str, submitted: Sequence[str]) -> bool:
        """Whether an ended job's results are the requests ``submitted`` describes (the ids
        :meth:`upload_input` returned). Only a dialect without metadata needs it.

        Raises:
            NotImplementedError: the dialect finds its jobs by metadata instead.
        """
        raise NotImplementedError(f"{self.name} finds lost jobs by their metadata")

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Release connections."""
