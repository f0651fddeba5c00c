"""Budget admission: which queued jobs may be submitted now. Pure.

Two budgets hold at once:

- **Requests.** A workspace may hold at most ``budget`` pending requests (Mistral: 1,000,000,
  counted as ``total - completed`` of every unfinished job).
- **Tokens** (optional, :class:`TokenBudget`). Per model, the prompt tokens of the in-flight
  jobs (admitted, submitting, running: a running job's tokens count in full until it leaves
  ``running``) may not exceed that model's token budget: OpenAI's *enqueued tokens* limit.
  Estimates (``Job.prompt_tokens``) are multiplied by a :class:`TokenScale` the workspace learns
  when the provider refuses a batch for its token limit (:func:`learn_token_scale`).

Admission walks the queue in priority-then-FIFO order and admits the head while it fits both.
It never skips a head that does not fit yet, so a large job is not starved by a stream of small
ones: a head short of requests holds back the whole queue; a head short of its model's tokens
holds back the jobs of that model only (other models' tokens are other budgets). A job that can
never fit, in either dimension, is reported with its figures (:class:`Misfit`); a job the
estimate fits but the learnt scale puts over its model's budget is charged the whole budget
(it runs alone) rather than rejected.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Final, Literal

import attrs

from orchestrator.model import IN_FLIGHT_STATES, Job, JobState, pending

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
    dimension: Literal["requests", "tokens"]
    needed: int
    """Its requests, or its estimated prompt tokens."""
    limit: int
    """The workspace's pending budget, or its model's token budget."""
    model: str


@attrs.frozen(kw_only=True)
class TokenWait:
    """The first job of a model that waits for that model's tokens to be released."""

    job_id: int
    model: str
    shortfall: int
    """Tokens (charged) that must be released before it fits."""


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

    Invariants: ``in_flight + external + Σ requests(admitted) <= budget`` whenever the input
    already satisfied ``in_flight + external <= budget``; and per model with a token budget
    ``L``, ``tokens_in_flight[model] + Σ charged tokens(admitted of that model) <= L`` whenever
    ``tokens_in_flight[model] <= L``.
    """
    used = in_flight + external
    held = dict(tokens_in_flight or {})
    admitted: list[int] = []
    misfits: list[Misfit] = []
    blocked: Job | None = None
    waits: dict[str, TokenWait] = {}
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
        if blocked is not None or (job.not_before is not None and job.not_before > now):
            continue  # keep scanning only to find jobs that can never fit
        if job.model in waits:
            continue  # behind the job of its model that waits for tokens
        if used + job.request_count > budget:
            blocked = job  # the head waits for room; nothing behind it jumps the queue
            continue
        if limit is not None:
            model_used = held.get(job.model, 0)
            if model_used + need > limit:
                waits[job.model] = TokenWait(
                    job_id=job.id, model=job.model, shortfall=model_used + need - limit
                )
                continue
            held[job.model] = model_used + need
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
    )


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
