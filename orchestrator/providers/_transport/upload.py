"""Streamed ``multipart/form-data`` uploads: constant memory, no blocking reads on the loop.

:class:`MultipartUpload` frames the body; :class:`UploadBody` produces the file part's bytes:
one or more input files, each sent as it is or rewritten line by line by the dialect's
:class:`LineTransform` (OpenAI lines gain ``method``, ``url`` and ``model``). Reading,
rewriting and hashing run in a worker thread, one 1 MiB chunk per hop, while the request is
sent, so the event loop stays free and the second core works.
"""

from __future__ import annotations

import hashlib
import secrets as _secrets
from collections.abc import AsyncGenerator, AsyncIterable, Callable
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import anyio
import anyio.to_thread
import attrs

UPLOAD_CHUNK_BYTES = 1 << 20
"""Uploads read the file 1 MiB at a time, in a worker thread."""


def _quote_filename(name: str) -> str:
    # The HTML5 multipart rules (as browsers and httpx do): no raw quote, CR or LF.
    return name.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


class LineTransform(Protocol):
    """Rewrites one input file's bytes, chunk by chunk (lines may span chunks)."""

    def feed(self, chunk: bytes) -> bytes:
        """The rewritten form of the complete lines so far (the unfinished tail is kept)."""

    def finish(self) -> bytes:
        """The rewritten form of what is left once the file has ended."""


@attrs.frozen
class UploadBody:
    """The file part's bytes: ``paths`` concatenated, as they are or rewritten.

    ``transform`` builds a fresh :class:`LineTransform` per file; ``None`` sends each file
    byte for byte. Each :meth:`chunks` call reads the files again (one per attempt).
    """

    paths: tuple[Path, ...]
    transform: Callable[[Path], LineTransform] | None = None

    def sizes(self) -> list[int]:
        """Each file's size now (``os.stat``)."""
        return [path.stat().st_size for path in self.paths]

    async def measure(self) -> tuple[int, str]:
        """The size and sha256 of the bytes :meth:`chunks` would yield now (one full pass)."""
        digest = hashlib.sha256()
        size = 0
        async for chunk in self.chunks(digest):
            size += len(chunk)
        return size, digest.hexdigest()

    async def chunks(self, digest: Any) -> AsyncGenerator[bytes, None]:
        """Yield the bytes, feeding ``digest`` (a hashlib object) in the worker thread.

        Untransformed files yield exactly the size they had when this started, or raise an
        :class:`OSError` if one shrank.
        """
        sizes = self.sizes() if self.transform is None else [None] * len(self.paths)
        for path, size in zip(self.paths, sizes, strict=True):
            transform = self.transform(path) if self.transform is not None else None
            # Opened and closed on the event loop (microseconds on a local file): a close
            # awaited in a worker thread is skipped when the upload is cancelled, and the
            # file would be left open.
            f: BinaryIO = path.open("rb")
            try:
                left = size
                done = False
                while not done:
                    chunk, done = await anyio.to_thread.run_sync(_step, f, transform, digest, left)
                    if left is not None and not done:
                        if not chunk:
                            raise OSError(f"{path} shrank from {size} bytes while uploading")
                        left -= len(chunk)
                    if chunk:
                        yield chunk
            finally:
                f.close()


def _step(
    f: BinaryIO, transform: LineTransform | None, digest: Any, left: int | None
) -> tuple[bytes, bool]:
    """Read one chunk, rewrite it, hash the result; return it and whether the file is done.

    With ``left`` (a file sent as it is) at most ``left`` bytes are read, and an empty read
    before the end comes back as ``(b"", False)`` (the caller reports the shrinking file).
    """
    if left is not None:
        if left <= 0:
            return b"", True
        chunk = f.read(min(UPLOAD_CHUNK_BYTES, left))
        digest.update(chunk)
        return chunk, False
    assert transform is not None
    raw = f.read(UPLOAD_CHUNK_BYTES)
    out = transform.feed(raw) if raw else transform.finish()
    digest.update(out)
    return out, not raw


@attrs.frozen
class MultipartUpload:
    """A ``multipart/form-data`` body with plain fields and one file part, streamed.

    The file is never loaded whole (field notes: ``content=bytes`` costs 3 GB RSS per GB):
    it is read in chunks by a worker thread while the request is sent, with an exact
    ``Content-Length``. Each :meth:`stream` call reads ``path`` again (one per attempt);
    :meth:`wrap` frames any stream of file bytes instead.
    """

    filename: str
    fields: tuple[tuple[str, str], ...]
    path: Path | None = None
    file_field: str = "file"
    content_type: str = "application/octet-stream"
    boundary: str = attrs.field(factory=lambda: _secrets.token_hex(16))

    def _head(self) -> bytes:
        parts = [
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
            for name, value in self.fields
        ]
        parts.append(
            f"--{self.boundary}\r\nContent-Disposition: form-data; "
            f'name="{self.file_field}"; filename="{_quote_filename(self.filename)}"\r\n'
            f"Content-Type: {self.content_type}\r\n\r\n"
        )
        return "".join(parts).encode("utf-8")

    def _tail(self) -> bytes:
        return f"\r\n--{self.boundary}--\r\n".encode()

    def headers(self, size: int) -> dict[str, str]:
        """Content-Type and the exact Content-Length for a file of ``size`` bytes."""
        return {
            "Content-Type": f"multipart/form-data; boundary={self.boundary}",
            "Content-Length": str(len(self._head()) + size + len(self._tail())),
        }

    async def wrap(self, chunks: AsyncIterable[bytes]) -> AsyncGenerator[bytes, None]:
        """Yield the whole body around the file bytes ``chunks`` yields."""
        yield self._head()
        async for chunk in chunks:
            yield chunk
        yield self._tail()

    async def stream(self, size: int) -> AsyncGenerator[bytes, None]:
        """Yield the body of ``path``: exactly ``size`` file bytes, or an OSError if it shrank."""
        if self.path is None:
            raise ValueError("MultipartUpload.stream needs a path; use wrap() for other bytes")
        yield self._head()
        sent = 0
        async with await anyio.open_file(self.path, "rb") as f:
            while sent < size:
                chunk = await f.read(min(UPLOAD_CHUNK_BYTES, size - sent))
                if not chunk:
                    raise OSError(f"{self.path} shrank from {size} to {sent} bytes while uploading")
                sent += len(chunk)
                yield chunk
        yield self._tail()
