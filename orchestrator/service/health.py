"""Liveness from heartbeats: is every loop of the daemon still cycling? (Pure: no I/O, no clock.)

Each loop records the time it finished a cycle (``DaemonView.heartbeats``). A loop sleeps at
most a known interval between cycles (``DaemonView.idle_waits``: the submit and collect loops a
fixed minute, a poller ``polling.max`` plus jitter), and a cycle itself takes a while
(uploads, downloads, a slow provider), so a heartbeat is *fresh* while its age is below that
interval plus an allowance. A loop that has not finished its first cycle yet is measured from
the moment the daemon started.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

import attrs

STALL_ALLOWANCE = 600.0
"""Seconds a cycle may take beyond its loop's longest sleep before the loop counts as stalled.

Generous on purpose: a submit cycle waits for its uploads (a 1 GB input on a slow link takes
minutes) and a liveness failure restarts the container, which would only cut that work short.
"""

LOOP_KINDS = ("submit", "poll", "collect")
"""The loops each workspace runs; their heartbeats are named ``<kind>:<workspace>``."""

Status = Literal["ok", "stale", "stopping"]


@attrs.frozen(kw_only=True)
class LoopHealth:
    """One loop's heartbeat, judged."""

    name: str
    age: float
    """Seconds since the loop last finished a cycle (or since start, if it never did)."""
    limit: float
    """The age beyond which the loop counts as stalled."""
    beaten: bool
    """Whether the loop has finished at least one cycle."""

    @property
    def fresh(self) -> bool:
        """True while the heartbeat is younger than its limit."""
        return self.age <= self.limit


@attrs.frozen(kw_only=True)
class HealthReport:
    """The answer of ``/healthz``."""

    status: Status
    loops: tuple[LoopHealth, ...]

    @property
    def healthy(self) -> bool:
        """False only when a loop stalled (a draining daemon is still alive)."""
        return self.status != "stale"

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready body: status, and per loop its age, limit and freshness."""
        return {
            "status": self.status,
            "loops": {
                loop.name: {
                    "age_seconds": round(loop.age, 3),
                    "limit_seconds": round(loop.limit, 3),
                    "fresh": loop.fresh,
                    "cycled": loop.beaten,
                }
                for loop in self.loops
            },
        }


def loop_limits(
    workspaces: Iterable[str],
    *,
    idle_waits: Mapping[str, float],
    allowance: float = STALL_ALLOWANCE,
) -> dict[str, float]:
    """The staleness limit of every loop the daemon runs.

    Args:
        workspaces: the workspace names (each runs one loop of each :data:`LOOP_KINDS`).
        idle_waits: the longest sleep between two cycles per loop kind, in seconds.
        allowance: seconds a cycle itself may take on top of that.

    Raises:
        ValueError: ``idle_waits`` lacks a loop kind, or a number is negative.
    """
    missing = [kind for kind in LOOP_KINDS if kind not in idle_waits]
    if missing:
        raise ValueError(f"idle_waits lacks the loop kinds {missing} (needs {list(LOOP_KINDS)})")
    if allowance < 0 or any(wait < 0 for wait in idle_waits.values()):
        raise ValueError(f"waits and allowance must be >= 0, got {dict(idle_waits)}, {allowance}")
    return {
        f"{kind}:{workspace}": idle_waits[kind] + allowance
        for workspace in workspaces
        for kind in LOOP_KINDS
    }


def evaluate(
    heartbeats: Mapping[str, float],
    limits: Mapping[str, float],
    *,
    now: float,
    started_at: float,
    stopping: bool,
    default_limit: float,
) -> HealthReport:
    """Judge every loop's heartbeat.

    Args:
        heartbeats: loop name -> time its last cycle ended.
        limits: loop name -> staleness limit, for the loops that must be beating.
        now: the current time.
        started_at: when the daemon started (the age of a loop that never beat).
        stopping: the daemon is draining after a signal: loops are allowed to go quiet.
        default_limit: the limit of a beating loop absent from ``limits``.
    """
    names = sorted({*limits, *heartbeats})
    loops = tuple(
        LoopHealth(
            name=name,
            age=max(0.0, now - heartbeats.get(name, started_at)),
            limit=limits.get(name, default_limit),
            beaten=name in heartbeats,
        )
        for name in names
    )
    status: Status
    if stopping:
        status = "stopping"
    elif all(loop.fresh for loop in loops):
        status = "ok"
    else:
        status = "stale"
    return HealthReport(status=status, loops=loops)
