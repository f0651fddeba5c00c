"""Budget admission: which queued jobs may be submitted now. Pure.

Two budgets hold at once:

- **Requests.** A workspace may hold at most ``budget`` pending requests (Mistral: 1,000,000,
  counted as ``total - completed`` of every unfinished job).
- **Tokens** (optional, :class:`TokenBudget`). Per model, the prompt tokens of the in-flight
  jobs (admitted, submitting, running: a running job's tokens count in full until it leaves
  ``running``) may not exceed that model's token budget: OpenAI's *enqueued tokens* limit.
  Estimates (``Job.prompt_tokens``) are multiplied by a :class:`TokenScale` the workspace learns
  when the provider refuses a batch for its token limit (:func:`learn_token_scale`).

- **Spend** (optional, :class:`SpendBudget`). A workspace's ``spend_limit`` per calendar month
  (UTC): a job's cost estimate (:meth:`orchestrator.pricing.Pricing.estimate`) must fit in the
  limit less this month's actual cost of finished work and the estimates of the work in flight
  (:func:`spend_used`). Once a job's results are in, its actual cost replaces its estimate.
  The month rolls over on its own: ``spend_used`` counts from the start of ``now``'s month.

Admission walks the queue in priority-then-FIFO order and admits the head while it fits all.
It never skips a head that does not fit yet, so a large job is not starved by a stream of small
ones: a head short of requests (or of spend) holds back the whole queue; a head short of its
model's tokens holds back the jobs of that model only (other models' tokens are other
budgets). A job that can never fit, in any dimension, is reported with its figures
(:class:`Misfit`); a job the estimate fits but the learnt scale puts over its model's budget
is charged the whole budget (it runs alone) rather than rejected.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Final, Literal

import attrs

from orchestrator.model import IN_FLIGHT_STATES, Job, JobState, pending
from orchestrator.pricing import Pricing
from orchestrator.usage import Usage

MAX_TOKEN_SCALE: Final = 3.0
"""The largest learnt scale: the estimate counts a token per 3 bytes of text, and a byte-level
BPE never makes more than one token of a byte."""
UNKNOWN_LIMIT_STEP: Final = 1.25
"""How much the scale grows on a refusal that does not say the provider's limit."""
LEARN_MARGIN: Final = 1.05
"""Head room over the ratio a refusal shows (the provider's count was *over* its limit)."""


@attrs.frozen(kw_only=True)
class TokenScale:
    """What a workspace has learnt about its token estimates: multiply them by ``factor``."""

    factor: float = attrs.field(default=1.0, validator=attrs.validators.ge(1.0))
    """At least 1.0 (the estimate is never trusted to be too high), at most
    :data:`MAX_TOKEN_SCALE`."""
    refusals: int = 0
    """Token-limit refusals it learnt from."""

    def charge(self, tokens: int) -> int:
        """``tokens`` of estimate, as the budget counts them (scaled, rounded up)."""
        return tokens if self.factor == 1.0 else math.ceil(tokens * self.factor)


@attrs.frozen(kw_only=True)
class TokenBudget:
    """A workspace's token budgets: one for every model, and per-model overrides."""

    default: int | None = None
    """The budget of every model not in ``per_model``; None: not limited."""
    per_model: Mapping[str, int] = attrs.field(factory=dict)
    scale: TokenScale = attrs.field(factory=TokenScale)

    def limit(self, model: str) -> int | None:
        """The token budget of ``model`` (None: not limited)."""
        return self.per_model.get(model, self.default)


@attrs.frozen(kw_only=True)
class Misfit:
    """Why a job can never be admitted: what it needs and the most there ever is."""

    job_id: int
    dimension: Literal["requests", "tokens", "spend", "price"]
    needed: float
    """Its requests, its estimated prompt tokens, or its cost estimate (``price``: 0, the
    model has no price, so no estimate can be made under a spend limit)."""
    limit: float
    """The workspace's pending budget, its model's token budget, or its spend limit."""
    model: str


@attrs.frozen(kw_only=True)
class TokenWait:
    """The first job of a model that waits for that model's tokens to be released."""

    job_id: int
    model: str
    shortfall: int
    """Tokens (charged) that must be released before it fits."""


@attrs.frozen(kw_only=True)
class SpendBudget:
    """A workspace's monthly spend limit, what this month holds of it, and the estimates."""

    limit: float
    used: float
    """This month's actual cost of finished work plus the estimates of the work in flight
    (:func:`spend_used`)."""
    estimates: Mapping[int, float | None] = attrs.field(factory=dict)
    """Cost estimate of each queued job by id (None: its model has no price)."""

    @property
    def left(self) -> float:
        """What may still be spent this month (never below 0)."""
        return max(0.0, self.limit - self.used)


@attrs.frozen(kw_only=True)
class SpendWait:
    """The queue's head waits for the spend limit: its estimate is more than what is left."""

    job_id: int
    estimate: float
    left: float
    """What the month had left when it was decided (limit - actual - in flight)."""


