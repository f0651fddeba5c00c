"""Crash the daemon between every pair of steps; a restart ends with one remote job each.

The crash is a BaseException raised at the HTTP boundary, which nothing in the daemon catches:
like ``kill -9`` it leaves the ledger exactly as the last committed transaction did, and (with
``after=True``) the server has done work the daemon never heard of.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from orchestrator.clock import FakeClock
from orchestrator.config import Config
from orchestrator.daemon import Daemon
from orchestrator.daemon.app import embedded_api_key
from orchestrator.emulator import Emulator
from orchestrator.ledger import SqlLedger
from orchestrator.model import JobState, Outcome
from tests.daemon.conftest import (
    CrashingTransport,
    contains_crash,
    is_route,
    load,
    write_config,
)

pytestmark = pytest.mark.anyio


async def _run_until_crash(
    config: Config,
    clock: FakeClock,
    emulator: Emulator,
    make: Callable[[httpx.AsyncBaseTransport], CrashingTransport],
) -> None:
    made: list[CrashingTransport] = []

    def wrap(inner: httpx.AsyncBaseTransport) -> httpx.AsyncBaseTransport:
        made.append(make(inner))
        return made[-1]

    daemon = Daemon(config, clock=clock, emulator=emulator, wrap_transport=wrap)
    try:
        await daemon.run(exit_when_idle=True, migrate=True)
    except BaseException as exc:
        assert contains_crash(exc), exc
    else:
        pytest.fail("the daemon finished without reaching the crash point")
    assert made and made[0].fired


async def _assert_once_and_complete(config: Config, clock: FakeClock, emulator: Emulator) -> None:
    stats = emulator.workspace_stats(embedded_api_key("main"))
    ledger = await SqlLedger.connect(config.ledger.url, clock=clock)
    try:
        jobs = await ledger.list_jobs()
        assert jobs
        for job in jobs:
            assert job.state is JobState.DONE, job
            assert job.outcome is Outcome.SUCCEEDED, job
            assert stats["jobs_by_orchestrator_job_id"].get(job.client_token) == 1, stats
            files = {f.kind: f for f in await ledger.files(job.id)}
            data = Path(files["output"].path).read_bytes()
            assert hashlib.sha256(data).hexdigest() == files["output"].sha256
            ids = {json.loads(line)["custom_id"] for line in data.splitlines()}
            assert ids == {f"{job.name}-{i}" for i in range(job.request_count)}
            folder = config.results.dir / job.name
            assert sorted(p.name for p in folder.iterdir()) == ["job.json", "output.jsonl"]
        assert stats["jobs_created"] == len(jobs)
    finally:
        await ledger.close()


CRASH_POINTS = {
    "after-upload": lambda inner: CrashingTransport(inner, when=is_route("POST", "/v1/files")),
    "before-create": lambda inner: CrashingTransport(
        inner, when=is_route("POST", "/v1/batch/jobs"), after=False
    ),
    "after-create": lambda inner: CrashingTransport(inner, when=is_route("POST", "/v1/batch/jobs")),
    "mid-download": lambda inner: CrashingTransport(
        inner, when=is_route("GET", "/content"), cut_body_after=100
    ),
}


@pytest.mark.parametrize("point", sorted(CRASH_POINTS))
async def test_restart_after_crash_submits_once_and_completes(
    point: str,
    tmp_path: Path,
    clock: FakeClock,
    emulator_factory: Callable[..., Emulator],
) -> None:
    """Whatever step the daemon dies at, a restart yields one remote job and full results."""
    config = load(write_config(tmp_path, [("alpha", 40), ("beta", 25)]))
    emulator = emulator_factory()
    await _run_until_crash(config, clock, emulator, CRASH_POINTS[point])
    await Daemon(config, clock=clock, emulator=emulator).run(exit_when_idle=True)
    await _assert_once_and_complete(config, clock, emulator)


async def test_repeated_crashes_at_create_still_submit_once(
    tmp_path: Path, clock: FakeClock, emulator_factory: Callable[..., Emulator]
) -> None:
    """Three deaths in a row right after the server created the job: still one remote job."""
    config = load(write_config(tmp_path, [("alpha", 10)]))
    emulator = emulator_factory()
    await _run_until_crash(config, clock, emulator, CRASH_POINTS["after-create"])
    await _crash_again_at_reconcile(config, clock, emulator)
    await _crash_again_at_reconcile(config, clock, emulator)
    await Daemon(config, clock=clock, emulator=emulator).run(exit_when_idle=True)
    await _assert_once_and_complete(config, clock, emulator)


async def _crash_again_at_reconcile(config: Config, clock: FakeClock, emulator: Emulator) -> None:
    """Die right after the recovery's list call (before adopting what it found)."""
    await _run_until_crash(
        config,
        clock,
        emulator,
        lambda inner: CrashingTransport(inner, when=is_route("GET", "/v1/batch/jobs")),
    )
