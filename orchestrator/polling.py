"""The poll schedule: when to look at a workspace's jobs next. Pure.

The base interval starts at ``initial`` and grows by ``factor`` while nothing changes, up to
``max``; any change (a job moved, a job was submitted) resets it. The actual delay is the base
with jitter, but never later than the earliest estimated completion of a running job, so a job
that will finish soon is noticed soon without polling everything often; and, when the queue's
head waits for budget, never later than the time the running jobs will have released enough for
it, so the head is admitted soon after it fits.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import attrs


@attrs.frozen(kw_only=True)
class PollPolicy:
    """Tunables of the schedule (from ``[polling]``)."""

    initial: float = 5.0
    max: float = 600.0
    factor: float = 1.5
    jitter: float = 0.1
    overdue_fraction: float = 0.025
    """A job past its estimated end is re-polled after this share of its age (at least
    ``initial``, at most ``max``), which keeps detection within a few % of its duration."""


@attrs.frozen(kw_only=True)
class Progress:
    """Two observations of one running job's progress."""

    started_at: float
    """When the job was submitted (or first seen running)."""
    first_at: float
    first_completed: int
    last_at: float
    last_completed: int
    total: int


def next_base(previous: float | None, *, changed: bool, policy: PollPolicy) -> float:
    """The un-jittered interval after a cycle: reset on change, else grow up to ``max``."""
    if previous is None or changed:
        return policy.initial
    return min(policy.max, max(policy.initial, previous * policy.factor))


def estimate_completion(progress: Progress) -> float | None:
    """When the job should finish at its observed rate, or None if no rate is known yet."""
    if progress.total <= 0:
        return None
    remaining = progress.total - progress.last_completed
    if remaining <= 0:
        return progress.last_at
    elapsed = progress.last_at - progress.first_at
    done = progress.last_completed - progress.first_completed
    if elapsed <= 0 or done <= 0:
        return None
    return progress.last_at + remaining / (done / elapsed)


def release_eta(shortfall: int, *, jobs: Iterable[Progress]) -> float | None:
    """When the running jobs, at their observed rates, will have released ``shortfall`` requests.

    A running job holds ``total - completed`` requests of budget as last observed; from that
    observation on, its hold falls at its observed rate until it reaches zero (the job ends).
    Jobs without a rate yet (validating, seen once, no progress) release nothing here.

    Returns:
        The earliest time by which ``shortfall`` is released (``-inf`` when ``shortfall <= 0``:
        nothing to wait for), or None when these jobs' whole hold is less than ``shortfall``.
    """
    if shortfall <= 0:
        return -math.inf
    # Each job adds its rate from its last observation until its hold is gone: sweep the
    # starts and ends in time order, accumulating what has been released. A job whose hold
    # goes at once (an interval too short for a float) releases it as a step.
    events: list[tuple[float, float, float]] = []  # (time, change of rate, released at once)
    held = 0
    for progress in jobs:
        remaining = progress.total - progress.last_completed
        elapsed = progress.last_at - progress.first_at
        done = progress.last_completed - progress.first_completed
        if progress.total <= 0 or remaining <= 0 or elapsed <= 0 or done <= 0:
            continue
        held += remaining
        end = progress.last_at + remaining * elapsed / done
        if end > progress.last_at:
            # The rate that releases exactly ``remaining`` over the (rounded) interval.
            rate = remaining / (end - progress.last_at)
            events += [(progress.last_at, rate, 0.0), (end, -rate, 0.0)]
        else:
            events.append((progress.last_at, 0.0, float(remaining)))
    if held < shortfall:
        return None
    events.sort()
    # A millionth of a request below the shortfall: float sums of whole holds fall a hair
    # short of them, which must not push the answer to the next job's end.
    target = shortfall - 1e-6
    released, rate, at = 0.0, 0.0, events[0][0]
    for when, delta, step in events:
        if rate > 0 and released + rate * (when - at) >= target:
            return at + (target - released) / rate
        released += rate * (when - at) + step
        rate, at = rate + delta, when
        if released >= target:
            return when
    # Rounding left the sum a hair short of the whole hold, which covers the shortfall.
    return at


def poll_delay(
    base: float,
    *,
    now: float,
    jobs: Iterable[Progress],
    policy: PollPolicy,
    jitter_sample: float,
    head_shortfall: int | None = None,
) -> float:
    """Seconds to wait before the next poll cycle.

    Args:
        base: the current base interval (see :func:`next_base`).
        now: the current time.
        jobs: progress of the running jobs (those without a rate are ignored).
        policy: the schedule's tunables.
        jitter_sample: a random number in [-1, 1] (the caller owns the randomness).
        head_shortfall: when admission is blocked, the requests the queue's head still needs
            released (0 or less: it should fit already); None when nothing is blocked.
    """
    jobs = list(jobs)
    delay = base * (1.0 + policy.jitter * max(-1.0, min(1.0, jitter_sample)))
    if head_shortfall is not None:
        due = release_eta(head_shortfall, jobs=jobs)
        if due is not None:
            delay = min(delay, max(policy.initial, due - now))
    for progress in jobs:
        eta = estimate_completion(progress)
        if eta is None:
            continue
        if eta > now:
            until = eta - now
        else:
            age = max(0.0, now - progress.started_at)
            until = policy.overdue_fraction * age
        delay = min(delay, max(policy.initial, until))
    return max(0.0, min(delay, policy.max))
