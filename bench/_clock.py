"""Simulated time for benchmarks that must measure delays in simulated seconds.

:class:`~orchestrator.clock.FakeClock` with ``autojump`` moves time to the next sleeper's
deadline as soon as the event loop has been quiet for a millisecond. A task waiting for a
worker thread (result generation in the emulator, hashing, a SQLite commit in aiosqlite's
thread) looks quiet too, so time can leap ahead *during* real work: a job whose results are
being written would be recorded as finished a poll interval later than it was. That is harmless
for tests but it would bias a latency benchmark.

:class:`SettledClock` jumps only when, in addition, no thread does work for the event loop:
no call holds a token of anyio's default thread limiter (``anyio.to_thread``, ``anyio.Path``,
``anyio.open_file``) and no aiosqlite call is in flight (counted by :func:`counting_sqlite`,
which puts a counter in front of each connection's call queue). Real work then takes no simulated
time, and every delay the benchmark reports comes from the daemon's schedule alone.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import aiosqlite.core
import anyio.to_thread

from orchestrator.clock import FakeClock


class _SqliteCalls:
    in_flight = 0


class _CountingQueue:
    """aiosqlite's call queue, counting the calls its thread has not answered yet."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def put_nowait(self, item: tuple[asyncio.Future[Any] | None, Any]) -> None:
        future = item[0]
        if future is not None:
            _SqliteCalls.in_flight += 1
            future.add_done_callback(_answered)
        self._inner.put_nowait(item)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _answered(_: object) -> None:
    _SqliteCalls.in_flight -= 1


@contextlib.contextmanager
def counting_sqlite() -> Iterator[None]:
    """Count aiosqlite calls waiting for their thread while the block runs.

    Every call (queries, commits, connects, and SQLAlchemy's isolation-level changes, which
    bypass aiosqlite's own methods) goes through the connection's queue: each connection made
    inside the block gets a counting queue in front of it.
    """
    connection = aiosqlite.core.Connection
    original_init = connection.__init__

    def init(self: aiosqlite.core.Connection, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        self._tx = _CountingQueue(self._tx)  # type: ignore[assignment]

    connection.__init__ = init  # type: ignore[method-assign]
    try:
        yield
    finally:
        connection.__init__ = original_init  # type: ignore[method-assign]


def threads_busy() -> int:
    """Worker-thread calls the event loop is waiting for right now."""
    limiter = anyio.to_thread.current_default_thread_limiter()
    return int(limiter.borrowed_tokens) + _SqliteCalls.in_flight


class SettledClock(FakeClock):
    """An autojumping :class:`FakeClock` that never jumps while a worker thread is busy.

    Use it inside :func:`counting_sqlite` (otherwise SQLite calls are not seen). Quiet means:
    for ``settle_samples`` consecutive samples ``quiet_period`` apart, every other task waits
    on the very same future object (held, so a new future cannot reuse a freed one's
    address and pass for it) and no worker thread is busy.
    """

    def __init__(
        self,
        start: float = 1_767_225_600.0,
        *,
        quiet_period: float = 0.001,
        settle_samples: int = 1,
    ) -> None:
        super().__init__(start, autojump=True, quiet_period=quiet_period)
        self.settle_samples = settle_samples
        self.jumps = 0
        """Times the driver found everything quiet and moved to the next deadline."""
        self.held_back = 0
        """Samples where every task waited but a worker thread was still busy."""

    async def _until_quiet(self) -> None:
        me = asyncio.current_task()
        previous: dict[asyncio.Task[Any], asyncio.Future[Any]] = {}
        stable = 0
        while True:
            await asyncio.sleep(self._quiet_period)
            waiting: dict[asyncio.Task[Any], asyncio.Future[Any]] = {}
            runnable = False
            for task in asyncio.all_tasks():
                if task is me:
                    continue
                # asyncio keeps what a task awaits in _fut_waiter (FakeClock reads it too).
                waiter = getattr(task, "_fut_waiter", None)
                if waiter is None or waiter.done():
                    runnable = True
                    break
                waiting[task] = waiter
            busy = threads_busy() > 0
            self.held_back += not runnable and busy
            same = not runnable and waiting.keys() == previous.keys()
            if same and not busy and all(previous[t] is w for t, w in waiting.items()):
                stable += 1
                if stable >= self.settle_samples:
                    self.jumps += 1
                    return
            else:
                stable = 0
            previous = {} if runnable else waiting
