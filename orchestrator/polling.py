"""The poll schedule: when to look at a workspace's jobs next. Pure.

The base interval starts at ``initial`` and grows by ``factor`` while nothing changes, up to
``max``; any change (a job moved, a job was submitted) resets it. The actual delay is the base
with jitter, but never later than the earliest estimated completion of a running job, so a job
that will finish soon is noticed soon without polling everything often.
"""

from __future__ import annotations

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


def poll_delay(
    base: float,
    *,
    now: float,
    jobs: Iterable[Progress],
    policy: PollPolicy,
    jitter_sample: float,
) -> float:
    """Seconds to wait before the next poll cycle.

    Args:
        base: the current base interval (see :func:`next_base`).
        now: the current time.
        jobs: progress of the running jobs (those without a rate are ignored).
        policy: the schedule's tunables.
        jitter_sample: a random number in [-1, 1] (the caller owns the randomness).
    """
    delay = base * (1.0 + policy.jitter * max(-1.0, min(1.0, jitter_sample)))
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
