"""The daemon end to end on the demo config, against the in-process emulator, on a fake clock."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import pytest

from orchestrator.cli import main
from orchestrator.clock import FakeClock
from orchestrator.config import load_config
from orchestrator.daemon import Daemon
from orchestrator.emulator import Emulator, EmulatorSettings
from orchestrator.ledger import SqlLedger
from orchestrator.ledger.migrate import upgrade
from orchestrator.model import JobState, Outcome

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def demo_config(tmp_path: Path) -> Path:
    """A copy of config/demo.toml and its inputs, with var/ inside tmp_path."""
    shutil.copytree(REPO / "config" / "demo", tmp_path / "config" / "demo")
    text = (REPO / "config" / "demo.toml").read_text()
    path = tmp_path / "config" / "demo.toml"
    path.write_text(text)
    return path


DEMO_JOBS = {
    "cheese-survey",
    "region-embeddings",
    "wine-pairings",
    "cheese-survey-openai",
    "wine-pairings-openai",
    "cheese-survey-anthropic",
    "wine-pairings-anthropic",
}
"""config/demo.toml's jobs: three on the Mistral wire, two on each of the OpenAI and the
Anthropic wires."""


@contextmanager
def _emulators(clock: FakeClock, failure_fraction: float = 0.05) -> Iterator[list[Emulator]]:
    """The demo's emulator settings, once per dialect the demo's workspaces speak."""
    with (
        _emulator(clock, failure_fraction) as mistral,
        _emulator(clock, failure_fraction, dialect="openai") as openai,
        _emulator(clock, failure_fraction, dialect="anthropic") as anthropic,
    ):
        yield [mistral, openai, anthropic]


def _emulator(
    clock: FakeClock, failure_fraction: float = 0.05, dialect: str = "mistral"
) -> Emulator:
    return Emulator(
        EmulatorSettings(
            time_scale=60.0,
            throughput=0.25,
            validation_seconds=60.0,
            failure_fraction=failure_fraction,
            seed=7,
        ),
        clock=clock,
        dialect=dialect,
    )


@pytest.mark.anyio
async def test_demo_runs_to_done_with_verified_results(demo_config: Path) -> None:
    """Every demo job ends done; files match the ledger's sha256 and line counts."""
    config = load_config(demo_config)
    clock = FakeClock(autojump=True)
    with _emulators(clock) as emulators:
        await Daemon(config, clock=clock, emulator=emulators).run(exit_when_idle=True, migrate=True)
        stats = [emulator.stats() for emulator in emulators]

    ledger = await SqlLedger.connect(config.ledger.url, clock=clock)
    try:
        jobs = {job.name: job for job in await ledger.list_jobs()}
        assert set(jobs) == DEMO_JOBS
        for job in jobs.values():
            assert job.state is JobState.DONE, job
            assert job.outcome in (Outcome.SUCCEEDED, Outcome.PARTIAL)
            assert job.succeeded + job.failed == job.request_count
            folder = config.results.dir / job.name
            summary = json.loads((folder / "job.json").read_text())
            assert summary["remote_id"] == job.remote_id
            assert summary["outcome"] == job.outcome.value
            for record in await ledger.files(job.id):
                data = Path(record.path).read_bytes()
                assert hashlib.sha256(data).hexdigest() == record.sha256
                assert data.count(b"\n") == record.lines
                assert summary["files"][record.kind]["sha256"] == record.sha256
            output = (folder / "output.jsonl").read_text().splitlines()
            assert len(output) == job.succeeded
            assert not list(folder.glob("*.part"))
        assert any(job.failed for job in jobs.values()), "5 % failures should show somewhere"
        # The third job had to wait: the budget (60) never held more than it allows.
        for workspace in (w for each in stats for w in each["workspaces"].values()):
            assert workspace["max_pending"] <= 60
    finally:
        await ledger.close()


@pytest.mark.anyio
async def test_restart_after_done_submits_nothing(demo_config: Path) -> None:
    """Re-reading the same config after a complete run creates no remote job."""
    config = load_config(demo_config)
    clock = FakeClock(autojump=True)
    with _emulators(clock) as emulators:

        def created() -> int:
            return sum(
                w["jobs_created"] for e in emulators for w in e.stats()["workspaces"].values()
            )

        await Daemon(config, clock=clock, emulator=emulators).run(exit_when_idle=True, migrate=True)
        first = created()
        await Daemon(config, clock=clock, emulator=emulators).run(exit_when_idle=True)
        again = created()
    assert first == len(DEMO_JOBS)
    assert again == first


def test_status_json_reports_every_job(
    demo_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`status --json` prints the §9 fields for each job in the ledger."""
    config = load_config(demo_config)

    async def run_daemon() -> None:
        await upgrade(config.ledger.url)
        clock = FakeClock(autojump=True)
        with _emulators(clock, failure_fraction=0.0) as emulators:
            await Daemon(config, clock=clock, emulator=emulators).run(exit_when_idle=True)

    anyio.run(run_daemon)
    capsys.readouterr()
    assert main(["status", "--config", str(demo_config), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {row["name"] for row in rows} == DEMO_JOBS
    for row in rows:
        assert {
            "name",
            "state",
            "outcome",
            "remote_id",
            "remote_status",
            "total",
            "succeeded",
            "failed",
            "pending",
            "error",
        } <= set(row)
        assert row["state"] == "done"
        assert row["outcome"] == "succeeded"
        assert row["pending"] == 0
