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
import hashlib
import json
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import BinaryIO

import anyio.to_thread
import attrs
import httpx
import structlog

from orchestrator import fsutil
from orchestrator.errors import DownloadIntegrityError, TransientProviderError
from orchestrator.providers._http import ApiClient
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

_HASH_READ_BYTES = 4 << 20


def part_path(dest: Path, writer: str | None = None) -> Path:
    """The ``.part`` that ``writer`` (or the only writer, by default) fills for ``dest``.

    Several daemons sharing a results folder (replicas) each write their own
    ``<dest>.<writer>.part``: a replica that stalls past its lease and wakes up mid-download
    then never writes into the file the job's new holder is filling.
    """
    if writer is None:
        return fsutil.part_path(dest)
    return dest.with_name(f"{dest.name}.{writer}{fsutil.PART_SUFFIX}")


def meta_path(dest: Path, writer: str | None = None) -> Path:
    """The sidecar that makes ``dest``'s ``.part`` resumable after a crash."""
    part = part_path(dest, writer)
    return part.with_name(part.name + ".json")


def _other_writers_parts(dest: Path, writer: str) -> list[Path]:
    """``.part`` files and sidecars other writers left for ``dest`` (a dead replica's)."""
    mine = {part_path(dest, writer).name, meta_path(dest, writer).name}
    pattern = f"{dest.name}.*{fsutil.PART_SUFFIX}"
    return [
        path
        for glob in (pattern, pattern + ".json")
        for path in dest.parent.glob(glob)
        if path.name not in mine
    ]


_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)\s*$", re.IGNORECASE)


@attrs.frozen
class ContentRange:
    """A parsed ``Content-Range`` header (``first``/``last`` are None for ``bytes */N``)."""

    first: int | None
    last: int | None
    total: int | None


def parse_content_range(value: str | None) -> ContentRange | None:
    """Parse ``bytes 10-99/100`` / ``bytes */100`` / ``bytes 0-9/*``; ``None`` if absent or bad."""
    if value is None:
        return None
    match = _CONTENT_RANGE.match(value)
    if match is None:
        return None
    first, last, total = match.groups()
    return ContentRange(
        first=int(first) if first is not None else None,
        last=int(last) if last is not None else None,
        total=int(total) if total not in (None, "*") else None,
    )


class _Truncated(TransientProviderError):
    """The body ended before the announced length (retried; resumed where possible)."""


