"""Kill -9 suite: SIGKILL the daemon process at random moments, restart it, and check nothing
was submitted twice or lost.

The emulator runs as its own process (``orchestrator emulate`` with a state folder); the daemon
runs as ``orchestrator run --exit-when-idle --migrate`` over about 12 jobs of varied sizes (some
lines fail) under a budget several times smaller than the workload, so jobs queue. Each life of
the daemon ends in a SIGKILL, at a moment drawn from a seeded generator: the first during
start-up (before or during the first migration of the ledger), the others either after a random
delay, or right after the daemon logged a chosen step (admitted, uploaded, running, job ended,
downloaded), which lands kills between the steps that matter. Halfway through, the
emulator itself is SIGKILLed under the running daemon and restarted on the same state folder.
A last life runs to the end, and :func:`tests.survival.workload.check_invariants` checks it all.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.survival.dialects import Wire
from tests.survival.harness import API_KEY, API_KEY_ENV, DaemonProcess, EmulatorProcess, python_env
from tests.survival.settings import SETTINGS, report
from tests.survival.workload import (
    STEP_EVENTS,
    JobPlan,
    check_invariants,
    emulator_options,
    ledger_states,
    plan_workload,
    write_project,
)

pytestmark = pytest.mark.slow

BUDGET = 500
IN_FLIGHT = ("admitted", "submitting", "collecting")
FINISH_TIMEOUT = 150.0


def run_kill_suite(root: Path, *, kills: int, jobs: int, seed: int, wire: Wire) -> dict[str, Any]:
    """Run the workload under ``kills`` SIGKILLs; assert the invariants; return the figures."""
    rng = random.Random(seed)
    started = time.monotonic()
    emulator = EmulatorProcess(root, options=[*wire.emulator_flags, *emulator_options(seed)])
    env = python_env(**{API_KEY_ENV: API_KEY})
    daemon: DaemonProcess | None = None
    triggers: Counter[str] = Counter()
    caught: Counter[str] = Counter()
    waves = 1
    try:
        url = emulator.start()
        plans: list[JobPlan] = plan_workload(rng, jobs=jobs, budget=BUDGET)
        config = write_project(root, plans, base_url=url, budget=BUDGET, wire=wire)
        restart_emulator_at = kills // 2
        done = 0
        lives = 0
        while done < kills:
            lives += 1
            daemon = DaemonProcess(config, root / f"daemon-{lives:03d}.log", env=env)
            if lives == 1:
                # The first death comes during start-up: mid-migration of a fresh ledger.
                time.sleep(rng.uniform(0.1, 0.7))
                trigger = "during start-up"
            elif done == restart_emulator_at and emulator.starts == 1:
                # The emulator dies under a live daemon and comes back on the same state.
                time.sleep(rng.uniform(0.8, 1.5))
                emulator.kill()
                time.sleep(rng.uniform(0.2, 0.8))
                emulator.start()
                time.sleep(rng.uniform(0.5, 1.5))
                trigger = "after emulator restart"
            elif rng.random() < 0.5:
                time.sleep(rng.uniform(0.3, 2.5))
                trigger = "random delay"
            else:
                wanted = rng.choice(STEP_EVENTS)
                seen = daemon.wait_for_event(frozenset({wanted}), timeout=4.0)
                time.sleep(rng.uniform(0.0, 0.25))  # the next step may be under way
                trigger = f"after {wanted}" if seen else "random delay (step not seen)"
            if not daemon.running():
                # Everything finished during this life: add a wave so the kills go on.
                assert daemon.process.returncode == 0, daemon.log_text()
                waves += 1
                plans += plan_workload(rng, jobs=jobs, budget=BUDGET, prefix=f"w{waves}")
                config = write_project(root, plans, base_url=url, budget=BUDGET, wire=wire)
                continue
            daemon.kill()
            done += 1
            triggers[trigger] += 1
            states = ledger_states(config)
            for state in IN_FLIGHT:
                caught[state] += states[state]
        daemon = DaemonProcess(config, root / "daemon-final.log", env=env)
        assert daemon.wait(FINISH_TIMEOUT) == 0, daemon.log_text()
        outcomes = check_invariants(config, emulator, plans, budget=BUDGET, wire=wire)
        assert emulator.terminate() == 0
    finally:
        if daemon is not None:
            daemon.kill()
        emulator.kill()
    return {
        "seed": seed,
        "kills": done,
        "daemon_lives": lives + 1,
        "emulator_restarts": emulator.starts - 1,
        "kill_triggers": dict(triggers),
        "jobs_caught_in_flight_at_kills": dict(caught),
        "waves": waves,
        "seconds": round(time.monotonic() - started, 1),
        **outcomes.as_dict(),
    }


@pytest.mark.timeout(240)
def test_kill9_daemon_never_duplicates_or_loses(tmp_path: Path, wire: Wire) -> None:
    """20+ seeded SIGKILLs of the daemon and one of the emulator: every job done exactly once."""
    figures = run_kill_suite(tmp_path, kills=SETTINGS.kills, jobs=12, seed=SETTINGS.seed, wire=wire)
    report("kill9", figures)
    assert figures["kills"] >= SETTINGS.kills


@pytest.mark.soak
@pytest.mark.timeout(3600)
def test_kill9_soak(tmp_path: Path, wire: Wire) -> None:
    """The long version: 100 SIGKILLs (or ORCH_SURVIVAL_KILLS) over 24 jobs per wave."""
    kills = max(100, SETTINGS.kills)
    figures = run_kill_suite(tmp_path, kills=kills, jobs=24, seed=SETTINGS.seed + 1000, wire=wire)
    report("kill9-soak", figures)
    assert figures["kills"] >= kills
