"""Usage, cost and the spend limit as the read commands (status, show, budget, usage) and the
JSON API show them (pure: imported by the CLI and the service alike).

Everything here is computed from the ledger's jobs and the config's prices, with the same pure
rules the daemon admits by (:mod:`orchestrator.budget`, :mod:`orchestrator.pricing`), so what
``status`` says about a job waiting for the spend limit is what the daemon decides.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from orchestrator.budget import (
    SpendBudget,
    TokenBudget,
    admit,
    in_flight_pending,
    in_flight_tokens,
    spend_used,
)
from orchestrator.config import Config, WorkspaceConfig
from orchestrator.model import Job, JobState
from orchestrator.pricing import (
    Pricing,
    month_bounds,
    month_of,
    month_start,
    rolled_up,
    rolled_up_cost,
)
from orchestrator.usage import Usage

Costs = tuple[Mapping[int, "JobCost"], Pricing]
"""Each job's usage, cost and spend wait by id, and the prices that label them."""


def money(amount: float | None) -> float | None:
    """An amount as JSON shows it: rounded to a millionth (None stays None)."""
    return None if amount is None else round(amount, 6)


@attrs.frozen(kw_only=True)
class JobCost:
    """One job's usage, cost and spend-limit wait, as the read commands show them."""

    usage: Usage | None = None
    """Its own usage plus its children's (None: no results in yet)."""
    cost: float | None = None
    """What that usage costs (None: not in yet, or a model has no price)."""
    estimate: float | None = None
    """Its cost estimate (what the spend limit admits by; None: no price)."""
    waits_for_spend: bool = False
    """The queue's head waits for its workspace's spend limit."""
    spend_left: float | None = None
    """For a queued job under a spend limit: what the month has left."""

    def as_json(self) -> dict[str, Any]:
        """The fields ``status --json`` rows gain (design §10: ``usage``, ``cost``)."""
        return {
            "usage": None if self.usage is None else self.usage.tokens(),
            "cost": money(self.cost),
            "cost_estimate": money(self.estimate),
            "waits_for": "spend_limit" if self.waits_for_spend else None,
            "spend_left": money(self.spend_left),
        }

    def cells(self, pricing: Pricing) -> list[str]:
        """The TOKENS and COST cells of the ``status`` table."""
        tokens = "-" if self.usage is None else f"{self.usage.total_tokens:,}"
        cost = pricing.label(self.cost) if self.cost is not None else "-"
        if self.cost is None and self.estimate is not None and self.usage is None:
            cost = "~" + pricing.label(self.estimate)
        return [tokens, cost]

    def note(self, pricing: Pricing) -> str | None:
        """Why the job waits, if it waits for the spend limit."""
        if not self.waits_for_spend:
            return None
        return (
            f"waits for the spend limit: estimated {pricing.label(self.estimate)}, "
            f"{pricing.label(self.spend_left)} left this month"
        )


@attrs.frozen(kw_only=True)
class SpendRow:
    """A workspace's spend limit this month, as ``budget`` shows it."""

    workspace: str
    month: str
    limit: float
    spent: float
    """Actual cost of the work finished this month."""
    in_flight: float
    """Cost estimates of the work admitted and not yet collected."""
    waiting: str | None = None
    """The job that waits for the spend limit (None: nothing waits for it)."""
    waiting_estimate: float | None = None

    @property
    def left(self) -> float:
        """What may still be admitted this month."""
        return max(0.0, self.limit - self.spent - self.in_flight)

    def as_json(self) -> dict[str, Any]:
        """The ``spend`` object of a ``budget --json`` row."""
        return {
            "month": self.month,
            "limit": money(self.limit),
            "spent": money(self.spent),
            "in_flight": money(self.in_flight),
            "left": money(self.left),
            "waiting": self.waiting,
            "waiting_estimate": money(self.waiting_estimate),
        }

    def note(self, pricing: Pricing) -> str:
        """One line for ``budget``."""
        text = (
            f"{self.workspace}: spend {self.month}: {pricing.label(self.spent)} spent + "
            f"{pricing.label(self.in_flight)} in flight (estimated) of "
            f"{pricing.label(self.limit)}; {pricing.label(self.left)} left"
        )
        if self.waiting is not None:
            text += (
                f"; job {self.waiting!r} waits for the spend limit "
                f"(estimated {pricing.label(self.waiting_estimate)})"
            )
        return text


