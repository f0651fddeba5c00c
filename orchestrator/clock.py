"""The one injected clock: the only module allowed to read time or sleep.

Everything else takes a :class:`Clock` so tests drive time with :class:`FakeClock` and never
sleep for real.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import itertools
import time
from datetime import UTC, datetime
from typing import Any, Protocol

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
    """A clock that only moves when told to, or, with ``autojump``, when everything waits on it.

    ``sleep`` parks the caller until time passes its deadline. :meth:`advance` moves time by
    hand. With ``autojump=True`` a driver task moves time to the earliest deadline whenever the
    event loop has gone quiet (every task blocked on the same thing for ``quiet_period`` real
    seconds), like trio's autojump clock: a daemon runs through hours of simulated time in
    well under a second, and events keep the order they would have in real time.
    """

    def __init__(
        self,
        start: float = 1_767_225_600.0,
        *,
        autojump: bool = False,
        quiet_period: float = 0.001,
    ) -> None:
        self._now = start
        self._autojump = autojump
        self._quiet_period = quiet_period
        self._sleepers: list[_Sleeper] = []
        self._counter = itertools.count()
        self._driver: asyncio.Task[None] | None = None

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        sleeper = _Sleeper(self._now + max(0.0, seconds), next(self._counter))
        heapq.heappush(self._sleepers, sleeper)
        self._wake_due()
        if self._autojump and (self._driver is None or self._driver.done()):
            # A plain task, not a task-group child: it ends by itself once nobody sleeps.
            self._driver = asyncio.get_running_loop().create_task(self._drive())
        try:
            await sleeper.event.wait()
        finally:
            sleeper.alive = False

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every sleeper whose deadline has passed."""
        self._now += seconds
        self._wake_due()

    def _wake_due(self) -> None:
        while self._sleepers and (
            not self._sleepers[0].alive or self._sleepers[0].deadline <= self._now
        ):
            heapq.heappop(self._sleepers).event.set()

    async def _drive(self) -> None:
        while True:
            await self._until_quiet()
            self._wake_due()  # also drops sleepers that were cancelled
            if not self._sleepers:
                return
            self._now = max(self._now, self._sleepers[0].deadline)
            self._wake_due()

    async def _until_quiet(self) -> None:
        """Return once no other task has run for ``quiet_period`` real seconds.

        A task counts as idle when it waits on a future; the same futures before and after the
        pause mean nothing moved, so no thread (aiosqlite, to_thread) delivered a result either.
        """
        me = asyncio.current_task()
        previous: dict[asyncio.Task[Any], int] | None = None
        while True:
            await asyncio.sleep(self._quiet_period)
            waiting: dict[asyncio.Task[Any], int] = {}
            for task in asyncio.all_tasks():
                if task is me:
                    continue
                # asyncio keeps what a task awaits in _fut_waiter (anyio reads it the same way).
                waiter = getattr(task, "_fut_waiter", None)
                if waiter is None or waiter.done():
                    break
                waiting[task] = id(waiter)
            else:
                if waiting == previous:
                    return
                previous = waiting
                continue
            previous = None


@functools.total_ordering
class _Sleeper:
    """One parked ``FakeClock.sleep`` call, ordered by deadline then arrival."""

    __slots__ = ("alive", "deadline", "event", "order")

    def __init__(self, deadline: float, order: int) -> None:
        self.deadline = deadline
        self.order = order
        self.event = anyio.Event()
        self.alive = True

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Sleeper) and (self.deadline, self.order) == (
            other.deadline,
            other.order,
        )

    def __lt__(self, other: _Sleeper) -> bool:
        return (self.deadline, self.order) < (other.deadline, other.order)

    __hash__ = None  # type: ignore[assignment]


def to_datetime(epoch: float) -> datetime:
    """An aware UTC datetime for ``epoch`` seconds."""
    return datetime.fromtimestamp(epoch, tz=UTC)
