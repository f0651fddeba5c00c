"""What the loops share: the ledger, the clock, and one runtime per workspace."""

from __future__ import annotations

import random
from pathlib import Path

import anyio
import attrs

from orchestrator.budget import SpendWait, TokenBudget, TokenScale, learn_token_scale
from orchestrator.clock import Clock
from orchestrator.daemon.waker import Waker
from orchestrator.ledger import SqlLedger
from orchestrator.model import Job
from orchestrator.polling import PollPolicy
from orchestrator.pricing import Pricing
from orchestrator.providers.base import Provider

RECONCILE_GRACE = 180.0
"""Default seconds after a create intent before recovery trusts a list that lacks the job.

A create can still land after its client died; this must exceed the provider's request timeout
(field notes: 0 duplicates in 160 kills with grace >= timeout). ``[daemon] reconcile_grace``
overrides it.
"""

SAFE_RECONCILE_GRACE = 60.0
"""The provider's request timeout: a shorter reconcile grace is only safe against a server that
answers in milliseconds (the local emulator of the survival tests); the daemon warns."""

RETRY_BACKOFF_MAX = 600.0


@attrs.define(kw_only=True)
class Runtime:
    """Process-wide collaborators of the loops."""

    clock: Clock
    ledger: SqlLedger
    results_dir: Path
    policy: PollPolicy
    activity: Waker
    """Nudged whenever any job changes state (the idle watcher listens)."""
    rng: random.Random = attrs.field(factory=random.Random)
    stopping: anyio.Event = attrs.field(factory=anyio.Event)
    """Set on SIGTERM: loops start no new work, finish what they hold, and return."""
    heartbeats: dict[str, float] = attrs.field(factory=dict)
    """Loop name -> time its last cycle ended (health checks read it)."""
    wakers: list[Waker] = attrs.field(factory=list)
    """Every loop's waker, so a stop can wake them all."""
    bytes_downloaded: int = 0
    reconcile_grace: float = RECONCILE_GRACE
    """Seconds a ``submitting`` job waits before recovery lists for it (see RECONCILE_GRACE)."""

    def beat(self, loop: str) -> None:
        """Record that ``loop`` finished a cycle now."""
        self.heartbeats[loop] = self.clock.now()

    def stop(self) -> None:
        """Ask every loop to wind down."""
        self.stopping.set()
        for waker in (self.activity, *self.wakers):
            waker.wake()


@attrs.frozen(kw_only=True)
class HeadWait:
    """Admission is blocked: the queue's head needs requests released before it fits."""

    job_id: int
    shortfall: int
    """Requests to be released, as the admission pass computed them."""
    released_mark: int
    """:attr:`WorkspaceRuntime.released` when that pass read the ledger: the poller subtracts
    what it has released since, without waiting for the next pass."""

    def shortfall_now(self, released: int) -> int:
        """The shortfall left once the running total of releases is ``released``."""
        return self.shortfall - (released - self.released_mark)


@attrs.define(kw_only=True)
class WorkspaceRuntime:
    """One workspace: its provider, budget and the wakers of its loops."""

    name: str
    provider: Provider
    pending_budget: int
    count_external: bool
    admission: Waker
    poll: Waker
    collect: Waker
    external_pending: int = 0
    """Pending requests of unfinished remote jobs this ledger did not create (last count)."""
    released: int = 0
    """Budget the poller has released so far (a running total of stored progress and ends)."""
    head: HeadWait | None = None
    """Set by admission while the queue's head does not fit; the poller plans by it."""
    tokens: TokenBudget = attrs.field(factory=TokenBudget)
    """The token budgets per model, and the scale learnt from the provider's refusals."""
    pricing: Pricing = attrs.field(factory=Pricing)
    """The prices (``[pricing]``): what results cost and what work is estimated to cost."""
    batch_discount: float | None = None
    """The workspace's own batch discount (None: the pricing's)."""
    spend_limit: float | None = None
    """Most the workspace may spend per calendar month (UTC); None: no limit."""
    spend_used: float = 0.0
    """This month's actual plus in-flight estimated cost, as the last admission pass saw it."""
    spend_wait: SpendWait | None = None
    """Set by admission while the queue's head waits for the spend limit."""

    def cost(self, job: Job) -> float | None:
        """What ``job``'s own results cost (None: not in yet, or its model has no price)."""
        if job.usage is None:
            return None
        return self.pricing.cost(job.model, job.usage, discount=self.batch_discount)

    def token_limit_refused(
        self, *, provider_limit: int | None, estimated_in_flight: int
    ) -> TokenScale:
        """Learn from a batch the provider failed for its token limit (``token_limit_exceeded``).

        ``estimated_in_flight`` is the unscaled ``prompt_tokens`` sum of the model's in-flight
        jobs at the refusal, the refused job included; see
        :func:`~orchestrator.budget.learn_token_scale`. Returns the new scale, which admission
        uses from its next pass on.
        """
        scale = learn_token_scale(
            self.tokens.scale,
            provider_limit=provider_limit,
            estimated_in_flight=estimated_in_flight,
        )
        self.tokens = attrs.evolve(self.tokens, scale=scale)
        return scale


def backoff(attempts: int, *, base: float = 5.0, cap: float = RETRY_BACKOFF_MAX) -> float:
    """Exponential backoff in seconds for the ``attempts``-th retry of a daemon step."""
    return float(min(cap, base * 2 ** max(0, attempts - 1)))


async def retry_later(runtime: Runtime, job: Job, error: str) -> Job:
    """Record a failed step of ``job``, which stays in its state: the error, one more attempt,
    and the time before which the step is not tried again (:func:`backoff`).

    Raises:
        StaleTransition: the job left its state meanwhile (finished, or taken over by another
            replica); nothing was recorded.
    """
    attempts = job.attempts + 1
    return await runtime.ledger.update(
        job.id,
        job.state,
        error=error,
        attempts=attempts,
        not_before=runtime.clock.now() + backoff(attempts),
    )
