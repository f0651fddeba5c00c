"""Collection for one workspace: collecting -> done, with results verified on disk.

Output and error files are streamed to ``<results>/<name>/`` (atomic: ``.part``, fsync, rename,
fsync the folder, by the provider), recorded in the ledger with bytes, sha256 and line count,
checked against the remote counts, and summarised in ``job.json``. A download failure never
fails the job: it is retried with backoff and the error is visible in ``status``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import anyio
import attrs
import structlog

from orchestrator.daemon.context import Runtime, WorkspaceRuntime, retry_later
from orchestrator.daemon.layout import RESULT_NAMES as RESULT_NAMES
from orchestrator.daemon.layout import job_summary as job_summary
from orchestrator.daemon.layout import result_dir as result_dir
from orchestrator.daemon.parts import PartsKeeper
from orchestrator.daemon.retry import RetryKeeper, attempt_entry
from orchestrator.errors import ForeignResults, OrchestratorError, StaleTransition
from orchestrator.fsutil import write_json_atomic
from orchestrator.ledger import FileKind, ResultFile
from orchestrator.model import Job, JobState, Outcome
from orchestrator.pricing import rolled_up, rolled_up_cost
from orchestrator.usage import ZERO_USAGE

log = structlog.get_logger(__name__)

IDLE_WAIT = 60.0
DOWNLOAD_CONCURRENCY = 2


class Collector:
    """The collection loop of one workspace."""

    def __init__(self, runtime: Runtime, workspace: WorkspaceRuntime) -> None:
        self._rt = runtime
        self._ws = workspace
        self._limiter = anyio.CapacityLimiter(DOWNLOAD_CONCURRENCY)
        self._parts = PartsKeeper(runtime, workspace)
        self._retries = RetryKeeper(runtime, workspace)

    async def run(self) -> None:
        """Loop forever: collect every job whose remote job has ended."""
        while not self._rt.stopping.is_set():
            wait = await self.cycle()
            self._rt.beat(f"collect:{self._ws.name}")
            await self._ws.collect.wait(wait)

    async def cycle(self) -> float:
        """One pass; returns how long the loop may sleep."""
        now = self._rt.clock.now()
        jobs = await self._rt.ledger.list_jobs(
            states=(JobState.COLLECTING,), workspace=self._ws.name, held=True
        )
        # A parent is merged by the parts keeper; a job whose attempts run, by the retry keeper.
        jobs = [j for j in jobs if not j.is_parent and not (j.retry_of is None and j.attempt > 1)]
        due = [j for j in jobs if j.not_before is None or j.not_before <= now]
        if self._rt.stopping.is_set():
            due = []  # stopping: start no download
        waits = [j.not_before - now for j in jobs if j.not_before and j.not_before > now]
        async with anyio.create_task_group() as tg:
            for job in due:
                tg.start_soon(self._collect_guarded, job)
        # Jobs whose attempts run follow them (one collected just now counts at once); then
        # split jobs follow their parts.
        for keeper in (self._retries, self._parts):
            retry = await keeper.cycle()
            if retry is not None:
                waits.append(retry)
        return min([IDLE_WAIT, *waits])

    async def _collect_guarded(self, job: Job) -> None:
        # Its own task: every line about this job (the provider's too) carries its name and ids.
        structlog.contextvars.bind_contextvars(job=job.name, job_id=job.id, remote_id=job.remote_id)
        async with self._limiter:
            try:
                await self.collect(job)
            except StaleTransition as exc:
                log.info("collect.lost_race", job=job.name, detail=str(exc))
            except OrchestratorError as exc:
                try:
                    await retry_later(self._rt, job, f"download failed, will retry: {exc}")
                except StaleTransition as lost:
                    # Finished or taken over meanwhile (a replica that lost its lease).
                    log.info("collect.lost_race", job=job.name, detail=str(lost))
                    return
                log.warning("collect.retry_later", job=job.name, job_id=job.id, error=str(exc))

    @property
    def _writer(self) -> str | None:
        """This replica's own ``.part`` names when replicas share the results folder.

        A short digest of the replica id (any characters may be configured): a replica that
        stalled past its lease never writes into the file the job's new holder fills. Alone
        on its ledger, the daemon keeps the plain ``.part``, which a restart resumes.
        """
        ledger = self._rt.ledger
        if not ledger.shared or ledger.owner is None:
            return None
        return "r" + hashlib.sha256(ledger.owner.encode()).hexdigest()[:10]

    async def collect(self, job: Job) -> Job:
        """Download what the job produced, verify it, write job.json, and finish the job."""
        ledger = self._rt.ledger
        folder = result_dir(self._rt.results_dir, job)
        folder.mkdir(parents=True, exist_ok=True)
        recorded = {f.kind: f for f in await ledger.files(job.id)}
        wanted: tuple[tuple[FileKind, str | None], ...] = (
            ("output", job.output_file_id),
            ("error", job.error_file_id),
        )
        dests: dict[str, Path] = {kind: folder / name for kind, name in RESULT_NAMES.items()}
        due: dict[str, str] = {}
        for kind, file_id in wanted:
            intact = kind in recorded and _intact(recorded[kind], Path(recorded[kind].path))
            if file_id is not None and not intact:  # downloaded before a restart: not again
                due[kind] = file_id
        try:
            downloaded = (
                await self._ws.provider.download_results(
                    job.remote_id or "",
                    due,
                    dests,
                    writer=self._writer,
                    submitted=job.input_file_ids,
                )
                if due
                else {}
            )
        except ForeignResults as exc:
            return await self._foreign(job, exc)
        for kind_name, got in downloaded.items():
            kind = "output" if kind_name == "output" else "error"
            self._rt.bytes_downloaded += got.bytes
            await ledger.record_file(
                job.id,
                kind,
                path=str(got.path),
                bytes=got.bytes,
                sha256=got.sha256,
                lines=got.lines,
                usage=got.usage,
            )
            log.info(
                "collect.downloaded",
                job=job.name,
                kind=kind,
                bytes=got.bytes,
                lines=got.lines,
                sha256=got.sha256,
                total_tokens=got.usage.total_tokens,
                lines_without_usage=got.usage.lines_without_usage,
            )
        files = {f.kind: f for f in await ledger.files(job.id)}
        problems = _count_mismatches(job, files)
        for problem in problems:
            log.warning("collect.count_mismatch", job=job.name, job_id=job.id, problem=problem)
        error = "; ".join(problems) or None
        usage = sum((f.usage or ZERO_USAGE for f in files.values()), ZERO_USAGE)
        if await self._retries.after_collection(job, files, usage=usage):
            self._rt.activity.wake()  # stays collecting: its attempt 2 is queued
            return job
        finished = attrs.evolve(job, state=JobState.DONE, error=error, usage=usage)
        # job.json first: a crash before the transition re-collects and rewrites it, while a
        # crash after a transition-first order would leave a done job without its summary.
        summary = await self._summary(finished, files.values())
        if job.retry_of is None:
            summary["attempts"] = [attempt_entry(finished, files, number=1)]
        await anyio.to_thread.run_sync(write_json_atomic, folder / "job.json", summary)
        done = await ledger.transition(
            job.id,
            JobState.COLLECTING,
            JobState.DONE,
            detail="results collected",
            error=error,
            not_before=None,
            usage=usage,
        )
        log.info(
            "collect.done",
            job=job.name,
            job_id=job.id,
            outcome=done.outcome,
            total_tokens=usage.total_tokens,
            cost=summary["cost"],
        )
        self._rt.activity.wake()
        if self._ws.spend_limit is not None:
            self._ws.admission.wake()  # its actual cost replaces its estimate: room may free
        return done

    async def _foreign(self, job: Job, exc: ForeignResults) -> Job:
        """An adopted batch proved another client's: the job ends failed, saying so.

        Nothing of its results is kept as this job's (the download discarded them). The
        batch is left alone: it is not ours to cancel or delete.
        """
        error = (
            f"{exc}; the batch adopted after an uncertain create was not this job's, and "
            "this job's own batch was never created: `orchestrator rerun` the job (give the "
            "daemon a workspace of its own to rule this out)"
        )
        log.error("collect.adoption_refuted", job=job.name, job_id=job.id, remote_id=exc.remote_id)
        done = await self._rt.ledger.transition(
            job.id,
            JobState.COLLECTING,
            JobState.DONE,
            detail="adopted batch refuted by its results",
            error=error,
            outcome=Outcome.FAILED,
            not_before=None,
        )
        self._rt.activity.wake()
        return done

    async def _summary(self, job: Job, files: Iterable[ResultFile]) -> dict[str, Any]:
        """``job.json`` of ``job``, its usage and cost summed with its children's."""
        family = [job, *await self._rt.ledger.descendants(job.id)]
        pricing, discount = self._ws.pricing, self._ws.batch_discount
        return job_summary(
            job,
            files,
            usage=rolled_up(family).get(job.id),
            cost=rolled_up_cost(family, pricing, discount=discount).get(job.id),
            currency=pricing.currency,
        )


def _intact(record: ResultFile, dest: Path) -> bool:
    try:
        return dest.stat().st_size == record.bytes
    except FileNotFoundError:
        return False


def _count_mismatches(job: Job, files: Mapping[FileKind, ResultFile]) -> list[str]:
    """Line counts of the downloaded files against the provider's counts.

    An expired job's error file may also hold the requests that never ran: OpenAI writes each
    as a ``batch_expired`` line and does not count it as failed (``shared/api/openai-batch.md``
    §5). Up to that many more error lines than failed requests are expected then.
    """
    problems = []
    output_lines = files["output"].lines if "output" in files else 0
    error_lines = files["error"].lines if "error" in files else 0
    if output_lines != job.succeeded:
        problems.append(
            f"output file has {output_lines} lines but the provider reports "
            f"{job.succeeded} succeeded requests"
        )
    never_ran = 0
    if job.outcome is Outcome.EXPIRED:
        never_ran = max(0, job.request_count - job.succeeded - job.failed)
    if not job.failed <= error_lines <= job.failed + never_ran:
        problems.append(
            f"error file has {error_lines} lines but the provider reports "
            f"{job.failed} failed requests"
            + (f" (and {never_ran} that never ran)" if never_ran else "")
        )
    return problems
