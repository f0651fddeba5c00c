"""Fault suite: the kill suite's workload with about 20 % of API calls failing.

The emulator process injects, on every Mistral route, 429 with ``Retry-After`` (5 %), 500/502/503
(6 %), dropped connections half before and half after the server acted (5 %) and bodies cut
short after their headers announced the full length (4 %): uploads, creates, lists, gets and
downloads all suffer. The daemon must finish every job with the same invariants as under
SIGKILL; the figures say how many calls the faults cost.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

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
    check_invariants,
    ledger_details,
    plan_workload,
    write_project,
)

pytestmark = pytest.mark.slow

BUDGET = 500
FAULT_RATES = {
    "rate_limit_rate": 0.05,
    "server_error_rate": 0.06,
    "drop_rate": 0.05,
    "truncate_rate": 0.04,
}
"""20 % of the calls of every route, set with the emulator's fault flags."""
PER_ROUTE = {
    "jobs.create": {"rate_limit_rate": 0.05, "server_error_rate": 0.05, "drop_rate": 0.3},
    "files.content": {"server_error_rate": 0.05, "truncate_rate": 0.25},
}
"""Heavier faults where they hurt most, added at run time (``PUT /_emulator/faults``): a third
of creates are dropped, half of those after the job was created (recovery must adopt it, not
create another); a quarter of downloads are cut short (the client resumes with ``Range``)."""
DAEMON_RETRY_EVENTS = (
    "submit.retry_later",
    "submit.create_uncertain",
    "submit.recreate",
    "collect.retry_later",
    "poll.failed",
)
"""Daemon-level retries: a step given up for now and taken again later."""


def fault_options(seed: int) -> list[str]:
    """The kill suite's simulation at twice the throughput (nothing is killed, so the run is
    shorter), without the create latency, plus the faults."""
    return [
        "--time-scale", "1", "--throughput", "80", "--validation-seconds", "0.5",
        "--failure-fraction", "0.1", "--seed", str(seed), "--embedding-dimensions", "256",
        "--rate-limit-rate", str(FAULT_RATES["rate_limit_rate"]), "--retry-after", "0.2",
        "--server-error-rate", str(FAULT_RATES["server_error_rate"]),
        "--drop-rate", str(FAULT_RATES["drop_rate"]),
        "--truncate-rate", str(FAULT_RATES["truncate_rate"]), "--fault-seed", str(seed),
    ]  # fmt: skip


def run_fault_suite(root: Path, *, jobs: int, seed: int, wire: Wire) -> dict[str, Any]:
    """Run the workload against a faulty emulator; assert the invariants; return the figures."""
    rng = random.Random(seed)
    started = time.monotonic()
    emulator = EmulatorProcess(root, options=[*wire.emulator_flags, *fault_options(seed)])
    daemon: DaemonProcess | None = None
    try:
        url = emulator.start()
        with emulator.client() as client:
            faults = client.get("/_emulator/faults").json()
        faults["per_route"] = {
            route: {**rates, "retry_after": 0.2, "seed": seed} for route, rates in PER_ROUTE.items()
        }
        emulator.set_faults(faults)
        plans = plan_workload(rng, jobs=jobs, budget=BUDGET)
        config = write_project(root, plans, base_url=url, budget=BUDGET, wire=wire)
        daemon = DaemonProcess(
            config, root / "daemon.log", env=python_env(**{API_KEY_ENV: API_KEY})
        )
        assert daemon.wait(timeout=200) == 0, daemon.log_text()
        outcomes = check_invariants(config, emulator, plans, budget=BUDGET, wire=wire)
        assert emulator.terminate() == 0
    finally:
        if daemon is not None:
            daemon.kill()
        emulator.kill()
    events = Counter(str(record.get("event")) for record in read_events(daemon.log_path))
    faulted = sum(outcomes.faults.values())
    by_status: Counter[str] = Counter()
    for statuses in outcomes.requests_by_route.values():
        by_status.update(statuses)
    return {
        "seed": seed,
        "seconds": round(time.monotonic() - started, 1),
        "fault_rates": FAULT_RATES,
        "faults_injected": faulted,
        # Calls made again because of a fault: the client's retries, one recovery list per
        # create in doubt (plus the create again when none had landed), and each step retried
        # later by the daemon (at least one call each).
        "api_calls_spent_on_retries": events["provider.retry"]
        + sum(events[name] for name in DAEMON_RETRY_EVENTS if name != "poll.failed"),
        "faulted_share": round(faulted / max(1, outcomes.api_calls), 3),
        "responses_by_status": dict(by_status),
        "calls_retried_by_the_provider_client": events["provider.retry"],
        "daemon_level_retries": {name: events[name] for name in DAEMON_RETRY_EVENTS},
        "create_attempts": sum(outcomes.requests_by_route.get("jobs.create", {}).values()),
        "recovery": dict(ledger_details(config)),
        **outcomes.as_dict(),
    }


@pytest.mark.timeout(240)
def test_twenty_percent_faulty_api_calls_lose_and_duplicate_nothing(
    tmp_path: Path, wire: Wire
) -> None:
    """With 20 % of calls failing in every way, every job completes exactly once, intact."""
    figures = run_fault_suite(tmp_path, jobs=12, seed=SETTINGS.seed, wire=wire)
    report("faults", figures)
    assert figures["faults_injected"] > 0.1 * figures["api_calls"]
    assert figures["calls_retried_by_the_provider_client"] > 0


@pytest.mark.soak
@pytest.mark.timeout(3600)
def test_faults_soak(tmp_path: Path, wire: Wire) -> None:
    """The long version: 48 jobs under the same faults."""
    figures = run_fault_suite(tmp_path, jobs=48, seed=SETTINGS.seed + 1000, wire=wire)
    report("faults-soak", figures)
