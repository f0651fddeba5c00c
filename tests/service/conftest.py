"""Builders for service tests: a config with an HTTP endpoint, and a daemon running on a fake clock.

The daemon runs in the test's own task group on a :class:`FakeClock` that moves only when the
test advances it, so the loops sit still between steps while the test asks the real HTTP
endpoint (uvicorn on a real local socket) what it sees.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import signal
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
import structlog

from orchestrator.clock import FakeClock
from orchestrator.config import Config, load_config
from orchestrator.daemon import Daemon
from orchestrator.emulator import Emulator, EmulatorSettings
from orchestrator.logging import QUIET_LIBRARIES
from orchestrator.model import FINAL_STATES

START_TIMEOUT = 30.0


def write_input(path: Path, n: int, *, prefix: str) -> Path:
    """A valid chat-completions JSONL input of ``n`` requests."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for i in range(n):
            body = {"max_tokens": 16, "messages": [{"role": "user", "content": f"{prefix} {i}"}]}
            handle.write(json.dumps({"custom_id": f"{prefix}-{i}", "body": body}) + "\n")
    return path


def write_config(
    folder: Path,
    *,
    jobs: Sequence[tuple[str, int]] = (("alpha", 20), ("beta", 30)),
    listen: str | None = "127.0.0.1:0",
    base_url: str = "embedded",
    budget: int = 1000,
    extra: str = "",
) -> Path:
    """A config with one workspace ``main``, one chat job per ``(name, size)``, var/ inside."""
    lines = [
        "[ledger]",
        'url = "sqlite:///var/ledger.db"',
        "[results]",
        'dir = "var/results"',
        "[polling]",
        'initial = "1s"',
        'max = "5s"',
        "jitter = 0.0",
        "[workspaces.main]",
        f'base_url = "{base_url}"',
        f"pending_budget = {budget}",
    ]
    if base_url != "embedded":
        lines.append('api_key_env = "MISTRAL_API_KEY"')
    if listen is not None:
        lines += ["[http]", f'listen = "{listen}"']
    lines.append(extra)
    for name, size in jobs:
        write_input(folder / "data" / f"{name}.jsonl", size, prefix=name)
        lines += [
            "[[jobs]]",
            f'name = "{name}"',
            'workspace = "main"',
            f'input = "data/{name}.jsonl"',
            'model = "mistral-small-latest"',
            'endpoint = "/v1/chat/completions"',
        ]
    path = folder / "orchestrator.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def clock() -> FakeClock:
    """A clock that moves only when the test says so."""
    return FakeClock()


@pytest.fixture
def emulator(clock: FakeClock) -> Iterator[Emulator]:
    """The in-process emulator on the test's clock: 10 requests per second, 10 % failures."""
    settings = EmulatorSettings(
        time_scale=1.0, throughput=10.0, validation_seconds=2.0, failure_fraction=0.1, seed=3
    )
    with Emulator(settings, clock=clock) as emu:
        yield emu


@pytest.fixture
def config(tmp_path: Path) -> Config:
    """Two jobs (20 and 30 requests) on an embedded workspace, endpoint on a free port."""
    return load_config(write_config(tmp_path), environ={})


def _runnable(task: asyncio.Task[object]) -> bool:
    waiter = task._fut_waiter  # type: ignore[attr-defined]  # what anyio itself looks at
    return waiter is None or bool(waiter.done())


async def settle() -> None:
    """Let every task run until it waits (on the fake clock, a socket or a thread).

    Not ``anyio.wait_all_tasks_blocked``: it looks every 0.1 s, in phase with uvicorn's own
    0.1 s tick, and can then find the server "runnable" at every look and never return.
    """
    this = asyncio.current_task()
    await anyio.lowlevel.checkpoint()
    with anyio.fail_after(START_TIMEOUT):
        while True:
            if not any(task is not this and _runnable(task) for task in asyncio.all_tasks()):
                return
            await anyio.sleep(0.003)  # short and off uvicorn's 0.1 s beat


@asynccontextmanager
async def running(
    config: Config,
    clock: FakeClock,
    emulator: Emulator,
    *,
    environ: dict[str, str] | None = None,
) -> AsyncIterator[Daemon]:
    """Run a daemon (migrating its ledger) until the block ends, then drain it."""
    daemon = Daemon(config, clock=clock, emulator=emulator, environ=environ or {})
    async with anyio.create_task_group() as tg:
        tg.start_soon(functools.partial(daemon.run, migrate=True))
        with anyio.fail_after(START_TIMEOUT):
            while len(daemon.pollers) < len(config.workspaces) or daemon.runtime is None:
                await settle()
                await anyio.lowlevel.checkpoint()
        await quiesce(daemon)
        try:
            yield daemon
        finally:
            if daemon.runtime is not None:
                daemon.runtime.stop()


async def _fingerprint(daemon: Daemon) -> object:
    assert daemon.runtime is not None
    jobs = await daemon.runtime.ledger.list_jobs()
    return (
        sorted(daemon.runtime.heartbeats.items()),
        [sum(getattr(ws.provider, "calls", {}).values()) for ws in daemon.workspaces.values()],
        [(job.id, job.state, job.updated_at, job.completed) for job in jobs],
    )


async def quiesce(daemon: Daemon, *, rounds: int = 3) -> None:
    """Wait until the loops sit still on the frozen clock (nothing changes for a few rounds).

    ``settle`` alone is not enough: a task waiting for SQLite's thread counts as blocked. The
    short real pause lets such a thread finish before the next look.
    """
    stable, last = 0, None
    with anyio.fail_after(START_TIMEOUT):
        while stable < rounds:
            await settle()
            await anyio.sleep(0.02)
            current = await _fingerprint(daemon)
            stable = stable + 1 if current == last else 0
            last = current


async def advance_until(
    clock: FakeClock,
    done: Callable[[], Awaitable[bool]],
    *,
    step: float = 1.0,
    limit: int = 2000,
) -> None:
    """Move the fake clock ``step`` at a time until ``done()`` holds."""
    for _ in range(limit):
        if await done():
            return
        clock.advance(step)
        await settle()
    raise AssertionError(f"not done after {limit * step:g} simulated seconds")


def all_final(daemon: Daemon) -> Callable[[], Awaitable[bool]]:
    """A ``done`` predicate: every job of the daemon's ledger is done or rejected."""

    async def check() -> bool:
        assert daemon.runtime is not None
        jobs = await daemon.runtime.ledger.list_jobs()
        return bool(jobs) and all(job.state in FINAL_STATES for job in jobs)

    return check


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Put structlog and the root logger back as they were after a test configures logging."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    quiet = {
        name: (logger.level, list(logger.handlers), logger.propagate)
        for name in QUIET_LIBRARIES
        for logger in (logging.getLogger(name),)
    }
    config = structlog.get_config()
    yield
    structlog.configure(**config)
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, (old_level, old_handlers, old_propagate) in quiet.items():
        logger = logging.getLogger(name)
        logger.setLevel(old_level)
        logger.handlers[:] = old_handlers
        logger.propagate = old_propagate


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group of ``process``, SIGKILL it after 10 s, and reap ``process``."""
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break  # the whole group is gone
        try:
            process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        # The leader is gone; anything left in its group still gets the signal next round.
    process.wait(timeout=10)
