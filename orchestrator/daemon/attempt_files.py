"""The file work of line retries, in constant memory: which lines to run again, and the merge.

Both passes key result lines by custom_id in an on-disk index (a throwaway SQLite file beside
the job's results, never a dict of every line), so a job of a million lines costs the same
memory as one of ten. Every file they publish is written to ``.part``, fsynced and renamed:
a crash leaves nothing half-written under a final name, and each pass simply runs again.

Layout of a job that retried (``<folder>`` is the job's results folder, or a part's)::

    <folder>/attempts/01/output.jsonl, errors.jsonl      attempt 1 (the job's own remote job)
    <folder>/attempts/02/input.jsonl                     the lines attempt 2 runs again
    <folder>/attempts/02/output.jsonl, errors.jsonl, job.json
    <folder>/output.jsonl, errors.jsonl, job.json        the merged answer (after the last)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sqlite3
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import attrs

from orchestrator.fsutil import discard, ensure_dir, fsync_dir, part_path, publish
from orchestrator.retries import Reason, ResultLines, Verdict

ATTEMPTS_DIR = "attempts"
ATTEMPT_INPUT = "input.jsonl"
_BATCH = 2000


def attempt_folder(folder: Path, number: int) -> Path:
    """Where attempt ``number`` of the job whose results go to ``folder`` keeps its files."""
    return folder / ATTEMPTS_DIR / f"{number:02d}"


def input_lines(paths: Sequence[str | Path]) -> Iterator[bytes]:
    """The request lines of ``paths`` in order, each ending in a newline (blank ones skipped)."""
    for path in paths:
        with open(path, "rb") as stream:
            for line in stream:
                if line.strip():
                    yield line if line.endswith(b"\n") else line + b"\n"


def custom_id_of(line: bytes) -> str | None:
    """The custom_id of a request line (validated at intake), or None if it has none."""
    try:
        data = json.loads(line)
    except ValueError:
        return None
    value = data.get("custom_id") if isinstance(data, dict) else None
    return value if isinstance(value, str) and value else None


def _records(path: Path) -> Iterator[tuple[int, int, object]]:
    """``(offset, length, parsed record)`` of each line of a result file."""
    offset = 0
    with path.open("rb") as stream:
        for line in stream:
            length = len(line)
            if line.strip():
                try:
                    record: object = json.loads(line)
                except ValueError:
                    record = None
                yield offset, length, record
            offset += length


@contextlib.contextmanager
def _index(folder: Path, name: str) -> Iterator[sqlite3.Connection]:
    """A throwaway on-disk SQLite index in ``folder`` (removed afterwards, and before)."""
    ensure_dir(folder)
    path = folder / name
    for leftover in (path, path.with_name(path.name + "-journal")):
        discard(leftover)
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=OFF")
        db.execute("PRAGMA synchronous=OFF")
        db.execute("PRAGMA cache_size=-32000")  # at most ~32 MB of pages, whatever the size
        db.execute("PRAGMA temp_store=FILE")
        yield db
    finally:
        db.close()
        discard(path)


@attrs.frozen(kw_only=True)
class RetryInput:
    """What :func:`write_retry_input` wrote: the next attempt's lines, counted by reason."""

    path: Path
    lines: int
    reasons: dict[str, int]
    prompt_tokens: int = 0


def write_retry_input(
    *,
    inputs: Sequence[str],
    results: Sequence[Path],
    rules: ResultLines,
    never_ran: Reason | None,
    dest: Path,
    tokens: Any = None,
) -> RetryInput:
    """Write the lines of ``inputs`` to run again into ``dest``, atomically; count them.

    ``results`` are the attempt's output and error files; a line is run again when its
    result says so (:attr:`Verdict.RETRY`), or when it has no result and ``never_ran``
    gives a reason to (the remote job expired, or failed before processing anything).
    Lines are copied byte for byte from ``inputs`` (the job's original input lines), in
    order. ``tokens`` (a function of a parsed request) sums their prompt-token estimate.
    Nothing is published when no line is to run again (the count says 0).
    """
    reasons: Counter[str] = Counter()
    count = tokens_total = 0
    folder = dest.parents[2]  # the job's results folder: attempts/NN/ only if lines are due
    with _index(folder, f".verdicts-{dest.parent.name}.sqlite") as db:
        db.execute(
            "CREATE TABLE v (cid TEXT PRIMARY KEY, retry INTEGER, reason TEXT) WITHOUT ROWID"
        )
        db.execute("BEGIN")
        rows: list[tuple[str, int, str | None]] = []
        for path in results:
            for _, _, record in _records(path):
                result = rules.classify(record)
                if result.custom_id is None:
                    continue
                retry = result.verdict is Verdict.RETRY
                reason = result.reason.value if result.reason else None
                rows.append((result.custom_id, int(retry), reason))
                if len(rows) >= _BATCH:
                    db.executemany("INSERT OR REPLACE INTO v VALUES (?, ?, ?)", rows)
                    rows.clear()
        db.executemany("INSERT OR REPLACE INTO v VALUES (?, ?, ?)", rows)
        db.execute("COMMIT")
        part = folder / f".attempt-{dest.parent.name}-{dest.name}.part"
        with part.open("wb") as out:
            for line in input_lines(inputs):
                custom_id = custom_id_of(line)
                if custom_id is None:
                    continue
                found = db.execute("SELECT retry, reason FROM v WHERE cid = ?", (custom_id,))
                hit = found.fetchone()
                if hit is None:
                    if never_ran is None:
                        continue
                    reason = never_ran.value
                elif hit[0]:
                    reason = hit[1] or Reason.TRANSIENT.value
                else:
                    continue
                out.write(line)
                reasons[reason] += 1
                count += 1
                if tokens is not None:
                    tokens_total += tokens(json.loads(line))
            out.flush()
            os.fsync(out.fileno())
    if count:
        publish_input(part, dest)
    else:
        discard(part)
    return RetryInput(path=dest, lines=count, reasons=dict(reasons), prompt_tokens=tokens_total)


