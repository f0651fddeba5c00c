"""The two heavy passes over a job's input, run in worker threads.

- :func:`validate_input` runs once, when the validation delay has passed: it judges every line
  and keeps a bitmap of the failing ones (one bit per line), so the succeeded/failed split of
  any prefix of processed lines is a popcount.
- :func:`write_results` runs once, when the job turns terminal: it streams the processed lines
  into the output and error files (``.tmp``, fsync, rename), in constant memory. What each
  result line and result file looks like is the wire's :class:`ResultFormat`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from pathlib import Path
from typing import IO, Any, Literal, Protocol

import attrs

from orchestrator.emulator.lines import (
    SIMULATED_FAILURE,
    SIMULATED_TRANSIENT,
    Line,
    LineError,
    fails_transiently,
)
from orchestrator.emulator.rows import FileRow, JobRow
from orchestrator.emulator.rules import InputRules
from orchestrator.emulator.runs import LineRuns
from orchestrator.emulator.simulation import Phase, State, clock_at, line_finished_at
from orchestrator.emulator.synthetic import DEFAULT_MODEL, Synth

ResultKind = Literal["output", "error"]
"""The two result files of a job: the successful lines, and the failed ones."""


class ResultFormat(Protocol):
    """How a wire spells a job's results; :func:`write_results` calls it line by line."""

    def new_file_id(self) -> str:
        """A fresh id for a result file."""
        ...

    def success(self, job: JobRow, line: Line, custom_id: str, body: dict[str, Any]) -> Any:
        """The record of a line that succeeded with the synthetic response ``body``."""
        ...

    def failure(self, job: JobRow, line: Line, error: LineError) -> Any:
        """The record of a line that failed with ``error``."""
        ...

    def expired(self, job: JobRow, line: Line) -> Any | None:
        """The error-file record of a line an expired job never processed (``None``: such
        lines appear in neither file)."""
        ...

    def canceled(self, job: JobRow, line: Line) -> Any | None:
        """The error-file record of a line a cancelled job never processed (``None``: such
        lines appear in neither file; Anthropic writes each as ``canceled``)."""
        ...

    def file_row(
        self, job: JobRow, kind: ResultKind, *, file_id: str, bytes: int, lines: int,
        sha256: str, created_at: int,
    ) -> FileRow:  # fmt: skip
        """The stored description of a result file just written."""
        ...


@attrs.frozen(kw_only=True)
class Written:
    """What :func:`write_results` produced: counts, and the files that have lines."""

    succeeded: int
    failed: int
    """Processed lines that failed (lines an expired job never reached are not counted)."""
    output: FileRow | None
    errors: FileRow | None
    usage: dict[str, int] = attrs.field(factory=dict)
    """``prompt_tokens``, ``completion_tokens``, ``total_tokens`` summed over the successes."""


BITMAP_NAME = "failures.bin"
TRANSIENT_NAME = "transient.bin"
"""The lines that failed transiently on this run (a subset of the failure bitmap)."""
_RUN_BATCH = 4096


def input_paths(job_dir: Path) -> list[Path]:
    """The job's input files, in order (linked or written at create time)."""
    return sorted(job_dir.glob("input-*.jsonl"))


def _fsync_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)


