"""``[daemon] reconcile_grace``: the config key the process-level suites shorten.

A job caught in ``submitting`` by a crash waits this long before recovery lists the workspace
for it (default 180 s, the provider's request timeout with margin). The survival suites run
against a local emulator that answers in milliseconds, so they set it to 1 s; the daemon warns
whenever it is below 60 s.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from structlog.testing import capture_logs

from orchestrator.clock import FakeClock
from orchestrator.config import Config, load_config
from orchestrator.daemon import Daemon
from orchestrator.emulator import Emulator, EmulatorSettings
from orchestrator.errors import ConfigError
from orchestrator.ledger import SqlLedger
from orchestrator.model import JobState
from tests.daemon.conftest import Crash, CrashingTransport, is_route, write_config

pytestmark = pytest.mark.anyio

WORKSPACE = '[workspaces.main]\nbase_url = "embedded"\n'


def _load(tmp_path: Path, text: str) -> float:
    path = tmp_path / "config.toml"
    path.write_text(WORKSPACE + text)
    return load_config(path, environ={}).daemon.reconcile_grace


def test_default_is_three_minutes(tmp_path: Path) -> None:
    """Without the key, recovery waits 180 s (more than the provider's 60 s request timeout)."""
    assert _load(tmp_path, "") == 180.0


def test_duration_is_read(tmp_path: Path) -> None:
    """The key takes a duration like every other one."""
    assert _load(tmp_path, '[daemon]\nreconcile_grace = "1.5s"\n') == 1.5
    assert _load(tmp_path, "[daemon]\nreconcile_grace = 240\n") == 240.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[daemon]\nreconcile_grace = "0s"\n', "daemon.reconcile_grace: must be more than zero"),
        ('[daemon]\nreconcile_grace = "soon"\n', "daemon.reconcile_grace: expected a duration"),
        (
            '[polling]\nreconcile_grace = "5s"\n',
            "polling.reconcile_grace: unknown key 'reconcile_grace'; it belongs in another "
            "table: daemon.reconcile_grace",
        ),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    """Zero, nonsense, or the key in the wrong table: a ConfigError naming the key."""
    with pytest.raises(ConfigError, match=message):
        _load(tmp_path, text)


async def test_a_short_grace_reconciles_sooner_and_warns(tmp_path: Path) -> None:
    """Crash before the create: the restart lists after 5 s of its clock, not 180, and warns."""
    path = write_config(tmp_path, [("alpha", 10)], extra='[daemon]\nreconcile_grace = "5s"')
    config = load_config(path)
    clock = FakeClock(autojump=True)
    with Emulator(EmulatorSettings(throughput=10.0, validation_seconds=30.0), clock=clock) as emu:
        await _crash_then_recover(config, clock, emu)
    async with await SqlLedger.connect(config.ledger.url, clock=clock) as ledger:
        (job,) = await ledger.list_jobs()
        events = await ledger.events(job.id)
    assert job.state is JobState.DONE
    intent = next(e for e in events if e.detail == "create intent")
    recreate = next(e for e in events if e.detail == "no remote job found: creating")
    assert 5.0 <= recreate.at - intent.at < 180.0


async def _crash_then_recover(config: Config, clock: FakeClock, emulator: Emulator) -> None:
    """Die just before the create (intent recorded), then run a daemon to the end."""

    def wrap(inner: httpx.AsyncBaseTransport) -> httpx.AsyncBaseTransport:
        return CrashingTransport(inner, when=is_route("POST", "/v1/batch/jobs"), after=False)

    with pytest.raises(BaseException) as crashed:  # a Crash, maybe inside exception groups
        await Daemon(config, clock=clock, emulator=emulator, wrap_transport=wrap).run(
            exit_when_idle=True, migrate=True
        )
    assert crashed.errisinstance(Crash) or crashed.group_contains(Crash, depth=None)
    with capture_logs() as logs:
        await Daemon(config, clock=clock, emulator=emulator).run(exit_when_idle=True)
    warnings = [e for e in logs if e["event"] == "submit.short_reconcile_grace"]
    assert warnings and warnings[0]["reconcile_grace"] == 5.0
