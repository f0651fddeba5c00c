"""The one injected clock: the only module allowed to read time or sleep.

Everything else takes a :class:`Clock` so tests drive time with :class:`FakeClock` and never
sleep for real.
"""

from __future__ import annotations

import heapq
import itertools
import time
from datetime import UTC, datetime
from typing import Protocol

import anyio


class Clock(Protocol):
    """Wall time in epoch seconds, and a way to wait."""

    def now(self) -> float:
        """Return the current time as POSIX seconds (UTC)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (at least one scheduling point even for 0)."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(max(0.0, seconds))


class FakeClock:
    """A clock that only moves when told to, or when every sleeper waits on it.

    ``sleep`` parks the caller until :meth:`advance` moves time past its deadline. With
    ``autojump=True`` a sleep jumps time forward to its own deadline at once, which runs a
    whole daemon through hours of simulated time without real waiting.
    """

    def __init__(self, start: float = 1_767_225_600.0, *, autojump: bool = False) -> None:
        self._now = start
        self._autojump = autojump
        self._sleepers: list[tuple[float, int, anyio.Event]] = []
        self._counter = itertools.count()

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        deadline = self._now + max(0.0, seconds)
        if self._autojump:
            self._now = max(self._now, deadline)
            await anyio.lowlevel.checkpoint()
            return
        event = anyio.Event()
        heapq.heappush(self._sleepers, (deadline, next(self._counter), event))
        self._wake_due()
        await event.wait()

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every sleeper whose deadline has passed."""
        self._now += seconds
        self._wake_due()

    def _wake_due(self) -> None:
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, event = heapq.heappop(self._sleepers)
            event.set()


def to_datetime(epoch: float) -> datetime:
    """An aware UTC datetime for ``epoch`` seconds."""
    return datetime.fromtimestamp(epoch, tz=UTC)
