"""Intake: job definitions from the config, ``jobs_dir`` and ``submit`` into the ledger.

Re-reading a config never resubmits: a known name with the same definition is a no-op, and a
changed definition under a known name is an error that leaves the existing job untouched.
Inputs are validated in one streaming pass in a worker thread before anything is recorded as
``queued``; an invalid job is recorded as ``rejected`` with the report, and nothing is sent.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import anyio
import structlog

from orchestrator.clock import Clock
from orchestrator.config import Config, load_jobs_dir
from orchestrator.daemon.waker import Waker
from orchestrator.errors import DefinitionConflict, InputError
from orchestrator.inputs import InputLimits, definition_hash, validate_inputs
from orchestrator.ledger import SqlLedger
from orchestrator.model import Job, JobSpec, JobState

log = structlog.get_logger(__name__)

_FileKey = tuple[str, int, int]
"""(path, size, mtime_ns): a file unchanged since it was last hashed."""


def _file_keys(paths: Sequence[str]) -> tuple[_FileKey, ...] | None:
    keys = []
    for path in paths:
        try:
            stat = Path(path).stat()
        except OSError:
            return None
        keys.append((path, stat.st_size, stat.st_mtime_ns))
    return tuple(keys)


def _raw_hash(spec: JobSpec) -> str:
    """A definition hash for input that failed validation (the raw bytes, not the requests)."""
    digest = hashlib.sha256()
    for path in spec.inputs:
        try:
            with open(path, "rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
        except OSError as exc:
            digest.update(f"unreadable:{path}:{exc.errno}".encode())
    digest.update(
        json.dumps(
            [spec.model, spec.endpoint, dict(spec.metadata), spec.timeout_hours], sort_keys=True
        ).encode()
    )
    return "raw-" + digest.hexdigest()


async def admit_spec(
    ledger: SqlLedger, spec: JobSpec, *, limits: InputLimits | None = None
) -> tuple[Job, bool]:
    """Validate ``spec``'s inputs and record it; return (job, created).

    Raises:
        DefinitionConflict: the name is taken by another definition (the job is untouched).
    """
    limits = limits or InputLimits()
    try:
        summaries = await anyio.to_thread.run_sync(
            lambda: validate_inputs(spec.inputs, endpoint=spec.endpoint, limits=limits)
        )
    except InputError as exc:
        raw = await anyio.to_thread.run_sync(lambda: _raw_hash(spec))
        job, created = await ledger.add_job(
            spec, definition_hash=raw, request_count=0, state=JobState.REJECTED, error=str(exc)
        )
        if created:
            log.error(
                "intake.rejected",
                job=spec.name,
                job_id=job.id,
                error=exc.summary,
                problems=list(exc.problems),
            )
        return job, created
    digest = definition_hash(spec, summaries)
    requests = sum(s.requests for s in summaries)
    job, created = await ledger.add_job(spec, definition_hash=digest, request_count=requests)
    if created:
        log.info(
            "intake.queued",
            job=spec.name,
            job_id=job.id,
            requests=requests,
            workspace=spec.workspace,
        )
    return job, created


class Intake:
    """The intake loop: rescans definitions on an interval and when woken (SIGHUP)."""

    def __init__(
        self,
        *,
        config: Config,
        ledger: SqlLedger,
        clock: Clock,
        waker: Waker,
        on_new_job: Callable[[Job], None],
    ) -> None:
        self._config = config
        self._ledger = ledger
        self._clock = clock
        self.waker = waker
        self._on_new_job = on_new_job
        self._seen: dict[str, tuple[JobSpec, tuple[_FileKey, ...]]] = {}
        self._reported: set[tuple[str, str]] = set()
        self.passes = 0

    async def run(self, stopping: anyio.Event) -> None:
        """Rescan until ``stopping`` is set."""
        while not stopping.is_set():
            await self.waker.wait(self._config.intake.rescan_interval)
            if not stopping.is_set():
                await self.scan()

    def specs(self) -> list[JobSpec]:
        """Every job definition: the main config's, then each ``jobs_dir/*.toml`` in name order."""
        scan = load_jobs_dir(self._config)
        for error in scan.errors:
            self._report_once("intake.jobs_file_invalid", error.file or "", str(error))
        return [*self._config.jobs, *scan.jobs]

    async def scan(self) -> int:
        """One pass over every definition; returns how many jobs were added."""
        added = 0
        for spec in self.specs():
            keys = _file_keys(spec.inputs)
            if keys is not None and self._seen.get(spec.name) == (spec, keys):
                continue  # unchanged since this process last recorded it
            try:
                job, created = await admit_spec(self._ledger, spec)
            except DefinitionConflict as exc:
                self._report_once("intake.definition_conflict", spec.name, str(exc))
                continue
            if keys is not None:
                self._seen[spec.name] = (spec, keys)
            if created:
                added += 1
                self._on_new_job(job)
        self.passes += 1
        return added

    def _report_once(self, event: str, subject: str, message: str) -> None:
        """Log a problem once per process, not once per rescan."""
        if (event, message) in self._reported:
            return
        self._reported.add((event, message))
        log.error(event, subject=subject, error=message)