def validate_input(
    job: JobRow, job_dir: Path, rules: InputRules, runs: LineRuns | None = None
) -> tuple[bool, int, list[dict[str, Any]]]:
    """Judge every line of the job's input; store the failure bitmap in ``job_dir``.

    With a ``transient_fraction`` (and ``runs``), each valid line counts one more run of its
    custom_id and fails transiently when :func:`fails_transiently` draws so for that run;
    those lines are also kept in their own bitmap, which the result pass reads.

    Returns:
        ``(usable, failed_total, job_errors)``: ``usable`` is false when the wire's
        :meth:`~orchestrator.emulator.rules.InputRules.verdict` finds errors (Mistral: the
        input is empty or every line is invalid), and ``job_errors`` then says why.
    """
    bitmap = bytearray((job.requests + 7) // 8)
    transient = bytearray(len(bitmap))
    fraction = job.params.transient_fraction if runs is not None else 0.0
    waiting: list[tuple[int, str]] = []
    failed = invalid = count = 0
    problems: Counter[str] = Counter()

    def draw() -> int:
        assert runs is not None
        hits = 0
        numbers = runs.bump([custom_id for _, custom_id in waiting])
        for (index, custom_id), run in zip(waiting, numbers, strict=True):
            if index < job.requests and fails_transiently(
                job.params.seed, custom_id, run, fraction
            ):
                bitmap[index >> 3] |= 1 << (index & 7)
                transient[index >> 3] |= 1 << (index & 7)
                hits += 1
        waiting.clear()
        return hits

    for line in rules.classify(input_paths(job_dir), job):
        count += 1
        if line.error is None:
            if fraction > 0 and line.custom_id is not None:
                waiting.append((line.index, line.custom_id))
                if len(waiting) >= _RUN_BATCH:
                    failed += draw()
            continue
        failed += 1
        if line.index < job.requests:
            bitmap[line.index >> 3] |= 1 << (line.index & 7)
        if line.error is not SIMULATED_FAILURE:
            invalid += 1
            problems[line.error.code] += 1
    if waiting:
        failed += draw()
    if any(transient):
        _fsync_write(job_dir / TRANSIENT_NAME, bytes(transient))
    if count != job.requests:
        # The upload counted lines with the same rule; a mismatch means the files changed.
        raise RuntimeError(f"job {job.id}: input has {count} lines, expected {job.requests}")
    errors = rules.verdict(count=count, invalid=invalid, problems=problems)
    usable = not errors
    if 0 < failed < count:
        _fsync_write(job_dir / BITMAP_NAME, bytes(bitmap))
    return usable, failed, errors


def _bit(bitmap: bytes, index: int) -> bool:
    """Whether line ``index`` is set in ``bitmap`` (a short or empty bitmap: not set)."""
    return index >> 3 < len(bitmap) and bool(bitmap[index >> 3] >> (index & 7) & 1)


def failed_prefix(bitmap: bytes, processed: int) -> int:
    """How many of the first ``processed`` lines fail, from the failure bitmap."""
    full, rest = divmod(processed, 8)
    count = int.from_bytes(bitmap[:full], "little").bit_count()
    if rest:
        count += (bitmap[full] & ((1 << rest) - 1)).bit_count()
    return count


# One encoder for every line: json.dumps with options builds a new encoder per call.
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


class _Sink:
    """One result file being written: ``.tmp`` first, renamed once complete."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tmp = path.with_name(path.name + ".tmp")
        self.handle: IO[bytes] = self.tmp.open("wb", buffering=1 << 20)
        self.lines = 0
        self.bytes = 0
        self.sha = hashlib.sha256()

    def write(self, record: dict[str, Any]) -> None:
        data = _encode(record).encode() + b"\n"
        self.handle.write(data)
        self.sha.update(data)
        self.lines += 1
        self.bytes += len(data)

    def commit(self) -> bool:
        """Publish the file if it has lines; drop it otherwise. Returns whether it exists."""
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()
        if not self.lines:
            self.tmp.unlink()
            return False
        self.tmp.replace(self.path)
        return True

    def abandon(self) -> None:
        self.handle.close()
        self.tmp.unlink(missing_ok=True)


def write_results(
    job: JobRow,
    phase: Phase,
    *,
    job_dir: Path,
    files_dir: Path,
    synth: Synth,
    results: ResultFormat,
    rules: InputRules,
) -> Written:
    """Write the output and error files of a terminal job.

    The processed lines go to the output or the error file; an expired job's unprocessed lines
    go to the error file too if the wire says so (:meth:`ResultFormat.expired`).

    Returns:
        The counts over the processed lines and the rows of the files written (none for an
        empty side).
    """
    tl = job.timeline
    created = int(clock_at(tl, phase.terminal_at or 0.0))
    out = _Sink(files_dir / results.new_file_id())
    err = _Sink(files_dir / results.new_file_id())
    failed = 0
    usage: Counter[str] = Counter()
    expired = phase.state is State.EXPIRED
    cancelled = phase.state is State.CANCELLED
    transient_path = job_dir / TRANSIENT_NAME
    transient = transient_path.read_bytes() if transient_path.exists() else b""
    try:
        if phase.processed or expired or cancelled:
            for line in rules.classify(input_paths(job_dir), job):
                if line.index >= phase.processed:
                    record = (
                        results.expired(job, line)
                        if expired
                        else results.canceled(job, line)
                        if cancelled
                        else None
                    )
                    if record is None:
                        break
                    err.write(record)
                    continue
                error = line.error
                if error is None and _bit(transient, line.index):
                    error = SIMULATED_TRANSIENT
                if error is not None:
                    failed += 1
                    err.write(results.failure(job, line, error))
                    continue
                assert line.body is not None
                custom_id = line.custom_id if line.custom_id is not None else str(line.index)
                model = job.model or line.body.get("model") or DEFAULT_MODEL
                when = int(line_finished_at(tl, line.index))
                body = synth.body(job.endpoint, custom_id, line.body, str(model), when)
                _add_usage(usage, body.get("usage"))
                out.write(results.success(job, line, custom_id, body))
        rows: dict[ResultKind, FileRow | None] = {}
        sinks: tuple[tuple[_Sink, ResultKind], ...] = ((out, "output"), (err, "error"))
        for sink, kind in sinks:
            rows[kind] = None
            if sink.commit():
                rows[kind] = results.file_row(
                    job,
                    kind,
                    file_id=sink.path.name,
                    bytes=sink.bytes,
                    lines=sink.lines,
                    sha256=sink.sha.hexdigest(),
                    created_at=created,
                )
    except BaseException:
        out.abandon()
        err.abandon()
        raise
    return Written(
        succeeded=out.lines,
        failed=failed,
        output=rows["output"],
        errors=rows["error"],
        usage={key: usage[key] for key in _USAGE_KEYS},
    )


_USAGE_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens")
# Chat-style names first, then the Responses API's (input/output tokens).
_USAGE_ALIASES = (("prompt_tokens", "input_tokens"), ("completion_tokens", "output_tokens"))


def _add_usage(total: Counter[str], usage: Any) -> None:
    if not isinstance(usage, dict):
        return
    for key, alias in (*_USAGE_ALIASES, ("total_tokens", "total_tokens")):
        value = usage.get(key, usage.get(alias))
        if isinstance(value, int):
            total[key] += value
