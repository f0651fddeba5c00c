"""Admission and submission for one workspace: queued -> admitted -> submitting -> running.

Intent before side effect: file ids are recorded as each upload finishes, and the job moves to
``submitting`` (committed) before the create call. A job found in ``submitting`` that this process
is not creating right now is *uncertain*: once the reconcile grace has passed, the workspace's
jobs are listed by the job's token and the remote job is adopted if it exists; only if none exists
is it created again.

Several replicas (design §8): admission runs in one ledger transaction per workspace,
serialised across replicas, and claims what it admits; a replica then works only on the jobs it
holds. Every ledger write about a claimed job is fenced on the lease, so a replica that lost
its lease gets :class:`~orchestrator.errors.LeaseLost` (a :class:`StaleTransition`) and changes
nothing. That is what keeps a create from being sent twice: the intent write
``admitted -> submitting`` (and ``no remote job found: creating`` before a re-create) is fenced,
so a replica that lost its claim never calls create after it. A create already in flight when
the lease is lost is bounded by the provider's request timeout, which is below the reconcile
grace (``SAFE_RECONCILE_GRACE``); the new holder reconciles a ``submitting`` job only once the
grace has passed since the intent, so its listing sees any create that landed and adopts it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from pathlib import Path
from typing import Unpack

import anyio
import structlog

from orchestrator.budget import Admission, Misfit, admit, in_flight_pending, in_flight_tokens
from orchestrator.daemon.context import (
    SAFE_RECONCILE_GRACE,
    HeadWait,
    Runtime,
    WorkspaceRuntime,
    backoff,
    retry_later,
)
from orchestrator.daemon.spend import publish_spend, spend_budget
from orchestrator.daemon.unmarked import reconcile_unmarked
from orchestrator.errors import (
    BudgetExhausted,
    CapacityRefused,
    PermanentProviderError,
    SpendLimitExceeded,
    StaleTransition,
    TokenBudgetExhausted,
    TransientProviderError,
)
from orchestrator.model import (
    CLIENT_TOKEN_KEY,
    FINAL_STATES,
    Job,
    JobChanges,
    JobState,
    Outcome,
    requeues_after,
)
from orchestrator.pricing import month_start, next_month_start
from orchestrator.providers.base import RemoteJob
from orchestrator.usage import Usage

log = structlog.get_logger(__name__)

UNFINISHED = tuple(state for state in JobState if state not in FINAL_STATES)
"""The states an admission pass reads (a finished job holds no budget and needs nothing)."""

IDLE_WAIT = 60.0
"""Longest sleep of the loop when nothing is due (it is woken on every relevant change)."""
UPLOAD_CONCURRENCY = 4
INPUT_READ_ATTEMPTS = 3
"""Uploads an unreadable input gets (with backoff between them) before its job is rejected."""
CREATE_SLOT_WAIT = 2.0
"""Seconds an admitted job waits before looking again at a workspace's busy create slot."""
CLOCK_SKEW_MARGIN = 600.0
"""Seconds the reconcile list looks back before the create intent: the provider stamps
``created_at`` with its own clock, which may be behind ours."""


def never_fits_reason(job: Job, misfit: Misfit, currency: str | None = None) -> str:
    """The rejection of a job that can never be admitted, with its figures."""
    if misfit.dimension == "tokens":
        return str(TokenBudgetExhausted(job.name, job.model, int(misfit.needed), int(misfit.limit)))
    if misfit.dimension in ("spend", "price"):
        estimate = misfit.needed if misfit.dimension == "spend" else None
        return str(SpendLimitExceeded(job.name, job.model, estimate, misfit.limit, currency))
    return str(BudgetExhausted(job.name, int(misfit.needed), int(misfit.limit)))


