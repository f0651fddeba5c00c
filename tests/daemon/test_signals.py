"""Signals: SIGTERM drains, and a second SIGTERM during the drain stops at once."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import anyio
import httpx
import pytest
from structlog.testing import capture_logs

from orchestrator.clock import FakeClock
from orchestrator.config import Config
from orchestrator.daemon import Daemon
from orchestrator.emulator import Emulator
from orchestrator.ledger import SqlLedger
from orchestrator.model import JobState
from tests.daemon.conftest import load, write_config

pytestmark = pytest.mark.anyio


class _StuckUpload(httpx.AsyncBaseTransport):
    """Lets everything through except uploads, which hang until the test ends."""

    def __init__(self, inner: httpx.AsyncBaseTransport, reached: anyio.Event) -> None:
        self._inner = inner
        self._reached = reached

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path.endswith("/v1/files"):
            self._reached.set()
            await anyio.Event().wait()  # never set: an upload that outlives any grace period
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


async def test_second_sigterm_cuts_a_drain_that_would_wait(
    tmp_path: Path, emulator_factory: Callable[..., Emulator]
) -> None:
    """The first SIGTERM waits for the stuck upload (grace 1 h); the second stops at once."""
    path = write_config(tmp_path, [("slow", 5)])
    path.write_text(path.read_text() + '\n[daemon]\ngrace_period = "1h"\n')
    config = load(path)
    clock = FakeClock()  # frozen: the grace period never runs out by itself
    reached = anyio.Event()
    daemon = Daemon(
        config,
        clock=clock,
        emulator=emulator_factory(),
        wrap_transport=lambda inner: _StuckUpload(inner, reached),
    )
    with capture_logs() as logs:
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: daemon.run(migrate=True))
            with anyio.fail_after(10):
                await reached.wait()
            os.kill(os.getpid(), signal.SIGTERM)
            with anyio.fail_after(10):
                while not any(e["event"] == "daemon.stopping" for e in logs):  # noqa: ASYNC110
                    await anyio.sleep(0.01)
            await anyio.sleep(0.2)
            assert daemon.runtime is not None and daemon.runtime.stopping.is_set()
            assert not any(e["event"] == "daemon.stopped" for e in logs)  # still draining
            os.kill(os.getpid(), signal.SIGTERM)
            with anyio.fail_after(10):
                while not any(e["event"] == "daemon.stopped" for e in logs):  # noqa: ASYNC110
                    await anyio.sleep(0.01)
    events = [e["event"] for e in logs]
    assert events.index("daemon.stopping") < events.index("daemon.stop_now")
    assert "daemon.grace_expired" not in events
    # Cut mid-upload: the job is still admitted, to be resumed by the next start.
    jobs = await _states(config)
    assert jobs == {"slow": JobState.ADMITTED}


async def _states(config: Config) -> dict[str, JobState]:
    ledger = await SqlLedger.connect(config.ledger.url)
    try:
        return {job.name: job.state for job in await ledger.list_jobs()}
    finally:
        await ledger.close()
