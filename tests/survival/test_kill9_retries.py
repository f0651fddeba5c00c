"""Kill -9 suite for line retries: SIGKILL the daemon while jobs retry their failed lines.

The emulator (its own process) fails 20 % of the valid lines with a 503 on each run, drawn per
custom_id and run, and 10 % with a permanent 422; the daemon (``max_attempts = 3``,
``retry_delay = "1s"``) resubmits the 503s as attempts. Each life ends in a SIGKILL, at a
random delay or right after a step between attempts (an attempt recorded, a job collected, a
download, a merge). A last life runs to the end. Then: every job is done with one answer per
request, no remote job was created twice, every remote job belongs to a ledger row (a job or
one of its attempts), and nothing half-written is left under a final name.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tests.survival.dialects import Wire
from tests.survival.harness import API_KEY, API_KEY_ENV, DaemonProcess, EmulatorProcess, python_env
from tests.survival.settings import SETTINGS
from tests.survival.workload import emulator_options, plan_workload, read_ledger, write_project

pytestmark = pytest.mark.slow

BUDGET = 500
KILLS = 5
FINISH_TIMEOUT = 150.0
RETRY_STEPS = frozenset(
    {"retry.attempt_recorded", "poll.job_ended", "collect.downloaded", "retry.merged"}
)


@pytest.mark.timeout(240)
def test_kill9_while_retrying_never_duplicates_or_loses(tmp_path: Path, wire: Wire) -> None:
    rng = random.Random(SETTINGS.seed + 14)
    options = [*wire.emulator_flags, *emulator_options(SETTINGS.seed + 14)]
    emulator = EmulatorProcess(tmp_path, options=[*options, "--transient-fraction", "0.2"])
    env = python_env(**{API_KEY_ENV: API_KEY})
    daemon: DaemonProcess | None = None
    try:
        url = emulator.start()
        plans = plan_workload(rng, jobs=4, budget=BUDGET)
        config = write_project(tmp_path, plans, base_url=url, budget=BUDGET, wire=wire)
        text = config.read_text().replace(
            f"pending_budget = {BUDGET}\n",
            f'pending_budget = {BUDGET}\nmax_attempts = 3\nretry_delay = "1s"\n',
        )
        config.write_text(text)
        for life in range(1, KILLS + 1):
            daemon = DaemonProcess(config, tmp_path / f"daemon-{life:03d}.log", env=env)
            if rng.random() < 0.4:
                daemon.wait_for_event(frozenset({"submit.running"}), timeout=4.0)
                daemon.wait_for_event(frozenset({rng.choice(sorted(RETRY_STEPS))}), timeout=6.0)
            else:
                daemon.wait_for_event(frozenset({"daemon.idle"}), timeout=rng.uniform(0.5, 3.0))
            if not daemon.running():
                break
            daemon.kill()
        daemon = DaemonProcess(config, tmp_path / "daemon-final.log", env=env)
        assert daemon.wait(FINISH_TIMEOUT) == 0, daemon.log_text()
        emulator.set_faults({})
        stats = emulator.stats()
        jobs, _ = read_ledger(config)
    finally:
        if daemon is not None:
            daemon.kill()
        emulator.kill()
    roots = {job.name: job for job in jobs if job.retry_of is None}
    assert sorted(roots) == sorted(plan.name for plan in plans)
    submitted = [job for job in jobs if job.remote_id is not None]
    if wire.metadata:
        tokens = stats["jobs_by_orchestrator_job_id"]
        assert all(n == 1 for n in tokens.values()), f"duplicate remote jobs: {tokens}"
        assert set(tokens) == {job.client_token for job in submitted}, (
            "remote jobs != ledger rows that were submitted"
        )
    else:
        # No token to count by (Anthropic): no batch adopted by two rows, and (below) as
        # many batches created as rows that were submitted, each row's results its own.
        remote_ids = [job.remote_id for job in submitted]
        assert len(set(remote_ids)) == len(remote_ids), f"a batch adopted twice: {remote_ids}"
    assert stats["jobs_created"] == len(submitted), (
        f"{stats['jobs_created']} remote jobs for {len(submitted)} submitted ledger rows"
    )
    assert any(job.attempt > 1 for job in roots.values()), "no job needed a second attempt"
    results = tmp_path / "var" / "results"
    for plan in plans:
        job = roots[plan.name]
        assert job.state.value == "done", (job.name, job.state, job.error)
        folder = results / job.name
        ok = [
            json.loads(x)["custom_id"] for x in (folder / "output.jsonl").read_text().splitlines()
        ]
        errors = folder / "errors.jsonl"
        bad = (
            [json.loads(x)["custom_id"] for x in errors.read_text().splitlines()]
            if errors.exists()
            else []
        )
        assert len(ok) == len(set(ok)) == job.succeeded, job.name
        assert len(bad) == job.failed and not set(ok) & set(bad), job.name
        assert job.succeeded + job.failed == job.request_count == plan.requests, job.name
        assert not list(folder.glob("*.part")) and not (folder / "attempts").exists(), job.name


def _custom_ids(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [json.loads(line)["custom_id"] for line in path.read_text().splitlines()]