@attrs.frozen(kw_only=True)
class Admission:
    """What one admission decision says."""

    admit: tuple[int, ...] = ()
    """Job ids to move ``queued -> admitted``, in order."""
    never_fits: tuple[int, ...] = ()
    """Job ids that need more than a whole budget: reject them (why: :attr:`misfits`)."""
    misfits: tuple[Misfit, ...] = ()
    """One per job of :attr:`never_fits`, in the same order, with its figures."""
    pending_after: int = 0
    """Σpending of this daemon's in-flight jobs (plus external) once ``admit`` is applied."""
    blocked: int | None = None
    """The job id of the queue's head when it does not fit yet (None: nothing waits)."""
    shortfall: int = 0
    """Requests that must be released before ``blocked`` fits (0 when nothing waits)."""
    tokens_after: Mapping[str, int] = attrs.field(factory=dict)
    """Per model with a token budget: charged tokens in flight once ``admit`` is applied."""
    token_waits: tuple[TokenWait, ...] = ()
    """Per model, the job that waits for its tokens (it holds back that model's later jobs)."""
    spend_after: float | None = None
    """With a spend limit: actual + estimated cost in flight once ``admit`` is applied."""
    spend_wait: SpendWait | None = None
    """The head that waits for the spend limit (it holds back the whole queue)."""


def queue_order(jobs: Iterable[Job]) -> list[Job]:
    """Jobs sorted the way admission serves them: higher priority first, then oldest first."""
    return sorted(jobs, key=lambda job: (-job.priority, job.id))


def in_flight_pending(jobs: Iterable[Job]) -> int:
    """Σpending over the jobs that hold budget (admitted, submitting, running)."""
    return sum(pending(job) for job in jobs if job.state in IN_FLIGHT_STATES)


def in_flight_tokens(jobs: Iterable[Job], scale: TokenScale | None = None) -> dict[str, int]:
    """Per model, the charged prompt tokens of the jobs that hold them (admitted, submitting,
    running; never a split job's parent, whose parts hold them)."""
    scale = TokenScale() if scale is None else scale
    held: dict[str, int] = {}
    for job in jobs:
        if job.state in IN_FLIGHT_STATES and not job.is_parent:
            held[job.model] = held.get(job.model, 0) + scale.charge(job.prompt_tokens)
    return held


