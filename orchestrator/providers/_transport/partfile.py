"""The ``.part`` file of a download: running hash and line count, crash checkpoints, publish.

Split from :mod:`.download` so the pipeline (network reads overlapped with hashing and writing)
reads on its own; this half is synchronous and runs in worker threads. Beside the ``.part``
sits ``<dest>.part.json`` naming the source file and the byte count known to be on disk, which
is what lets a later call resume after a crash rather than start again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

import attrs

from orchestrator import fsutil
from orchestrator.errors import DownloadIntegrityError
from orchestrator.providers._transport.usage import UsageReader, UsageScan
from orchestrator.usage import ZERO_USAGE, Usage

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


class PartFile:
    """The ``.part`` being written, with its running hash, line count and, given the dialect's
    ``usage_reader``, token usage (sync; thread-side)."""

    def __init__(
        self,
        dest: Path,
        source: str,
        writer: str | None = None,
        *,
        usage_reader: UsageReader | None = None,
    ) -> None:
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
        self._usage_reader = usage_reader
        self._scan = None if usage_reader is None else UsageScan(usage_reader)
        self._file: BinaryIO | None = None

    @property
    def file(self) -> BinaryIO:
        assert self._file is not None, "the .part is not open"
        return self._file

    @property
    def lines(self) -> int:
        """Lines so far: newlines, plus one for a last line without a newline."""
        return self.newlines + (1 if self.size and self.last_byte != b"\n" else 0)

    def usage(self) -> Usage:
        """The tokens the lines so far report (zero when the dialect reads none); call once,
        at the end: the last line may lack its newline."""
        return ZERO_USAGE if self._scan is None else self._scan.usage(self.lines)

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
        if self._scan is not None:
            self._scan.feed(chunk)  # the same pass: no second read of the file

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
        if self._usage_reader is not None:
            self._scan = UsageScan(self._usage_reader)
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
