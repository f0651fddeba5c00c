"""`orchestrator run` in the foreground: plain JSON logs when piped, a live view on a terminal."""

from __future__ import annotations

import io
import json
import re

import pytest
from rich.console import Console

from orchestrator.cli import main
from orchestrator.cli._live import LiveView, pick_rows
from orchestrator.cli._render import Output
from orchestrator.clock import FakeClock
from orchestrator.config import load_config
from orchestrator.daemon import Daemon
from orchestrator.model import Job, JobState, Outcome
from tests.cli.conftest import START, CliRunner, Project

FAST = """
[emulator]
validation_seconds = "10s"
throughput = 10.0
"""


def test_run_piped_logs_json_lines_and_exits_when_idle(
    project: Project, capsys: pytest.CaptureFixture[str], cli: CliRunner
) -> None:
    """Not a terminal: no view, JSON log lines on stdout, exit 0 once every job is done."""
    project.extra = FAST
    project.add_job("a", 3)
    capsys.readouterr()
    code = main(
        ["run", "--config", str(project.config), "--migrate", "--exit-when-idle"],
        clock=FakeClock(start=START, autojump=True),
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    events = [json.loads(line)["event"] for line in captured.out.splitlines()]
    assert events[0] == "ledger.migrated"
    assert "intake.queued" in events and "collect.done" in events
    assert events[-1] == "daemon.stopped"
    (row,) = cli("status", "--config", project.config, "--json").json()
    assert (row["state"], row["outcome"]) == ("done", "succeeded")


def test_run_on_a_terminal_draws_the_live_view(
    project: Project, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A terminal: the view (jobs, budget, bars) on stdout, logs on stderr; exits when idle."""
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    monkeypatch.setenv("COLUMNS", "150")
    monkeypatch.setenv("LINES", "40")
    project.extra = FAST
    project.add_job("cheese", 3)
    project.add_job("wine", 2)
    screen = io.StringIO()
    capsys.readouterr()
    code = main(
        ["run", "--config", str(project.config), "--migrate", "--exit-when-idle"],
        clock=FakeClock(start=START, autojump=True),
        stdout=Output(screen),
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    view = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.getvalue())  # no ANSI codes
    last = view[view.rfind("orchestrator  ") :]
    assert "cheese" in last and "wine" in last
    assert "WORKSPACE" in last and "main" in last
    assert "2 jobs: 2 done (2 succeeded)" in last
    assert "━" in view, "progress bars"
    assert '"event": "daemon.stopped"' in captured.err, "logs go to stderr under the view"
    assert captured.out == ""


def test_run_no_live_keeps_logs_on_stdout(
    project: Project, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--no-live on a terminal: no view, the logs stay on stdout."""
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    project.extra = FAST
    project.add_job("a", 1)
    capsys.readouterr()
    code = main(
        ["run", "--config", str(project.config), "--migrate", "--exit-when-idle", "--no-live"],
        clock=FakeClock(start=START, autojump=True),
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "daemon.stopped" in out
    assert "WORKSPACE" not in out


def _job(job_id: int, name: str, state: JobState, **fields: object) -> Job:
    values: dict[str, object] = {
        "id": job_id,
        "name": name,
        "workspace": "main",
        "model": "m",
        "endpoint": "/v1/chat/completions",
        "inputs": ("/x",),
        "metadata": {},
        "timeout_hours": 24,
        "priority": 0,
        "definition_hash": "h",
        "client_token": f"orch-test-{job_id}",
        "request_count": 10,
        "state": state,
        "created_at": START,
        "updated_at": START,
    }
    values.update(fields)
    return Job(**values)  # type: ignore[arg-type]


def test_pick_rows_puts_moving_jobs_first_and_counts_the_rest() -> None:
    """Active jobs first (closest to done first), then the most recently finished."""
    jobs = [
        _job(1, "old-done", JobState.DONE, outcome=Outcome.SUCCEEDED, finished_at=START + 1),
        _job(2, "queued", JobState.QUEUED),
        _job(3, "running", JobState.RUNNING),
        _job(4, "new-done", JobState.DONE, outcome=Outcome.SUCCEEDED, finished_at=START + 9),
        _job(5, "collecting", JobState.COLLECTING),
        _job(6, "urgent", JobState.QUEUED, priority=5),
    ]
    shown, hidden = pick_rows(jobs, 5)
    assert [job.name for job in shown] == ["collecting", "running", "urgent", "queued", "new-done"]
    assert hidden == 1


def test_live_view_frame_fits_the_terminal(project: Project) -> None:
    """A frame on a short terminal lists what fits and says how many more there are."""
    project.add_job("a", 1)
    config = load_config(project.config)
    console = Console(file=io.StringIO(), force_terminal=True, width=120, height=20)
    view = LiveView(Daemon(config), console, clock=FakeClock(start=START))
    jobs = [_job(i, f"job-{i:02d}", JobState.QUEUED) for i in range(1, 31)]
    console.print(view.render(jobs, now=START + 90))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert len(text.splitlines()) <= 20, "the frame fits the terminal"
    shown = sorted(set(re.findall(r"job-\d\d", text)))
    assert shown[0] == "job-01" and "job-30" not in shown
    assert f"30 jobs: 30 queued  ({30 - len(shown)} more not shown: `orchestrator status`)" in (
        text
    )
    assert "up 1m" in text