class Submitter:
    """The admission and submission loop of one workspace."""

    def __init__(self, runtime: Runtime, workspace: WorkspaceRuntime) -> None:
        self._rt = runtime
        self._ws = workspace
        self._busy: set[int] = set()
        self._limiter = anyio.CapacityLimiter(UPLOAD_CONCURRENCY)
        self._create_slot = anyio.Lock()
        """Held around a create where batches carry no metadata (one in flight: unmarked.py)."""

    async def run(self) -> None:
        """Loop forever: admit what fits, submit what is admitted, reconcile the uncertain."""
        if self._rt.reconcile_grace < SAFE_RECONCILE_GRACE:
            log.warning(
                "submit.short_reconcile_grace",
                workspace=self._ws.name,
                reconcile_grace=self._rt.reconcile_grace,
                safe_minimum=SAFE_RECONCILE_GRACE,
                risk="a create still in flight after a crash could be submitted twice",
            )
        while not self._rt.stopping.is_set():
            wait = await self.cycle()
            self._rt.beat(f"submit:{self._ws.name}")
            await self._ws.admission.wait(wait)

    async def cycle(self) -> float:
        """One pass; returns how long the loop may sleep before the next one."""
        ledger, now = self._rt.ledger, self._rt.clock.now()
        # Finished jobs are never read: a pass costs what the live jobs cost, not the ledger's
        # history (bench/scale.py: 20,000 rows a pass at 10,000 jobs before). Queued jobs have
        # no holder; an admitted one is cancelled by the replica that holds it.
        listed = await ledger.list_jobs(
            states=(JobState.QUEUED, JobState.ADMITTED), workspace=self._ws.name, held=True
        )
        for job in listed:
            if job.cancel_requested and not job.is_parent:
                await self._lost_race_is_fine(self._cancel_locally(job))
        released = self._ws.released  # before the read: the ledger holds at least this much
        external = 0
        if self._ws.count_external:
            unfinished = await ledger.list_jobs(states=UNFINISHED, workspace=self._ws.name)
            if any(j.state is JobState.QUEUED and not j.is_parent for j in unfinished):
                external = await self._external_pending(unfinished)
        seen: list[Job] = []
        tokens = self._ws.tokens
        # The month this pass counts spend in: it rolls over on its own as ``now`` moves on.
        since = None if self._ws.spend_limit is None else month_start(now)

        def decide(jobs: list[Job], finished: Mapping[str, Usage]) -> Admission:
            # Runs inside the ledger's admission transaction, which serialises the passes of
            # every replica on the workspace (design §8): ``jobs`` are all replicas' jobs;
            # ``finished`` sums this month's results by model (under a spend limit).
            seen.extend(jobs)
            waiting = [j for j in jobs if j.state is JobState.QUEUED and not j.is_parent]
            return admit(
                waiting,
                in_flight=in_flight_pending(jobs),
                budget=self._ws.pending_budget,
                external=external,
                now=now,
                tokens=tokens,
                tokens_in_flight=in_flight_tokens(jobs, tokens.scale),
                spend=spend_budget(self._ws, jobs, waiting, since, finished),
            )

        if any(j.state is JobState.QUEUED and not j.is_parent for j in listed):
            decision, admitted = await ledger.admit_spending(self._ws.name, decide, since=since)
        else:  # nothing waits: no admission transaction (it takes the write lock on SQLite)
            decision, admitted = Admission(), []
        queued = [j for j in seen if j.state is JobState.QUEUED and not j.is_parent]
        self._publish_head(decision, released)
        publish_spend(self._ws, decision)
        for misfit in decision.misfits:
            job = next(j for j in queued if j.id == misfit.job_id)
            await self._lost_race_is_fine(
                self._move(
                    job,
                    JobState.REJECTED,
                    detail="never fits",
                    error=never_fits_reason(job, misfit, self._ws.pricing.currency),
                )
            )
        for job in admitted:
            self._rt.activity.wake()
            if job.parent_id is not None:
                self._ws.collect.wake()  # the parts keeper follows its parent's parts
            log.info(
                "submit.admitted",
                job=job.name,
                job_id=job.id,
                requests=job.request_count,
                pending_after=decision.pending_after,
                budget=self._ws.pending_budget,
                prompt_tokens=job.prompt_tokens,
                tokens_after=decision.tokens_after.get(job.model),
                token_budget=tokens.limit(job.model),
                spend_after=decision.spend_after,
                replica_id=ledger.owner,
                holder=job.claimed_by,
            )

        if self._rt.stopping.is_set():
            return 0.0  # stopping: start no upload or create
        due: list[Job] = []
        next_wake = IDLE_WAIT
        for job in await ledger.list_jobs(
            states=(JobState.ADMITTED, JobState.SUBMITTING), workspace=self._ws.name, held=True
        ):
            if job.id in self._busy:
                continue
            start = job.not_before or 0.0
            if job.state is JobState.SUBMITTING:
                start = max(start, job.updated_at + self._rt.reconcile_grace)
            if start <= now:
                due.append(job)
            else:
                next_wake = min(next_wake, start - now)
        for job in queued:
            if job.not_before is not None and job.not_before > now:
                next_wake = min(next_wake, job.not_before - now)
        if self._ws.spend_wait is not None:
            # A new month brings a new spend limit: the waiting head is admitted then at the
            # latest (a job finishing under its estimate wakes the loop sooner).
            next_wake = min(next_wake, next_month_start(now) - now)
        async with anyio.create_task_group() as tg:
            for job in due:
                self._busy.add(job.id)
                tg.start_soon(self._advance, job)
        return max(0.0, next_wake)

    async def _lost_race_is_fine(self, move: Awaitable[object]) -> None:
        """Run ``move``; another replica (or a cancel) moving the job first is no failure."""
        try:
            await move
        except StaleTransition as exc:
            log.info("submit.lost_race", detail=str(exc))

    def _publish_head(self, decision: Admission, released: int) -> None:
        """Tell the poller how much the blocked head needs released (it polls by then)."""
        previous = self._ws.head
        if decision.blocked is None:
            self._ws.head = None
            return
        self._ws.head = HeadWait(
            job_id=decision.blocked, shortfall=decision.shortfall, released_mark=released
        )
        if previous is None or previous.job_id != decision.blocked:
            self._ws.poll.wake()  # a new head: the poller's current sleep did not plan for it

    async def _external_pending(self, jobs: list[Job]) -> int:
        """Pending requests of the workspace's unfinished jobs that this ledger does not hold.

        ``jobs`` are this ledger's unfinished jobs; a remote job none of them owns (by id or
        client token) is counted: a foreign job, or a duplicate left by a lost create whose
        job has finished. Jobs still validating report no total yet and count 0 until they
        do. On a transient failure the last known figure stands.
        """
        ours_ids = {job.remote_id for job in jobs if job.remote_id}
        ours_tokens = {job.client_token for job in jobs}
        total = 0
        try:
            async for remote in self._ws.provider.list_jobs(active_only=True):
                if remote.id in ours_ids or remote.metadata.get(CLIENT_TOKEN_KEY) in ours_tokens:
                    continue
                total += max(0, remote.total - remote.completed)
        except TransientProviderError as exc:
            log.warning("submit.external_unknown", workspace=self._ws.name, error=str(exc))
            return self._ws.external_pending
        self._ws.external_pending = total
        return total

    async def _advance(self, job: Job) -> None:
        # Its own task: every line about this job (the provider's too) carries its name and id.
        structlog.contextvars.bind_contextvars(job=job.name, job_id=job.id)
        try:
            async with self._limiter:
                if job.state is JobState.ADMITTED:
                    await self._upload_and_create(job)
                else:
                    await self._reconcile(job)
        except StaleTransition as exc:
            # Someone else moved the job (a cancel, another replica): their move stands.
            log.info("submit.lost_race", job=job.name, job_id=job.id, detail=str(exc))
        finally:
            self._busy.discard(job.id)

    async def _upload_and_create(self, job: Job) -> None:
        ledger, provider = self._rt.ledger, self._ws.provider
        groups = provider.input_groups([Path(path) for path in job.inputs])
        file_ids = list(job.input_file_ids)
        # A job uploaded in part before sha256s were recorded has fewer digests than ids.
        digests = [*job.input_file_sha256s, *[""] * len(file_ids)][: len(file_ids)]
        try:
            for index in range(len(file_ids), len(groups)):
                uploaded = await provider.upload_input(
                    groups[index],
                    endpoint=job.endpoint,
                    model=job.model,
                    filename=f"{job.name}-{index}.jsonl",
                )
                file_ids.append(uploaded.id)
                digests.append(uploaded.sha256)
                job = await ledger.update(
                    job.id,
                    JobState.ADMITTED,
                    input_file_ids=tuple(file_ids),
                    input_file_sha256s=tuple(digests),
                )
                log.info(
                    "submit.uploaded",
                    job=job.name,
                    job_id=job.id,
                    file_id=uploaded.id,
                    bytes=uploaded.bytes,
                    sha256=uploaded.sha256,
                )
        except TransientProviderError as exc:
            await self._retry_later(job, f"upload failed, will retry: {exc}")
            return
        except PermanentProviderError as exc:
            await self._move(job, JobState.REJECTED, detail="upload refused", error=str(exc))
            return
        except OSError as exc:  # an input deleted, unreadable or cut short since intake
            await self._input_unreadable(job, exc)
            return
        if not provider.finds_by_metadata:
            async with self._create_slot:
                if await self._another_create_in_flight(job):
                    return
                job = await self._move(job, JobState.SUBMITTING, detail="create intent")
                await self._create(job)
            return
        job = await self._move(job, JobState.SUBMITTING, detail="create intent")
        await self._create(job)

    async def _another_create_in_flight(self, job: Job) -> bool:
        """Whether another job of the workspace is ``submitting`` (its create may be in flight
        or uncertain): then ``job`` waits, so at most one batch can be unowned at a time."""
        submitting = await self._rt.ledger.list_jobs(
            states=(JobState.SUBMITTING,), workspace=self._ws.name
        )
        others = [j for j in submitting if j.id != job.id]
        if not others:
            return False
        await self._rt.ledger.update(
            job.id, JobState.ADMITTED, not_before=self._rt.clock.now() + CREATE_SLOT_WAIT
        )
        log.info("submit.create_slot_busy", job=job.name, job_id=job.id, waiting_for=others[0].name)
        return True

    async def _create(self, job: Job) -> None:
        ledger, provider = self._rt.ledger, self._ws.provider
        try:
            remote = await provider.create_job(
                input_file_ids=job.input_file_ids,
                model=job.model,
                endpoint=job.endpoint,
                metadata={**job.metadata, CLIENT_TOKEN_KEY: job.client_token},
                timeout_hours=job.timeout_hours,
                inputs=[Path(path) for path in job.inputs],
            )
        except CapacityRefused as exc:
            attempts = job.step_retries + 1
            await self._move(
                job,
                JobState.QUEUED,
                detail="provider refused for capacity",
                error=str(exc),
                step_retries=attempts,
                not_before=self._rt.clock.now() + backoff(attempts),
            )
            return
        except PermanentProviderError as exc:
            await self._move(job, JobState.REJECTED, detail="create refused", error=str(exc))
            return
        except TransientProviderError as exc:
            # The job may exist now: stay in submitting; reconcile after the grace period.
            await ledger.update(
                job.id,
                JobState.SUBMITTING,
                detail="create outcome unknown",
                error=f"create outcome unknown, will reconcile: {exc}",
                step_retries=job.step_retries + 1,
            )
            log.warning("submit.create_uncertain", job=job.name, job_id=job.id, error=str(exc))
            return
        await self._adopt(job, remote, detail="created")

    async def _reconcile(self, job: Job) -> None:
        """A job left in ``submitting``: adopt its remote job if one exists, else create it.

        The list is asked for the job's token and for nothing created before the create
        intent (less :data:`CLOCK_SKEW_MARGIN`): a provider that filters on the server
        (Mistral) answers with the token's jobs; one that cannot (OpenAI) pages back newest
        first to that time and matches the token itself. Either way "not found" means the
        whole window was read: only then is the job created. A remote job that failed for
        capacity before processing anything (an earlier attempt of a requeued job, or this
        one) is never adopted: creating anew is the same as running it.
        """
        provider = self._ws.provider
        since = await self._intent_time(job) - CLOCK_SKEW_MARGIN
        if not provider.finds_by_metadata:
            async with self._create_slot:
                await reconcile_unmarked(
                    job,
                    since,
                    provider=provider,
                    ledger=self._rt.ledger,
                    workspace=self._ws.name,
                    adopt=self._adopt,
                    create=self._create,
                    retry_later=self._retry_later,
                )
            return
        try:
            listed = [
                remote
                async for remote in provider.list_jobs(
                    metadata={CLIENT_TOKEN_KEY: job.client_token}, created_after=since
                )
            ]
        except TransientProviderError as exc:
            await self._retry_later(job, f"reconcile list failed, will retry: {exc}")
            return
        found = [
            remote
            for remote in listed
            if not requeues_after(
                remote.phase, error_codes=remote.error_codes, completed=remote.completed
            )
        ]
        if len(found) < len(listed):
            log.info(
                "submit.reconcile_skipped_refused",
                job=job.name,
                job_id=job.id,
                remote_ids=[r.id for r in listed if r not in found],
            )
        if found:
            remote = min(found, key=lambda r: r.created_at)
            if len(found) > 1:
                log.error(
                    "submit.duplicate_remote_jobs",
                    job=job.name,
                    job_id=job.id,
                    remote_ids=[r.id for r in found],
                )
            await self._adopt(job, remote, detail="adopted after restart")
            return
        log.info("submit.recreate", job=job.name, job_id=job.id)
        job = await self._rt.ledger.update(
            job.id, JobState.SUBMITTING, detail="no remote job found: creating"
        )
        await self._create(job)

    async def _intent_time(self, job: Job) -> float:
        """When the job last moved ``admitted -> submitting``: no create of the current
        attempt can have landed before it (the job's creation time if no event says)."""
        events = await self._rt.ledger.events(job.id)
        times = [
            event.at
            for event in events
            if event.from_state is JobState.ADMITTED and event.to_state is JobState.SUBMITTING
        ]
        return times[-1] if times else job.created_at

    async def _adopt(self, job: Job, remote: RemoteJob, *, detail: str) -> None:
        job = await self._move(
            job,
            JobState.RUNNING,
            detail=detail,
            remote_id=remote.id,
            remote_status=remote.status,
            total=remote.total,
            completed=remote.completed,
            succeeded=remote.succeeded,
            failed=remote.failed,
            submitted_at=self._rt.clock.now(),
            error=None,
            not_before=None,
        )
        log.info("submit.running", job=job.name, job_id=job.id, remote_id=remote.id)
        self._ws.poll.wake()

    async def _input_unreadable(self, job: Job, exc: OSError) -> None:
        """An input cannot be read for its upload: retry a few times, then reject the job.

        A network file system may come back; a file deleted for good will not, and the job
        must not hold its budget forever. Nothing was created at the provider either way.
        """
        reason = f"an input cannot be read for the upload: {exc}"
        if job.step_retries + 1 < INPUT_READ_ATTEMPTS:
            await self._retry_later(job, f"{reason}; will retry")
            return
        await self._move(
            job,
            JobState.REJECTED,
            detail="input unreadable",
            error=(
                f"{reason}, {INPUT_READ_ATTEMPTS} times: the job is rejected and no batch was "
                "created; restore the file and `orchestrator rerun --force` the job, or fix "
                "its definition (a rejected job's name takes a new definition)"
            ),
        )
        log.error("submit.input_unreadable", job=job.name, job_id=job.id, error=str(exc))

    async def _retry_later(self, job: Job, reason: str) -> None:
        await retry_later(self._rt, job, reason)
        log.warning("submit.retry_later", job=job.name, job_id=job.id, reason=reason)

    async def _cancel_locally(self, job: Job) -> None:
        await self._move(
            job, JobState.DONE, detail="cancelled before submission", outcome=Outcome.CANCELLED
        )
        log.info("submit.cancelled_locally", job=job.name, job_id=job.id)

    async def _move(
        self, job: Job, target: JobState, *, detail: str, **changes: Unpack[JobChanges]
    ) -> Job:
        moved = await self._rt.ledger.transition(
            job.id, job.state, target, detail=detail, **changes
        )
        self._rt.activity.wake()
        if job.parent_id is not None:
            self._ws.collect.wake()  # the parts keeper follows its parent's parts
        return moved
