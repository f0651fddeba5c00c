"""`orchestrator webhooks` and the deliveries in `show NAME`, after a daemon run with hooks."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest

from orchestrator.clock import FakeClock
from orchestrator.config import load_config
from orchestrator.daemon import Daemon
from orchestrator.emulator import Emulator
from tests.cli.conftest import START, CliRunner, Project, emulator, lines
from tests.webhook_receiver import SECRET

HOOKS = (
    '[[hooks]]\ncommand = ["/bin/true"]\nevents = ["job.done"]\n'
    '[[hooks]]\ncommand = ["/bin/false"]\nevents = ["job.done"]\nmax_age = "1ms"\n'
)
"""Two hooks: one succeeds, one fails, and is dead by the deadline 1 ms after the event."""


@pytest.fixture
def run_daemon() -> Iterator[Callable[[Path], None]]:
    """Run the daemon until idle, on a fake clock that rarely jumps while a hook runs."""
    clock = FakeClock(start=START, autojump=True, quiet_period=0.05)
    emulators: list[Emulator] = []

    def run(config: Path) -> None:
        emulators.append(emulator(clock))

        async def go() -> None:
            daemon = Daemon(load_config(config), clock=clock, emulator=emulators[-1])
            await daemon.run(exit_when_idle=True, migrate=True)

        anyio.run(go)

    yield run
    for each in emulators:
        each.close()


def _ran(project: Project, run_daemon: Callable[[Path], None]) -> Project:
    project.extra = HOOKS
    project.add_job("cheese", 3)
    run_daemon(project.config)
    return project


def test_show_lists_the_jobs_deliveries(
    cli: CliRunner, project: Project, run_daemon: Callable[[Path], None]
) -> None:
    """show NAME ends with each delivery: event, state, attempts, last status, endpoint."""
    _ran(project, run_daemon)
    result = cli("show", "cheese", "--config", project.config)
    assert result.code == 0, result.err
    text = result.out[result.out.index("deliveries (2):") :]
    delivered, dead = lines(text)[1:]
    assert "job.done" in delivered and "delivered" in delivered and "exit 0" in delivered
    assert 'hook:["/bin/true"]' in delivered
    assert "dead" in dead and "exit 1" in dead and "the hook ended with exit 1" in dead
    detail = cli("show", "cheese", "--config", project.config, "--json").json()
    states = {d["endpoint"]: d["state"] for d in detail["deliveries"]}
    assert states == {'hook:["/bin/true"]': "delivered", 'hook:["/bin/false"]': "dead"}
    assert all(d["configured"] and d["webhook_id"].startswith("msg_") for d in detail["deliveries"])


def test_webhooks_lists_pending_and_dead_and_redelivers(
    cli: CliRunner, project: Project, run_daemon: Callable[[Path], None]
) -> None:
    """The dead one is listed (not the delivered one); --redeliver makes it pending again."""
    _ran(project, run_daemon)
    listed = cli("webhooks", "--config", project.config, "--json")
    assert listed.code == 0, listed.err
    (dead,) = listed.json()
    assert (dead["state"], dead["last_status"]) == ("dead", "exit 1")
    assert dead["attempts"] >= 1  # a retry at the deadline when the fake clock stood still
    assert len(cli("webhooks", "--config", project.config, "--all", "--json").json()) == 2
    again = cli("webhooks", "--config", project.config, "--redeliver", str(dead["id"]))
    assert again.code == 0, again.err
    assert f"delivery #{dead['id']}" in again.out and dead["webhook_id"] in again.out
    (pending,) = cli("webhooks", "--config", project.config, "--json").json()
    assert (pending["id"], pending["state"], pending["webhook_id"]) == (
        dead["id"],
        "pending",
        dead["webhook_id"],
    )
    missing = cli("webhooks", "--config", project.config, "--redeliver", "msg_nope")
    assert missing.code == 1 and "no delivery 'msg_nope'" in missing.err
    plain = cli("webhooks", "--config", project.config)
    assert "pending" in plain.out and 'hook:["/bin/false"]' in plain.out


def test_run_refuses_a_missing_secret_before_touching_anything(
    cli: CliRunner, project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`run --migrate` with an unset secret variable: exit 2 naming the key, no ledger made."""
    monkeypatch.delenv("ORCH_TEST_UNSET_SECRET", raising=False)
    project.extra = (
        '[[webhooks]]\nurl = "https://example.com/h"\nsecret_env = "ORCH_TEST_UNSET_SECRET"\n'
    )
    project.add_job("cheese", 3)
    result = cli("run", "--config", project.config, "--migrate", "--exit-when-idle")
    assert result.code == 2
    assert "webhooks[0].secret_env" in result.err and "ORCH_TEST_UNSET_SECRET" in result.err
    assert not (project.root / "var" / "ledger.db").exists()


def test_check_config_checks_secrets_and_hook_programs(
    cli: CliRunner, project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """check-config reports a missing secret or hook program by key (exit 2), never a value."""
    monkeypatch.delenv("ORCH_TEST_UNSET_SECRET", raising=False)
    project.extra = (
        '[[webhooks]]\nurl = "https://example.com/h"\nsecret_env = "ORCH_TEST_UNSET_SECRET"\n'
        '[[hooks]]\ncommand = ["/nonexistent/notify"]\n'
    )
    project.write()
    bad = cli("check-config", "--config", project.config)
    assert bad.code == 2
    assert "webhooks[0].secret_env" in bad.out and "hooks[0].command[0]" in bad.out
    monkeypatch.setenv("ORCH_TEST_UNSET_SECRET", SECRET)
    project.extra = project.extra.replace("/nonexistent/notify", "/bin/true")
    project.write()
    good = cli("check-config", "--config", project.config)
    assert good.code == 0, good.out
    assert "secret from $ORCH_TEST_UNSET_SECRET: present" in good.out
    assert SECRET not in good.out