def _decide(ws: WorkspaceConfig, members: list[Job], pricing: Pricing, now: float) -> Any:
    """The admission decision the daemon would take now for ``ws``, spend included."""
    assert ws.spend_limit is not None
    discount = ws.batch_discount
    queued = [j for j in members if j.state is JobState.QUEUED and not j.is_parent]
    tokens = TokenBudget(default=ws.token_budget, per_model=dict(ws.token_budgets))
    used = spend_used(members, pricing=pricing, discount=discount, since=month_start(now))
    return admit(
        queued,
        in_flight=in_flight_pending(members),
        budget=ws.pending_budget,
        now=now,
        tokens=tokens,
        tokens_in_flight=in_flight_tokens(members),
        spend=SpendBudget(
            limit=ws.spend_limit,
            used=used,
            estimates={j.id: pricing.estimate(j, discount=discount) for j in queued},
        ),
    )


def spend_rows(config: Config, jobs: Iterable[Job], now: float) -> dict[str, SpendRow]:
    """Per workspace with a ``spend_limit``: this month's spend and what waits for it."""
    by_workspace: dict[str, list[Job]] = {}
    for job in jobs:
        by_workspace.setdefault(job.workspace, []).append(job)
    rows = {}
    pricing = config.pricing
    since = month_start(now)
    for name, ws in config.workspaces.items():
        if ws.spend_limit is None:
            continue
        members = by_workspace.get(name, [])
        used = spend_used(members, pricing=pricing, discount=ws.batch_discount, since=since)
        finished = [j for j in members if j.state is JobState.DONE]
        spent = spend_used(finished, pricing=pricing, discount=ws.batch_discount, since=since)
        wait = _decide(ws, members, pricing, now).spend_wait
        waiting = next((j for j in members if wait is not None and j.id == wait.job_id), None)
        rows[name] = SpendRow(
            workspace=name,
            month=month_of(now),
            limit=ws.spend_limit,
            spent=spent,
            in_flight=used - spent,
            waiting=None if waiting is None else waiting.name,
            waiting_estimate=None if wait is None else wait.estimate,
        )
    return rows


def job_costs(config: Config, jobs: Sequence[Job], now: float) -> dict[int, JobCost]:
    """Every job's :class:`JobCost` (``jobs`` should hold the children of those shown)."""
    pricing = config.pricing
    costs: dict[int, JobCost] = {}
    usage = rolled_up(jobs)
    by_workspace: dict[str, list[Job]] = {}
    for job in jobs:
        by_workspace.setdefault(job.workspace, []).append(job)
    for name, members in by_workspace.items():
        ws = config.workspaces.get(name)
        discount = None if ws is None else ws.batch_discount
        cost = rolled_up_cost(members, pricing, discount=discount)
        wait, left = None, None
        if ws is not None and ws.spend_limit is not None:
            decision = _decide(ws, members, pricing, now)
            wait = decision.spend_wait
            used = spend_used(members, pricing=pricing, discount=discount, since=month_start(now))
            left = max(0.0, ws.spend_limit - used)
        for job in members:
            waits = wait is not None and wait.job_id == job.id
            if waits and wait is not None:
                shown_left = wait.left  # after what admission would admit before it
            else:
                shown_left = left if job.state is JobState.QUEUED else None
            costs[job.id] = JobCost(
                usage=usage.get(job.id),
                cost=cost.get(job.id),
                estimate=None if job.is_parent else pricing.estimate(job, discount=discount),
                waits_for_spend=waits,
                spend_left=shown_left,
            )
    return costs


def usage_table(
    config: Config, jobs: Iterable[Job], *, month: str | None = None
) -> list[dict[str, Any]]:
    """``orchestrator usage``: tokens and cost by workspace x model x month (UTC).

    Each job counts its own results once, in the month it finished (a split job's parent
    counts nothing: its parts do). ``month`` (``YYYY-MM``) keeps that month only.

    Raises:
        ValueError: ``month`` is not ``YYYY-MM``.
    """
    bounds = None if month is None else month_bounds(month)
    groups: dict[tuple[str, str, str], tuple[Usage, float | None, int]] = {}
    for job in jobs:
        if job.usage is None or job.finished_at is None:
            continue
        if bounds is not None and not bounds[0] <= job.finished_at < bounds[1]:
            continue
        ws = config.workspaces.get(job.workspace)
        cost = config.pricing.cost(
            job.model, job.usage, discount=None if ws is None else ws.batch_discount
        )
        key = (job.workspace, job.model, month_of(job.finished_at))
        usage, total, count = groups.get(key, (Usage(), 0.0, 0))
        summed = None if total is None or cost is None else total + cost
        groups[key] = (usage + job.usage, summed, count + 1)
    return [
        {
            "workspace": workspace,
            "model": model,
            "month": when,
            "jobs": count,
            **usage.tokens(),
            "lines_without_usage": usage.lines_without_usage,
            "cost": money(cost),
            "currency": config.pricing.currency,
        }
        for (workspace, model, when), (usage, cost, count) in sorted(groups.items())
    ]


