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
which wraps aiosqlite's one entry point for queued calls). Real work then takes no simulated
time, and every delay the benchmark reports comes from the daemon's schedule alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import aiosqlite.core
import anyio.to_thread

from orchestrator.clock import FakeClock


class _SqliteCalls:
    in_flight = 0


@contextlib.contextmanager
def counting_sqlite() -> Iterator[None]:
    """Count aiosqlite calls waiting for its thread while the block runs."""
    connection = aiosqlite.core.Connection
    original_execute = connection._execute
    original_connect = connection._connect

    def counted(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            _SqliteCalls.in_flight += 1
            try:
                return await method(*args, **kwargs)
            finally:
                _SqliteCalls.in_flight -= 1

        return wrapper

    connection._execute = counted(original_execute)  # type: ignore[method-assign]
    connection._connect = counted(original_connect)  # type: ignore[method-assign]
    try:
        yield
    finally:
        connection._execute = original_execute  # type: ignore[method-assign]
        connection._connect = original_connect  # type: ignore[method-assign]


def threads_busy() -> int:
    """Worker-thread calls the event loop is waiting for right now."""
    limiter = anyio.to_thread.current_default_thread_limiter()
    return int(limiter.borrowed_tokens) + _SqliteCalls.in_flight


class SettledClock(FakeClock):
    """An autojumping :class:`FakeClock` that never jumps while a worker thread is busy.

    Use it inside :func:`counting_sqlite` (otherwise SQLite calls are not seen).
    """

    def __init__(self, start: float = 1_767_225_600.0, *, quiet_period: float = 0.001) -> None:
        super().__init__(start, autojump=True, quiet_period=quiet_period)
        self.jumps = 0
        """Times simulated time moved forward."""
        self.held_back = 0
        """Times a jump waited because a thread was still working."""

    async def _until_quiet(self) -> None:
        while True:
            await super()._until_quiet()
            if threads_busy() == 0:
                self.jumps += 1
                return
            self.held_back += 1
