"""Line retries (issue #14): after an attempt is collected, run its failed lines again.

A job whose collected results hold lines that failed for a reason that passes (429, 5xx, the
provider's transient codes) or that never ran (the job expired, or failed before processing
anything) stays ``collecting`` while attempts run those lines again, each an ordinary ledger
job (:mod:`orchestrator.ledger._attempts`) admitted under the budget, submitted with intent,
polled, collected and recovered like any other. When the last attempt is final, the
attempts' files are merged into one answer per request (:mod:`.attempt_files`) and the job
moves to ``done`` with the merged counts and outcome.

Crash safety: every step is either a published file (rewritten identically on a rerun) or
one ledger transaction (the next attempt and the job's attempt number together, a
compare-and-set), and each pass reads only what is durable, so a restart at any point
redoes the interrupted step and never records an attempt twice.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import attrs
import structlog

from orchestrator.daemon.attempt_files import (
    ATTEMPT_INPUT,
    attempt_folder,
    keep_copy,
    merge_attempts,
    remove_attempts,
    write_retry_input,
)
from orchestrator.daemon.context import Runtime, WorkspaceRuntime, retry_later
from orchestrator.daemon.layout import RESULT_NAMES, job_summary, result_dir
from orchestrator.errors import OrchestratorError, StaleTransition
from orchestrator.fsutil import discard, write_json_atomic
from orchestrator.inputs import estimate_tokens
from orchestrator.ledger import FileKind, ResultFile
from orchestrator.model import FINAL_STATES, Job, JobChanges, JobState, Outcome
from orchestrator.pricing import rolled_up, rolled_up_cost
from orchestrator.retries import (
    Reason,
    merged_outcome,
    never_processed_reason,
    next_attempt_delay,
    wants_another_attempt,
)
from orchestrator.usage import Usage

log = structlog.get_logger(__name__)


def attempt_entry(
    job: Job, files: Mapping[FileKind, ResultFile] | Sequence[ResultFile], *, number: int
) -> dict[str, Any]:
    """One entry of ``job.json``'s ``attempts``: a remote job, its counts, files and reason."""
    records = files.values() if isinstance(files, Mapping) else files
    info = dict(job.attempt_info or {}) if number > 1 else {}
    return {
        "attempt": number,
        "name": job.name,
        "remote_id": job.remote_id,
        "remote_status": job.remote_status,
        "state": job.state.value,
        "outcome": job.outcome.value if job.outcome else None,
        "requests": job.request_count,
        "total": job.total,
        "succeeded": job.succeeded,
        "failed": job.failed,
        "reason": info.get("reasons") if number > 1 else "the job's own submission",
        "files": {
            f.kind: {"path": Path(f.path).name, "bytes": f.bytes, "sha256": f.sha256,
                     "lines": f.lines}
            for f in records
        },
    }  # fmt: skip


def _tokens(request: object) -> int:
    return estimate_tokens(request) if isinstance(request, dict) else 0


def _merged_error(job: Job, last: Job) -> str | None:
    """The error a merged job keeps: why its last attempt was refused, else attempt 1's."""
    if last.state is JobState.REJECTED:
        return f"attempt {last.attempt} ({last.name}) was rejected: {last.error}"
    return job.error


