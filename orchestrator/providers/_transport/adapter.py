"""The base of every HTTP dialect: a :class:`~orchestrator.providers.base.Provider` over one
:class:`~.client.ApiClient`, with the file upload and the verified download already done.

A dialect (``mistral.py``, ``openai.py``, later ``anthropic.py``) subclasses
:class:`HttpProvider` and supplies only what its wire says: the auth headers
(:meth:`HttpProvider.auth_headers`), its paths (``files_url``, ``jobs_url``), how to build a
create body, how to list, and how to read its job object (:meth:`HttpProvider.parse_job`).
Base URL and key checks, retries, error mapping, call counting, the streamed multipart upload,
get and cancel of a job, and the resumable download live here once.
"""

from __future__ import annotations

import abc
import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx
import structlog

from orchestrator.clock import Clock, SystemClock
from orchestrator.errors import PermanentProviderError, TransientProviderError
from orchestrator.providers._transport.client import ApiClient, CallCounter, RetryPolicy
from orchestrator.providers._transport.download import ResumableDownload
from orchestrator.providers._transport.errors import decode_json, malformed
from orchestrator.providers._transport.fields import non_negative_int, path_id
from orchestrator.providers._transport.upload import MultipartUpload, UploadBody
from orchestrator.providers._transport.usage import additive, openai_style_usage
from orchestrator.providers.base import DownloadedFile, Provider, RemoteJob, UploadedFile

log = structlog.get_logger(__name__)


def check_base_url(base_url: str, *, vendor: str, example: str) -> str:
    """``base_url`` without a trailing slash, once it is a plain http(s) URL.

    Raises:
        ValueError: not http(s), no host, or a query, fragment or credentials in it.
    """
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(
            f"{vendor} base_url must be an http(s) URL such as {example}, got {base_url!r}"
        )
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(
            f"{vendor} base_url must not carry a query, fragment or credentials "
            "(the API key goes in api_key_env)"
        )
    return base_url.rstrip("/")


def check_api_key(api_key: str, *, vendor: str) -> None:
    """Refuse a key that cannot be sent in a header as it is.

    Raises:
        ValueError: the key is empty, or has whitespace, control or non-ASCII characters.
    """
    # Never echo the key: the message only says what is wrong with it.
    if not isinstance(api_key, str) or not api_key:
        raise ValueError(f"the {vendor} API key is empty: set the variable named by api_key_env")
    if not api_key.isascii() or not api_key.isprintable() or any(c.isspace() for c in api_key):
        raise ValueError(
            f"the {vendor} API key contains whitespace, control or non-ASCII characters "
            "(a stray newline from a key file?): fix the key's source"
        )


