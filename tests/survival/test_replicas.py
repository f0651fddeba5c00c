"""Three replicas on one PostgreSQL ledger (design §8), as real processes.

One emulator process (``orchestrator emulate --state-dir``) and three ``orchestrator run``
processes, each with its own ``[daemon] replica_id`` and a 3 s lease, share one PostgreSQL
ledger and one results folder, over ~30 jobs whose requests are several times the workspace's
budget, so jobs queue. The invariants of the kill suite must hold (every job done once, one
remote job per job, the budget never exceeded, results complete), the work must be spread over
the replicas, and when one replica is SIGKILLed mid-run the survivors take its jobs over once
its leases expire and finish them, still with one remote job per job.

Skipped without ``ORCH_TEST_POSTGRES_URL``. Every process is bounded in time and stopped by pid.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from orchestrator.ledger import SqlLedger
from orchestrator.ledger.engine import async_url
from orchestrator.model import FINAL_STATES, Job
from tests.ledger.databases import POSTGRES_ENV
from tests.survival.dialects import Wire
from tests.survival.harness import (
    API_KEY,
    API_KEY_ENV,
    DaemonProcess,
    EmulatorProcess,
    python_env,
    read_events,
)
from tests.survival.settings import SETTINGS, report
from tests.survival.workload import (
    JobPlan,
    check_invariants,
    emulator_options,
    plan_workload,
    write_project,
)

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

BUDGET = 300
JOBS = 30
LEASE_TTL = 3.0
REPLICAS = ("r-a", "r-b", "r-c")
FINISH_TIMEOUT = 150.0


async def _execute(base: str, statement: str) -> None:
    admin = create_async_engine(async_url(base), isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(sa.text(statement))
    finally:
        await admin.dispose()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL database of this test's own (plain URL), dropped afterwards."""
    base = os.environ.get(POSTGRES_ENV)
    if not base:
        pytest.skip(
            f"the replica suite needs {POSTGRES_ENV}, e.g. postgresql://postgres@127.0.0.1:5432/test"
        )
    name = f"orch_test_{uuid.uuid4().hex[:16]}"
    anyio.run(_execute, base, f'CREATE DATABASE "{name}"')
    try:
        yield make_url(base).set(database=name).render_as_string(hide_password=False)
    finally:
        anyio.run(_execute, base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def write_replica_configs(
    root: Path, plans: list[JobPlan], *, url: str, ledger: str, wire: Wire
) -> list[Path]:
    """One config per replica: the same project, ledger and results; its own replica id."""
    base = write_project(root, plans, base_url=url, budget=BUDGET, reconcile_grace="2s", wire=wire)
    text = base.read_text().replace('url = "sqlite:///var/ledger.db"', f'url = "{ledger}"')
    assert ledger in text
    configs = []
    for replica in REPLICAS:
        path = root / f"orchestrator-{replica}.toml"
        path.write_text(
            text.replace(
                "[daemon]\n", f'[daemon]\nreplica_id = "{replica}"\nlease_ttl = "{LEASE_TTL:g}s"\n'
            )
        )
        configs.append(path)
    return configs


def migrate(config: Path, env: dict[str, str]) -> None:
    """``orchestrator migrate`` once, before the replicas start."""
    subprocess.run(
        [sys.executable, "-m", "orchestrator", "migrate", "--config", str(config)],
        env=env,
        check=True,
        timeout=60,
        capture_output=True,
    )


async def _jobs(url: str) -> list[Job]:
    async with await SqlLedger.connect(url) as ledger:
        return await ledger.list_jobs()


def ledger_jobs(url: str) -> list[Job]:
    """Every job of the ledger, as it is now."""
    return anyio.run(_jobs, url)


def run_replicas(root: Path, ledger: str, *, kill: bool, seed: int, wire: Wire) -> dict[str, Any]:
    """Run the three replicas over the workload (SIGKILL one mid-run with ``kill``)."""
    rng = random.Random(seed)
    emulator = EmulatorProcess(
        root, options=[*wire.emulator_flags, *emulator_options(seed, throughput=150)]
    )
    env = python_env(**{API_KEY_ENV: API_KEY})
    daemons: list[DaemonProcess] = []
    figures: dict[str, Any] = {"seed": seed, "jobs": JOBS, "budget": BUDGET, "lease_ttl": LEASE_TTL}
    started = time.monotonic()
    try:
        url = emulator.start()
        plans = plan_workload(rng, jobs=JOBS, budget=BUDGET)
        configs = write_replica_configs(root, plans, url=url, ledger=ledger, wire=wire)
        migrate(configs[0], env)
        for replica, config in zip(REPLICAS, configs, strict=True):
            daemons.append(DaemonProcess(config, root / f"daemon-{replica}.log", env=env))
        if kill:
            victim = daemons[0]
            # Mid-run: the victim has jobs running (and, likely, others admitted or submitting).
            for _ in range(2):
                assert victim.wait_for_event(frozenset({"submit.running"}), timeout=60), (
                    victim.log_text()
                )
            # Then right after an upload: that job is about to record its intent and create
            # (0.3 s of latency on creates), so the survivors may have to reconcile it.
            victim.wait_for_event(frozenset({"submit.uploaded"}), timeout=20)
            time.sleep(0.05)
            victim.kill()
            killed_at = time.monotonic()
            held = {
                j.id: j.state.value
                for j in ledger_jobs(ledger)
                if j.claimed_by == REPLICAS[0] and j.state not in FINAL_STATES
            }
            assert held, "the victim held no job when it was killed"
            takeover = None
            deadline = killed_at + FINISH_TIMEOUT
            while time.monotonic() < deadline:
                now = {j.id: j for j in ledger_jobs(ledger)}
                if all(
                    now[i].state in FINAL_STATES or now[i].claimed_by not in (None, REPLICAS[0])
                    for i in held
                ):
                    takeover = time.monotonic() - killed_at
                    break
                time.sleep(0.1)
            assert takeover is not None, "the survivors never took the victim's jobs over"
            figures["victim_jobs_at_kill"] = dict(Counter(held.values()))
            figures["takeover_seconds"] = round(takeover, 2)
            survivors = daemons[1:]
        else:
            survivors = daemons
        for daemon in survivors:
            assert daemon.wait(FINISH_TIMEOUT) == 0, daemon.log_text()
        outcomes = check_invariants(configs[0], emulator, plans, budget=BUDGET, wire=wire)
        jobs = ledger_jobs(ledger)
        assert all(j.claimed_by is None for j in jobs), "a finished job kept its claim"
        submitted = Counter[str]()
        taken_over = Counter[str]()
        for replica in REPLICAS:
            events = read_events(root / f"daemon-{replica}.log")
            submitted[replica] = sum(1 for r in events if r.get("event") == "submit.running")
            taken_over[replica] = sum(
                1 for r in events if r.get("event") == "daemon.job_taken_over"
            )
        working = [r for r in REPLICAS if submitted[r]]
        assert len(working) > 1, f"one replica submitted every job: {dict(submitted)}"
        if kill:
            assert sum(taken_over[r] for r in REPLICAS[1:]) >= len(figures["victim_jobs_at_kill"])
        lists = outcomes.requests_by_route.get("jobs.list", {})
        figures.update(
            submitted_by_replica=dict(submitted),
            taken_over_by_replica=dict(taken_over),
            list_calls=sum(lists.values()),
            seconds=round(time.monotonic() - started, 1),
            **outcomes.as_dict(),
        )
        assert emulator.terminate() == 0
    finally:
        for daemon in daemons:
            daemon.kill()
        emulator.kill()
    return figures


@pytest.mark.timeout(300)
def test_three_replicas_share_the_work(tmp_path: Path, pg_url: str, wire: Wire) -> None:
    """Three replicas, one ledger: every job once, budget held, work spread, results whole."""
    figures = run_replicas(tmp_path, pg_url, kill=False, seed=SETTINGS.seed, wire=wire)
    report("replicas", figures)


@pytest.mark.timeout(300)
def test_survivors_finish_a_killed_replicas_jobs(tmp_path: Path, pg_url: str, wire: Wire) -> None:
    """SIGKILL one replica mid-run: the others take its jobs over after its leases expire."""
    figures = run_replicas(tmp_path, pg_url, kill=True, seed=SETTINGS.seed + 1, wire=wire)
    report("replicas-kill", figures)
    assert figures["takeover_seconds"] <= LEASE_TTL * 2 + 5