@attrs.frozen(kw_only=True)
class Estimated:
    """What ``check-config`` learnt of a valid job, for its cost estimate."""

    workspace: str
    model: str
    requests: int
    tokens: int
    """Estimated prompt tokens."""
    split: bool = False
    """It would run as parts (each part is admitted against the spend limit on its own)."""
    max_output_tokens: int = 0
    """Σ of the output caps its requests set."""
    uncapped_requests: int | None = None
    """Its requests that set no cap (None: all of them)."""


def check_estimates(config: Config, estimated: Mapping[str, Estimated]) -> list[str]:
    """``check-config`` lines: each job's estimated cost where its model has a price (and, under
    a spend limit, a job whose model has none: the daemon would reject it)."""
    lines = []
    pricing = config.pricing
    for name, job in estimated.items():
        ws = config.workspaces.get(job.workspace)
        discount = None if ws is None else ws.batch_discount
        probe = Job(
            id=0,
            name=name,
            workspace=job.workspace,
            model=job.model,
            endpoint="",
            inputs=(),
            metadata={},
            timeout_hours=24,
            priority=0,
            definition_hash="",
            client_token="",
            request_count=job.requests,
            state=JobState.QUEUED,
            prompt_tokens=job.tokens,
            max_output_tokens=job.max_output_tokens,
            uncapped_requests=job.uncapped_requests,
        )
        estimate = pricing.estimate(probe, discount=discount)
        limit = None if ws is None else ws.spend_limit
        if estimate is None:
            if limit is not None:
                lines.append(
                    f"job {name!r}: model {job.model!r} has no price but workspace "
                    f"{job.workspace!r} has a spend_limit: the daemon rejects it; add "
                    f'[pricing.models."{job.model}"]'
                )
            continue
        text = f"job {name!r}: {pricing.label(estimate)} ({job.model})"
        if limit is not None:
            shown = pricing.label(limit)
            if estimate <= limit:
                text += f", within the spend_limit of {shown} a month"
            elif job.split:
                text += (
                    f", more than the spend_limit of {shown} a month: its parts run as the "
                    "limit allows"
                )
            else:
                text += (
                    f", more than the spend_limit of {shown} a month: the daemon rejects it "
                    "(split it, or raise spend_limit)"
                )
        lines.append(text)
    return lines


# Rendering helpers of status and show (cli/_render.py lays them out).

COST_HEADER = ("TOKENS", "COST")
"""Columns ``status`` adds when it knows usage and prices (``~`` marks an estimate)."""


def cost_cells(job: Job, costs: Costs | None) -> list[str]:
    if costs is None:
        return []
    table, pricing = costs
    return table[job.id].cells(pricing) if job.id in table else ["-", "-"]


def spend_notes(jobs: Sequence[Job], costs: Costs | None) -> list[str]:
    if costs is None:
        return []
    table, pricing = costs
    notes = [(job.name, table[job.id].note(pricing)) for job in jobs if job.id in table]
    return [f"  {name}: {note}" for name, note in notes if note]


def cost_lines(job: Job, costs: Costs | None) -> list[tuple[str, str]]:
    """``show``'s usage, cost and spend rows."""
    if costs is None or job.id not in costs[0]:
        return []
    entry, pricing = costs[0][job.id], costs[1]
    usage = entry.usage
    rows = [
        (
            "usage",
            "-"
            if usage is None
            else f"{usage.total_tokens:,} tokens ({usage.prompt_tokens:,} prompt, "
            f"{usage.completion_tokens:,} completion; {usage.lines_without_usage:,} of "
            f"{usage.lines:,} result lines reported none)",
        ),
        ("cost", pricing.label(entry.cost) if entry.cost is not None else "- (not known)"),
        ("estimate", pricing.label(entry.estimate) if entry.estimate is not None else "-"),
    ]
    note = entry.note(pricing)
    if note:
        rows.append(("spend", note))
    return rows