class RetryKeeper:
    """Starts the attempts of one workspace's jobs and merges them once the last is final."""

    def __init__(self, runtime: Runtime, workspace: WorkspaceRuntime) -> None:
        self._rt = runtime
        self._ws = workspace
        self._swept = False

    def limit(self, job: Job) -> int:
        """The job's attempt limit (its own, else the workspace's)."""
        return job.max_attempts if job.max_attempts is not None else self._ws.max_attempts

    async def after_collection(
        self, job: Job, files: Mapping[FileKind, ResultFile], *, usage: Usage | None = None
    ) -> bool:
        """Attempt 1 of ``job`` is downloaded: start attempt 2 if some lines deserve it.

        Returns True when attempt 2 was recorded (the job stays ``collecting``); False when
        the job ends as collected (no retries configured, cancelled, or nothing to retry).
        """
        if job.retry_of is not None or job.is_parent or job.attempt != 1:
            return False
        if job.cancel_requested or job.outcome is Outcome.CANCELLED or self.limit(job) <= 1:
            return False
        folder = result_dir(self._rt.results_dir, job)
        sources = [Path(files[k].path) for k in RESULT_NAMES if k in files]
        started = await self._start(job, number=2, inputs=job.inputs, sources=sources,
                                    attempt=job)  # fmt: skip
        if started is None:
            return False
        # Attempt 1's files move under attempts/01 (linked, then re-recorded, then the
        # final names removed): the merge later writes the final names from them.
        first = attempt_folder(folder, 1)
        for kind, record in files.items():
            dest = first / RESULT_NAMES[kind]
            if Path(record.path) != dest:
                await anyio.to_thread.run_sync(keep_copy, Path(record.path), dest)
                await self._rt.ledger.record_file(
                    job.id, kind, path=str(dest), bytes=record.bytes, sha256=record.sha256,
                    lines=record.lines, usage=record.usage,
                )  # fmt: skip
                await anyio.to_thread.run_sync(discard, Path(record.path))
        if usage is not None:
            # The job's own usage is attempt 1's; its attempts (children) add theirs.
            job = await self._rt.ledger.update(job.id, JobState.COLLECTING, usage=usage)
        job_info = {"first": attempt_entry(attrs.evolve(job, state=JobState.DONE), files, number=1)}
        await self._record(job, 2, started, job_info=job_info)
        return True

    async def _start(
        self, job: Job, *, number: int, inputs: Sequence[str], sources: Sequence[Path],
        attempt: Job,
    ) -> Any:  # fmt: skip
        """Write attempt ``number``'s input from ``attempt``'s results; None if no line is due."""
        if not wants_another_attempt(
            attempt=number - 1, max_attempts=self.limit(job), cancelled=job.cancel_requested,
            retryable=1,
        ):  # fmt: skip
            return None  # no attempts left, or cancelled: no need to read the results
        never = never_processed_reason(
            attempt.outcome,
            completed=attempt.completed,
            job_failure_retryable=await self._job_failure_retryable(attempt),
        )
        folder = result_dir(self._rt.results_dir, job)
        dest = attempt_folder(folder, number) / ATTEMPT_INPUT
        written = await anyio.to_thread.run_sync(
            lambda: write_retry_input(
                inputs=inputs,
                results=sources,
                rules=self._ws.provider.result_lines,
                never_ran=never,
                dest=dest,
                tokens=_tokens,
            )
        )
        if not wants_another_attempt(
            attempt=number - 1,
            max_attempts=self.limit(job),
            cancelled=job.cancel_requested,
            retryable=written.lines,
        ):
            return None
        return written

    async def _job_failure_retryable(self, attempt: Job) -> bool:
        """Whether a remote job that failed having processed nothing failed for a passing
        reason (asks the provider for its error codes; only for such a job)."""
        if attempt.outcome is not Outcome.FAILED or attempt.completed or not attempt.remote_id:
            return False
        remote = await self._ws.provider.get_job(attempt.remote_id)
        return self._ws.provider.result_lines.retries_job_failure(remote.error_codes)

    async def _record(
        self, job: Job, number: int, written: Any, *, job_info: Mapping[str, Any] | None = None
    ) -> None:
        now = self._rt.clock.now()
        delay = next_attempt_delay(self._ws.retry_delay, number)
        await self._rt.ledger.add_attempt(
            job,
            number=number,
            inputs=(str(written.path),),
            request_count=written.lines,
            prompt_tokens=written.prompt_tokens,
            not_before=now + delay,
            info={"reasons": written.reasons, "requests": written.lines},
            job_info=job_info,
        )
        self._rt.retried_lines.update(written.reasons)
        log.info(
            "retry.attempt_recorded",
            job=job.name,
            attempt=number,
            of=self.limit(job),
            requests=written.lines,
            reasons=written.reasons,
            delay=delay,
        )
        self._ws.admission.wake()

    async def cycle(self) -> float | None:
        """One pass over the jobs whose attempts run; returns a retry delay, or None."""
        if not self._swept:
            # attempts/ of a job that reached done just before a crash.
            done = await self._rt.ledger.list_jobs(states=(JobState.DONE,), workspace=self._ws.name)
            for job in done:
                if job.retry_of is None and job.attempt > 1:
                    folder = result_dir(self._rt.results_dir, job)
                    await anyio.to_thread.run_sync(remove_attempts, folder)
            self._swept = True
        waits: list[float] = []
        now = self._rt.clock.now()
        for job in await self._rt.ledger.retrying(self._ws.name, held=True):
            if self._rt.stopping.is_set():
                break
            if job.not_before is not None and job.not_before > now:
                waits.append(job.not_before - now)
                continue
            structlog.contextvars.bind_contextvars(job=job.name, job_id=job.id)
            try:
                await self._follow(job)
            except StaleTransition as exc:
                log.info("retry.lost_race", job=job.name, detail=str(exc))
            except (OrchestratorError, OSError) as exc:
                with contextlib.suppress(StaleTransition):  # finished or taken over meanwhile
                    await retry_later(self._rt, job, f"retrying lines failed, will retry: {exc}")
                log.warning("retry.step_retry_later", job=job.name, error=str(exc))
            finally:
                structlog.contextvars.unbind_contextvars("job", "job_id")
        return min(waits) if waits else None

    async def _follow(self, job: Job) -> None:
        ledger = self._rt.ledger
        attempts = await ledger.attempts_of(job.id)
        latest = attempts[-1]
        if latest.state not in FINAL_STATES:
            if job.cancel_requested and not latest.cancel_requested:
                await ledger.request_cancel(latest.name)
            return
        if latest.state is JobState.DONE:
            files = {f.kind: f for f in await ledger.files(latest.id)}
            sources = [Path(files[k].path) for k in RESULT_NAMES if k in files]
            written = None
            if latest.outcome is not Outcome.CANCELLED:
                written = await self._start(
                    job, number=latest.attempt + 1, inputs=latest.inputs, sources=sources,
                    attempt=latest,
                )  # fmt: skip
            if written is not None:
                await self._record(job, latest.attempt + 1, written)
                return
        await self.merge(job, attempts)

    async def merge(self, job: Job, attempts: Sequence[Job]) -> Job:
        """Merge every attempt into the job's final files, write job.json, finish the job."""
        ledger, results = self._rt.ledger, self._rt.results_dir
        folder = result_dir(results, job)
        first = attempt_folder(folder, 1)
        sources: list[list[Path]] = [
            [first / RESULT_NAMES[k] for k in RESULT_NAMES if (first / RESULT_NAMES[k]).exists()]
        ]
        attempt_files: list[list[ResultFile]] = []
        for attempt in attempts:
            recorded = await ledger.files(attempt.id)
            attempt_files.append(recorded)
            sources.append([Path(f.path) for f in recorded])
        last = attempts[-1]
        message = (
            f"no attempt ran this request ({len(attempts) + 1} attempt(s); the last ended "
            f"{last.outcome.value if last.outcome else last.state.value})"
        )
        output, errors = await anyio.to_thread.run_sync(
            lambda: merge_attempts(
                inputs=job.inputs,
                attempts=sources,
                rules=self._ws.provider.result_lines,
                output=folder / RESULT_NAMES["output"],
                errors=folder / RESULT_NAMES["error"],
                never_ran_message=message,
            )
        )
        kinds: tuple[tuple[FileKind, Any], ...] = (("output", output), ("error", errors))
        for kind, merged in kinds:
            await ledger.record_file(
                job.id, kind, path=str(merged.path), bytes=merged.bytes, sha256=merged.sha256,
                lines=merged.lines,
            )  # fmt: skip
        last_outcome = last.outcome if last.state is JobState.DONE else Outcome.FAILED
        outcome = merged_outcome(
            succeeded=output.lines,
            failed=errors.lines,
            last=last_outcome,
            cancelled=job.cancel_requested,
        )
        counts: JobChanges = {
            "total": job.request_count,
            "completed": output.lines + errors.lines,
            "succeeded": output.lines,
            "failed": errors.lines,
            "outcome": outcome,
            "not_before": None,
            "error": None if outcome is Outcome.SUCCEEDED else _merged_error(job, last),
        }
        done_view = attrs.evolve(
            job,
            state=JobState.DONE,
            outcome=outcome,
            total=job.request_count,
            completed=output.lines + errors.lines,
            succeeded=output.lines,
            failed=errors.lines,
        )
        family = [job, *await ledger.descendants(job.id)]  # its attempts' usage adds up
        pricing, discount = self._ws.pricing, self._ws.batch_discount
        summary = job_summary(
            done_view,
            await ledger.files(job.id),
            usage=rolled_up(family).get(job.id),
            cost=rolled_up_cost(family, pricing, discount=discount).get(job.id),
            currency=pricing.currency,
        )
        first_entry = dict((job.attempt_info or {}).get("first") or {})
        summary["attempts"] = [first_entry] + [
            attempt_entry(a, f, number=a.attempt)
            for a, f in zip(attempts, attempt_files, strict=True)
        ]
        await anyio.to_thread.run_sync(write_json_atomic, folder / "job.json", summary)
        done = await ledger.transition(
            job.id,
            JobState.COLLECTING,
            JobState.DONE,
            detail=f"{len(attempts) + 1} attempts merged",
            **counts,
        )
        log.info(
            "retry.merged",
            job=job.name,
            attempts=len(attempts) + 1,
            succeeded=output.lines,
            failed=errors.lines,
            outcome=outcome,
        )
        await anyio.to_thread.run_sync(remove_attempts, folder)
        self._rt.activity.wake()
        return done


__all__ = ["Reason", "RetryKeeper", "attempt_entry"]
