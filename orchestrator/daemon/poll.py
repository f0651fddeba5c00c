"""Bulk polling of one workspace: one list call per page of active jobs refreshes them all.

A per-job GET is spent only on a running job the list did not return (it has just ended, or
the list is lagging). A provider without list filters (OpenAI: every batch, newest first) is
read only until every running job of ours was seen, so a workspace's finished history costs
nothing. A remote job that failed for capacity before processing anything goes back to the
queue (:mod:`.requeue`) instead of being collected. Poll failures are counted and logged; they
never change a job's state.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator

import attrs
import structlog

from orchestrator.daemon.context import Runtime, WorkspaceRuntime
from orchestrator.daemon.requeue import requeue
from orchestrator.errors import PermanentProviderError, StaleTransition, TransientProviderError
from orchestrator.model import (
    CLIENT_TOKEN_KEY,
    Job,
    JobChanges,
    JobState,
    RemotePhase,
    duplicate_remote_jobs,
    outcome_for,
    pending,
    requeues_after,
)
from orchestrator.polling import Progress, next_base, poll_delay
from orchestrator.providers.base import RemoteJob
from orchestrator.service.view import Durations

log = structlog.get_logger(__name__)

SETTLE_FRACTION = 0.2
"""Woken by a submission or a cancel, the poller lists once wake-ups have stopped for this
share of ``polling.initial`` (or ``polling.initial`` after the first, if they never stop).
Listing at each wake-up made a burst of 100 creates cost 100 list calls of jobs that were all
still validating (docs/benchmarks.md, section 1)."""

LIST_MARGIN = 600.0
"""Seconds a list that pages back in time (OpenAI) reads before the oldest running job's
submission: the provider stamps ``created_at`` with its own clock. A job of ours older than
that (adopted long after its create) is fetched with a GET instead."""


@attrs.define
class _Observed:
    """In-memory progress samples of one running job (re-learnt after a restart)."""

    started_at: float
    first_at: float | None = None
    first_completed: int = 0
    last_at: float = 0.0
    last_completed: int = 0
    total: int = 0

    def progress(self) -> Progress | None:
        if self.first_at is None:
            return None
        return Progress(
            started_at=self.started_at,
            first_at=self.first_at,
            first_completed=self.first_completed,
            last_at=self.last_at,
            last_completed=self.last_completed,
            total=self.total,
        )


class Poller:
    """The poll loop of one workspace.

    It counts its own cycles, failures and cycle durations (:attr:`durations`), which the
    service reads through the daemon's view for ``/metrics``.
    """

    def __init__(self, runtime: Runtime, workspace: WorkspaceRuntime) -> None:
        self._rt = runtime
        self._ws = workspace
        self._base: float | None = None
        self._observed: dict[int, _Observed] = {}
        self._swept: set[str] = set()
        """Duplicate remote jobs already cancelled (listed until the provider confirms)."""
        self._running: list[Job] = []
        """This cycle's running jobs (a requeue's observation compares with them)."""
        self._released = False
        """Budget was released this cycle (a job progressed or ended): wake admission once."""
        self._progress: list[tuple[int, JobState, JobChanges]] = []
        """Progress of this cycle's running jobs, stored together at the cycle's end."""
        self._freed: dict[int, int] = {}
        """Budget each of those updates releases (counted once they are stored)."""
        self.consecutive_failures = 0
        self.cycles = 0
        """Cycles that asked the provider (a cycle with no running job skips it)."""
        self.durations = Durations()
        """How long those cycles took, from the ledger read to the last write."""

    async def run(self) -> None:
        """Loop forever: poll while jobs run, sleep on the schedule, wake on submissions."""
        while not self._rt.stopping.is_set():
            delay = await self.cycle()
            self._rt.beat(f"poll:{self._ws.name}")
            if await self._ws.poll.wait(delay):
                self._base = None  # a submission or cancel: look again soon
                await self._settle()

    async def _settle(self) -> None:
        """Wait for the burst of wake-ups to end (on the injected clock), then return."""
        policy, clock = self._rt.policy, self._rt.clock
        deadline = clock.now() + policy.initial
        while not self._rt.stopping.is_set():
            left = deadline - clock.now()
            if left <= 0 or not await self._ws.poll.wait(
                min(left, policy.initial * SETTLE_FRACTION)
            ):
                return

    async def cycle(self) -> float:
        """One poll cycle; returns the delay until the next one.

        Only cycles that polled are timed (:attr:`durations`), failed ones included.
        """
        clock, before = self._rt.clock, self.cycles
        started = clock.now()
        try:
            return await self._cycle()
        finally:
            if self.cycles != before:
                self.durations.observe(clock.now() - started)

    async def _cycle(self) -> float:
        policy = self._rt.policy
        running = await self._rt.ledger.list_jobs(
            states=(JobState.RUNNING,), workspace=self._ws.name, held=True
        )
        running = [job for job in running if not job.is_parent]  # no remote job to poll
        if not running:
            self._base = None
            self._observed.clear()
            return policy.max
        self.cycles += 1
        changed = False
        try:
            changed = await self._refresh(running)
            self.consecutive_failures = 0
        except TransientProviderError as exc:
            self.consecutive_failures += 1
            log.warning(
                "poll.failed",
                workspace=self._ws.name,
                consecutive_failures=self.consecutive_failures,
                error=str(exc),
            )
        self._base = next_base(self._base, changed=changed, policy=policy)
        samples = [p for o in self._observed.values() if (p := o.progress()) is not None]
        head = self._ws.head
        return poll_delay(
            self._base,
            now=self._rt.clock.now(),
            jobs=samples,
            policy=policy,
            jitter_sample=self._rt.rng.uniform(-1.0, 1.0),
            head_shortfall=None if head is None else head.shortfall_now(self._ws.released),
        )

    async def _refresh(self, running: list[Job]) -> bool:
        provider = self._ws.provider
        structlog.contextvars.unbind_contextvars("job", "job_id", "remote_id")
        ours = {job.remote_id for job in running}
        active: dict[str, RemoteJob] = {}
        strays: dict[str, str] = {}
        # A provider that filters on the server lists only active jobs: read to the end (the
        # duplicates to sweep are in it) it costs ⌈active/page⌉. One that pages through every
        # job newest first (OpenAI) also lists ours that just ended (no GET for them) and is
        # read only until all of ours were seen, and never past the oldest's submission.
        filtered = provider.lists_by_status
        horizon = min(job.submitted_at or job.updated_at for job in running) - LIST_MARGIN
        listing = provider.list_jobs(active_only=filtered, created_after=horizon)
        try:
            async for remote in listing:
                if remote.id in ours:
                    active[remote.id] = remote
                    if not filtered and len(active) == len(ours):
                        break
                elif (
                    (token := remote.metadata.get(CLIENT_TOKEN_KEY))
                    and not remote.phase.terminal
                    and remote.phase is not RemotePhase.CANCELLING
                    and remote.id not in self._swept
                ):
                    strays[remote.id] = token
        finally:
            if isinstance(listing, AsyncGenerator):
                await listing.aclose()  # stopped early: end its paging now, not at GC
        changed = False
        try:
            changed = await self._apply_all(running, active)
            if strays:
                await self._sweep(strays)
        finally:
            # Also when the cycle fails half-way: what was learnt before the failure is kept.
            await self._store_progress()
            if self._released:
                # Once per cycle, not once per job: every wake-up costs an admission pass
                # (bench/scale.py: 25 passes per cycle over 1,000 running jobs before).
                self._released = False
                self._ws.admission.wake()
        return changed

    async def _apply_all(self, running: list[Job], active: dict[str, RemoteJob]) -> bool:
        provider = self._ws.provider
        self._running = running
        changed = False
        for job in running:
            # Every line about this job (the provider's too) carries its name and ids.
            structlog.contextvars.bind_contextvars(
                job=job.name, job_id=job.id, remote_id=job.remote_id
            )
            assert job.remote_id is not None  # running implies a remote id
            listed = active.get(job.remote_id)
            if listed is not None:
                remote = listed
            else:
                try:
                    remote = await provider.get_job(job.remote_id)
                except PermanentProviderError as exc:
                    log.error(
                        "poll.job_missing", job=job.name, remote_id=job.remote_id, error=str(exc)
                    )
                    continue
            if (
                job.cancel_requested
                and not remote.phase.terminal
                and (remote.phase is not RemotePhase.CANCELLING)
            ):
                remote = await provider.cancel_job(job.remote_id)
                log.info("poll.cancel_sent", job=job.name, remote_id=job.remote_id)
            try:
                changed |= await self._apply(job, remote)
            except StaleTransition as exc:
                log.info("poll.lost_race", job=job.name, detail=str(exc))
        structlog.contextvars.unbind_contextvars("job", "job_id", "remote_id")
        return changed

    async def _sweep(self, strays: dict[str, str]) -> None:
        """Cancel the remote jobs that duplicate one of ours (field notes: sweep for orphans).

        The listing already returned them, so this costs one ledger read, plus one cancel
        call per duplicate found. Remote jobs with tokens this ledger never issued belong to
        someone else (another ledger on the workspace) and are left alone. With several
        replicas, only duplicates of jobs this replica holds (or of finished jobs, which no
        replica holds) are cancelled: another replica's running job is its own to sweep.
        """
        owners = await self._rt.ledger.jobs_by_tokens(strays.values(), held=True)
        for remote_id, owner in duplicate_remote_jobs(strays, owners):
            try:
                await self._ws.provider.cancel_job(remote_id)
            except TransientProviderError as exc:
                # The next cycle lists it again and retries; the poll itself went fine.
                log.warning("poll.duplicate_cancel_failed", remote_id=remote_id, error=str(exc))
                continue
            except PermanentProviderError as exc:
                # Already ended or gone: nothing left to stop.
                self._swept.add(remote_id)
                log.info("poll.duplicate_not_cancelled", remote_id=remote_id, error=str(exc))
                continue
            self._swept.add(remote_id)
            log.warning(
                "poll.duplicate_cancelled",
                job=owner.name,
                job_id=owner.id,
                remote_id=remote_id,
                kept_remote_id=owner.remote_id,
            )
            # The job may have moved on meanwhile; the log line above keeps the record then.
            with contextlib.suppress(StaleTransition):
                await self._rt.ledger.update(
                    owner.id,
                    owner.state,
                    detail=f"duplicate remote job {remote_id} cancelled "
                    f"(this job is {owner.remote_id})",
                )

    async def _apply(self, job: Job, remote: RemoteJob) -> bool:
        """Store what the provider said; return True if the job changed state or status."""
        ledger, now = self._rt.ledger, self._rt.clock.now()
        if requeues_after(remote.phase, error_codes=remote.error_codes, completed=remote.completed):
            await requeue(self._rt, self._ws, job, remote, self._running)
            self._observed.pop(job.id, None)
            self._released = True
            return True
        if remote.phase.terminal:
            outcome = outcome_for(remote.phase, succeeded=remote.succeeded, failed=remote.failed)
            await ledger.transition(
                job.id,
                JobState.RUNNING,
                JobState.COLLECTING,
                detail=f"remote {remote.status}"
                + (f": {'; '.join(remote.errors)}" if remote.errors else ""),
                remote_status=remote.status,
                output_file_id=remote.output_file,
                error_file_id=remote.error_file,
                outcome=outcome,
                total=remote.total,
                completed=remote.completed,
                succeeded=remote.succeeded,
                failed=remote.failed,
            )
            self._observed.pop(job.id, None)
            self._ws.released += pending(job)
            log.info(
                "poll.job_ended",
                job=job.name,
                remote_id=remote.id,
                remote_status=remote.status,
                succeeded=remote.succeeded,
                failed=remote.failed,
            )
            self._rt.activity.wake()
            self._ws.collect.wake()
            self._released = True
            return True
        self._observe(job, remote, now)
        status_changed = remote.status != job.remote_status
        progressed = (remote.total, remote.completed) != (job.total, job.completed)
        if status_changed or progressed:
            after = attrs.evolve(job, total=remote.total, completed=remote.completed)
            self._freed[job.id] = pending(job) - pending(after)
            self._progress.append(
                (
                    job.id,
                    JobState.RUNNING,
                    {
                        "remote_status": remote.status,
                        "total": remote.total,
                        "completed": remote.completed,
                        "succeeded": remote.succeeded,
                        "failed": remote.failed,
                    },
                )
            )
        return status_changed

    async def _store_progress(self) -> None:
        """Store the cycle's progress in one transaction (one per job cost 1.8 ms each)."""
        if not self._progress:
            return
        updates, self._progress = self._progress, []
        freed, self._freed = self._freed, {}
        result = await self._rt.ledger.update_many(updates)
        self._ws.released += sum(freed[job_id] for job_id in result.updated)
        for job_id in result.stale + result.missing:
            # A cancel or another replica moved the job since it was read: their move stands.
            log.info("poll.lost_race", job_id=job_id, detail="progress not stored")
        if result.updated:
            # Released budget may let a queued job in (admission is woken at the cycle's end).
            self._released = True

    def _observe(self, job: Job, remote: RemoteJob, now: float) -> None:
        seen = self._observed.setdefault(
            job.id, _Observed(started_at=job.submitted_at or job.created_at)
        )
        if remote.total <= 0:
            return
        if seen.first_at is None:
            seen.first_at, seen.first_completed = now, remote.completed
        seen.last_at, seen.last_completed, seen.total = now, remote.completed, remote.total
