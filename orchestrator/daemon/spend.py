"""The spend limit in the admission loop: what a pass counts, and what it tells the others.

The rule itself is pure (:func:`orchestrator.budget.admit`, :func:`~orchestrator.budget.
spend_used`); this module feeds it the workspace's prices and limit, and keeps what a pass
decided on the workspace's runtime, where the service view, the logs and the next pass read it.
"""

from __future__ import annotations

from collections.abc import Mapping

import structlog

from orchestrator.budget import Admission, SpendBudget, spend_used
from orchestrator.daemon.context import WorkspaceRuntime
from orchestrator.model import Job
from orchestrator.usage import Usage

log = structlog.get_logger(__name__)


def spend_budget(
    ws: WorkspaceRuntime,
    jobs: list[Job],
    waiting: list[Job],
    since: float | None,
    finished: Mapping[str, Usage],
) -> SpendBudget | None:
    """The spend dimension of one admission pass (None: the workspace has no spend limit).

    Args:
        ws: The workspace (prices, discount, limit).
        jobs: The unfinished jobs the admission transaction read.
        waiting: The queued jobs admission may admit (each gets a cost estimate).
        since: The first instant of the current month (None without a limit).
        finished: Per model, the usage of the jobs done since ``since`` (same transaction).
    """
    limit = ws.spend_limit
    if limit is None or since is None:
        return None
    pricing, discount = ws.pricing, ws.batch_discount
    return SpendBudget(
        limit=limit,
        used=spend_used(jobs, pricing=pricing, discount=discount, since=since, finished=finished),
        estimates={job.id: pricing.estimate(job, discount=discount) for job in waiting},
    )


def publish_spend(ws: WorkspaceRuntime, decision: Admission) -> None:
    """Keep what the pass said of the spend limit; log a head that starts waiting for it."""
    if decision.spend_after is not None:
        ws.spend_used = decision.spend_after
    wait, previous = decision.spend_wait, ws.spend_wait
    ws.spend_wait = wait
    if wait is not None and (previous is None or previous.job_id != wait.job_id):
        log.info(
            "submit.spend_wait",
            workspace=ws.name,
            job_id=wait.job_id,
            estimate=round(wait.estimate, 6),
            left=round(wait.left, 6),
            spend_limit=ws.spend_limit,
        )
