"""Split jobs: part inputs written at intake, and the parent carried to ``done``.

A job larger than its part size (``split_requests``) is split at intake into parts of at most
that many requests, in input order; each part is an ordinary job that admission, submission,
polling, collection, recovery and cancel handle like any other. Everything a split job keeps
on disk sits in its own results folder::

    <results>/<name>/output.jsonl, errors.jsonl, job.json     the merged results (design §9)
    <results>/<name>/parts/0001/input.jsonl                   the part's input (written here)
    <results>/<name>/parts/0001/output.jsonl, errors.jsonl, job.json   the part's results

:class:`PartsKeeper` runs in the collection loop of the parent's workspace: it moves the
parent ``queued -> running`` when its first part leaves ``queued``, keeps its counts and a
``parts: ...`` status summary current, moves it ``running -> collecting`` when every part is
final, then merges the parts' files (part order, atomic, verified line counts), writes
``job.json`` and moves it to ``done``. Only then is ``parts/`` removed. A crash anywhere before
``done`` redoes the merge from the parts' files on restart.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import anyio
import attrs
import structlog

from orchestrator.daemon.context import Runtime, WorkspaceRuntime, retry_later
from orchestrator.daemon.layout import (
    PARTS_DIR,
    RESULT_NAMES,
    job_summary,
    part_folder,
)
from orchestrator.errors import OrchestratorError, StaleTransition
from orchestrator.fsutil import atomic_write, ensure_dir, fsync_dir, write_json_atomic
from orchestrator.inputs import estimate_tokens, output_cap
from orchestrator.ledger import FileKind, PartSpec, ResultFile
from orchestrator.model import (
    FINAL_STATES,
    Job,
    JobChanges,
    JobState,
    parent_aggregate,
)
from orchestrator.pricing import rolled_up, rolled_up_cost
from orchestrator.usage import Usage

log = structlog.get_logger(__name__)

PART_INPUT = "input.jsonl"
_CHUNK = 1 << 20


class MergeMismatch(OrchestratorError):
    """A merged file does not hold the lines its parts recorded (retried, never final)."""


def write_part_inputs(
    inputs: Sequence[str],
    results: Path,
    name: str,
    size: int,
    sha256: Sequence[str] | None = None,
    max_bytes: int | None = None,
    max_tokens: int | None = None,
) -> list[PartSpec]:
    """Write the parts of a job: ``size`` requests each (the last may hold fewer), in order.

    With ``max_bytes`` (the provider's upload limit) a part is also closed before it would
    grow past that many bytes: parts are uploaded as one file each, and one spanning two
    input files could otherwise be larger than either. With ``max_tokens`` (the model's token
    budget) a part is closed before its estimated prompt tokens would pass it. Each part
    records its token estimate (:func:`~orchestrator.inputs.estimate_tokens` of its lines,
    parsed again here: about as long as the scan's parse, and only for split jobs).

    Lines are copied byte for byte (a last line without a newline gets one), spanning input
    files as needed. Each part is written atomically (``.part``, fsync, rename, fsync the
    folder). An earlier ``parts/`` of the same name (a crash before the ledger recorded the
    job) is removed first: nothing refers to it. With ``sha256`` (the validated inputs'
    digests), an input whose bytes changed since validation fails the split.

    Raises:
        OSError: an input cannot be read, changed since validation, or a part cannot be
            written (nothing is published then).
    """
    root = results / name / PARTS_DIR
    shutil.rmtree(root, ignore_errors=True)
    writer = _PartWriter(results, name, size, max_bytes, max_tokens)
    try:
        for index, path in enumerate(inputs):
            digest = hashlib.sha256()
            with open(path, "rb") as stream:
                for line in stream:
                    digest.update(line)
                    if not line.strip():
                        continue  # validation allows none but a final newline
                    writer.add(line if line.endswith(b"\n") else line + b"\n")
            if sha256 is not None and digest.hexdigest() != sha256[index]:
                raise OSError(
                    f"job {name!r}: {path} changed after it was validated; it is read again "
                    "at the next scan"
                )
        writer.close()
    except BaseException:
        writer.abort()
        shutil.rmtree(root, ignore_errors=True)  # parts of a failed split are nobody's
        raise
    return writer.parts


class _PartWriter:
    """Fills part files one after the other, publishing each when it is full."""

    def __init__(
        self, results: Path, name: str, size: int, max_bytes: int | None, max_tokens: int | None
    ) -> None:
        self._results = results
        self._name = name
        self._size = size
        self._max_bytes = max_bytes
        self._max_tokens = max_tokens
        self._open: Any = None
        self._lines = 0
        self._bytes = 0
        self._tokens = 0
        self._caps = 0
        self._uncapped = 0
        self.parts: list[PartSpec] = []

    def add(self, line: bytes) -> None:
        tokens, cap = _line_tokens(line)
        if self._open is not None and (
            (self._max_bytes is not None and self._bytes + len(line) > self._max_bytes)
            or (self._max_tokens is not None and self._tokens + tokens > self._max_tokens)
        ):
            self.close()
        if self._open is None:
            folder = part_folder(self._results, self._name, len(self.parts) + 1)
            self._open = atomic_write(folder / PART_INPUT)
            self._file = self._open.__enter__()
            self._dest = folder / PART_INPUT
            self._lines = 0
            self._bytes = 0
            self._tokens = 0
            self._caps = 0
            self._uncapped = 0
        self._file.write(line)
        self._lines += 1
        self._bytes += len(line)
        self._tokens += tokens
        if cap is None:
            self._uncapped += 1
        else:
            self._caps += cap
        if self._lines == self._size:
            self.close()

    def close(self) -> None:
        if self._open is not None:
            self._open.__exit__(None, None, None)
            self._open = None
            self.parts.append(
                PartSpec(
                    inputs=(str(self._dest),),
                    request_count=self._lines,
                    prompt_tokens=self._tokens,
                    max_output_tokens=self._caps,
                    uncapped_requests=self._uncapped,
                )
            )

    def abort(self) -> None:
        if self._open is not None:
            self._open.__exit__(RuntimeError, RuntimeError("aborted"), None)
            self._open = None


def _line_tokens(line: bytes) -> tuple[int, int | None]:
    """The token estimate and output cap of one validated line (0 and None if it no longer
    parses: the sha256 check of the split then fails the whole split anyway)."""
    try:
        request = json.loads(line)
    except ValueError:
        return 0, None
    if type(request) is not dict:
        return 0, None
    return estimate_tokens(request), output_cap(request)


@attrs.frozen(kw_only=True)
class Merged:
    """One merged file as written: where, its size, digest and lines."""

    path: Path
    bytes: int
    sha256: str
    lines: int


def merge_files(sources: Iterable[Path], dest: Path) -> Merged:
    """Concatenate ``sources`` in order into ``dest`` atomically, durably, and measured.

    A source whose last line lacks a newline gets one, so the result stays JSON Lines.

    Raises:
        OSError: a source cannot be read or ``dest`` cannot be written.
    """
    digest = hashlib.sha256()
    size = lines = 0
    with atomic_write(dest) as out:
        for source in sources:
            last = b"\n"
            with open(source, "rb") as stream:
                for chunk in iter(lambda: stream.read(_CHUNK), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                    lines += chunk.count(b"\n")
                    last = chunk[-1:]
            if last != b"\n":
                out.write(b"\n")
                digest.update(b"\n")
                size += 1
                lines += 1
    return Merged(path=dest, bytes=size, sha256=digest.hexdigest(), lines=lines)


def remove_parts(results: Path, name: str) -> bool:
    """Remove a finished split job's ``parts/`` folder; True if there was one."""
    root = results / name / PARTS_DIR
    if not root.exists():
        return False
    shutil.rmtree(root)
    fsync_dir(root.parent)
    return True


class PartsKeeper:
    """Carries the split jobs of one workspace from ``queued`` to ``done`` (see the module)."""

    def __init__(self, runtime: Runtime, workspace: WorkspaceRuntime) -> None:
        self._rt = runtime
        self._ws = workspace
        self._swept = False

    async def cycle(self) -> float | None:
        """One pass over the unfinished parents; returns a retry delay, or None."""
        ledger, results = self._rt.ledger, self._rt.results_dir
        if not self._swept:
            # parts/ of a parent that reached done just before a crash.
            for parent in await ledger.parents(states=(JobState.DONE,), workspace=self._ws.name):
                await anyio.to_thread.run_sync(remove_parts, results, parent.name)
            self._swept = True
        now = self._rt.clock.now()
        waits: list[float] = []
        # Queued parents have no holder (the first replica to move one claims it); running
        # and collecting ones are followed by the replica that holds them.
        parents = await ledger.parents(
            states=(JobState.QUEUED, JobState.RUNNING, JobState.COLLECTING),
            workspace=self._ws.name,
            held=True,
        )
        for parent in parents:
            structlog.contextvars.bind_contextvars(job=parent.name, job_id=parent.id)
            try:
                parent = await self._advance(parent)
                if parent.state is JobState.COLLECTING and not self._rt.stopping.is_set():
                    if parent.not_before is not None and parent.not_before > now:
                        waits.append(parent.not_before - now)
                    else:
                        await self._merge_guarded(parent)
            except StaleTransition as exc:
                log.info("parts.lost_race", job=parent.name, detail=str(exc))
            finally:
                structlog.contextvars.unbind_contextvars("job", "job_id")
        return min(waits) if waits else None

    async def _advance(self, parent: Job) -> Job:
        """Follow the parts: queued -> running -> collecting, with counts and summary."""
        ledger = self._rt.ledger
        parts = await ledger.parts(parent.id)
        agg = parent_aggregate(parts)
        counts: JobChanges = {
            "total": agg.total,
            "completed": agg.completed,
            "succeeded": agg.succeeded,
            "failed": agg.failed,
            "remote_status": agg.remote_status,
        }
        if parent.state is JobState.QUEUED and agg.state is not JobState.QUEUED:
            parent = await ledger.transition(
                parent.id,
                JobState.QUEUED,
                JobState.RUNNING,
                detail="first part left the queue",
                **counts,
            )
            self._rt.activity.wake()
        if parent.state is JobState.RUNNING and agg.state is JobState.COLLECTING:
            final: JobChanges = {
                **counts,
                "outcome": agg.outcome,
                "error": rejected_parts_error(parts),
            }
            parent = await ledger.transition(
                parent.id,
                JobState.RUNNING,
                JobState.COLLECTING,
                detail="every part is final",
                **final,
            )
            log.info("parts.all_final", job=parent.name, outcome=agg.outcome)
            self._rt.activity.wake()
        elif parent.state is not JobState.COLLECTING and (
            (parent.total, parent.completed, parent.succeeded, parent.failed, parent.remote_status)
            != (agg.total, agg.completed, agg.succeeded, agg.failed, agg.remote_status)
        ):
            parent = await ledger.update(parent.id, parent.state, **counts)
        return parent

    async def _merge_guarded(self, parent: Job) -> None:
        try:
            await self.merge(parent)
        except (OrchestratorError, OSError) as exc:
            await retry_later(self._rt, parent, f"merging the parts failed, will retry: {exc}")
            log.warning("parts.merge_retry_later", job=parent.name, error=str(exc))

    async def merge(self, parent: Job) -> Job:
        """Merge the parts' files, record them, write job.json, finish, remove ``parts/``.

        Raises:
            MergeMismatch: a merged file's lines differ from the sum of its parts' lines.
            OSError: a part file cannot be read or the merged file cannot be written.
        """
        ledger, results = self._rt.ledger, self._rt.results_dir
        parts = await ledger.parts(parent.id)
        if any(part.state not in FINAL_STATES for part in parts):
            raise MergeMismatch(f"job {parent.name!r}: a part is not final; cannot merge yet")
        part_files = [{f.kind: f for f in await ledger.files(part.id)} for part in parts]
        folder = results / parent.name
        await anyio.to_thread.run_sync(ensure_dir, folder)
        for kind, filename in RESULT_NAMES.items():
            recorded = [files[kind] for files in part_files if kind in files]
            if not recorded:
                continue
            merged = await anyio.to_thread.run_sync(
                merge_files, [Path(f.path) for f in recorded], folder / filename
            )
            expected = sum(f.lines for f in recorded)
            if merged.lines != expected:
                raise MergeMismatch(
                    f"job {parent.name!r}: merged {filename} has {merged.lines} lines, its "
                    f"parts recorded {expected}"
                )
            await ledger.record_file(
                parent.id,
                kind,
                path=str(merged.path),
                bytes=merged.bytes,
                sha256=merged.sha256,
                lines=merged.lines,
            )
            log.info("parts.merged", job=parent.name, kind=kind, lines=merged.lines)
        files = await ledger.files(parent.id)
        error = rejected_parts_error(parts)
        family = [parent, *await ledger.descendants(parent.id)]
        pricing, discount = self._ws.pricing, self._ws.batch_discount
        summary = parent_summary(
            attrs.evolve(parent, state=JobState.DONE, error=error),
            files,
            parts,
            part_files,
            usage=rolled_up(family).get(parent.id),
            cost=rolled_up_cost(family, pricing, discount=discount).get(parent.id),
            currency=pricing.currency,
        )
        await anyio.to_thread.run_sync(write_json_atomic, folder / "job.json", summary)
        done = await ledger.transition(
            parent.id,
            JobState.COLLECTING,
            JobState.DONE,
            detail="parts merged",
            error=error,
            not_before=None,
        )
        log.info("parts.done", job=done.name, job_id=done.id, outcome=done.outcome)
        await anyio.to_thread.run_sync(remove_parts, results, parent.name)
        self._rt.activity.wake()
        return done


def rejected_parts_error(parts: Sequence[Job]) -> str | None:
    """The parent's error: which parts were rejected (None when none was)."""
    rejected = [p for p in parts if p.state is JobState.REJECTED]
    if not rejected:
        return None
    return f"{len(rejected)} part(s) rejected; {rejected[0].name}: {rejected[0].error}"


def parent_summary(
    parent: Job,
    files: Iterable[ResultFile],
    parts: Sequence[Job],
    part_files: Sequence[dict[FileKind, ResultFile]],
    *,
    usage: Usage | None = None,
    cost: float | None = None,
    currency: str | None = None,
) -> dict[str, Any]:
    """The content of a split job's ``job.json``: the usual fields, plus one entry per part.

    ``usage`` and ``cost`` are the sums over its parts (and their own children).
    """
    summary = job_summary(parent, files, usage=usage, cost=cost, currency=currency)
    summary["parts"] = [
        {
            "name": part.name,
            "state": part.state.value,
            "remote_id": part.remote_id,
            "remote_status": part.remote_status,
            "outcome": part.outcome.value if part.outcome else None,
            "requests": part.request_count,
            "total": part.total,
            "completed": part.completed,
            "succeeded": part.succeeded,
            "failed": part.failed,
            "error": part.error,
            "usage": None if part.usage is None else part.usage.tokens(),
            "files": {
                f.kind: {"bytes": f.bytes, "sha256": f.sha256, "lines": f.lines}
                for f in pf.values()
            },
        }
        for part, pf in zip(parts, part_files, strict=True)
    ]
    return summary
