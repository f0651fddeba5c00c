"""The Anthropic Message Batches provider, over httpx.

Wire format: ``/work/shared/api/anthropic-batches.md``. What differs from the two file-based
dialects, and how the port absorbs it:

- No file upload: the create carries the requests inline. :meth:`AnthropicProvider.upload_input`
  sends nothing; it reads the job's inputs once as the create body would hold them (rewritten
  by :mod:`._anthropic_lines`) and returns an *intent* as the file id,
  ``inline:<requests>:<bytes>:<body sha256>:<custom_id set sha256>``, which the daemon records
  before the create. :meth:`~AnthropicProvider.create_job` streams the same body again from
  the input files (never built in memory) and refuses to finish it if a byte changed.
- No batch metadata and no idempotency key (:attr:`~AnthropicProvider.finds_by_metadata` is
  False): the daemon reconciles a lost create by request count and creation time
  (``orchestrator.daemon.unmarked``) and the results confirm it: :meth:`download_results`
  raises :class:`~orchestrator.errors.ForeignResults` when their custom_id set is not the
  intent's.
- ``processing_status`` is ``in_progress``, ``canceling`` or ``ended``; how an ended batch
  ended is read from its counts and ``cancel_initiated_at``. ``request_counts`` stay
  ``{processing: n}`` until the end by the documentation; counts that move are taken as they
  come.
- One results stream (``results_url``, absolute, its path not assumed) for both result files:
  :meth:`download_results` retrieves the batch, then splits the stream into ``output.jsonl``
  and ``errors.jsonl`` (:mod:`._anthropic_results`).
- A 429 on create is the processing-queue limit (or the RPM limit): nothing was created, the
  job goes back to the queue (:class:`~orchestrator.errors.CapacityRefused`); so are 408 and
  409. Any other 4xx created nothing and is the job's refusal; a timeout, 5xx or 529 leaves
  the outcome unknown.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from contextlib import aclosing
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import anyio.to_thread
import httpx
import structlog

from orchestrator.errors import (
    CapacityRefused,
    DownloadIntegrityError,
    ForeignResults,
    PermanentProviderError,
    ProviderError,
)
from orchestrator.providers._anthropic_batch import ANTHROPIC_RESULT_LINES
from orchestrator.providers._anthropic_batch import COUNT_KEYS as COUNT_KEYS
from orchestrator.providers._anthropic_batch import Intent as Intent
from orchestrator.providers._anthropic_batch import ended_phase as ended_phase
from orchestrator.providers._anthropic_batch import parse_job as parse_job
from orchestrator.providers._anthropic_lines import (
    PREFIX,
    SUFFIX,
    AnthropicLines,
    RequestSet,
    id_set_digest,
)
from orchestrator.providers._anthropic_results import ResultSplit
from orchestrator.providers._transport import (
    HttpProvider,
    Page,
    iterate_pages,
    malformed,
    optional_str,
    parse_error_body,
    path_id,
)
from orchestrator.providers._transport.upload import UploadBody
from orchestrator.providers.base import DownloadedFile, RemoteJob, UploadedFile

log = structlog.get_logger(__name__)

API_VERSION = "2026-10-21"
"""The ``anthropic-version`` the current SDK sends (anthropic 2.16.0 ``_constants.py``)."""
ENDPOINT = "/v1/messages"
MAX_PAGE = 1000
"""``GET /v1/messages/batches`` takes ``limit`` 1-1000."""
LIFETIME = 24 * 3600
"""A batch expires 24 hours after its creation."""
ACTIVE_SLACK = 6 * 3600
"""An expired or cancelled batch may stay ``canceling`` a while; an active-only list looks
back this much further than a batch's lifetime."""
CREATE_REFUSED_LATER = frozenset({408, 409, 429})
"""Create statuses that made nothing and pass: the job goes back to the queue."""


def _malformed(operation: str, what: str) -> PermanentProviderError:
    return malformed("anthropic", operation, what)


