"""Wake-ups between loops: wait for a nudge or a timeout, on the injected clock."""

from __future__ import annotations

import anyio

from orchestrator.clock import Clock


class Waker:
    """An event a loop sleeps on, with a timeout measured by the injected clock.

    ``move_on_after`` would measure real time; tests run the daemon on a fake clock, so the
    timeout is a sleep on that clock racing the event.
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._event = anyio.Event()

    def wake(self) -> None:
        """Cut the current (or next) wait short."""
        self._event.set()

    async def wait(self, seconds: float) -> bool:
        """Wait until woken or ``seconds`` pass on the clock; return True if woken."""
        if not self._event.is_set():
            async with anyio.create_task_group() as tg:

                async def sleeper() -> None:
                    await self._clock.sleep(seconds)
                    tg.cancel_scope.cancel()

                async def waiter() -> None:
                    await self._event.wait()
                    tg.cancel_scope.cancel()

                tg.start_soon(sleeper)
                tg.start_soon(waiter)
        woken = self._event.is_set()
        if woken:
            self._event = anyio.Event()
        return woken
