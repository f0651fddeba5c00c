"""Intake: job definitions from the config, ``jobs_dir`` and ``submit`` into the ledger.

Re-reading a config never resubmits: a known name with the same definition is a no-op, and a
changed definition under a known name is an error that leaves the existing job untouched.
Inputs are validated in one streaming pass in a worker thread before anything is recorded as
``queued``; an invalid job (a line that is not a request, or an input file that does not exist)
is recorded as ``rejected`` with the report, and nothing is sent. Removing a definition never
cancels its job: only ``orchestrator cancel`` does.

Each scan re-reads the ``[[jobs]]`` of the main config file (when the file changed) and every
``jobs_dir/*.toml`` file; other settings of the main file need a restart. The scan also wakes
the admission loop of every workspace with queued jobs that intake did not add itself
(``orchestrator submit`` writes to the ledger from another process) or with a fresh cancel
request, so a job submitted while the daemon runs is admitted within one intake cycle (or at
once after a SIGHUP, which ``submit`` and ``cancel`` send to a local daemon).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import anyio
import attrs
import structlog

from orchestrator.clock import Clock
from orchestrator.config import (
    Config,
    InputOrigin,
    load_config,
    load_jobs_dir,
    missing_inputs,
)
from orchestrator.daemon.parts import write_part_inputs
from orchestrator.daemon.waker import Waker
from orchestrator.errors import ConfigError, DefinitionConflict, InputError, JobNotFound
from orchestrator.inputs import (
    InputLimits,
    InputSummary,
    LineRules,
    definition_hash,
    rules_for,
    validate_inputs,
)
from orchestrator.ledger import SqlLedger
from orchestrator.ledger.values import definition_differences
from orchestrator.model import FINAL_STATES, Job, JobSpec, JobState, redefinable

log = structlog.get_logger(__name__)

_UNLIMITED = 2**31 - 1
"""Requests a split job may hold in all (the ledger's 32-bit count)."""
_UNLIMITED_BYTES = 1 << 50
"""Bytes an input of a split job may hold (its parts keep the provider's per-batch limit)."""

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


def raw_definition_hash(spec: JobSpec) -> str:
    """The definition hash of a job whose inputs failed validation.

    It covers the raw bytes of the inputs (what is unreadable or missing, by path and errno)
    and the rest of the definition, so re-reading the same bad definition is a no-op, while a
    fixed file is a different definition.
    """
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


def missing_input_error(spec: JobSpec, origins: Sequence[InputOrigin] = ()) -> InputError | None:
    """An :class:`InputError` for the inputs of ``spec`` that are missing now, or None.

    The summary names the first missing file and where it is written (config file and key);
    ``problems`` lists every missing input.
    """
    problems = missing_inputs(spec, origins)
    if not problems:
        return None
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return InputError(
        f"{problems[0]}{more}: the job is rejected and nothing was uploaded",
        tuple(str(problem) for problem in problems),
    )


def conflict_message(exc: DefinitionConflict, existing: Job | None = None) -> str:
    """A one-line explanation of a :class:`DefinitionConflict`, with what to do about it.

    A name is taken for good by a job that got past intake (a cancelled or finished job keeps
    it; only a rejected job is redefined in place), so the way out is another name, or
    ``orchestrator rerun`` for the same definition.
    """
    state = ""
    if existing is not None:
        state = f" ({existing.state.value}"
        state += f", {existing.outcome.value})" if existing.outcome else ")"
    return (
        f"job {exc.name!r} is already in the ledger with a different definition "
        f"({', '.join(exc.differences)} changed); the existing job{state} is untouched: "
        "give the new definition another name (a name stays taken by a queued, running, "
        "finished or cancelled job; `orchestrator rerun NAME` runs a final job again)"
    )


async def admit_spec(
    ledger: SqlLedger,
    spec: JobSpec,
    *,
    limits: InputLimits | None = None,
    rules: LineRules | None = None,
    origins: Sequence[InputOrigin] = (),
    record_rejection: bool = True,
    split: int | None = None,
    results: Path | None = None,
    token_budget: int | None = None,
) -> tuple[Job, bool]:
    """Validate ``spec``'s inputs and record it; return (job, created).

    With a part size (``split``), a job of more requests than that, an input larger than the
    provider's per-batch bytes, or more estimated prompt tokens than ``token_budget`` is split:
    its parts' inputs are written under ``<results>/<name>/parts/`` and the parent and its
    parts are recorded in one transaction (see :mod:`orchestrator.daemon.parts`). The
    provider's per-batch limits (requests, bytes) then apply to each part, not to the whole
    job, and each part's tokens stay within ``token_budget``.

    Args:
        ledger: Where the job is recorded.
        spec: The job as defined.
        limits: The provider's input limits (default: those of ``rules``, else Mistral's).
        rules: The workspace's provider dialect (:func:`~orchestrator.inputs.rules_for`);
            default: the first dialect that accepts the job's endpoint.
        origins: Where each input is written (aligned with ``spec.inputs``), so an error
            about a missing file names the config file and key.
        record_rejection: Record an invalid job as ``rejected`` (what the daemon does, so
            ``status`` shows why). False raises instead and records nothing (what ``submit``
            does: the operator fixes the input and submits again under the same name).
        split: The part size that applies to the job (its own ``split_requests``, else its
            workspace's), or None not to split.
        results: The results folder (needed with ``split``).
        token_budget: The token budget of the job's model in its workspace (None: none).

    Returns:
        ``(job, created)``; ``created`` is False when the name already holds this definition.

    Raises:
        DefinitionConflict: the name is taken by another definition (the job is untouched).
        InputError: the inputs are invalid and ``record_rejection`` is False.
        OSError: a part's input cannot be written (nothing is recorded; intake retries).
    """
    if limits is None:
        limits = InputLimits() if rules is None else InputLimits.of(rules)
    part_bytes = limits.max_file_bytes
    if split is not None:
        if results is None:
            raise ValueError("splitting needs the results folder")
        split = min(split, limits.max_requests)
        # The provider's limits are per batch: each part keeps them, not the whole job.
        limits = attrs.evolve(limits, max_requests=_UNLIMITED, max_file_bytes=_UNLIMITED_BYTES)
    try:
        missing = missing_input_error(spec, origins)
        if missing is not None:
            raise missing
        summaries = await anyio.to_thread.run_sync(
            lambda: validate_inputs(
                spec.inputs, endpoint=spec.endpoint, limits=limits, rules=rules, model=spec.model
            )
        )
    except InputError as exc:
        if not record_rejection:
            raise
        raw = await anyio.to_thread.run_sync(lambda: raw_definition_hash(spec))
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
    requests = sum(s.requests for s in summaries)
    tokens = sum(s.prompt_tokens for s in summaries)
    if (
        split is not None
        and results is not None
        and (
            requests > split
            # OpenAI and Anthropic send a job's files as one batch body: their sum counts.
            or sum(s.bytes for s in summaries) > part_bytes
            or (token_budget is not None and tokens > token_budget)
        )
    ):
        return await _admit_split(
            ledger,
            spec,
            summaries,
            requests,
            split,
            results,
            max_bytes=part_bytes,
            max_tokens=token_budget,
        )
    digest = definition_hash(spec, summaries)
    job, created = await ledger.add_job(
        spec,
        definition_hash=digest,
        request_count=requests,
        prompt_tokens=tokens,
        max_output_tokens=sum(s.max_output_tokens for s in summaries),
        uncapped_requests=sum(s.uncapped_requests for s in summaries),
    )
    if created:
        log.info(
            "intake.queued",
            job=spec.name,
            job_id=job.id,
            requests=requests,
            prompt_tokens=tokens,
            workspace=spec.workspace,
        )
    return job, created


async def _admit_split(
    ledger: SqlLedger,
    spec: JobSpec,
    summaries: Sequence[InputSummary],
    requests: int,
    split: int,
    results: Path,
    *,
    max_bytes: int,
    max_tokens: int | None,
) -> tuple[Job, bool]:
    """Record a job split into parts of ``split`` requests (written first, atomically).

    A part is also kept under ``max_bytes`` (the provider's upload limit for one file) and
    ``max_tokens`` (its model's token budget, when it has one).

    A name already recorded with this definition is a no-op and its part files are not
    rewritten; another definition is a conflict before anything is written. A crash between
    writing the parts and the ledger insert leaves files nothing refers to: the next intake
    writes them again.
    """
    digest = definition_hash(spec, summaries, split_requests=split)
    try:
        existing = await ledger.get_by_name(spec.name)
    except JobNotFound:
        existing = None
    # The same definition recorded whole (before splitting was switched on) stays whole.
    if existing is not None and existing.definition_hash in (
        digest,
        definition_hash(spec, summaries),
    ):
        return existing, False
    if existing is not None and not redefinable(existing):
        raise DefinitionConflict(spec.name, definition_differences(existing, spec, splits=True))
    parts = await anyio.to_thread.run_sync(
        functools.partial(
            write_part_inputs,
            spec.inputs,
            results,
            spec.name,
            split,
            [s.sha256 for s in summaries],
            max_bytes=max_bytes,
            max_tokens=max_tokens,
        )
    )
    written = sum(part.request_count for part in parts)
    if written != requests:
        raise OSError(
            f"job {spec.name!r}: its inputs changed while they were split ({requests} requests "
            f"validated, {written} written); it is read again at the next scan"
        )
    job, created = await ledger.add_split_job(
        spec, definition_hash=digest, request_count=requests, parts=parts
    )
    if created:
        log.info(
            "intake.queued",
            job=spec.name,
            job_id=job.id,
            requests=requests,
            prompt_tokens=job.prompt_tokens,
            workspace=spec.workspace,
            parts=len(parts),
            split_requests=split,
        )
    return job, created


@attrs.frozen(kw_only=True)
class _MainJobs:
    """The ``[[jobs]]`` of the main config file as last read, and the file's stat key."""

    key: tuple[int, int] | None
    jobs: tuple[JobSpec, ...]
    job_origins: dict[str, str]
    input_origins: dict[str, tuple[InputOrigin, ...]]

    @classmethod
    def of(cls, config: Config, key: tuple[int, int] | None) -> _MainJobs:
        return cls(
            key=key,
            jobs=config.jobs,
            job_origins=dict(config.job_origins),
            input_origins=dict(config.input_origins),
        )


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
        on_cancel: Callable[[Job], None] | None = None,
    ) -> None:
        """Wire the loop.

        Args:
            config: The daemon's configuration (the main file is re-read for its jobs).
            ledger: The ledger jobs are recorded in.
            clock: The injected clock.
            waker: Wakes the loop early (SIGHUP).
            on_new_job: Called for each job that is newly queued, whoever added it, and for
                a queued or admitted job with a fresh cancel request: it wakes the admission
                loop of the job's workspace.
            on_cancel: Called for each job with a fresh cancel request (any unfinished
                state), e.g. to wake the workspace's poll loop, which cancels running jobs.
        """
        self._config = config
        self._ledger = ledger
        self._clock = clock
        self.waker = waker
        self._on_new_job = on_new_job
        self._on_cancel = on_cancel
        self._seen: dict[str, tuple[JobSpec, tuple[_FileKey, ...]]] = {}
        self._reported: set[tuple[str, str]] = set()
        self._announced: set[int] = set()
        """Ids of queued jobs already announced through ``on_new_job``."""
        self._cancels: set[int] = set()
        """Ids of jobs whose cancel request was already announced."""
        self._main = _MainJobs.of(config, _stat_key(config.path))
        self.passes = 0

    async def run(self, stopping: anyio.Event, beat: Callable[[], None] | None = None) -> None:
        """Rescan until ``stopping`` is set; ``beat`` is called after each pass (health)."""
        while not stopping.is_set():
            await self.waker.wait(self._config.intake.rescan_interval)
            if not stopping.is_set():
                await self.scan()
                if beat is not None:
                    beat()

    def specs(self) -> list[JobSpec]:
        """Every job definition: the main config's, then each ``jobs_dir/*.toml`` in name order."""
        return [spec for spec, _ in self._definitions()]

    def _definitions(self) -> list[tuple[JobSpec, tuple[InputOrigin, ...]]]:
        main = self._main_jobs()
        config = attrs.evolve(self._config, jobs=main.jobs, job_origins=main.job_origins)
        scan = load_jobs_dir(config)
        for error in scan.errors:
            self._report_once("intake.jobs_file_invalid", error.file or "", str(error))
        found = [(spec, main.input_origins.get(spec.name, ())) for spec in main.jobs]
        found += [(spec, scan.input_origins.get(spec.name, ())) for spec in scan.jobs]
        usable = []
        for spec, origins in found:
            if spec.workspace not in self._config.workspaces:
                self._report_once(
                    "intake.unknown_workspace",
                    spec.name,
                    f"job {spec.name!r}: workspace {spec.workspace!r} was added to the config "
                    "after the daemon started: restart the daemon to use it",
                )
                continue
            usable.append((spec, origins))
        return usable

    def _main_jobs(self) -> _MainJobs:
        """The main file's jobs, re-read when the file changed (kept as they were if now bad)."""
        key = _stat_key(self._config.path)
        if key is None or key == self._main.key:
            return self._main
        try:
            fresh = load_config(self._config.path)
        except ConfigError as exc:
            self._report_once("intake.config_invalid", str(self._config.path), str(exc))
            return self._main
        self._main = _MainJobs.of(fresh, key)
        # A later change can fix the error: report the same error again if it comes back.
        self._reported = {r for r in self._reported if r[0] != "intake.config_invalid"}
        log.info("intake.config_reread", path=str(self._config.path), jobs=len(fresh.jobs))
        return self._main

    async def scan(self) -> int:
        """One pass over every definition; returns how many jobs were added."""
        # One replica scans at a time (split jobs write part files outside the ledger).
        async with self._ledger.scan_lock():
            added = 0
            for spec, origins in self._definitions():
                keys = _file_keys(spec.inputs)
                if keys is not None and self._seen.get(spec.name) == (spec, keys):
                    continue  # unchanged since this process last recorded it
                workspace = self._config.workspaces[spec.workspace]
                try:
                    _, created = await admit_spec(
                        self._ledger,
                        spec,
                        rules=rules_for(workspace.provider),
                        origins=origins,
                        split=workspace.part_size(spec),
                        results=self._config.results.dir,
                        token_budget=workspace.token_budget_for(spec.model),
                    )
                except OSError as exc:
                    self._report_once("intake.split_failed", spec.name, str(exc))
                    continue
                except DefinitionConflict as exc:
                    existing = await self._ledger.get_by_name(spec.name)
                    self._report_once(
                        "intake.definition_conflict", spec.name, conflict_message(exc, existing)
                    )
                    continue
                if keys is not None:
                    self._seen[spec.name] = (spec, keys)
                if created:
                    added += 1
        await self._announce()
        self.passes += 1
        return added

    async def _announce(self) -> None:
        """Wake the loops for queued jobs and cancel requests they have not heard of.

        Jobs added by ``orchestrator submit`` or cancelled by ``orchestrator cancel`` were
        written to the ledger by another process; the loops would only notice them at their
        next idle wake-up.
        """
        unfinished = await self._ledger.list_jobs(
            states=[state for state in JobState if state not in FINAL_STATES]
        )
        for job in unfinished:
            if job.state is JobState.QUEUED and job.id not in self._announced:
                self._announced.add(job.id)
                self._on_new_job(job)
            if job.cancel_requested and job.id not in self._cancels:
                self._cancels.add(job.id)
                log.info("intake.cancel_noticed", job=job.name, job_id=job.id, state=job.state)
                if job.state in (JobState.QUEUED, JobState.ADMITTED):
                    self._on_new_job(job)
                if self._on_cancel is not None:
                    self._on_cancel(job)
        # Forget finished jobs so the sets stay as small as the active set.
        live = {job.id for job in unfinished}
        self._announced &= live
        self._cancels &= live

    def _report_once(self, event: str, subject: str, message: str) -> None:
        """Log a problem once per process, not once per rescan."""
        if (event, message) in self._reported:
            return
        self._reported.add((event, message))
        log.error(event, subject=subject, error=message)


def _stat_key(path: Path) -> tuple[int, int] | None:
    """(size, mtime_ns) of ``path``, or None when it cannot be read."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns
