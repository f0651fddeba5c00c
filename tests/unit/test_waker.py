"""The loops' wake-up primitive on the fake clock."""

from __future__ import annotations

import anyio
import pytest

from orchestrator.clock import FakeClock
from orchestrator.daemon.waker import Waker

pytestmark = pytest.mark.anyio


async def test_times_out_on_the_injected_clock() -> None:
    """Without a nudge, the wait ends when the fake clock passes the timeout."""
    clock = FakeClock()
    waker = Waker(clock)
    results: list[bool] = []

    async def waiter() -> None:
        results.append(await waker.wait(10.0))

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()
        clock.advance(9.0)
        await anyio.wait_all_tasks_blocked()
        assert results == []
        clock.advance(1.0)
    assert results == [False]


async def test_wake_cuts_the_wait_short() -> None:
    """A nudge ends the wait at once, without any time passing."""
    clock = FakeClock()
    waker = Waker(clock)
    results: list[bool] = []

    async def waiter() -> None:
        results.append(await waker.wait(3600.0))

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()
        waker.wake()
    assert results == [True]
    assert clock.now() == FakeClock().now()


async def test_wake_before_wait_is_not_lost() -> None:
    """A nudge that arrives while the loop works makes its next wait return at once."""
    waker = Waker(FakeClock())
    waker.wake()
    assert await waker.wait(3600.0) is True
    with anyio.fail_after(1):
        clock_waker = Waker(FakeClock(autojump=True))
        assert await clock_waker.wait(5.0) is False