class _PartFile:
    """The ``.part`` being written, with its running hash and line count (sync; thread-side)."""

    def __init__(self, dest: Path, source: str, writer: str | None = None) -> None:
        self.dest = dest
        self.source = source
        self.writer = writer
        self.part = part_path(dest, writer)
        self.meta = meta_path(dest, writer)
        self.size = 0
        self.newlines = 0
        self.last_byte = b""
        self.hasher = hashlib.sha256()
        self.checkpointed = 0
        self.total: int | None = None
        self.validator: str | None = None
        self._file: BinaryIO | None = None

    @property
    def file(self) -> BinaryIO:
        assert self._file is not None, "the .part is not open"
        return self._file

    @property
    def lines(self) -> int:
        """Lines so far: newlines, plus one for a last line without a newline."""
        return self.newlines + (1 if self.size and self.last_byte != b"\n" else 0)

    def open(self) -> str:
        """Open the ``.part``: resume a leftover for the same source, or start empty.

        Returns:
            ``"resumed"``, ``"discarded"`` (a leftover could not be trusted) or ``"fresh"``.
        """
        fsutil.ensure_dir(self.dest.parent)
        leftover = self._read_meta()
        if leftover is not None and self.part.exists():
            durable = leftover["bytes"]
            if isinstance(durable, int) and 0 <= durable <= self.part.stat().st_size:
                self._file = self.part.open("r+b")
                self.file.truncate(durable)
                self._rehash()
                total, validator = leftover.get("total"), leftover.get("validator")
                self.total = total if isinstance(total, int) else None
                self.validator = validator if isinstance(validator, str) else None
                self.checkpointed = self.size
                self.file.seek(self.size)
                return "resumed"
        found = self.part.exists() or self.meta.exists()
        fsutil.discard(self.part)
        fsutil.discard(self.meta)
        # The sidecar exists before the .part: a .part alone is never trusted.
        self._write_meta()
        self._file = self.part.open("wb")
        return "discarded" if found else "fresh"

    def _read_meta(self) -> Mapping[str, object] | None:
        try:
            data = json.loads(self.meta.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if isinstance(data, dict) and data.get("source") == self.source and "bytes" in data:
            return data
        return None

    def _write_meta(self) -> None:
        fsutil.write_json_atomic(
            self.meta,
            {
                "source": self.source,
                "bytes": self.checkpointed,
                "total": self.total,
                "validator": self.validator,
            },
        )

    def _rehash(self) -> None:
        self.file.seek(0)
        while block := self.file.read(_HASH_READ_BYTES):
            self._account(block)

    def _account(self, chunk: bytes) -> None:
        self.hasher.update(chunk)
        self.newlines += chunk.count(b"\n")
        self.size += len(chunk)
        self.last_byte = chunk[-1:]

    def write(self, chunk: bytes) -> None:
        """Append ``chunk`` and account for it."""
        self.file.write(chunk)
        self._account(chunk)

    def checkpoint(self) -> None:
        """Make the bytes so far durable and record them as a resume point."""
        self.file.flush()
        os.fsync(self.file.fileno())
        self.checkpointed = self.size
        self._write_meta()

    def reset(self) -> None:
        """Throw the bytes away and start again from 0."""
        self.file.seek(0)
        self.file.truncate()
        self.size = self.newlines = self.checkpointed = 0
        self.last_byte = b""
        self.hasher = hashlib.sha256()
        self.total = self.validator = None
        self._write_meta()

    def finish(self) -> None:
        """fsync and close the ``.part``, rename it onto ``dest``, drop the sidecar."""
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        try:
            fsutil.publish(self.part, self.dest)
        except FileNotFoundError:
            if self.writer is None:
                raise
            # The job's new holder completed the file and removed this stale writer's copy.
            fsutil.discard(self.meta)
            raise DownloadIntegrityError(
                f"{self.dest}: another writer completed this file first; this copy was dropped"
            ) from None
        fsutil.discard(self.meta)
        if self.writer is not None:
            # The file is complete: what another writer left for it is garbage now (if that
            # writer is still busy, its rename fails, or publishes the same verified bytes).
            for leftover in _other_writers_parts(self.dest, self.writer):
                fsutil.discard(leftover)

    def close(self) -> None:
        """Close the ``.part`` and keep it (a cancelled call: the next one resumes)."""
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.flush()
            self._file.close()

    def abandon(self) -> None:
        """Close and remove the ``.part`` and its sidecar (a failed call leaves nothing)."""
        self.close()
        fsutil.discard(self.part)
        fsutil.discard(self.meta)


class _BlockWriter:
    """The writing half of the download pipeline: hashes and writes chunks in a worker thread.

    The reader sends chunks through a bounded stream; ``pending`` holds the chunks it has
    received but not yet sent. Whatever way the download ends (done, fault, cancellation), the
    reader calls :meth:`flush_leftovers` once the writer has stopped, so every byte received
    intact is in the ``.part`` and a ``Range`` resume fetches none of them again.
    """

    def __init__(self, part: _PartFile, *, checkpoint_bytes: int, depth: int) -> None:
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
    ) -> None:
        self._api = api
        self._operation = operation
        self._url = url
        self._dest = dest
        self._size_hint = size_hint
        self._chunk_bytes = chunk_bytes
        self._checkpoint_bytes = checkpoint_bytes
        self._part = _PartFile(dest, source, writer)

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
                path=self._dest, bytes=part.size, sha256=part.hasher.hexdigest(), lines=part.lines
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