class HttpProvider(Provider):
    """A provider workspace spoken to over HTTP (see the module docstring).

    Args:
        base_url: the API root, e.g. ``https://api.mistral.ai`` (no ``/v1``).
        api_key: the workspace key; sent only in the headers :meth:`auth_headers` builds.
        transport: an httpx transport (tests pass ``httpx.ASGITransport(app=emulator.app)``).
        timeout: seconds for each connect, read, write and pool wait of one request.
        attempts: total attempts for retried calls (create is never retried).
        max_wait: longest backoff between attempts; a ``Retry-After`` above it is not waited
            for inside the call (the ``RateLimited`` error carries it to the caller).
        clock: the injected clock (call durations, ``Retry-After`` dates).

    Raises:
        ValueError: the base URL is not an http(s) URL, or the key is empty or malformed.
    """

    vendor: ClassVar[str]
    """The vendor as operators know it, for messages (``Mistral``)."""
    example_url: ClassVar[str]
    """The vendor's public API root, quoted when a base URL is refused."""
    files_url: ClassVar[str] = "/v1/files"
    """The files collection: uploads (``POST``, multipart with ``purpose=batch``), a file
    object at ``{files_url}/{id}``, its bytes at ``{files_url}/{id}/content``."""
    jobs_url: ClassVar[str]
    """The batch jobs collection: a job at ``{jobs_url}/{id}``, its cancel at ``.../cancel``."""
    transient_statuses: ClassVar[frozenset[int]] = frozenset()
    """4xx statuses the vendor's own SDK retries besides 408 and 429 (OpenAI: 409)."""

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
        self.base_url = check_base_url(base_url, vendor=self.vendor, example=self.example_url)
        check_api_key(api_key, vendor=self.vendor)
        if not timeout > 0:
            raise ValueError(f"timeout must be positive seconds, got {timeout}")
        self._clock = clock or SystemClock()
        self._api = ApiClient(
            provider=self.name,
            base_url=self.base_url,
            headers={**self.auth_headers(api_key), "Accept": "application/json"},
            secrets=(api_key,),
            transport=transport,
            timeout=timeout,
            policy=RetryPolicy(attempts=attempts, max_wait=max_wait),
            clock=self._clock,
            transient_statuses=self.transient_statuses,
        )

    def auth_headers(self, api_key: str) -> dict[str, str]:
        """The headers that authenticate every request (a bearer token unless overridden).

        Anthropic's dialect overrides this with ``x-api-key`` and ``anthropic-version``.
        """
        return {"Authorization": f"Bearer {api_key}"}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r})"

    @property
    def calls(self) -> CallCounter:
        """API calls so far per ``(operation, HTTP status or error class)``: for metrics."""
        return self._api.calls

    async def upload_input(
        self, paths: Sequence[Path], *, endpoint: str, model: str, filename: str
    ) -> UploadedFile:
        """Upload the one file of a group as it is (a dialect that rewrites overrides this)."""
        if len(paths) != 1:
            raise ValueError(
                f"{self.name} uploads one input file at a time as it is, got {len(paths)}"
            )
        return await self._upload_body(
            UploadBody(paths=(Path(paths[0]),)), url=self.files_url, filename=filename
        )

    async def _upload(
        self, path: Path, *, url: str, fields: tuple[tuple[str, str], ...], filename: str | None
    ) -> str:
        """Upload ``path`` as it is; return the new file id (see :meth:`_upload_body`)."""
        path = Path(path)
        body = UploadBody(paths=(path,))
        uploaded = await self._upload_body(
            body, url=url, fields=fields, filename=filename or path.name
        )
        return uploaded.id

    async def _upload_body(
        self,
        body: UploadBody,
        *,
        url: str,
        filename: str,
        fields: tuple[tuple[str, str], ...] = (("purpose", "batch"),),
    ) -> UploadedFile:
        """Upload ``body`` as the ``file`` part of a multipart form, streamed.

        The answer must be a file object with an ``id``; when it reports ``bytes`` they must
        match what was sent, or the upload is retried (the provider stored something else).
        A rewritten body is measured once first (its exact ``Content-Length``); each attempt
        must then send the same bytes (same sha256), or the input changed under us.

        Raises:
            FileNotFoundError: an input is not a file.
            TransientProviderError: retries were exhausted.
            PermanentProviderError: the provider refused the file, or an input changed.
        """
        for path in body.paths:
            if not path.is_file():
                raise FileNotFoundError(f"cannot upload {path}: no such file")
        names = ", ".join(str(path) for path in body.paths)
        form = MultipartUpload(filename=filename, fields=fields)
        expected: str | None = None
        size = 0
        if body.transform is not None:
            size, expected = await body.measure()

        async def once() -> UploadedFile:
            nonlocal size
            if body.transform is None:
                size = sum(body.sizes())
            digest = hashlib.sha256()
            sent = 0

            async def counted() -> Any:
                nonlocal sent
                async for chunk in body.chunks(digest):
                    sent += len(chunk)
                    yield chunk

            stream = form.wrap(counted())
            try:
                response = await self._api.send(
                    "upload_file", "POST", url, headers=form.headers(size), content=stream
                )
            finally:
                await stream.aclose()  # a server may answer before reading it all: close files
            data = decode_json(response, provider=self.name, operation="upload_file")
            file_id = data.get("id") if isinstance(data, Mapping) else None
            if not isinstance(file_id, str) or not file_id:
                raise malformed(self.name, "upload_file", "no file id in the response")
            if sent != size:
                raise TransientProviderError(
                    f"{self.name} upload_file: the provider answered after {sent} of {size} "
                    f"bytes of {names}; uploading again"
                )
            sha256 = digest.hexdigest()
            if expected is not None and sha256 != expected:
                raise PermanentProviderError(
                    f"{self.name} upload_file: {names} changed while being uploaded "
                    "(its bytes differ from a moment ago); inputs must not change once validated"
                )
            stored = data.get("bytes")
            if isinstance(stored, int) and not isinstance(stored, bool) and stored != size:
                raise TransientProviderError(
                    f"{self.name} upload_file: the provider stored {stored} bytes of {names} "
                    f"but {size} were sent; uploading again"
                )
            return UploadedFile(id=file_id, bytes=size, sha256=sha256)

        uploaded = await self._api.retrying("upload_file", once)
        log.info(
            "provider.uploaded",
            provider=self.name,
            path=names,
            file_id=uploaded.id,
            bytes=uploaded.bytes,
            sha256=uploaded.sha256,
        )
        return uploaded

    @abc.abstractmethod
    def parse_job(self, data: object, *, operation: str) -> RemoteJob:
        """The dialect's reading of one job object (raises a malformed-answer error)."""

    async def get_job(self, remote_id: str) -> RemoteJob:
        url = f"{self.jobs_url}/{path_id(remote_id, 'remote_id')}"
        return self.parse_job(await self._api.get_json("get_job", url), operation="get_job")

    async def cancel_job(self, remote_id: str) -> RemoteJob:
        url = f"{self.jobs_url}/{path_id(remote_id, 'remote_id')}/cancel"
        data = await self._api.json("cancel_job", "POST", url)
        job = self.parse_job(data, operation="cancel_job")
        log.info(
            "provider.job_cancel_requested", provider=self.name, remote_id=job.id, status=job.status
        )
        return job

    async def file_size(self, file_id: str) -> int | None:
        """The size in bytes the provider records for a file (``GET {files_url}/{id}``)."""
        return await self._file_size(f"{self.files_url}/{path_id(file_id, 'file_id')}")

    async def download_file(
        self, file_id: str, dest: Path, *, writer: str | None = None
    ) -> DownloadedFile:
        url = f"{self.files_url}/{path_id(file_id, 'file_id')}"
        return await self._download(
            file_id, dest, url=f"{url}/content", meta_url=url, writer=writer
        )

    async def _file_size(self, url: str) -> int | None:
        """The ``bytes`` a file object at ``url`` reports (``None`` if it reports none)."""
        data: Any = await self._api.get_json("get_file", url)
        return non_negative_int(data.get("bytes")) if isinstance(data, Mapping) else None

    async def _download(
        self, file_id: str, dest: Path, *, url: str, meta_url: str | None, writer: str | None
    ) -> DownloadedFile:
        """Stream the content at ``url`` to ``dest`` (see :meth:`Provider.download_file`).

        ``meta_url`` is the file object asked for the expected length when the content
        response announces none (``None``: the dialect has no such object, the length then
        goes unverified and is logged).
        """

        async def size_hint() -> int | None:
            return await self._file_size(meta_url) if meta_url is not None else None

        download = ResumableDownload(
            self._api,
            operation="download_file",
            url=url,
            dest=Path(dest),
            source=f"{self.name}:{self.base_url}:{file_id}",
            size_hint=size_hint,
            writer=writer,
            usage_reader=self.read_usage,
        )
        return await download.run()

    @additive
    def read_usage(self, line: Mapping[str, Any]) -> tuple[int, int, int] | None:
        """The token usage of one parsed result line: ``(prompt, completion, total)``, or None
        when it carries none. The default is ``response.body.usage`` (Mistral, OpenAI); a
        dialect that names it otherwise overrides this (the download sums it per file; an
        override is read line by line unless it is declared :func:`additive` too)."""
        return openai_style_usage(line)

    async def aclose(self) -> None:
        await self._api.aclose()
