"""The whole daemon on each ledger backend: SQLite (the default) and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.clock import FakeClock
from orchestrator.config import load_config
from orchestrator.daemon import Daemon
from orchestrator.daemon.app import embedded_api_key
from orchestrator.emulator import Emulator
from orchestrator.ledger import SqlLedger
from orchestrator.model import JobState, Outcome
from tests.daemon.conftest import write_config
from tests.ledger.databases import BACKENDS, postgres_url, sqlite_url

__all__ = ["postgres_url", "sqlite_url"]  # fixtures used through BACKENDS

pytestmark = pytest.mark.anyio


@pytest.fixture(params=BACKENDS)
def ledger_url(request: pytest.FixtureRequest) -> str:
    """An empty ledger URL on each backend."""
    url: str = request.getfixturevalue(request.param)
    return url


async def test_daemon_runs_jobs_to_done_on_each_backend(
    ledger_url: str,
    tmp_path: Path,
    clock: FakeClock,
    emulator_factory: Callable[..., Emulator],
) -> None:
    """Three queued jobs under a tight budget finish, once each, whatever the ledger."""
    path = write_config(tmp_path, [("a", 30), ("b", 20), ("c", 25)], budget=50)
    config = load_config(path, environ={"ORCH_LEDGER_URL": ledger_url})
    emulator = emulator_factory(throughput=1.0)
    await Daemon(config, clock=clock, emulator=emulator).run(exit_when_idle=True, migrate=True)
    stats = emulator.workspace_stats(embedded_api_key("main"))
    ledger = await SqlLedger.connect(ledger_url, clock=clock)
    try:
        jobs = await ledger.list_jobs()
    finally:
        await ledger.close()
    assert [job.state for job in jobs] == [JobState.DONE] * 3
    assert all(job.outcome is Outcome.SUCCEEDED for job in jobs)
    assert all(stats["jobs_by_orchestrator_job_id"][job.client_token] == 1 for job in jobs)
    assert stats["max_pending"] <= 50
