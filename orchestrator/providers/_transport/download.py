"""Resumable, verified, atomic downloads (provider-neutral).

The body streams into ``<dest>.part`` in large chunks while its sha256 and line count are
computed; the hashing and writing run in a worker thread, overlapped with the network reads of
the next chunks (a bounded pipeline), so the event loop stays free and both cores work. After a
transient fault the next attempt asks for ``Range: bytes=N-`` and appends only if the server
answers ``206`` with a ``Content-Range`` that starts at ``N`` and announces the same total;
anything else restarts from byte 0 (rehashing). The length is always checked against
``Content-Length`` (or the provider's file size when the body is close-delimited: httpx returns
such a body *silently short* when the connection drops). Only a complete, verified, fsynced
file is renamed onto ``dest``.

Crash safety: beside the ``.part`` sits ``<dest>.part.json`` naming the source file and the
byte count known to be on disk (written after an fsync every ``checkpoint_bytes``). A later
call for the same source resumes from that checkpoint (the bytes are re-read to rebuild the
hash); a ``.part`` without it, or for another source, is discarded.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import anyio.to_thread
import httpx
import structlog

from orchestrator.errors import DownloadIntegrityError, TransientProviderError
from orchestrator.providers._transport.client import ApiClient
from orchestrator.providers._transport.partfile import PartFile, parse_content_range
from orchestrator.providers._transport.usage import UsageReader
from orchestrator.providers.base import DownloadedFile

log = structlog.get_logger(__name__)

CHUNK_BYTES = 1 << 20
"""Read and write 1 MiB at a time: few thread hops, constant memory."""

CHECKPOINT_BYTES = 64 << 20
"""fsync the ``.part`` and record its durable length this often (crash resume points)."""

PIPELINE_BLOCKS = 4
"""Chunks read ahead while the worker thread hashes and writes earlier ones (memory bound:
about ``PIPELINE_BLOCKS + 2`` chunks). Overlapping the two took a 1 GB download on loopback from
169 to 216 MB/s (median of 5 interleaved runs each, on a loaded 2-core machine; see
``docs/benchmarks.md``): the download is CPU-bound, about 4 CPU seconds per GB."""


class _Truncated(TransientProviderError):
    """The body ended before the announced length (retried; resumed where possible)."""


class _BlockWriter:
    """The writing half of the download pipeline: hashes and writes chunks in a worker thread.

    The reader sends chunks through a bounded stream; ``pending`` holds the chunks it has
    received but not yet sent. Whatever way the download ends (done, fault, cancellation), the
    reader calls :meth:`flush_leftovers` once the writer has stopped, so every byte received
    intact is in the ``.part`` and a ``Range`` resume fetches none of them again.
    """

    def __init__(self, part: PartFile, *, checkpoint_bytes: int, depth: int) -> None:
        self._part = part
        self._checkpoint_bytes = checkpoint_bytes
        self.sender, self._receiver = anyio.create_memory_object_stream[bytes](depth)
        self.pending: list[bytes] = []
        self.error: Exception | None = None

    async def run(self, scope: anyio.CancelScope) -> None:
        """Write chunks until the reader closes the stream; a failed write stops the reader."""
        async for chunk in self._receiver:
            try:
                await anyio.to_thread.run_sync(self._write, chunk)
            except Exception as exc:
                self.error = exc
                scope.cancel()  # nothing more can be stored: stop reading
                return

    def _write(self, chunk: bytes) -> None:
        part = self._part
        part.write(chunk)
        if part.size - part.checkpointed >= self._checkpoint_bytes:
            part.checkpoint()

    def flush_leftovers(self) -> None:
        """Write, in order, what was received but not written (no writer runs any more)."""
        queued = []
        with contextlib.suppress(anyio.WouldBlock, anyio.EndOfStream):
            while True:
                queued.append(self._receiver.receive_nowait())
        self.sender.close()
        self._receiver.close()
        if self.error is None:
            for chunk in (*queued, *self.pending):
                self._part.write(chunk)
        self.pending.clear()


def _strong_validator(response: httpx.Response) -> str | None:
    etag: str | None = response.headers.get("etag")
    if etag and not etag.startswith("W/"):
        return etag
    modified: str | None = response.headers.get("last-modified")
    return modified


class ResumableDownload:
    """One download of ``url`` into ``dest`` (see the module docstring).

    Args:
        api: the provider's client (counting, logging, error mapping, retry policy).
        operation: the operation name for logs and counters.
        url: the content URL, relative to the API root.
        dest: the final path.
        source: a stable id of the remote file (names the resumable ``.part``).
        writer: names this writer's own ``.part`` when several processes may download into
            the same folder (replicas); None for the plain ``<dest>.part``.
        size_hint: awaited for the expected length when the response announces none.
        chunk_bytes: read size.
        checkpoint_bytes: fsync-and-record interval.
        usage_reader: the dialect's reading of a result line's token usage, summed over the
            file in the same pass that hashes it (None: no usage is read).
    """

    def __init__(
        self,
        api: ApiClient,
        *,
        operation: str,
        url: str,
        dest: Path,
        source: str,
        size_hint: Callable[[], Awaitable[int | None]],
        chunk_bytes: int = CHUNK_BYTES,
        checkpoint_bytes: int = CHECKPOINT_BYTES,
        writer: str | None = None,
        usage_reader: UsageReader | None = None,
    ) -> None:
        self._api = api
        self._operation = operation
        self._url = url
        self._dest = dest
        self._size_hint = size_hint
        self._chunk_bytes = chunk_bytes
        self._checkpoint_bytes = checkpoint_bytes
        self._part = PartFile(dest, source, writer, usage_reader=usage_reader)

    async def run(self) -> DownloadedFile:
        """Download, verify and publish.

        Raises:
            DownloadIntegrityError: the body stayed short after every attempt, or was longer
                than announced.
            TransientProviderError: retries were exhausted on network faults, 429 or 5xx.
            PermanentProviderError: the provider refused (e.g. unknown file).
        """
        part = self._part
        how = await anyio.to_thread.run_sync(part.open)
        if how != "fresh":
            log.info(
                "provider.download_leftover",
                provider=self._api.provider,
                dest=str(self._dest),
                action=how,
                bytes=part.size,
            )
        try:
            try:
                await self._api.retrying(self._operation, self._attempt)
            except _Truncated as exc:
                raise DownloadIntegrityError(str(exc)) from None
            if part.total is not None and part.size != part.total:  # pragma: no cover
                raise DownloadIntegrityError(
                    f"{self._dest}: got {part.size} bytes, expected {part.total}"
                )
            result = DownloadedFile(
                path=self._dest,
                bytes=part.size,
                sha256=part.hasher.hexdigest(),
                lines=part.lines,
                usage=part.usage(),
            )
            await anyio.to_thread.run_sync(part.finish)
        except Exception:
            part.abandon()
            raise
        except BaseException:
            part.close()  # cancelled: keep the .part and its checkpoint for the next call
            raise
        log.info(
            "provider.downloaded",
            provider=self._api.provider,
            dest=str(self._dest),
            bytes=result.bytes,
            lines=result.lines,
        )
        return result

    async def _attempt(self) -> None:
        part = self._part
        offset = part.size
        headers = {"Accept": "application/octet-stream", "Accept-Encoding": "identity"}
        if offset > 0:
            headers["Range"] = f"bytes={offset}-"
            if part.validator:
                headers["If-Range"] = part.validator

        def handled(response: httpx.Response) -> bool:
            return response.status_code in (200, 206) or (
                offset > 0 and response.status_code == 416
            )

        async with self._api.stream(
            self._operation, "GET", self._url, headers=headers, ok=handled
        ) as response:
            encoding = response.headers.get("content-encoding", "identity").strip().lower()
            encoded = encoding not in ("", "identity")
            if response.status_code == 416:
                await self._after_refused_range(response, offset)
                return
            if response.status_code == 206:
                total = self._check_partial(response, offset, encoded)
                if total is None:
                    await anyio.to_thread.run_sync(part.reset)
                    raise TransientProviderError(
                        f"{self._api.provider} {self._operation}: the server's partial response "
                        f"(Content-Range {response.headers.get('content-range')!r}) does not "
                        f"continue at byte {offset}; restarting from 0"
                    )
            else:
                if offset > 0:
                    log.info(
                        "provider.download_restarted",
                        provider=self._api.provider,
                        dest=str(self._dest),
                        discarded=offset,
                    )
                    await anyio.to_thread.run_sync(part.reset)
                total = await self._announced_total(response, encoded)
            part.total = total
            part.validator = None if encoded else _strong_validator(response)
            if encoded:
                # Offsets into a compressed stream mean nothing: a retry starts again at 0.
                log.warning(
                    "provider.download_encoded",
                    provider=self._api.provider,
                    content_encoding=encoding,
                )
                chunks = response.aiter_bytes()
            else:
                chunks = response.aiter_raw()
            try:
                await self._consume(chunks, total)
            except Exception:
                if encoded:
                    await anyio.to_thread.run_sync(part.reset)
                raise

    async def _consume(self, chunks: AsyncIterator[bytes], total: int | None) -> None:
        part = self._part
        writer = _BlockWriter(part, checkpoint_bytes=self._checkpoint_bytes, depth=PIPELINE_BLOCKS)
        failure: Exception | None = None
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(writer.run, tg.cancel_scope)
                try:
                    await self._read(chunks, total, writer)
                except Exception as exc:
                    # Raised below, unwrapped, once the writer has stored what came intact.
                    failure = exc
                finally:
                    writer.sender.close()  # the writer drains what is queued, then ends
        finally:
            writer.flush_leftovers()
        if writer.error is not None:
            raise writer.error
        if failure is not None:
            raise failure
        if total is not None and part.size < total:
            raise _Truncated(
                f"{self._api.provider} {self._operation}: body cut short at {part.size} of "
                f"{total} bytes"
            )
        if total is None:
            log.warning(
                "provider.download_unverified_length",
                provider=self._api.provider,
                dest=str(self._dest),
                bytes=part.size,
            )

    async def _read(
        self, chunks: AsyncIterator[bytes], total: int | None, writer: _BlockWriter
    ) -> None:
        """Batch the transport's small reads into large chunks and hand them to ``writer``.

        Batching is done here rather than by httpx: httpx's own re-chunking would drop the
        bytes it holds when the connection breaks, and those bytes are exactly what a Range
        resume should not fetch again (they stay in ``writer.pending``).
        """
        received = self._part.size
        batch = writer.pending
        batched = 0
        async for chunk in chunks:
            received += len(chunk)
            if total is not None and received > total:
                raise DownloadIntegrityError(
                    f"{self._api.provider} {self._operation}: body is longer than the "
                    f"announced {total} bytes (got at least {received})"
                )
            batch.append(chunk)
            batched += len(chunk)
            if batched >= self._chunk_bytes:
                block = b"".join(batch)
                batch.clear()
                batched = 0
                await writer.sender.send(block)
        if batch:
            block = b"".join(batch)
            batch.clear()
            await writer.sender.send(block)

    def _check_partial(self, response: httpx.Response, offset: int, encoded: bool) -> int | None:
        """The total if this 206 continues our ``.part`` exactly, else None."""
        span = parse_content_range(response.headers.get("content-range"))
        if encoded or span is None or span.total is None:
            return None
        if span.first != offset or span.last != span.total - 1:
            return None
        if self._part.total is not None and span.total != self._part.total:
            return None  # the remote file changed under us
        length = response.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) != span.total - offset:
            return None
        return span.total

    async def _announced_total(self, response: httpx.Response, encoded: bool) -> int | None:
        length = response.headers.get("content-length")
        if not encoded and length is not None and length.strip().isdigit():
            return int(length)
        # Close-delimited or chunked: ask the provider how long the file is.
        return await self._size_hint()

    async def _after_refused_range(self, response: httpx.Response, offset: int) -> None:
        """A 416: either we already hold every byte, or start again from 0."""
        span = parse_content_range(response.headers.get("content-range"))
        expected = self._part.total
        if span is not None and span.total == offset and expected in (None, offset):
            self._part.total = offset
            return
        await anyio.to_thread.run_sync(self._part.reset)
        raise TransientProviderError(
            f"{self._api.provider} {self._operation}: the server refused to resume at byte "
            f"{offset} (HTTP 416); restarting from 0"
        )
