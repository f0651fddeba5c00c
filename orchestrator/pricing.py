"""Prices, what a job costs, and the calendar months spend is counted by. Pure.

A job with children (the parts of a split job, retry attempts: any job whose ``parent_id``
points at it) uses its own :class:`~orchestrator.usage.Usage` plus its children's, whatever
kind of child they are (:func:`rolled_up`).

Prices are per 1,000,000 tokens, input and output apart, in whatever currency the operator
writes them (``[pricing]``); a batch is billed at ``batch_discount`` of that (0.5: Mistral's
and OpenAI's 50 % off). A model without a price has no cost: ``None``, never 0.

The cost *estimate* of a job that has not run (what the spend limit admits by) is its
estimated prompt tokens priced as input plus, priced as output, the ``max_tokens`` each of its
requests asks for (the caps counted at intake), or for a request that sets none
:data:`DEFAULT_MAX_TOKENS` unless ``[pricing]`` or the model's price says otherwise,
discounted the same way.
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from typing import Final

import attrs

from orchestrator.model import Job
from orchestrator.usage import Usage

PER_TOKENS: Final = 1_000_000
"""Prices are per this many tokens."""
DEFAULT_BATCH_DISCOUNT: Final = 0.5
"""``[pricing] batch_discount`` when unset: what a batch costs of the listed price."""
DEFAULT_MAX_TOKENS: Final = 1_024
"""Output tokens the cost estimate assumes for a request that sets no ``max_tokens`` (nor
``max_completion_tokens``/``max_output_tokens``), unless ``[pricing] max_tokens`` (or the
model's ``max_tokens``) says otherwise."""


@attrs.frozen(kw_only=True)
class ModelPrice:
    """``[pricing.models."<model>"]``: list prices per 1,000,000 tokens."""

    input: float
    output: float
    max_tokens: int | None = None
    """Output tokens the estimate assumes per request of this model (None: the pricing's)."""


@attrs.frozen(kw_only=True)
class Pricing:
    """``[pricing]``: the models' prices and the batch discount."""

    models: Mapping[str, ModelPrice] = attrs.field(factory=dict)
    batch_discount: float = DEFAULT_BATCH_DISCOUNT
    currency: str | None = None
    """A label only (``"EUR"``); prices and limits are plain numbers in it."""
    max_tokens: int = DEFAULT_MAX_TOKENS

    def price(self, model: str) -> ModelPrice | None:
        """The price of ``model`` (None: unknown, so its cost is unknown too)."""
        return self.models.get(model)

    def cost(self, model: str, usage: Usage, *, discount: float | None = None) -> float | None:
        """What ``usage`` of ``model`` costs in a batch (None: the model has no price).

        ``discount`` overrides :attr:`batch_discount` (a workspace's own).
        """
        price = self.price(model)
        if price is None:
            return None
        share = self.batch_discount if discount is None else discount
        listed = usage.prompt_tokens * price.input + usage.completion_tokens * price.output
        return listed / PER_TOKENS * share

    def estimate(self, job: Job, *, discount: float | None = None) -> float | None:
        """The cost estimate of ``job`` before it runs (see the module; None: no price)."""
        price = self.price(job.model)
        if price is None:
            return None
        per_request = self.max_tokens if price.max_tokens is None else price.max_tokens
        uncapped = job.request_count if job.uncapped_requests is None else job.uncapped_requests
        guess = Usage(
            prompt_tokens=job.prompt_tokens,
            completion_tokens=job.max_output_tokens + uncapped * per_request,
        )
        return self.cost(job.model, guess, discount=discount)

    def label(self, amount: float | None) -> str:
        """``12.3456 EUR``, ``0.000312 EUR`` below a cent (batch costs are small), or ``-`` for
        an unknown cost."""
        if amount is None:
            return "-"
        text = f"{amount:,.4f}" if amount == 0 or abs(amount) >= 0.01 else f"{amount:.6f}"
        return text + (f" {self.currency}" if self.currency else "")


_UNKNOWN: Final = object()
"""A cost that cannot be known (a member's model has no price)."""


def _roll(jobs: Iterable[Job], own: Callable[[Job], object | None]) -> dict[int, object]:
    """Each job's ``own`` value (None: it has none) plus its children's, recursively.

    Values are added with ``+``; :data:`_UNKNOWN` absorbs whatever it is added to.
    """
    listed = list(jobs)
    children: dict[int, list[Job]] = {}
    for job in listed:
        if job.parent_id is not None:
            children.setdefault(job.parent_id, []).append(job)
    totals: dict[int, object] = {}

    def add(left: object | None, right: object | None) -> object | None:
        if left is None or right is None:
            return right if left is None else left
        if left is _UNKNOWN or right is _UNKNOWN:
            return _UNKNOWN
        summed: object = left + right  # type: ignore[operator]  # Usage or float on both sides
        return summed

    def total(job: Job, seen: frozenset[int]) -> object | None:
        if job.id in totals:
            return totals[job.id]
        found = own(job)
        for child in children.get(job.id, ()):
            if child.id not in seen:  # the daemon writes no cycle; never loop on one
                found = add(found, total(child, seen | {child.id}))
        if found is not None:
            totals[job.id] = found
        return found

    for job in listed:
        total(job, frozenset({job.id}))
    return totals


def rolled_up(jobs: Iterable[Job]) -> dict[int, Usage]:
    """Each job's usage: its own plus that of its children, recursively.

    A child is any job whose ``parent_id`` names another (a part of a split job, a retry
    attempt, or a kind added later): no kind needs code of its own here. A job with no usage
    of its own and none among its children is absent (its results are not in).
    """
    rolled = _roll(jobs, lambda job: job.usage)
    return {job_id: value for job_id, value in rolled.items() if isinstance(value, Usage)}


def rolled_up_cost(
    jobs: Iterable[Job], pricing: Pricing, *, discount: float | None = None
) -> dict[int, float | None]:
    """Each job's cost, like :func:`rolled_up`: each member's usage priced by its own model.

    None for a job any of whose members with usage has no price (never 0); a job with no
    usage anywhere in its family is absent.
    """

    def own(job: Job) -> object | None:
        if job.usage is None:
            return None
        cost = pricing.cost(job.model, job.usage, discount=discount)
        return _UNKNOWN if cost is None else cost

    rolled = _roll(jobs, own)
    return {
        job_id: None if value is _UNKNOWN else float(value)  # type: ignore[arg-type]
        for job_id, value in rolled.items()
    }


def month_of(now: float) -> str:
    """The calendar month (UTC) of epoch seconds ``now``: ``"2026-12"``."""
    return dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y-%m")


def month_bounds(month: str) -> tuple[float, float]:
    """Epoch seconds of the first instant of ``month`` (``YYYY-MM``) and of the next month.

    Raises:
        ValueError: ``month`` is not ``YYYY-MM`` with a month from 01 to 12.
    """
    try:
        year_text, month_text = month.split("-")
        if len(year_text) != 4 or len(month_text) != 2:
            raise ValueError(month)
        year, number = int(year_text), int(month_text)
        start = dt.datetime(year, number, 1, tzinfo=dt.UTC)
    except ValueError:
        raise ValueError(f"{month!r} is not a month: write YYYY-MM, e.g. 2026-12") from None
    days = calendar.monthrange(year, number)[1]
    return start.timestamp(), (start + dt.timedelta(days=days)).timestamp()


def month_start(now: float) -> float:
    """The first instant of the calendar month (UTC) that holds ``now``."""
    return month_bounds(month_of(now))[0]


def next_month_start(now: float) -> float:
    """The first instant of the calendar month (UTC) after the one that holds ``now``."""
    return month_bounds(month_of(now))[1]