def _create_refusal(response: httpx.Response, redact: Callable[[str], str]) -> ProviderError | None:
    """A refused create's error: a passing refusal goes back to the queue, 413 says why."""
    error = parse_error_body(response)
    status = response.status_code
    if status in CREATE_REFUSED_LATER:
        return CapacityRefused(
            redact(
                f"anthropic create_job: HTTP {status} {error.type or ''}: {error.message}; "
                "nothing was created (the processing queue or the rate limit is full): "
                "the job waits in the queue"
            ),
            status_code=status,
        )
    if status == 413:
        return PermanentProviderError(
            redact(
                f"anthropic create_job: HTTP 413: {error.message}: a Message Batch body is at "
                "most 256 MB; split the job (split_requests, or keep splitting on)"
            ),
            status_code=status,
        )
    return None


def _custom_ids(block: bytes) -> list[str]:
    """The custom_ids of a block of whole result lines."""
    ids = []
    for raw in block.splitlines():
        if raw.strip():
            try:
                custom_id = json.loads(raw).get("custom_id")
            except (ValueError, AttributeError):
                raise DownloadIntegrityError("anthropic results: a line is not JSON") from None
            if isinstance(custom_id, str):
                ids.append(custom_id)
    return ids


class AnthropicProvider(HttpProvider):
    """One Anthropic workspace (API key + base URL); arguments as :class:`HttpProvider`.

    Authenticates as the current SDK does: ``Authorization: Bearer <key>`` and
    ``anthropic-version`` :data:`API_VERSION` (anthropic 2.16.0 ``_client.py``). A trailing
    ``/v1`` on ``base_url`` is refused by config; the client adds ``/v1/...``.
    """

    name = "anthropic"
    result_lines = ANTHROPIC_RESULT_LINES
    vendor = "Anthropic"
    example_url = "https://api.anthropic.com"
    lists_by_status = False
    finds_by_metadata = False
    transient_statuses = frozenset({409})  # the SDK retries a conflict (§1)
    jobs_url = "/v1/messages/batches"

    def auth_headers(self, api_key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {api_key}", "anthropic-version": API_VERSION}

    def input_groups(self, inputs: Sequence[Path]) -> list[tuple[Path, ...]]:
        # One create per job: every file of the job goes into its one body.
        return [tuple(Path(path) for path in inputs)] if inputs else []

    def _body(self, paths: Sequence[Path], model: str) -> tuple[UploadBody, RequestSet]:
        requests = RequestSet()
        body = UploadBody(
            paths=tuple(Path(path) for path in paths),
            transform=lambda path: AnthropicLines(model=model, requests=requests, source=path),
        )
        return body, requests

    async def upload_input(
        self, paths: Sequence[Path], *, endpoint: str, model: str, filename: str
    ) -> UploadedFile:
        """Measure the create body (nothing is sent); its :class:`Intent` is the file id."""
        if not paths:
            raise ValueError("anthropic upload_input needs at least one input file")
        if endpoint != ENDPOINT:
            raise PermanentProviderError(
                f"anthropic: a Message Batch runs {ENDPOINT} requests, not {endpoint}"
            )
        body, requests = self._body(paths, model)  # a missing input: FileNotFoundError
        size, sha256 = await body.measure()
        intent = Intent(
            requests=requests.count,
            bytes=size,
            sha256=sha256,
            custom_ids_sha256=await anyio.to_thread.run_sync(requests.digest),
        )
        log.info(
            "provider.create_body_measured",
            provider=self.name,
            requests=intent.requests,
            bytes=size,
            sha256=sha256,
            custom_ids_sha256=intent.custom_ids_sha256,
        )
        return UploadedFile(id=intent.file_id(), bytes=size, sha256=sha256)

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
        # metadata and timeout_hours have no place on this wire: no batch metadata exists
        # (the daemon's intent stands in for the client token), and a batch lives 24 h.
        intents = [Intent.parse(file_id) for file_id in input_file_ids]
        if len(intents) != 1 or intents[0] is None or not inputs:
            raise PermanentProviderError(
                "anthropic create_job: needs the one intent upload_input returned and the "
                f"job's input files, got {list(input_file_ids)!r}"[:300]
            )
        intent = intents[0]
        body, _ = self._body(inputs, model)

        async def content() -> AsyncGenerator[bytes, None]:
            digest = hashlib.sha256()
            yield PREFIX
            try:
                async with aclosing(body.chunks(digest)) as chunks:
                    async for chunk in chunks:
                        yield chunk
            except OSError as exc:
                raise PermanentProviderError(
                    f"anthropic create_job: an input cannot be read: {exc}; nothing was sent"
                ) from None
            if digest.hexdigest() != intent.sha256:
                # Stopping before the frame closes leaves the request short of its length:
                # the server never sees a complete body, so nothing is created.
                raise PermanentProviderError(
                    "anthropic create_job: the job's inputs changed since they were validated "
                    "(their bytes differ from the recorded intent); nothing was created"
                )
            yield SUFFIX

        stream = content()
        try:
            data = await self._api.json_once(
                "create_job",
                "POST",
                self.jobs_url,
                content=stream,
                headers={
                    "Content-Type": "application/json",
                    "Content-Length": str(len(PREFIX) + intent.bytes + len(SUFFIX)),
                },
                refine=lambda response: _create_refusal(response, self._api.redact),
            )
        finally:
            await stream.aclose()  # a server may answer before reading it all: close files
        job = parse_job(data, operation="create_job")
        log.info(
            "provider.job_created",
            provider=self.name,
            remote_id=job.id,
            status=job.status,
            requests=intent.requests,
        )
        return job

    async def list_jobs(
        self,
        *,
        active_only: bool = False,
        metadata: Mapping[str, str] | None = None,
        page_size: int = 100,
        created_after: float | None = None,
    ) -> AsyncIterator[RemoteJob]:
        """Newest first (``after_id`` = the page's ``last_id``), filtered client-side.

        No batch carries metadata: a ``metadata`` filter matches nothing.
        """
        if not 1 <= page_size <= MAX_PAGE:
            raise ValueError(f"page_size must be between 1 and {MAX_PAGE}, got {page_size}")
        horizon = created_after
        if active_only:
            oldest_active = self._clock.now() - LIFETIME - ACTIVE_SLACK
            horizon = oldest_active if horizon is None else max(horizon, oldest_active)

        async def fetch(cursor: str | None) -> Page[str]:
            params = [("limit", str(page_size))]
            if cursor is not None:
                params.append(("after_id", cursor))
            data = await self._api.get_json("list_jobs", self.jobs_url, params=params)
            if not isinstance(data, Mapping) or not isinstance(data.get("data"), list):
                raise _malformed("list_jobs", "expected an object with a 'data' list")
            jobs = [parse_job(item, operation="list_jobs") for item in data["data"]]
            last_id = data.get("last_id")
            done = (
                not jobs
                or data.get("has_more") is not True
                or (horizon is not None and min(j.created_at for j in jobs) < horizon)
            )
            if done:
                return Page(jobs, None)
            return Page(jobs, last_id if isinstance(last_id, str) and last_id else jobs[-1].id)

        if metadata:
            return
        async with aclosing(iterate_pages(fetch, provider=self.name)) as pages:
            async for job in pages:
                if horizon is not None and job.created_at < horizon:
                    continue
                if active_only and job.phase.terminal:
                    continue
                yield job

    def parse_job(self, data: object, *, operation: str) -> RemoteJob:
        """:func:`parse_job`: the shared get and cancel read this dialect's batch object."""
        return parse_job(data, operation=operation)

    async def delete_job(self, remote_id: str) -> None:
        """``DELETE /v1/messages/batches/{id}`` (only an ended batch; a refusal raises)."""
        url = f"{self.jobs_url}/{path_id(remote_id, 'remote_id')}"
        await self._api.json("delete_job", "DELETE", url)

    async def download_file(
        self, file_id: str, dest: Path, *, writer: str | None = None
    ) -> DownloadedFile:
        raise PermanentProviderError(
            "anthropic has no result files, only a batch's results stream: use download_results"
        )

    async def file_size(self, file_id: str) -> int | None:
        return None

    async def download_results(
        self,
        remote_id: str,
        files: Mapping[str, str],
        dests: Mapping[str, Path],
        *,
        writer: str | None = None,
        submitted: Sequence[str] = (),
    ) -> dict[str, DownloadedFile]:
        """Retrieve the batch, stream its results once, split them into every kind of
        ``dests``; check counts and, against the intent in ``submitted``, the custom_ids."""
        batch: Any = await self._api.get_json(
            "get_job", f"{self.jobs_url}/{path_id(remote_id, 'remote_id')}"
        )
        job = parse_job(batch, operation="download_results")
        url = optional_str(batch.get("results_url")) if job.phase.terminal else None
        if url is None:
            raise DownloadIntegrityError(
                f"anthropic batch {remote_id} has no results_url yet ({job.status})"
            )
        self._check_origin(url, remote_id)
        counts = batch["request_counts"]
        expected = {kind: counts[kind] for kind in ("succeeded", "errored", "canceled", "expired")}
        intents = [i for i in (Intent.parse(f) for f in submitted) if i is not None]

        async def attempt() -> dict[str, DownloadedFile]:
            split = await anyio.to_thread.run_sync(
                lambda: ResultSplit(dict(dests), source=f"anthropic:{remote_id}", writer=writer)
            )
            try:
                async with self._api.stream(
                    "download_results",
                    "GET",
                    url,
                    headers={"Accept": "application/binary", "Accept-Encoding": "identity"},
                ) as response:
                    async for chunk in response.aiter_bytes(1 << 20):
                        await anyio.to_thread.run_sync(split.feed, chunk)
                await anyio.to_thread.run_sync(split.verify, expected)
                if intents and split.digest() != intents[0].custom_ids_sha256:
                    raise ForeignResults(
                        f"anthropic batch {remote_id}: its results' custom_ids are not the set "
                        f"this job submitted ({len(split.custom_ids)} results, "
                        f"{intents[0].requests} submitted): it is another client's batch",
                        remote_id=remote_id,
                    )
                return await anyio.to_thread.run_sync(split.publish, set(files))
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(split.abandon)
                raise

        got = await self._api.retrying("download_results", attempt)
        log.info(
            "provider.results_split",
            provider=self.name,
            remote_id=remote_id,
            **{f"{kind}_lines": file.lines for kind, file in got.items()},
        )
        return got

    async def results_match(self, remote_id: str, submitted: Sequence[str]) -> bool:
        """Stream the ended batch's results and compare their custom_id set with the intent."""
        intents = [i for i in (Intent.parse(f) for f in submitted) if i is not None]
        if not intents:
            return False
        url = await self._results_url(remote_id)
        ids: set[str] = set()
        tail = b""

        async def attempt() -> None:
            nonlocal tail
            ids.clear()
            tail = b""
            async with self._api.stream(
                "download_results", "GET", url, headers={"Accept": "application/binary"}
            ) as response:
                async for chunk in response.aiter_bytes(1 << 20):
                    data = tail + chunk
                    cut = data.rfind(b"\n") + 1
                    tail = data[cut:]
                    ids.update(_custom_ids(data[:cut]))
            ids.update(_custom_ids(tail))

        await self._api.retrying("download_results", attempt)
        return id_set_digest(ids) == intents[0].custom_ids_sha256

    async def _results_url(self, remote_id: str) -> str:
        batch: Any = await self._api.get_json(
            "get_job", f"{self.jobs_url}/{path_id(remote_id, 'remote_id')}"
        )
        job = parse_job(batch, operation="download_results")
        url = optional_str(batch.get("results_url")) if job.phase.terminal else None
        if url is None:
            raise DownloadIntegrityError(
                f"anthropic batch {remote_id} has no results_url yet ({job.status})"
            )
        self._check_origin(url, remote_id)
        return url

    def _check_origin(self, url: str, remote_id: str) -> None:
        """The API key goes only where the API lives: ``results_url`` must share its origin."""
        ours, theirs = urlsplit(self.base_url), urlsplit(url)
        if (theirs.scheme, theirs.netloc) != (ours.scheme, ours.netloc):
            raise PermanentProviderError(
                f"anthropic batch {remote_id}: results_url {url!r} is not on the API's host "
                f"{ours.scheme}://{ours.netloc}; not sending the API key there"[:300]
            )


__all__ = ["API_VERSION", "AnthropicProvider", "Intent", "ended_phase", "parse_job"]
