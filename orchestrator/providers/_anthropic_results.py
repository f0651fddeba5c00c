"""A Message Batch's results stream, split while it downloads into the product's two files.

``GET <results_url>`` answers ``application/x-jsonl``: one ``{custom_id, result}`` line per
request, in any order (``shared/api/anthropic-batches.md`` §2, §5). Lines whose ``result.type``
is ``succeeded`` go to ``output.jsonl``; ``errored``, ``canceled`` and ``expired`` go to
``errors.jsonl``; each line byte for byte as Anthropic sent it. Both files are written as
``.part`` (hashed and counted as they fill), fsynced, and published together only once the
stream ended whole and every check passed: a line that is not such an object, a ``custom_id``
twice, or counts that differ from the batch's ``request_counts`` discard both parts. The
custom_ids are kept so the caller can confirm the batch is the one it submitted.

Token usage is summed in the same pass (every line is parsed here anyway): a succeeded line's
``result.message.usage``, where ``input_tokens`` plus the prompt-cache counts
(``cache_creation_input_tokens``, ``cache_read_input_tokens``) are the prompt tokens and
``output_tokens`` the completion tokens; an errored, canceled or expired line has none and is
counted as a line without usage.

There is no resume: the stream has no documented ``Range`` support and its order may differ
between two reads, so a broken transfer starts again.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Collection
from pathlib import Path
from typing import Any, BinaryIO

import attrs

from orchestrator import fsutil
from orchestrator.errors import DownloadIntegrityError
from orchestrator.providers._anthropic_lines import id_set_digest
from orchestrator.providers._transport.partfile import part_path
from orchestrator.providers.base import DownloadedFile
from orchestrator.usage import Usage

SIDE_OF: dict[str, str] = {
    "succeeded": "output",
    "errored": "error",
    "canceled": "error",
    "expired": "error",
}
"""Where each result type goes."""


@attrs.define
class _Side:
    dest: Path
    part: Path
    handle: BinaryIO
    hasher: hashlib._Hash = attrs.field(factory=hashlib.sha256)
    bytes: int = 0
    lines: int = 0
    usage: Usage = attrs.field(factory=Usage)


class ResultSplit:
    """One pass over a results stream (feed it chunks in order, then :meth:`finish`).

    Runs its file work in the caller's thread: call it from a worker thread.
    """

    def __init__(self, dests: dict[str, Path], *, source: str, writer: str | None) -> None:
        self._source = source
        self._sides: dict[str, _Side] = {}
        for kind, dest in dests.items():
            part = part_path(dest, writer)
            part.parent.mkdir(parents=True, exist_ok=True)
            self._sides[kind] = _Side(dest=dest, part=part, handle=part.open("wb"))
        self._tail = b""
        self._line = 0
        self.types: Counter[str] = Counter()
        self.custom_ids: set[str] = set()

    def feed(self, chunk: bytes) -> None:
        data = self._tail + chunk
        cut = data.rfind(b"\n") + 1
        self._tail = data[cut:]
        start = 0
        while start < cut:
            end = data.index(b"\n", start, cut) + 1
            self._one(data[start:end])
            start = end

    def _one(self, raw: bytes) -> None:
        self._line += 1
        if not raw.strip():
            return
        line = raw if raw.endswith(b"\n") else raw + b"\n"
        try:
            record = json.loads(raw)
            custom_id = record["custom_id"]
            kind = record["result"]["type"]
        except (ValueError, KeyError, TypeError):
            raise self._bad("is not a {custom_id, result: {type}} object") from None
        if not isinstance(custom_id, str) or kind not in SIDE_OF:
            raise self._bad(f"has result type {str(kind)[:40]!r} or a non-string custom_id")
        if custom_id in self.custom_ids:
            raise self._bad(f"repeats custom_id {custom_id!r}")
        self.custom_ids.add(custom_id)
        self.types[kind] += 1
        side = self._sides[SIDE_OF[kind]]
        side.handle.write(line)
        side.hasher.update(line)
        side.bytes += len(line)
        side.lines += 1
        side.usage += _usage_of(record["result"])

    def _bad(self, why: str) -> DownloadIntegrityError:
        return DownloadIntegrityError(f"{self._source}: results line {self._line} {why}")

    def verify(self, expected: dict[str, int] | None) -> None:
        """Read the last line and check the counts against ``expected``.

        Raises:
            DownloadIntegrityError: a malformed last line, or counts other than ``expected``
                (``{result type: count}``, from ``request_counts``).
        """
        if self._tail:
            self._one(self._tail)
            self._tail = b""
        if expected is not None:
            got = {kind: self.types.get(kind, 0) for kind in SIDE_OF}
            if got != {kind: expected.get(kind, 0) for kind in SIDE_OF}:
                raise DownloadIntegrityError(
                    f"{self._source}: the results hold {got} but the batch reports "
                    f"request_counts {expected}; downloading again"
                )

    def publish(self, wanted: Collection[str]) -> dict[str, DownloadedFile]:
        """Fsync and publish the files (call after :meth:`verify`): each kind that has lines
        or is ``wanted``; an empty side nobody asked for is dropped, as other dialects have
        no error file when nothing failed."""
        for side in self._sides.values():
            side.handle.flush()
            os.fsync(side.handle.fileno())
            side.handle.close()
        files = {}
        for kind, side in self._sides.items():
            if not side.lines and kind not in wanted:
                fsutil.discard(side.part)
                continue
            fsutil.publish(side.part, side.dest)
            files[kind] = DownloadedFile(
                path=side.dest,
                bytes=side.bytes,
                sha256=side.hasher.hexdigest(),
                lines=side.lines,
                usage=side.usage,
            )
        return files

    def digest(self) -> str:
        """The sha256 of the set of custom_ids seen (as :func:`id_set_digest`)."""
        return id_set_digest(self.custom_ids)

    def abandon(self) -> None:
        """Close and remove both parts (nothing is published)."""
        for side in self._sides.values():
            side.handle.close()
            fsutil.discard(side.part)


_PROMPT_KEYS = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")


def _tokens(value: object) -> int:
    return value if type(value) is int and value >= 0 else 0


def _usage_of(result: dict[str, Any]) -> Usage:
    """One result line's usage (``result.message.usage``), or a line without usage."""
    message = result.get("message")
    usage = message.get("usage") if isinstance(message, dict) else None
    if not isinstance(usage, dict):
        return Usage(lines=1, lines_without_usage=1)
    prompt = sum(_tokens(usage.get(key)) for key in _PROMPT_KEYS)
    completion = _tokens(usage.get("output_tokens"))
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        lines=1,
    )
