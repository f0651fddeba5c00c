"""Budget admission: which queued jobs may be submitted now. Pure.

A workspace may hold at most ``budget`` pending requests (Mistral: 1,000,000, counted as
``total - completed`` of every unfinished job). Admission walks the queue in priority-then-FIFO
order and admits the head while it fits; it never skips a head that does not fit yet, so a large
job is not starved by a stream of small ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import attrs

from orchestrator.model import IN_FLIGHT_STATES, Job, JobState, pending


@attrs.frozen(kw_only=True)
class Admission:
    """What one admission decision says."""

    admit: tuple[int, ...] = ()
    """Job ids to move ``queued -> admitted``, in order."""
    never_fits: tuple[int, ...] = ()
    """Job ids that need more than the whole budget: reject them."""
    pending_after: int = 0
    """Σpending of this daemon's in-flight jobs (plus external) once ``admit`` is applied."""
    blocked: int | None = None
    """The job id of the queue's head when it does not fit yet (None: nothing waits)."""
    shortfall: int = 0
    """Requests that must be released before ``blocked`` fits (0 when nothing waits)."""


def queue_order(jobs: Iterable[Job]) -> list[Job]:
    """Jobs sorted the way admission serves them: higher priority first, then oldest first."""
    return sorted(jobs, key=lambda job: (-job.priority, job.id))


def in_flight_pending(jobs: Iterable[Job]) -> int:
    """Σpending over the jobs that hold budget (admitted, submitting, running)."""
    return sum(pending(job) for job in jobs if job.state in IN_FLIGHT_STATES)


def admit(
    queued: Sequence[Job],
    *,
    in_flight: int,
    budget: int,
    external: int = 0,
    now: float,
) -> Admission:
    """Decide which of ``queued`` to admit.

    Args:
        queued: jobs in state ``queued`` (any order; this sorts them); a split job's parent
            among them is skipped (its parts are admitted, each by the same rule).
        in_flight: Σpending of the jobs this daemon already holds in flight.
        budget: the workspace's pending-request budget.
        external: pending requests of unfinished jobs this ledger did not create.
        now: the current time; jobs whose backoff (``not_before``) lies ahead wait, and do not
            block the jobs behind them.

    Invariant: ``in_flight + external + Σ requests(admitted) <= budget`` whenever the input
    already satisfied ``in_flight + external <= budget``.
    """
    used = in_flight + external
    admitted: list[int] = []
    never_fits: list[int] = []
    blocked: Job | None = None
    for job in queue_order(queued):
        if job.state is not JobState.QUEUED or job.cancel_requested or job.is_parent:
            continue  # a split job's parent is never admitted: its parts are
        if job.request_count > budget:
            never_fits.append(job.id)
            continue
        if blocked is not None or (job.not_before is not None and job.not_before > now):
            continue  # keep scanning only to find jobs that can never fit
        if used + job.request_count > budget:
            blocked = job  # the head waits for room; nothing behind it jumps the queue
            continue
        used += job.request_count
        admitted.append(job.id)
    return Admission(
        admit=tuple(admitted),
        never_fits=tuple(never_fits),
        pending_after=used,
        blocked=None if blocked is None else blocked.id,
        shortfall=0 if blocked is None else used + blocked.request_count - budget,
    )
