"""CLI test helpers: a project folder with an embedded workspace, `main` in-process, the daemon."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest
import structlog

from orchestrator.cli import main
from orchestrator.clock import FakeClock
from orchestrator.config import load_config
from orchestrator.daemon import Daemon
from orchestrator.emulator import Emulator, EmulatorSettings

START = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def write_input(path: Path, n: int, *, prefix: str = "req") -> Path:
    """A valid chat-completions JSONL input of ``n`` requests."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            body = {"messages": [{"role": "user", "content": f"{prefix} question {i}"}]}
            f.write(json.dumps({"custom_id": f"{prefix}-{i}", "body": body}) + "\n")
    return path


def job_table(name: str, *, input: str, workspace: str = "main", extra: str = "") -> str:
    """One ``[[jobs]]`` table of a chat job."""
    return (
        f'[[jobs]]\nname = "{name}"\nworkspace = "{workspace}"\ninput = "{input}"\n'
        f'model = "mistral-small-latest"\nendpoint = "/v1/chat/completions"\n{extra}'
    )


@attrs.define
class Project:
    """A config folder: ``config.toml``, ``data/`` inputs, ``var/`` ledger and results."""

    root: Path
    budget: int = 1000
    jobs: list[str] = attrs.field(factory=list)
    extra: str = ""

    @property
    def config(self) -> Path:
        """The config file."""
        return self.root / "config.toml"

    def add_job(self, name: str, size: int, *, extra: str = "") -> Path:
        """Add a chat job of ``size`` requests (its input under data/) and rewrite the file."""
        path = write_input(self.root / "data" / f"{name}.jsonl", size, prefix=name)
        self.jobs.append(job_table(name, input=f"data/{name}.jsonl", extra=extra))
        self.write()
        return path

    def write(self) -> Path:
        """Write config.toml from the current jobs."""
        self.config.write_text(
            "[ledger]\n"
            'url = "sqlite:///var/ledger.db"\n'
            "[results]\n"
            'dir = "var/results"\n'
            "[polling]\n"
            'initial = "5s"\n'
            'max = "1m"\n'
            "[intake]\n"
            'rescan_interval = "30s"\n'
            "[workspaces.main]\n"
            'base_url = "embedded"\n'
            f"pending_budget = {self.budget}\n" + self.extra + "\n" + "\n".join(self.jobs)
        )
        return self.config


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """`main` configures logging for the process: put it back for the tests that follow."""
    config = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.configure(**config)
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture
def project(tmp_path: Path) -> Project:
    """A project with no job yet (the config file written)."""
    project = Project(tmp_path)
    project.write()
    return project


@attrs.frozen
class Result:
    """What one CLI run returned and printed."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        """stdout parsed as JSON."""
        return json.loads(self.out)


CliRunner = Callable[..., Result]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> CliRunner:
    """Run ``main(argv)`` in-process at a fixed time; capture stdout and stderr."""

    def run(*argv: str | Path, now: float = START + 3600) -> Result:
        capsys.readouterr()
        code = main([str(a) for a in argv], clock=FakeClock(start=now))
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


def emulator(clock: FakeClock, **overrides: float) -> Emulator:
    """A fast emulator on ``clock``: a job of n requests takes about n/10 simulated seconds."""
    settings: dict[str, float] = {
        "time_scale": 1.0,
        "throughput": 10.0,
        "validation_seconds": 30.0,
        "failure_fraction": 0.0,
        "seed": 3,
    }
    settings.update(overrides)
    return Emulator(EmulatorSettings(**settings), clock=clock)  # type: ignore[arg-type]


@pytest.fixture
def run_daemon() -> Iterator[Callable[..., dict[str, int]]]:
    """Run the daemon on a config until idle; return the emulator's creations per workspace.

    One emulator (its state) is kept across calls, so a second run is a restart against the
    same provider.
    """
    clock = FakeClock(start=START, autojump=True)
    made: list[Emulator] = []

    def run(config: Path, *, migrate: bool = True) -> dict[str, int]:
        if not made:
            made.append(emulator(clock))
        emu = made[0]

        async def go() -> None:
            await Daemon(load_config(config), clock=clock, emulator=emu).run(
                exit_when_idle=True, migrate=migrate
            )

        anyio.run(go)
        return {name: ws["jobs_created"] for name, ws in emu.stats()["workspaces"].items()}

    yield run
    for emu in made:
        emu.close()


def lines(text: str) -> Sequence[str]:
    """Non-empty lines, right-stripped."""
    return [line.rstrip() for line in text.splitlines() if line.strip()]
