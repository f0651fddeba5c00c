"""A tiny scripted HTTP/1.1 server on 127.0.0.1 for download edge cases.

It serves one file's content and metadata, and each content request takes the next behaviour
from a script: a full 200, a body cut after N bytes (with or without Content-Length, i.e. a
close-delimited body), a server that ignores ``Range``, a wrong ``Content-Range``, a 416, a
stall, or an error status. Every connection carries one request (``Connection: close``), which
makes the sequence of requests easy to assert.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

import anyio
import attrs
from anyio.abc import SocketAttribute, SocketStream


@attrs.define
class Behaviour:
    """How to answer one content request."""

    kind: str = "ok"
    """ok | cut | close_cut | ignore_range | bad_range | status | stall | longer"""
    cut_at: int = 0
    status: int = 200
    body: bytes = b""


@attrs.define
class Seen:
    """One request the server received."""

    method: str
    path: str
    headers: dict[str, str]


@attrs.define
class RawServer:
    """The server's state; ``port`` is set once it listens."""

    content: bytes
    script: list[Behaviour] = attrs.field(factory=list)
    seen: list[Seen] = attrs.field(factory=list)
    port: int = 0
    reported_size: int | None = None
    etag: str | None = '"v1"'
    stall: anyio.Event = attrs.field(factory=anyio.Event)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def content_requests(self) -> list[Seen]:
        return [s for s in self.seen if s.path.endswith("/content")]

    async def handle(self, stream: SocketStream) -> None:
        async with stream:
            data = b""
            try:
                while b"\r\n\r\n" not in data:
                    data += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return
            head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
            first, *lines = head.split("\r\n")
            method, path, _ = first.split(" ", 2)
            headers = {}
            for line in lines:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            self.seen.append(Seen(method, path, headers))
            with suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                await self._respond(stream, path, headers)

    async def _send(
        self, stream: SocketStream, status: str, headers: dict[str, str], body: bytes
    ) -> None:
        lines = [f"HTTP/1.1 {status}", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        await stream.send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)

    async def _respond(self, stream: SocketStream, path: str, headers: dict[str, str]) -> None:
        if not path.endswith("/content"):
            size = len(self.content) if self.reported_size is None else self.reported_size
            body = json.dumps({"id": "file-1", "object": "file", "bytes": size}).encode()
            await self._send(
                stream,
                "200 OK",
                {"Content-Type": "application/json", "Content-Length": str(len(body))},
                body,
            )
            return
        behaviour = self.script.pop(0) if self.script else Behaviour()
        total = len(self.content)
        base = {"Content-Type": "application/octet-stream"}
        if self.etag:
            base["ETag"] = self.etag
        if behaviour.kind == "status":
            body = behaviour.body or b'{"detail": "File not found"}'
            await self._send(
                stream,
                f"{behaviour.status} Error",
                {"Content-Type": "application/json", "Content-Length": str(len(body))},
                body,
            )
            return
        start = 0
        range_header = headers.get("range")
        if range_header and behaviour.kind not in ("ignore_range",):
            start = int(range_header.removeprefix("bytes=").rstrip("-"))
            if behaviour.kind == "bad_range":
                start = max(0, start - 1)
            if start >= total:
                await self._send(
                    stream,
                    "416 Range Not Satisfiable",
                    {**base, "Content-Range": f"bytes */{total}", "Content-Length": "0"},
                    b"",
                )
                return
            base["Content-Range"] = f"bytes {start}-{total - 1}/{total}"
            status = "206 Partial Content"
        else:
            status = "200 OK"
        body = self.content[start:]
        if behaviour.kind == "longer":
            await self._send(stream, status, base, body + b"extra\n")
            return
        if behaviour.kind == "close_cut":
            await self._send(stream, status, base, body[: behaviour.cut_at])
            return
        base["Content-Length"] = str(len(body))
        if behaviour.kind == "cut":
            await self._send(stream, status, base, body[: behaviour.cut_at])
            return
        if behaviour.kind == "stall":
            await self._send(stream, status, base, body[: behaviour.cut_at])
            await self.stall.wait()
            return
        await self._send(stream, status, base, body)


@asynccontextmanager
async def serve(content: bytes, *script: Behaviour) -> AsyncIterator[RawServer]:
    """Run a :class:`RawServer` on a free port of 127.0.0.1 until the block ends."""
    server = RawServer(content=content, script=list(script))
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    server.port = listener.extra(SocketAttribute.local_port)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, server.handle)
            try:
                yield server
            finally:
                server.stall.set()
                tg.cancel_scope.cancel()
    finally:
        await listener.aclose()
