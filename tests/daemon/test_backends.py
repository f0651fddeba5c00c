"""The whole daemon on each ledger backend: SQLite (the default) and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from orchestrator.clock import FakeClock
from orchestrator.config import Config, load_config
from orchestrator.daemon import Daemon
from orchestrator.daemon.app import embedded_api_key
from orchestrator.emulator import Emulator
from orchestrator.errors import ReplicaIdTaken
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


@pytest.mark.postgres
async def test_postgres_replicas_share_a_ledger_but_not_an_id(
    postgres_url: str,
    tmp_path: Path,
    clock: FakeClock,
    emulator_factory: Callable[..., Emulator],
) -> None:
    """On PostgreSQL a second daemon is a replica, not an error; a second one with the same
    configured replica_id fails at once with ReplicaIdTaken, and the first goes on."""
    emulator = emulator_factory(validation_seconds=0.0, throughput=0.001)

    def config(replica: str) -> Config:
        folder = tmp_path / replica
        folder.mkdir()
        path = write_config(
            folder, [("solo", 5)], extra=f'[daemon]\nreplica_id = "{replica}"\nlease_ttl = "5s"'
        )
        return load_config(path, environ={"ORCH_LEDGER_URL": postgres_url})

    first = Daemon(config("pod-0"), clock=clock, emulator=emulator)
    other = Daemon(config("pod-1"), clock=clock, emulator=emulator)

    async def second() -> None:
        while first.runtime is None:  # noqa: ASYNC110 (the daemon exposes no started event)
            await anyio.sleep(0.01)
        with pytest.raises(ReplicaIdTaken, match="replica id 'pod-0' is already in use"):
            await Daemon(first.config, clock=clock, emulator=emulator).run()
        tg.start_soon(other.run)
        while other.runtime is None:  # noqa: ASYNC110
            await anyio.sleep(0.01)
        assert (first.replica_id, other.replica_id) == ("pod-0", "pod-1")
        tg.cancel_scope.cancel()

    async with anyio.create_task_group() as tg:
        tg.start_soon(second)
        await first.run(migrate=True)


@pytest.mark.postgres
async def test_a_stopping_replica_releases_its_leases(
    postgres_url: str,
    tmp_path: Path,
    clock: FakeClock,
    emulator_factory: Callable[..., Emulator],
) -> None:
    """A drained stop ends the replica's leases at once: another replica need not wait."""
    emulator = emulator_factory(validation_seconds=0.0, throughput=0.001)  # runs for ages
    path = write_config(
        tmp_path, [("long", 5)], extra='[daemon]\nreplica_id = "pod-0"\nlease_ttl = "30s"'
    )
    daemon = Daemon(
        load_config(path, environ={"ORCH_LEDGER_URL": postgres_url}), clock=clock, emulator=emulator
    )

    async def stop_once_running() -> None:
        while daemon.runtime is None:  # noqa: ASYNC110 (the daemon exposes no started event)
            await anyio.sleep(0.01)
        ledger = daemon.runtime.ledger
        while not await ledger.list_jobs(states=(JobState.RUNNING,)):  # noqa: ASYNC110
            await anyio.sleep(0.01)
        (held,) = await ledger.list_jobs(states=(JobState.RUNNING,))
        assert held.claimed_by == "pod-0"
        assert held.lease_until is not None and held.lease_until > clock.now()
        daemon.runtime.stop()  # what SIGTERM does

    async with anyio.create_task_group() as tg:
        tg.start_soon(stop_once_running)
        await daemon.run(migrate=True)
    async with await SqlLedger.connect(postgres_url, clock=clock) as ledger:
        (job,) = await ledger.list_jobs()
        other = await SqlLedger.connect(postgres_url, clock=clock)
        try:
            other.act_as("pod-1", lease_ttl=30.0)
            taken = await other.claim_orphans()
        finally:
            await other.close()
    assert job.state is JobState.RUNNING
    assert job.lease_until is not None and job.lease_until <= clock.now()
    assert [j.name for j in taken] == ["long"]
