"""The emulated Batch API: what each job route does, over the store and the clock.

Job state is computed when a request looks at a job: :meth:`Jobs.current` reads the clock,
asks :func:`~orchestrator.emulator.simulation.phase_at` where the job stands, validates its input
the first time the validation delay has passed, and writes its result files the first time it
is terminal (both once, in a worker thread, guarded per job).
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any

import anyio.to_thread
import structlog

from orchestrator.clock import Clock
from orchestrator.emulator.files import Files
from orchestrator.emulator.results import (
    BITMAP_NAME,
    failed_prefix,
    validate_input,
    write_results,
)
from orchestrator.emulator.rows import FileRow, JobIndex, JobRow
from orchestrator.emulator.settings import EmulatorSettings
from orchestrator.emulator.simulation import (
    TERMINAL,
    Phase,
    SimParams,
    Validation,
    clock_at,
    pending_at,
    phase_at,
)
from orchestrator.emulator.store import Store
from orchestrator.emulator.synthetic import Synth
from orchestrator.emulator.validation import CreateRequest, JobsQuery
from orchestrator.emulator.wire import ApiError, Snapshot, job_json

log = structlog.get_logger(__name__)

_BITMAP_CACHE_SIZE = 32


def job_not_found(job_id: str) -> ApiError:
    """The 404 for an unknown (or deleted, or another workspace's) job."""
    return ApiError(404, f"Batch job {job_id} not found.", code="job_not_found", param="job_id")


class Jobs:
    """The behaviour behind the ``/v1/batch/jobs`` routes.

    Args:
        settings: simulation settings (new jobs take a copy of the knobs).
        clock: the time source.
        store: the persistent state.
        files: the Files service (input files are checked there).
    """

    def __init__(
        self, settings: EmulatorSettings, clock: Clock, store: Store, files: Files
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.store = store
        self.files = files
        self.synth = Synth(
            seed=settings.seed,
            embedding_dimensions=settings.embedding_dimensions,
            completion_tokens=settings.completion_tokens,
        )
        self._locks_guard = threading.Lock()
        self._job_locks: dict[str, threading.Lock] = {}
        self._create_lock = threading.Lock()
        self._bitmaps: OrderedDict[str, bytes] = OrderedDict()

    async def create_job(self, workspace: str, req: CreateRequest) -> dict[str, Any]:
        """``POST /v1/batch/jobs``: check inputs and the pending budget, then queue the job.

        Raises:
            ApiError: 400 for inputs given both or neither way or an exhausted budget, 404 for
                an unknown input file.
        """
        if bool(req.input_files) == bool(req.requests):
            raise ApiError(
                400,
                "Provide exactly one of `input_files` (uploaded JSONL file ids) or `requests` "
                "(inline requests).",
                code="invalid_batch_input",
                param="input_files",
            )
        files = [self.files.live_file(workspace, fid) for fid in req.input_files]
        requests = sum(f.num_lines or 0 for f in files) if files else len(req.requests or [])
        now = self.clock.now()
        await self._settle(workspace, now)
        job_id = str(uuid.uuid4())
        job_dir = self.store.job_dir(job_id)
        with self._create_lock:
            # Re-read under the lock: a concurrent create may have landed meanwhile.
            pending = self._pending(self.store.job_index(workspace, unfinished_only=True), now)
            budget = self.settings.pending_budget
            if pending + requests > budget:
                self.store.count(
                    workspace, "refusals", "jobs.create", "pending_requests_limit_exceeded"
                )
                log.info(
                    "emulator.create_refused",
                    workspace=workspace,
                    pending=pending,
                    requests=requests,
                    budget=budget,
                )
                raise ApiError(
                    400,
                    f"Pending requests limit exceeded: the workspace has {pending:,} pending "
                    f"requests and this job adds {requests:,}, over the limit of {budget:,}. "
                    "Wait for running jobs to progress, or submit a smaller job.",
                    code="pending_requests_limit_exceeded",
                )
            self._prepare_inputs(job_dir, files, req.requests)
            s = self.settings
            row = JobRow(
                id=job_id,
                workspace=workspace,
                endpoint=req.endpoint,
                model=req.model,
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
                    seed=s.seed,
                ),
            )
            self.store.insert_job(row)
            self.store.raise_max_pending(workspace, pending + requests)
        log.info(
            "emulator.job_created",
            workspace=workspace,
            job_id=job_id,
            requests=requests,
            pending=pending + requests,
        )
        job, snap = await self.current(row, now)
        return job_json(job, snap)

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

    async def current(self, job: JobRow, now: float) -> tuple[JobRow, Snapshot]:
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
            status=phase.status,
            total=phase.total,
            succeeded=phase.processed - failed,
            failed=failed,
            started_at=int(job.created_at) if phase.started else None,
        )

    def _reload(self, job: JobRow) -> JobRow:
        fresh = self.store.get_job(job.workspace, job.id)
        if fresh is None:
            raise job_not_found(job.id)
        return fresh

    def _validate(self, job: JobRow) -> JobRow:
        with self._lock_for(job.id):
            job = self._reload(job)
            if job.validation is not None or job.final is not None:
                return job
            usable, failed, errors = validate_input(job, self.store.job_dir(job.id))
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
            succeeded, failed, files = write_results(
                job, phase, job_dir=job_dir, files_dir=self.store.files_dir, synth=self.synth
            )
            by_kind = {f.sample_type: f.id for f in files}
            assert phase.terminal_at is not None
            snap = Snapshot(
                status=phase.status,
                total=phase.total,
                succeeded=succeeded,
                failed=failed,
                started_at=int(job.created_at) if phase.started else None,
                completed_at=int(clock_at(job.timeline, phase.terminal_at)),
                output_file=by_kind.get("batch_result"),
                error_file=by_kind.get("batch_error"),
                errors=job.job_errors,
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
                status=snap.status,
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

    # jobs: the routes ------------------------------------------------------------------------

    def _job(self, workspace: str, job_id: str) -> JobRow:
        job = self.store.get_job(workspace, job_id)
        if job is None:
            raise job_not_found(job_id)
        return job

    async def get_job(self, workspace: str, job_id: str, *, inline: bool) -> dict[str, Any]:
        """``GET /v1/batch/jobs/{id}``; ``inline`` adds the result lines once terminal."""
        job, snap = await self.current(self._job(workspace, job_id), self.clock.now())
        outputs = None
        if inline and snap.status in TERMINAL:
            outputs = await anyio.to_thread.run_sync(self._read_outputs, snap)
        return job_json(job, snap, outputs)

    def _read_outputs(self, snap: Snapshot) -> list[dict[str, Any]]:
        paths = [self.store.blob_path(fid) for fid in (snap.output_file, snap.error_file) if fid]
        size = sum(p.stat().st_size for p in paths)
        limit = self.settings.inline_outputs_max_bytes
        if size > limit:
            raise ApiError(
                400,
                f"The results are {size:,} bytes, over the {limit:,} bytes `inline=true` returns; "
                "download the output and error files instead.",
                code="inline_outputs_too_large",
                param="inline",
            )
        outputs: list[dict[str, Any]] = []
        for path in paths:
            with path.open("rb") as handle:
                outputs.extend(json.loads(line) for line in handle if line.strip())
        return outputs

    async def list_jobs(self, workspace: str, query: JobsQuery) -> dict[str, Any]:
        """``GET /v1/batch/jobs``: filter, order, page; ``total`` counts every match."""
        now = self.clock.now()
        index = self.store.job_index(
            workspace,
            model=query.model,
            agent_id=query.agent_id,
            created_after=query.created_after,
            metadata=query.metadata,
        )
        if query.descending:
            index.reverse()
        if query.statuses:
            wanted = set(query.statuses)
            index = [j for j in index if await self._status(workspace, j, now) in wanted]
        start = query.page * query.page_size
        data = []
        for entry in index[start : start + query.page_size]:
            row = self.store.get_job(workspace, entry.id)
            if row is not None:  # deleted meanwhile
                data.append(job_json(*await self.current(row, now)))
        return {"data": data, "object": "list", "total": len(index)}

    async def _status(self, workspace: str, entry: JobIndex, now: float) -> str:
        """A job's status at ``now`` from its light row (validating it if that is due)."""
        if entry.final_status is not None:
            return entry.final_status
        phase = phase_at(entry.timeline, now, entry.validation)
        if phase.needs_validation:
            job = await anyio.to_thread.run_sync(self._validate, self._job(workspace, entry.id))
            phase = phase_at(job.timeline, now, job.validation)
        return phase.status

    async def _settle(self, workspace: str, now: float) -> None:
        """Validate every unfinished job whose validation is due, so pending is exact."""
        for entry in self.store.job_index(workspace, unvalidated_only=True):
            if phase_at(entry.timeline, now, entry.validation).needs_validation:
                await anyio.to_thread.run_sync(self._validate, self._job(workspace, entry.id))

    @staticmethod
    def _pending(index: list[JobIndex], now: float) -> int:
        return sum(pending_at(j.timeline, now, j.validation) for j in index)

    async def cancel_job(self, workspace: str, job_id: str) -> dict[str, Any]:
        """``POST /v1/batch/jobs/{id}/cancel``: idempotent; a finished job is left as it is."""
        now = self.clock.now()
        job, snap = await self.current(self._job(workspace, job_id), now)
        if snap.status not in TERMINAL and job.cancel_at is None:
            if self.store.set_cancel(job.id, now):
                log.info("emulator.job_cancel_requested", job_id=job.id, status=snap.status)
            job, snap = await self.current(self._reload(job), now)
        return job_json(job, snap)

    async def delete_job(self, workspace: str, job_id: str) -> dict[str, Any]:
        """``DELETE /v1/batch/jobs/{id}``: only a finished job can be deleted.

        Raises:
            ApiError: 400 while the job is unfinished (cancel it first).
        """
        _, snap = await self.current(self._job(workspace, job_id), self.clock.now())
        if snap.status not in TERMINAL:
            raise ApiError(
                400,
                f"Batch job {job_id} is {snap.status}; only a finished job can be deleted "
                "(cancel it first).",
                code="job_not_finished",
                param="job_id",
            )
        self.store.delete_job(workspace, job_id)
        return {"id": job_id, "object": "batch", "deleted": True}

    # introspection ---------------------------------------------------------------------------

    def pending(self, workspace: str) -> int:
        """Pending requests of the workspace now (unknown validations count as usable)."""
        return self._pending(
            self.store.job_index(workspace, unfinished_only=True), self.clock.now()
        )
