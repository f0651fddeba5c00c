"""Receiving a multipart upload straight to disk, in constant memory.

The body is parsed as it arrives (``python-multipart``'s streaming parser): the ``file`` part
goes to a ``.tmp`` file in buffered writes while its bytes, sha256 and non-blank lines are
counted; other parts are small form fields. Past the size limit nothing more is written, the
rest of the body is read and discarded (so the client gets a clean answer), and the upload is
refused.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path
from typing import IO

import anyio.to_thread
import attrs
from python_multipart import MultipartParser
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import parse_options_header
from starlette.requests import Request

from orchestrator.emulator.checks import Checker
from orchestrator.emulator.lines import LineCounter

_FLUSH_BYTES = 4 << 20
_MAX_FIELD_BYTES = 64 << 10


@attrs.frozen(kw_only=True)
class Upload:
    """A received upload: the file part on disk and the form fields."""

    fields: dict[str, str]
    tmp_path: Path | None
    filename: str | None
    content_type: str | None
    bytes: int
    lines: int
    sha256: str
    too_large: bool


class _Receiver:
    """The parser callbacks: one part at a time, headers then data."""

    def __init__(self, tmp_dir: Path, max_bytes: int) -> None:
        self.tmp_dir = tmp_dir
        self.max_bytes = max_bytes
        self.fields: dict[str, str] = {}
        self.tmp_path: Path | None = None
        self.handle: IO[bytes] | None = None
        self.filename: str | None = None
        self.content_type: str | None = None
        self.size = 0
        self.too_large = False
        self.sha = hashlib.sha256()
        self.counter = LineCounter()
        self.pending = bytearray()
        self._headers: dict[str, str] = {}
        self._field = b""
        self._value = b""
        self._part: str | None = None
        self._is_file = False
        self._text = bytearray()

    def on_part_begin(self) -> None:
        self._headers = {}
        self._part = None
        self._is_file = False
        self._text = bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._field.decode("latin-1").lower()] = self._value.decode("latin-1")
        self._field = self._value = b""

    def on_headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get("content-disposition", ""))
        name = params.get(b"name", b"").decode("utf-8", "replace")
        self._part = name
        if name == "file" and self.tmp_path is None:
            self._is_file = True
            raw = params.get(b"filename")
            self.filename = raw.decode("utf-8", "replace") if raw is not None else "file"
            self.content_type = self._headers.get("content-type")
            self.tmp_path = self.tmp_dir / f"{uuid.uuid4()}.tmp"
            self.handle = self.tmp_path.open("wb")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._is_file:
            if self.too_large:
                return
            chunk = data[start:end]
            self.size += len(chunk)
            if self.size > self.max_bytes:
                self.too_large = True
                self.pending.clear()
                return
            self.sha.update(chunk)
            self.counter.feed(chunk)
            self.pending += chunk
        elif len(self._text) < _MAX_FIELD_BYTES:
            self._text += data[start:end]

    def on_part_end(self) -> None:
        if not self._is_file and self._part:
            self.fields[self._part] = self._text[:_MAX_FIELD_BYTES].decode("utf-8", "replace")

    def take_pending(self) -> bytes:
        data = bytes(self.pending)
        self.pending.clear()
        return data


def _write_and_sync(handle: IO[bytes], data: bytes, final: bool) -> None:
    handle.write(data)
    if final:
        handle.flush()
        os.fsync(handle.fileno())
        handle.close()


def _feed(parser: MultipartParser, chunk: bytes | None) -> None:
    try:
        if chunk is None:
            parser.finalize()
        else:
            parser.write(chunk)
    except FormParserError as exc:
        check = Checker()
        check.fail("value_error", ("body",), f"Malformed multipart body: {exc}", None)
        check.raise_if_any()


async def receive_upload(request: Request, tmp_dir: Path, max_bytes: int) -> Upload:
    """Stream a ``multipart/form-data`` body to a temporary file.

    Args:
        request: the upload request.
        tmp_dir: where the ``.tmp`` file goes (the final folder, so a rename publishes it).
        max_bytes: the largest accepted file part.

    Raises:
        RequestInvalid: the body is not multipart form data.
    """
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        check = Checker()
        check.fail(
            "missing",
            ("body", "file"),
            "Field required (send multipart/form-data with a `file` part)",
            None,
        )
        check.raise_if_any()
        raise AssertionError("unreachable")
    receiver = _Receiver(tmp_dir, max_bytes)
    callbacks = {
        name: getattr(receiver, name)
        for name in (
            "on_part_begin",
            "on_header_field",
            "on_header_value",
            "on_header_end",
            "on_headers_finished",
            "on_part_data",
            "on_part_end",
        )
    }
    parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
    try:
        async for chunk in request.stream():
            _feed(parser, chunk)
            if receiver.handle is not None and len(receiver.pending) >= _FLUSH_BYTES:
                await anyio.to_thread.run_sync(
                    _write_and_sync, receiver.handle, receiver.take_pending(), False
                )
        _feed(parser, None)
        if receiver.handle is not None:
            await anyio.to_thread.run_sync(
                _write_and_sync, receiver.handle, receiver.take_pending(), True
            )
    except BaseException:
        if receiver.handle is not None:
            receiver.handle.close()
        if receiver.tmp_path is not None:
            receiver.tmp_path.unlink(missing_ok=True)
        raise
    if receiver.too_large and receiver.tmp_path is not None:
        receiver.tmp_path.unlink(missing_ok=True)
    return Upload(
        fields=receiver.fields,
        tmp_path=None if receiver.too_large else receiver.tmp_path,
        filename=receiver.filename,
        content_type=receiver.content_type,
        bytes=receiver.size,
        lines=receiver.counter.finish(),
        sha256=receiver.sha.hexdigest(),
        too_large=receiver.too_large,
    )