def admit(
    queued: Sequence[Job],
    *,
    in_flight: int,
    budget: int,
    external: int = 0,
    now: float,
    tokens: TokenBudget | None = None,
    tokens_in_flight: Mapping[str, int] | None = None,
    spend: SpendBudget | None = None,
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
        tokens: the workspace's token budgets and learnt scale (None: requests only).
        tokens_in_flight: per model, charged tokens already in flight
            (:func:`in_flight_tokens` with the same scale).
        spend: the workspace's spend limit, this month's use of it and the queued jobs' cost
            estimates (None: no spend limit).

    Invariants: ``in_flight + external + Σ requests(admitted) <= budget`` whenever the input
    already satisfied ``in_flight + external <= budget``; and per model with a token budget
    ``L``, ``tokens_in_flight[model] + Σ charged tokens(admitted of that model) <= L`` whenever
    ``tokens_in_flight[model] <= L``; and with a spend limit ``S``,
    ``spend.used + Σ estimates(admitted) <= S`` whenever ``spend.used <= S``.
    """
    used = in_flight + external
    held = dict(tokens_in_flight or {})
    admitted: list[int] = []
    misfits: list[Misfit] = []
    blocked: Job | None = None
    waits: dict[str, TokenWait] = {}
    spent = None if spend is None else spend.used
    spend_wait: SpendWait | None = None
    for job in queue_order(queued):
        if job.state is not JobState.QUEUED or job.cancel_requested or job.is_parent:
            continue  # a split job's parent is never admitted: its parts are
        limit = None if tokens is None else tokens.limit(job.model)
        need = 0 if tokens is None else tokens.scale.charge(job.prompt_tokens)
        if limit is not None and job.prompt_tokens <= limit < need:
            # Only the learnt scale puts it over: it may still run alone (charged as the
            # whole budget), which is better than rejecting what the estimate says fits.
            need = limit
        if job.request_count > budget:
            misfits.append(
                Misfit(
                    job_id=job.id,
                    dimension="requests",
                    needed=job.request_count,
                    limit=budget,
                    model=job.model,
                )
            )
            continue
        if limit is not None and job.prompt_tokens > limit:
            misfits.append(
                Misfit(
                    job_id=job.id,
                    dimension="tokens",
                    needed=job.prompt_tokens,
                    limit=limit,
                    model=job.model,
                )
            )
            continue
        cost = None if spend is None else spend.estimates.get(job.id)
        if spend is not None and (cost is None or cost > spend.limit):
            misfits.append(
                Misfit(
                    job_id=job.id,
                    dimension="price" if cost is None else "spend",
                    needed=0.0 if cost is None else cost,
                    limit=spend.limit,
                    model=job.model,
                )
            )
            continue
        if blocked is not None or spend_wait is not None:
            continue  # keep scanning only to find jobs that can never fit
        if job.not_before is not None and job.not_before > now:
            continue
        if job.model in waits:
            continue  # behind the job of its model that waits for tokens
        if used + job.request_count > budget:
            blocked = job  # the head waits for room; nothing behind it jumps the queue
            continue
        if limit is not None and held.get(job.model, 0) + need > limit:
            model_used = held.get(job.model, 0)
            waits[job.model] = TokenWait(
                job_id=job.id, model=job.model, shortfall=model_used + need - limit
            )
            continue
        if spend is not None and spent is not None and cost is not None:
            if spent + cost > spend.limit:
                # Like a head short of requests: nothing behind it jumps the queue.
                spend_wait = SpendWait(
                    job_id=job.id, estimate=cost, left=max(0.0, spend.limit - spent)
                )
                continue
            spent += cost
        if limit is not None:
            held[job.model] = held.get(job.model, 0) + need
        used += job.request_count
        admitted.append(job.id)
    return Admission(
        admit=tuple(admitted),
        never_fits=tuple(misfit.job_id for misfit in misfits),
        misfits=tuple(misfits),
        pending_after=used,
        blocked=None if blocked is None else blocked.id,
        shortfall=0 if blocked is None else used + blocked.request_count - budget,
        tokens_after={
            model: count
            for model, count in held.items()
            if tokens is not None and tokens.limit(model) is not None
        },
        token_waits=tuple(waits.values()),
        spend_after=spent,
        spend_wait=spend_wait,
    )


FINISHED_COUNTED = JobState.DONE
"""The state whose jobs count their actual cost against the month's spend."""


def spend_used(
    jobs: Iterable[Job],
    *,
    pricing: Pricing,
    discount: float | None,
    since: float,
    finished: Mapping[str, Usage] | None = None,
) -> float:
    """This month's use of a spend limit: actual plus estimated cost in flight.

    Actual: the cost of the usage of every job that finished ``done`` at or after ``since``
    (the month's first instant): ``finished`` (per model, as the ledger sums it) when given,
    else the done jobs among ``jobs``. Estimated: the cost estimate of every job that holds budget
    or is being collected (admitted, submitting, running, collecting; its actual cost is not
    in yet). A split job's parent counts nothing: its parts do. A cost that cannot be known
    (no price) counts 0: such a job is never admitted under a spend limit.
    """
    total = 0.0
    for model, usage in (finished or {}).items():
        total += pricing.cost(model, usage, discount=discount) or 0.0
    for job in jobs:
        if job.is_parent:
            continue
        if job.state is FINISHED_COUNTED:
            if finished is not None:
                continue  # counted in ``finished``
            if job.usage is not None and (job.finished_at or 0.0) >= since:
                total += pricing.cost(job.model, job.usage, discount=discount) or 0.0
        elif job.state in IN_FLIGHT_STATES or job.state is JobState.COLLECTING:
            total += pricing.estimate(job, discount=discount) or 0.0
    return total


def learn_token_scale(
    scale: TokenScale, *, provider_limit: int | None, estimated_in_flight: int
) -> TokenScale:
    """What a workspace learns when the provider refuses a batch for its token limit.

    OpenAI fails such a batch with ``token_limit_exceeded`` ("Enqueued token limit reached for
    MODEL ... Limit: 2,000,000 enqueued tokens"): by its count, the model's enqueued tokens
    with this batch were over ``provider_limit``, while by ours they were
    ``estimated_in_flight``. So it counts at least ``provider_limit / estimated_in_flight``
    times what we estimate: the scale grows to that ratio (plus :data:`LEARN_MARGIN`), never
    shrinks, and stays within ``[1.0, MAX_TOKEN_SCALE]``.

    Args:
        scale: What the workspace had learnt so far.
        provider_limit: The limit the refusal states (None: it said none; the scale then
            grows by :data:`UNKNOWN_LIMIT_STEP`).
        estimated_in_flight: Our *unscaled* estimate (``Job.prompt_tokens``) of that model's
            in-flight jobs at the refusal, the refused batch included.

    Returns:
        The new scale. A refusal whose ratio is below the current factor teaches nothing new
        (e.g. the configured token budget is above the provider's limit, or jobs outside this
        ledger use the model): the factor stays, only ``refusals`` counts it.
    """
    if provider_limit is None or provider_limit <= 0 or estimated_in_flight <= 0:
        ratio = scale.factor * UNKNOWN_LIMIT_STEP
    else:
        ratio = provider_limit / estimated_in_flight * LEARN_MARGIN
    factor = min(MAX_TOKEN_SCALE, max(scale.factor, ratio))
    return TokenScale(factor=factor, refusals=scale.refusals + 1)
