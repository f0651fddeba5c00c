"""Serving a stored file: ``application/octet-stream``, exact ``Content-Length``, single ranges.

``Range: bytes=N-``, ``bytes=N-M`` and ``bytes=-K`` get ``206`` with ``Content-Range``; a range
past the end gets ``416`` with ``Content-Range: bytes */size``; anything else (several ranges,
another unit) is ignored and the whole file is sent, as RFC 9110 allows. The body is read in
1 MiB chunks in a worker thread and streamed, so memory stays flat whatever the file size; the
stream stops when the client disconnects.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import IO
from urllib.parse import quote

import anyio
import anyio.to_thread
from starlette.types import Message, Receive, Scope, Send

CHUNK = 1 << 20
_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


def parse_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """The ``(start, end)`` (inclusive) a ``Range`` header asks for.

    Returns:
        ``None`` to send the whole file, ``"unsatisfiable"`` for a 416, else the byte span.
    """
    if not header:
        return None
    match = _RANGE.match(header)
    if match is None:
        return None
    first, last = match.group(1), match.group(2)
    if not first and not last:
        return None
    if not first:
        suffix = int(last)
        if suffix == 0:
            return "unsatisfiable"
        return (max(0, size - suffix), size - 1) if size else "unsatisfiable"
    start = int(first)
    end = int(last) if last else size - 1
    if start >= size or end < start:
        return "unsatisfiable"
    return (start, min(end, size - 1))


class FileBody:
    """An ASGI response streaming (part of) a file.

    Args:
        path: the file.
        size: its size in bytes (as recorded when it was written).
        filename: offered in ``Content-Disposition``.
        range_header: the request's ``Range`` header, if any.
        head: send the headers only.
    """

    def __init__(
        self, path: Path, *, size: int, filename: str, range_header: str | None, head: bool
    ) -> None:
        self.path = path
        self.size = size
        self.head = head
        span = parse_range(range_header, size)
        headers = [
            (b"content-type", b"application/octet-stream"),
            (b"accept-ranges", b"bytes"),
            (
                b"content-disposition",
                f"attachment; filename*=UTF-8''{quote(filename)}".encode("latin-1"),
            ),
        ]
        if span == "unsatisfiable":
            self.status = 416
            self.start, self.length = 0, 0
            headers.append((b"content-range", f"bytes */{size}".encode()))
        elif span is None:
            self.status = 200
            self.start, self.length = 0, size
        else:
            assert not isinstance(span, str)
            self.status = 206
            self.start, self.length = span[0], span[1] - span[0] + 1
            headers.append((b"content-range", f"bytes {span[0]}-{span[1]}/{size}".encode()))
        headers.append((b"content-length", str(self.length).encode()))
        self.headers = headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        if self.head or self.length == 0:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        error: Exception | None = None
        async with anyio.create_task_group() as tg:

            async def watch_disconnect() -> None:
                while True:
                    message: Message = await receive()
                    if message["type"] == "http.disconnect":
                        tg.cancel_scope.cancel()
                        return

            tg.start_soon(watch_disconnect)
            try:
                await self._stream(send)
            except Exception as exc:  # re-raised bare below, not wrapped in an ExceptionGroup
                error = exc
            tg.cancel_scope.cancel()
        if error is not None:
            raise error

    async def _stream(self, send: Send) -> None:
        handle: IO[bytes] = await anyio.to_thread.run_sync(self.path.open, "rb")
        try:
            await anyio.to_thread.run_sync(handle.seek, self.start)
            left = self.length
            while left > 0:
                data = await anyio.to_thread.run_sync(handle.read, min(CHUNK, left))
                if not data:
                    raise RuntimeError(f"{self.path} is shorter than its recorded size")
                left -= len(data)
                await send({"type": "http.response.body", "body": data, "more_body": left > 0})
        finally:
            handle.close()
