"""The simulated jobs: create, look, list, cancel, delete, over the store and the clock.

Wire-neutral: the methods take checked values (:class:`~orchestrator.emulator.rows.JobSpec`,
filters in core states) and return :data:`JobView` pairs, and refusals are
:mod:`~orchestrator.emulator.errors` values; the wire parses requests, words refusals and
shapes the JSON.

Job state is computed when a request looks at a job: :meth:`Jobs.current` reads the clock,
asks :func:`~orchestrator.emulator.simulation.phase_at` where the job stands, validates its input
the first time the validation delay has passed, and writes its result files the first time it
is terminal (both once, in a worker thread, guarded per job).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import threading
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

import anyio.to_thread
import structlog

from orchestrator.clock import Clock
from orchestrator.emulator.errors import (
    BudgetExceeded,
    JobNotFinished,
    OutputsTooLarge,
    UnknownJob,
)
from orchestrator.emulator.files import Files
from orchestrator.emulator.results import (
    BITMAP_NAME,
    ResultFormat,
    failed_prefix,
    validate_input,
    write_results,
)
from orchestrator.emulator.rows import FileRow, JobIndex, JobRow, JobSpec, Snapshot
from orchestrator.emulator.rules import InputRules, Scan
from orchestrator.emulator.runs import LineRuns
from orchestrator.emulator.settings import EmulatorSettings
from orchestrator.emulator.simulation import (
    TERMINAL,
    Phase,
    SimParams,
    State,
    Validation,
    clock_at,
    pending_at,
    phase_at,
)
from orchestrator.emulator.store import Store
from orchestrator.emulator.synthetic import Synth
from orchestrator.emulator.tokens import (
    MAX_ENQUEUED,
    TOKEN_REFUSALS,
    admit_tokens,
    enqueued_by_model,
)

log = structlog.get_logger(__name__)

_BITMAP_CACHE_SIZE = 32

BUDGET_REFUSALS = "pending_requests_limit_exceeded"
"""The counter (kind ``refusals``, route ``jobs.create``) of creates refused for the budget;
its name is stored in existing state folders and read by the introspection."""


JobView = tuple[JobRow, Snapshot]
"""A job and where it stands at the instant it was looked at."""


class Jobs:
    """The simulated jobs of every workspace (see the module docstring).

    Args:
        settings: simulation settings (new jobs take a copy of the knobs).
        clock: the time source.
        store: the persistent state.
        files: the files service (input files are checked there).
        results: the wire's result format (result lines and files, their ids).
        new_id: the wire's job ids (Mistral: UUIDs).
        rules: the wire's rules for input lines.
        synth: the synthetic bodies (default: :class:`Synth` on the settings).
        finalizing: whether jobs pass through FINALIZING (``settings.finalizing_seconds``).
    """

    def __init__(
        self,
        settings: EmulatorSettings,
        clock: Clock,
        store: Store,
        files: Files,
        *,
        results: ResultFormat,
        new_id: Callable[[], str],
        rules: InputRules,
        synth: Synth | None = None,
        finalizing: bool = False,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.store = store
        self._runs: LineRuns | None = None
        self.files = files
        self.results = results
        self.rules = rules
        self._new_id = new_id
        self._finalizing = finalizing
        self.synth = synth or Synth(
            seed=settings.seed,
            embedding_dimensions=settings.embedding_dimensions,
            completion_tokens=settings.completion_tokens,
        )
        self._locks_guard = threading.Lock()
        self._job_locks: dict[str, threading.Lock] = {}
        self._create_lock = threading.Lock()
        self._bitmaps: OrderedDict[str, bytes] = OrderedDict()

    async def create_job(self, workspace: str, req: JobSpec) -> JobView:
        """Check the inputs and the pending budget, then queue the job.

        A wire that scans inputs at create (:meth:`InputRules.scan`) may have the job refused
        as a whole: it is created all the same and fails at validation with the scan's errors,
        or with the token-limit error when its prompt tokens do not fit
        ``settings.token_limit`` for its model.

        Raises:
            UnknownFile: an input file is not a live file of the workspace.
            BudgetExceeded: the job's requests do not fit the pending budget.
        """
        files = [self.files.live_file(workspace, fid) for fid in req.input_files]
        requests = sum(f.num_lines or 0 for f in files) if files else len(req.inline or [])
        scan: Scan | None = None
        if files:
            paths = [self.store.blob_path(f.id) for f in files]
            scan = await anyio.to_thread.run_sync(
                functools.partial(self.rules.scan, paths, endpoint=req.endpoint, requests=requests)
            )
        now = self.clock.now()
        await self._settle(workspace, now)
        job_id = self._new_id()
        job_dir = self.store.job_dir(job_id)
        with self._create_lock:
            # Re-read under the lock: a concurrent create may have landed meanwhile.
            unfinished = self.store.job_index(workspace, unfinished_only=True)
            pending = self._pending(unfinished, now)
            budget = self.settings.pending_budget
            if pending + requests > budget:
                self.store.count(workspace, "refusals", "jobs.create", BUDGET_REFUSALS)
                log.info(
                    "emulator.create_refused",
                    workspace=workspace,
                    pending=pending,
                    requests=requests,
                    budget=budget,
                )
                raise BudgetExceeded(pending=pending, requests=requests, budget=budget)
            model = req.model or (scan.model if scan else None)
            errors, enqueued = admit_tokens(
                self.rules, workspace, unfinished, now, scan, model, self.settings.token_limit
            )
            if errors and scan is not None and not scan.errors:
                self.store.count(workspace, "refusals", "jobs.create", TOKEN_REFUSALS)
            self._prepare_inputs(job_dir, files, req.inline)
            s = self.settings
            row = JobRow(
                id=job_id,
                workspace=workspace,
                endpoint=req.endpoint,
                model=model,
                agent_id=req.agent_id,
                metadata=req.metadata,
                timeout_hours=req.timeout_hours,
                input_files=[f.id for f in files],
                created_at=now,
                requests=requests,
                params=SimParams(
                    time_scale=s.time_scale,
                    throughput=s.throughput,
                    validation_seconds=s.validation_seconds,
                    cancel_seconds=s.cancel_seconds,
                    failure_fraction=s.failure_fraction,
                    transient_fraction=s.transient_fraction,
                    seed=s.seed,
                    finalizing_seconds=s.finalizing_seconds if self._finalizing else 0.0,
                ),
                prompt_tokens=scan.prompt_tokens if scan else 0,
                validation=Validation(usable=False, failed_total=0) if errors else None,
                job_errors=errors,
            )
            self.store.insert_job(row)
            self.store.raise_max_pending(workspace, pending + requests)
            if enqueued is not None and model is not None:
                self.store.raise_counter(workspace, *MAX_ENQUEUED, model, enqueued)
        log.info(
            "emulator.job_created",
            workspace=workspace,
            job_id=job_id,
            requests=requests,
            pending=pending + requests,
        )
        return await self.current(row, now)

    def _prepare_inputs(
        self, job_dir: Path, files: list[FileRow], inline: list[dict[str, Any]] | None
    ) -> None:
        """Give the job its own copy of its inputs: hard links, or inline requests as JSONL."""
        job_dir.mkdir(parents=True, exist_ok=True)
        if inline is not None and not files:
            with (job_dir / "input-0000.jsonl").open("w", encoding="utf-8") as handle:
                for item in inline:
                    line = {"custom_id": item.get("custom_id"), "body": item["body"]}
                    if line["custom_id"] is None:
                        del line["custom_id"]
                    handle.write(json.dumps(line, ensure_ascii=False) + "\n")
            return
        for i, f in enumerate(files):
            target = job_dir / f"input-{i:04d}.jsonl"
            try:
                os.link(self.store.blob_path(f.id), target)
            except OSError:
                shutil.copyfile(self.store.blob_path(f.id), target)

    # jobs: the lazy simulation ---------------------------------------------------------------

    def _lock_for(self, job_id: str) -> threading.Lock:
        with self._locks_guard:
            return self._job_locks.setdefault(job_id, threading.Lock())

    async def current(self, job: JobRow, now: float) -> JobView:
        """The job as it stands at ``now``, validating or finishing it if that is due."""
        if job.final is not None:
            return job, Snapshot.from_final(job.final)
        phase = phase_at(job.timeline, now, job.validation)
        if phase.needs_validation:
            job = await anyio.to_thread.run_sync(self._validate, job)
            if job.final is not None:
                return job, Snapshot.from_final(job.final)
            phase = phase_at(job.timeline, now, job.validation)
        if phase.terminal:
            job = await anyio.to_thread.run_sync(self._finalize, job, phase)
            assert job.final is not None
            return job, Snapshot.from_final(job.final)
        failed = self._failed(job, phase.processed)
        return job, Snapshot(
            state=phase.state,
            total=phase.total,
            succeeded=phase.processed - failed,
            failed=failed,
            started_at=int(job.created_at) if phase.started else None,
        )

    def close(self) -> None:
        """Close the run counter, if it was opened."""
        if self._runs is not None:
            self._runs.close()
            self._runs = None

    def _line_runs(self, job: JobRow) -> LineRuns | None:
        """The run counter, opened on first use (only jobs with transient failures count)."""
        if job.params.transient_fraction <= 0:
            return None
        if self._runs is None:
            self._runs = LineRuns(self.store.root)
        return self._runs

    def _reload(self, job: JobRow) -> JobRow:
        fresh = self.store.get_job(job.workspace, job.id)
        if fresh is None:
            raise UnknownJob(job.id)
        return fresh

    def _validate(self, job: JobRow) -> JobRow:
        with self._lock_for(job.id):
            job = self._reload(job)
            if job.validation is not None or job.final is not None:
                return job
            usable, failed, errors = validate_input(
                job, self.store.job_dir(job.id), self.rules, self._line_runs(job)
            )
            self.store.set_validation(
                job.id, Validation(usable=usable, failed_total=failed), errors
            )
            log.info("emulator.job_validated", job_id=job.id, usable=usable, failed=failed)
            return self._reload(job)

    def _finalize(self, job: JobRow, phase: Phase) -> JobRow:
        with self._lock_for(job.id):
            job = self._reload(job)
            if job.final is not None:
                return job
            job_dir = self.store.job_dir(job.id)
            written = write_results(
                job,
                phase,
                job_dir=job_dir,
                files_dir=self.store.files_dir,
                synth=self.synth,
                results=self.results,
                rules=self.rules,
            )
            files = [f for f in (written.output, written.errors) if f is not None]
            succeeded, failed = written.succeeded, written.failed
            assert phase.terminal_at is not None
            snap = Snapshot(
                state=phase.state,
                total=phase.total,
                succeeded=succeeded,
                failed=failed,
                started_at=int(job.created_at) if phase.started else None,
                completed_at=int(clock_at(job.timeline, phase.terminal_at)),
                output_file=written.output.id if written.output else None,
                error_file=written.errors.id if written.errors else None,
                errors=job.job_errors,
                usage=written.usage,
            )
            if not self.store.finalize_job(job.id, snap.to_final(), files):
                for f in files:
                    self.store.blob_path(f.id).unlink(missing_ok=True)
            shutil.rmtree(job_dir, ignore_errors=True)
            with self._locks_guard:
                self._bitmaps.pop(job.id, None)
            log.info(
                "emulator.job_finished",
                job_id=job.id,
                state=snap.state,
                succeeded=succeeded,
                failed=failed,
            )
            return self._reload(job)

    def _failed(self, job: JobRow, processed: int) -> int:
        """Failed lines among the first ``processed`` (needs the validation outcome)."""
        v = job.validation
        if processed == 0 or v is None or v.failed_total == 0:
            return 0
        if v.failed_total >= job.requests:
            return processed
        with self._locks_guard:
            bitmap = self._bitmaps.get(job.id)
            if bitmap is not None:
                self._bitmaps.move_to_end(job.id)
        if bitmap is None:
            bitmap = (self.store.job_dir(job.id) / BITMAP_NAME).read_bytes()
            with self._locks_guard:
                self._bitmaps[job.id] = bitmap
                while len(self._bitmaps) > _BITMAP_CACHE_SIZE:
                    self._bitmaps.popitem(last=False)
        return failed_prefix(bitmap, processed)

    # jobs: the operations --------------------------------------------------------------------

    def _job(self, workspace: str, job_id: str) -> JobRow:
        job = self.store.get_job(workspace, job_id)
        if job is None:
            raise UnknownJob(job_id)
        return job

    async def get_job(self, workspace: str, job_id: str) -> JobView:
        """The job as it stands now.

        Raises:
            UnknownJob: no such live job in the workspace.
        """
        return await self.current(self._job(workspace, job_id), self.clock.now())

    async def outputs(self, snap: Snapshot) -> list[dict[str, Any]] | None:
        """The result lines of a terminal job (output lines, then error lines); ``None`` before.

        Raises:
            OutputsTooLarge: the files are over ``inline_outputs_max_bytes``.
        """
        if snap.state not in TERMINAL:
            return None
        return await anyio.to_thread.run_sync(self._read_outputs, snap)

    def _read_outputs(self, snap: Snapshot) -> list[dict[str, Any]]:
        paths = [self.store.blob_path(fid) for fid in (snap.output_file, snap.error_file) if fid]
        size = sum(p.stat().st_size for p in paths)
        limit = self.settings.inline_outputs_max_bytes
        if size > limit:
            raise OutputsTooLarge(size=size, limit=limit)
        outputs: list[dict[str, Any]] = []
        for path in paths:
            with path.open("rb") as handle:
                outputs.extend(json.loads(line) for line in handle if line.strip())
        return outputs

    async def select(
        self,
        workspace: str,
        *,
        model: str | None = None,
        agent_id: str | None = None,
        created_after: float | None = None,
        metadata: Mapping[str, str] | None = None,
        states: Collection[State] = (),
        descending: bool = False,
    ) -> list[JobIndex]:
        """Every live job of the workspace that matches, oldest first unless ``descending``.

        The wire pages the result (by number, or after a cursor) and looks at each job of the
        page with :meth:`view`; filtering on ``states`` validates the jobs whose validation is
        due, so the filter sees the state a look would report.
        """
        now = self.clock.now()
        index = self.store.job_index(
            workspace,
            model=model,
            agent_id=agent_id,
            created_after=created_after,
            metadata=metadata,
        )
        if descending:
            index.reverse()
        if states:
            wanted = set(states)
            index = [j for j in index if await self._state(workspace, j, now) in wanted]
        return index

    async def view(self, workspace: str, job_id: str) -> JobView | None:
        """The job as it stands now, or ``None`` if it was deleted meanwhile."""
        row = self.store.get_job(workspace, job_id)
        return None if row is None else await self.current(row, self.clock.now())

    async def _state(self, workspace: str, entry: JobIndex, now: float) -> State:
        """A job's state at ``now`` from its light row (validating it if that is due)."""
        if entry.final_state is not None:
            return entry.final_state
        phase = phase_at(entry.timeline, now, entry.validation)
        if phase.needs_validation:
            job = await anyio.to_thread.run_sync(self._validate, self._job(workspace, entry.id))
            phase = phase_at(job.timeline, now, job.validation)
        return phase.state

    async def _settle(self, workspace: str, now: float) -> None:
        """Validate every unfinished job whose validation is due, so pending is exact."""
        for entry in self.store.job_index(workspace, unvalidated_only=True):
            if phase_at(entry.timeline, now, entry.validation).needs_validation:
                await anyio.to_thread.run_sync(self._validate, self._job(workspace, entry.id))

    @staticmethod
    def _pending(index: list[JobIndex], now: float) -> int:
        return sum(pending_at(j.timeline, now, j.validation) for j in index)

    async def cancel_job(self, workspace: str, job_id: str) -> JobView:
        """Ask for a cancel: idempotent; a finished job is left as it is.

        Raises:
            UnknownJob: no such live job in the workspace.
        """
        now = self.clock.now()
        job, snap = await self.current(self._job(workspace, job_id), now)
        if snap.state not in TERMINAL and job.cancel_at is None:
            if self.store.set_cancel(job.id, now):
                log.info("emulator.job_cancel_requested", job_id=job.id, state=snap.state)
            job, snap = await self.current(self._reload(job), now)
        return job, snap

    async def delete_job(self, workspace: str, job_id: str) -> JobView:
        """Delete a finished job; return it as it was.

        Raises:
            UnknownJob: no such live job in the workspace.
            JobNotFinished: the job is unfinished (cancel it first).
        """
        job, snap = await self.current(self._job(workspace, job_id), self.clock.now())
        if snap.state not in TERMINAL:
            raise JobNotFinished(job_id, snap.state)
        self.store.delete_job(workspace, job_id)
        return job, snap

    # introspection ---------------------------------------------------------------------------

    def enqueued_tokens(self, workspace: str) -> dict[str, int]:
        """Prompt tokens per model the workspace has enqueued now."""
        unfinished = self.store.job_index(workspace, unfinished_only=True)
        return enqueued_by_model(unfinished, self.clock.now())

    def pending(self, workspace: str) -> int:
        """Pending requests of the workspace now (unknown validations count as usable)."""
        return self._pending(
            self.store.job_index(workspace, unfinished_only=True), self.clock.now()
        )
