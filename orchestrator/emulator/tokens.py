"""The enqueued-token limit: prompt tokens per model a workspace may have in flight.

OpenAI refuses a batch whose prompt tokens, added to those of the organisation's batches still
``validating``, ``in_progress`` or ``finalizing`` for the same model, exceed its limit: the
create answers 200 and the batch then fails validation. The core counts, per workspace and
model, the tokens its wire's :meth:`~orchestrator.emulator.rules.InputRules.scan` estimated for
each job (pure functions here; the job service applies them under its create lock).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import structlog

from orchestrator.emulator.rows import JobIndex
from orchestrator.emulator.rules import InputRules, Scan
from orchestrator.emulator.simulation import enqueued_at

log = structlog.get_logger(__name__)

TOKEN_REFUSALS = "token_limit_exceeded"  # noqa: S105 (a counter name)
"""The counter (kind ``refusals``, route ``jobs.create``) of batches failed for the limit."""

MAX_ENQUEUED = ("tokens", "max_enqueued")
"""The high-water counter (kind, route; the key is the model) of enqueued prompt tokens."""


def enqueued_by_model(index: list[JobIndex], now: float) -> dict[str, int]:
    """Prompt tokens per model of the jobs whose tokens count as enqueued at ``now``."""
    total: Counter[str] = Counter()
    for job in index:
        if job.model is None or not job.prompt_tokens:
            continue
        if enqueued_at(job.timeline, now, job.validation):
            total[job.model] += job.prompt_tokens
    return dict(total)


def admit_tokens(
    rules: InputRules,
    workspace: str,
    unfinished: list[JobIndex],
    now: float,
    scan: Scan | None,
    model: str | None,
    limit: int | None,
) -> tuple[list[dict[str, Any]], int | None]:
    """Decide a new job's fate as far as its input and tokens go.

    Args:
        rules: the wire's rules (they word the limit's error).
        workspace: the job's workspace.
        unfinished: the workspace's unfinished jobs.
        now: the clock time of the create.
        scan: what the wire's scan found (``None``: the wire does not scan).
        model: the job's model.
        limit: the enqueued-token limit per model (``None``: none).

    Returns:
        ``(errors, enqueued)``: the job-level errors that refuse the input (the scan's, or the
        limit's), and the model's enqueued tokens once the job is admitted (``None`` when
        nothing is counted: no scan, no model, or a refused job).
    """
    if scan is None:
        return [], None
    if scan.errors:
        return list(scan.errors), None
    if model is None:
        return [], None
    enqueued = enqueued_by_model(unfinished, now).get(model, 0)
    if limit is not None and enqueued + scan.prompt_tokens > limit:
        log.info(
            "emulator.token_limit_exceeded",
            workspace=workspace,
            model=model,
            enqueued=enqueued,
            tokens=scan.prompt_tokens,
            limit=limit,
        )
        error = rules.token_limit_error(
            workspace=workspace,
            model=model,
            tokens=scan.prompt_tokens,
            enqueued=enqueued,
            limit=limit,
        )
        return [error], None
    return [], enqueued + scan.prompt_tokens
