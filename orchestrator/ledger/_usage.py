"""SQL of usage sums: per workspace and model, all time or since an instant (one query each).

Only the jobs' own results are summed (a split job's parent has none of its own: its parts do),
so nothing is counted twice, and the sums are a handful of rows however long the history.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from orchestrator.ledger.schema import jobs
from orchestrator.model import JobState
from orchestrator.usage import Usage

_SUMS = (
    jobs.c.usage_prompt_tokens,
    jobs.c.usage_completion_tokens,
    jobs.c.usage_total_tokens,
    jobs.c.usage_lines,
    jobs.c.usage_lines_without,
)


def _usage(row: Any) -> Usage:
    prompt, completion, total, lines, without = row[-5:]
    return Usage(
        prompt_tokens=int(prompt or 0),
        completion_tokens=int(completion or 0),
        total_tokens=int(total or 0),
        lines=int(lines or 0),
        lines_without_usage=int(without or 0),
    )


async def usage_by_model(
    conn: AsyncConnection, *, workspace: str | None = None, finished_since: float | None = None
) -> dict[tuple[str, str], Usage]:
    """``(workspace, model) -> Usage`` of the jobs whose results are in; with
    ``finished_since``, only the jobs done since then (epoch seconds)."""
    query = sa.select(jobs.c.workspace, jobs.c.model, *(sa.func.sum(c) for c in _SUMS)).where(
        jobs.c.usage_lines_without.is_not(None)
    )
    if workspace is not None:
        query = query.where(jobs.c.workspace == workspace)
    if finished_since is not None:
        query = query.where(
            jobs.c.state == JobState.DONE.value, jobs.c.finished_at >= finished_since
        )
    rows = (await conn.execute(query.group_by(jobs.c.workspace, jobs.c.model))).all()
    return {(row[0], row[1]): _usage(row) for row in rows}