def publish_input(part: Path, dest: Path) -> None:
    """Move a complete, fsynced retry input from beside the results onto ``dest`` durably
    (its ``attempts/NN/`` folder is made only now: no folder for an attempt never made)."""
    ensure_dir(dest.parent)
    os.replace(part, dest)
    fsync_dir(dest.parent)
    fsync_dir(part.parent)


@attrs.frozen(kw_only=True)
class MergedFile:
    """One merged file as published: where, its size, digest and lines."""

    path: Path
    bytes: int
    sha256: str
    lines: int


class _Sink:
    def __init__(self, dest: Path) -> None:
        self.dest = dest
        self.part = part_path(dest)
        self.handle: IO[bytes] = self.part.open("wb", buffering=1 << 20)
        self.sha = hashlib.sha256()
        self.bytes = self.lines = 0

    def write(self, line: bytes) -> None:
        if not line.endswith(b"\n"):
            line += b"\n"
        self.handle.write(line)
        self.sha.update(line)
        self.bytes += len(line)
        self.lines += 1

    def flush(self) -> None:
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()

    def measured(self) -> MergedFile:
        return MergedFile(
            path=self.dest, bytes=self.bytes, sha256=self.sha.hexdigest(), lines=self.lines
        )


def merge_attempts(
    *,
    inputs: Sequence[str],
    attempts: Sequence[Sequence[Path]],
    rules: ResultLines,
    output: Path,
    errors: Path,
    never_ran_message: str,
) -> tuple[MergedFile, MergedFile]:
    """Merge the attempts' result files into one answer per request, in input order.

    ``attempts`` lists each attempt's result files (output, errors), first attempt first.
    For each request of ``inputs``: its successful line if some attempt succeeded (a
    succeeded request is never retried, so there is at most one), else its last error line,
    else (no attempt ran it) a line from ``rules.never_ran``. Both files are written to
    ``.part`` first and renamed only once both are complete and fsynced. An empty side is
    still published (0 lines) so that the result folder always holds both names.
    """
    folder = output.parent
    with _index(folder, ".merge.sqlite") as db:
        db.execute(
            "CREATE TABLE m (cid TEXT PRIMARY KEY, ok INTEGER, src INTEGER, off INTEGER, "
            "len INTEGER) WITHOUT ROWID"
        )
        sources: list[Path] = []
        db.execute("BEGIN")
        for files in attempts:
            for path in files:
                src = len(sources)
                sources.append(path)
                rows = []
                for offset, length, record in _records(path):
                    result = rules.classify(record)
                    if result.custom_id is None:
                        continue
                    ok = int(result.verdict is Verdict.SUCCEEDED)
                    rows.append((result.custom_id, ok, src, offset, length))
                    if len(rows) >= _BATCH:
                        _upsert(db, rows)
                        rows.clear()
                _upsert(db, rows)
        db.execute("COMMIT")
        out, err = _Sink(output), _Sink(errors)
        handles = [path.open("rb") for path in sources]
        try:
            for line in input_lines(inputs):
                custom_id = custom_id_of(line)
                if custom_id is None:
                    continue
                hit = db.execute(
                    "SELECT ok, src, off, len FROM m WHERE cid = ?", (custom_id,)
                ).fetchone()
                if hit is None:
                    record = rules.never_ran(custom_id, never_ran_message)
                    err.write(json.dumps(record, separators=(",", ":")).encode())
                    continue
                ok, src, offset, length = hit
                handle = handles[src]
                handle.seek(offset)
                (out if ok else err).write(handle.read(length))
            out.flush()
            err.flush()
        except BaseException:
            for sink in (out, err):
                sink.handle.close()
                discard(sink.part)
            raise
        finally:
            for handle in handles:
                handle.close()
    os.replace(out.part, output)
    os.replace(err.part, errors)
    fsync_dir(folder)
    return out.measured(), err.measured()


def _upsert(db: sqlite3.Connection, rows: list[tuple[str, int, int, int, int]]) -> None:
    # A success stays; a later error replaces an earlier one (the last error is kept).
    db.executemany(
        "INSERT INTO m VALUES (?, ?, ?, ?, ?) ON CONFLICT (cid) DO UPDATE SET "
        "ok = excluded.ok, src = excluded.src, off = excluded.off, len = excluded.len "
        "WHERE m.ok = 0",
        rows,
    )


def keep_copy(source: Path, dest: Path) -> None:
    """Give ``dest`` the bytes of ``source`` (a hard link, else a copy), atomically; the
    source stays until the caller removes it, so a crash in between loses nothing."""
    ensure_dir(dest.parent)
    part = part_path(dest)
    discard(part)
    try:
        os.link(source, part)
    except OSError:
        shutil.copyfile(source, part)
        with part.open("rb+") as handle:
            os.fsync(handle.fileno())
    publish(part, dest)


def remove_attempts(folder: Path) -> bool:
    """Remove a finished job's ``attempts/`` folder; True if there was one."""
    root = folder / ATTEMPTS_DIR
    if not root.exists():
        return False
    shutil.rmtree(root)
    fsync_dir(folder)
    return True
