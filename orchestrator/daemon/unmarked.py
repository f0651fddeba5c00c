"""Reconciling a lost create where batches carry no metadata (Anthropic's Message Batches).

Nothing in such a batch names the job that made it, and a create takes no idempotency key
(``shared/api/anthropic-batches.md`` §6). What closes the gap:

1. The intent is committed before the create: the job is ``submitting`` with the request
   count and the sha256 of its custom_id set (the upload step's id) and the intent's time.
2. At most one create is in flight per workspace (:class:`~orchestrator.daemon.submit.Submitter`
   holds a slot; a job waits while another of the workspace is ``submitting``), so at most
   one batch of this daemon's can be unowned at any moment.
3. After the reconcile grace, the workspace's batches are listed newest first back to the
   intent (less the clock-skew margin). Candidates are the batches no job of the ledger owns,
   created in that window, with exactly the job's request count, and not refused for capacity.
   One: adopt it. None: create. Several (something else creates batches in the workspace):
   adopt none yet; once all have ended, the one whose results' custom_id set is the job's is
   adopted. A batch the daemon cannot prove its own is never cancelled.
4. Every adoption is confirmed when the results arrive: the provider compares the custom_id
   sets, and the collector fails the job if they differ
   (:class:`~orchestrator.errors.ForeignResults`).

Pure decisions (:func:`candidates`, :func:`decide`) inside a small imperative shell.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Sequence

import attrs
import structlog

from orchestrator.errors import TransientProviderError
from orchestrator.ledger import SqlLedger
from orchestrator.model import Job, JobState, requeues_after
from orchestrator.providers.base import Provider, RemoteJob

log = structlog.get_logger(__name__)


@attrs.frozen(kw_only=True)
class Decision:
    """What a reconcile does: adopt ``adopt``, create (neither set), or wait (``wait`` says why)."""

    adopt: RemoteJob | None = None
    wait: str | None = None
    ambiguous: tuple[RemoteJob, ...] = ()
    """Several candidates, all ended: their results decide (the caller reads them)."""


def candidates(
    job: Job, listed: Sequence[RemoteJob], *, owned: Collection[str], since: float
) -> list[RemoteJob]:
    """The batches that may be ``job``'s: unowned, of its size, made since the intent."""
    return [
        remote
        for remote in listed
        if remote.id not in owned
        and remote.total == job.request_count
        and remote.created_at >= since
        and not requeues_after(
            remote.phase, error_codes=remote.error_codes, completed=remote.completed
        )
    ]


def decide(found: Sequence[RemoteJob]) -> Decision:
    """One candidate: adopt. None: create. Several: wait for them to end, then compare."""
    if not found:
        return Decision()
    if len(found) == 1:
        return Decision(adopt=found[0])
    if all(remote.phase.terminal for remote in found):
        return Decision(ambiguous=tuple(sorted(found, key=lambda r: r.created_at)))
    return Decision(
        wait=(
            f"{len(found)} unowned batches of {found[0].total} requests were created since "
            "the create intent (another client uses this workspace?): waiting for them to "
            "end, to adopt the one whose results are this job's"
        )
    )


async def reconcile_unmarked(
    job: Job,
    since: float,
    *,
    provider: Provider,
    ledger: SqlLedger,
    workspace: str,
    adopt: Callable[..., Awaitable[None]],
    create: Callable[[Job], Awaitable[None]],
    retry_later: Callable[[Job, str], Awaitable[None]],
) -> None:
    """The submitter's reconcile of ``job`` (``submitting``) for batches without metadata.

    Held under the workspace's create slot. ``since`` is the create intent's time less the
    clock-skew margin; ``adopt``, ``create`` and ``retry_later`` are the submitter's steps.
    """
    try:
        listed = [remote async for remote in provider.list_jobs(created_after=since)]
        owned = {
            j.remote_id
            for j in await ledger.list_jobs(workspace=workspace)
            if j.remote_id and j.id != job.id
        }
        decision = decide(candidates(job, listed, owned=owned, since=since))
        if decision.ambiguous:
            matching = [
                remote
                for remote in decision.ambiguous
                if await provider.results_match(remote.id, job.input_file_ids)
            ]
            decision = decide(matching[:1])
            log.warning(
                "submit.reconcile_by_results",
                job=job.name,
                job_id=job.id,
                candidates=[r.id for r in decision.ambiguous] or [r.id for r in matching],
                matching=[r.id for r in matching],
            )
    except TransientProviderError as exc:
        await retry_later(job, f"reconcile list failed, will retry: {exc}")
        return
    if decision.wait is not None:
        await retry_later(job, decision.wait)
        return
    if decision.adopt is not None:
        log.info(
            "submit.adopted_unmarked",
            job=job.name,
            job_id=job.id,
            remote_id=decision.adopt.id,
            requests=decision.adopt.total,
        )
        await adopt(job, decision.adopt, detail="adopted after restart (size and time)")
        return
    log.info("submit.recreate", job=job.name, job_id=job.id)
    job = await ledger.update(job.id, JobState.SUBMITTING, detail="no remote job found: creating")
    await create(job)
