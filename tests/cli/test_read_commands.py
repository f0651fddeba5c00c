"""status, show, results, budget and cancel on a ledger holding a job in every kind of state."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import anyio
import pytest

from orchestrator.clock import FakeClock
from orchestrator.config import load_config
from orchestrator.ledger import SqlLedger
from orchestrator.ledger.migrate import upgrade
from orchestrator.model import JobSpec, JobState, Outcome
from tests.cli.conftest import START, CliRunner, Project, lines

NOW = START + 3 * 3600 + 5 * 60  # 3h05m after the jobs were created


def _spec(project: Project, name: str, **fields: object) -> JobSpec:
    values: dict[str, object] = {
        "name": name,
        "workspace": "main",
        "model": "mistral-small-latest",
        "endpoint": "/v1/chat/completions",
        "inputs": (str(project.root / "data" / f"{name}.jsonl"),),
        "metadata": {"team": "research"},
    }
    values.update(fields)
    return JobSpec(**values)  # type: ignore[arg-type]


@pytest.fixture
def ledger_states(project: Project) -> Project:
    """A ledger with a queued, a running (30 of 100), a done (partial) and a rejected job."""
    config = load_config(project.config)
    output = config.results.dir / "finished" / "output.jsonl"
    output.parent.mkdir(parents=True)
    output.write_text('{"a": 1}\n{"a": 2}\n')
    (output.parent / "job.json").write_text("{}\n")

    async def build() -> None:
        await upgrade(config.ledger.url)
        clock = FakeClock(start=START)
        ledger = await SqlLedger.connect(config.ledger.url, clock=clock)
        try:
            running, _ = await ledger.add_job(
                _spec(project, "running", priority=2), definition_hash="h1", request_count=100
            )
            for target in (JobState.ADMITTED, JobState.SUBMITTING):
                running = await ledger.transition(running.id, running.state, target)
            clock.advance(60)
            await ledger.transition(
                running.id,
                JobState.SUBMITTING,
                JobState.RUNNING,
                detail="created",
                remote_id="batch-123",
                remote_status="RUNNING",
                total=100,
                completed=30,
                succeeded=29,
                failed=1,
            )
            finished, _ = await ledger.add_job(
                _spec(project, "finished"), definition_hash="h2", request_count=3
            )
            for target in (JobState.ADMITTED, JobState.SUBMITTING, JobState.RUNNING):
                finished = await ledger.transition(finished.id, finished.state, target)
            await ledger.transition(finished.id, JobState.RUNNING, JobState.COLLECTING)
            await ledger.record_file(
                finished.id,
                "output",
                path=output,
                bytes=output.stat().st_size,
                sha256=hashlib.sha256(output.read_bytes()).hexdigest(),
                lines=2,
            )
            await ledger.transition(
                finished.id,
                JobState.COLLECTING,
                JobState.DONE,
                outcome=Outcome.PARTIAL,
                remote_status="SUCCESS",
                total=3,
                completed=3,
                succeeded=2,
                failed=1,
            )
            await ledger.add_job(_spec(project, "waiting"), definition_hash="h3", request_count=40)
            await ledger.add_job(
                _spec(project, "broken"),
                definition_hash="raw-x",
                request_count=0,
                state=JobState.REJECTED,
                error="invalid batch input for /v1/chat/completions in x.jsonl: 1 problem\n"
                "  x.jsonl:2: not valid JSON",
            )
        finally:
            await ledger.close()

    anyio.run(build)
    return project


def test_status_plain_when_piped(cli: CliRunner, ledger_states: Project) -> None:
    """Piped: aligned plain columns, text progress bars, ages, counts, errors; no colour."""
    result = cli("status", "--config", ledger_states.config, now=NOW)
    assert result.code == 0, result.err
    assert "\x1b[" not in result.out
    assert lines(result.out) == [
        "NAME      STATE     REMOTE   PROGRESS              DONE  FAILED  PENDING    AGE  OUTCOME",
        "running   running   RUNNING  ####........   30%  30/100       1       70  3h05m  -",
        "finished  done      SUCCESS  ############  100%     3/3       1        0  3h04m  partial",
        "waiting   queued    -        ............    0%    0/40       0        0  3h04m  -",
        "broken    rejected  -                         -     0/0       0        0  3h04m  -",
        "4 jobs: 1 queued, 1 running, 1 done (1 partial), 1 rejected",
        "errors (`orchestrator show NAME` has the full report):",
        "  broken: invalid batch input for /v1/chat/completions in x.jsonl: 1 problem",
    ]


def test_status_json_has_the_contract_fields(cli: CliRunner, ledger_states: Project) -> None:
    """--json: one object per job with at least the §9 fields, values from the ledger."""
    rows = cli("status", "--config", ledger_states.config, "--json", now=NOW).json()
    assert isinstance(rows, list)
    by_name = {row["name"]: row for row in rows}
    required = {"name", "state", "outcome", "remote_id", "remote_status", "total"}
    required |= {"succeeded", "failed", "pending", "error"}
    for row in rows:
        assert required <= set(row)
    running = by_name["running"]
    assert {key: running[key] for key in required | {"completed", "progress", "age_seconds"}} == {
        "name": "running",
        "state": "running",
        "outcome": None,
        "remote_id": "batch-123",
        "remote_status": "RUNNING",
        "total": 100,
        "completed": 30,
        "succeeded": 29,
        "failed": 1,
        "pending": 70,
        "progress": 0.3,
        "error": None,
        "age_seconds": 3 * 3600 + 5 * 60,
    }
    assert (by_name["finished"]["outcome"], by_name["finished"]["pending"]) == ("partial", 0)
    assert by_name["broken"]["error"].startswith("invalid batch input")


def test_status_filters(cli: CliRunner, ledger_states: Project) -> None:
    """--state and --workspace narrow the rows; no match is said plainly."""
    rows = cli(
        "status", "--config", ledger_states.config, "--json", "--state", "done", "--state",
        "queued",
    ).json()  # fmt: skip
    assert [row["name"] for row in rows] == ["finished", "waiting"]
    result = cli("status", "--config", ledger_states.config, "--workspace", "nope")
    assert result.code == 0
    assert result.out.startswith("no jobs matching the filters in the ledger sqlite:///")


def test_status_on_a_terminal_is_coloured_with_bars(
    cli: CliRunner, ledger_states: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a terminal: ANSI colour and bar characters; NO_COLOR keeps the layout, drops colour."""
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    monkeypatch.setenv("COLUMNS", "140")
    result = cli("status", "--config", ledger_states.config, now=NOW)
    assert result.code == 0
    assert "\x1b[" in result.out
    assert "━" in result.out
    assert "running" in result.out and "3h05m" in result.out and "30%" in result.out
    monkeypatch.setenv("NO_COLOR", "1")
    plain = cli("status", "--config", ledger_states.config, now=NOW)
    assert "\x1b[3" not in plain.out  # no colour codes (bold may remain)
    assert "invalid batch input for /v1/chat/completions in x.jsonl" in plain.out


def test_show_prints_definition_files_and_history(cli: CliRunner, ledger_states: Project) -> None:
    """show NAME: definition, remote ids, counts, the file with its sha256, every event."""
    result = cli("show", "finished", "--config", ledger_states.config, now=NOW)
    assert result.code == 0, result.err
    out = result.out
    config = load_config(ledger_states.config)
    output = config.results.dir / "finished" / "output.jsonl"
    digest = hashlib.sha256(output.read_bytes()).hexdigest()
    assert "state        done (remote SUCCESS)" in out
    assert "outcome      partial" in out
    assert f"input        {ledger_states.root / 'data' / 'finished.jsonl'}" in out
    assert "metadata     team=research" in out
    assert "progress     ############ 100%  3/3 processed: 2 succeeded, 1 failed; 0 pending" in out
    assert f"  output  {output}  18 bytes  2 lines  sha256 {digest}" in out
    history = out.split("history (6 events):\n")[1].splitlines()
    assert [line.split()[1:4] for line in history] == [
        ["new", "->", "queued"],
        ["queued", "->", "admitted"],
        ["admitted", "->", "submitting"],
        ["submitting", "->", "running"],
        ["running", "->", "collecting"],
        ["collecting", "->", "done"],
    ]
    assert history[0].split()[0] == "2026-01-01T00:01:00Z"


def test_show_json_and_rejected_error(cli: CliRunner, ledger_states: Project) -> None:
    """show --json carries files, events and the full multi-line error."""
    detail = cli("show", "broken", "--config", ledger_states.config, "--json").json()
    assert isinstance(detail, dict)
    assert detail["state"] == "rejected"
    assert detail["error"].endswith("x.jsonl:2: not valid JSON")
    assert detail["events"] == [
        {
            "at": "2026-01-01T00:01:00Z",
            "from": None,
            "to": "rejected",
            "remote_status": None,
            "detail": "rejected at intake",
        }
    ]
    plain = cli("show", "broken", "--config", ledger_states.config).out
    assert "error:\n  invalid batch input" in plain
    assert "\n    x.jsonl:2: not valid JSON\n" in plain
    assert "files: none downloaded yet" in plain


def test_results_lists_paths_and_counts(cli: CliRunner, ledger_states: Project) -> None:
    """results NAME: folder, each file with lines/bytes/sha256, job.json; JSON too."""
    config = load_config(ledger_states.config)
    folder = config.results.dir / "finished"
    result = cli("results", "finished", "--config", ledger_states.config)
    assert result.code == 0
    out = lines(result.out)
    assert out[0] == "finished: done, partial: 2 succeeded, 1 failed of 3 requests"
    assert out[1] == f"  folder   {folder}"
    assert out[2].startswith(f"  output   {folder / 'output.jsonl'}  2 lines  18 bytes  sha256 ")
    assert out[3] == f"  summary  {folder / 'job.json'}"
    detail = cli("results", "finished", "--config", ledger_states.config, "--json").json()
    assert isinstance(detail, dict)
    assert detail["files"][0] | {"sha256": ""} == {
        "kind": "output",
        "path": str(folder / "output.jsonl"),
        "bytes": 18,
        "sha256": "",
        "lines": 2,
        "exists": True,
    }
    pending = cli("results", "running", "--config", ledger_states.config)
    assert pending.code == 0
    assert "no results yet: they are downloaded here when the job is done" in pending.out


def test_results_of_a_deleted_file_is_exit_1(cli: CliRunner, ledger_states: Project) -> None:
    """A recorded file missing on disk is flagged and the exit code says so."""
    config = load_config(ledger_states.config)
    output = config.results.dir / "finished" / "output.jsonl"
    output.unlink()
    result = cli("results", "finished", "--config", ledger_states.config)
    assert result.code == 1
    assert "(MISSING on disk)" in result.out
    assert result.err == (
        f"orchestrator: result files recorded in the ledger are missing on disk: {output}\n"
    )


def test_budget_per_workspace(cli: CliRunner, ledger_states: Project) -> None:
    """budget: the budget, in flight (70 pending), queued demand (40), the next job."""
    ledger_states.budget = 100
    ledger_states.write()
    result = cli("budget", "--config", ledger_states.config)
    assert result.code == 0
    assert lines(result.out) == [
        "WORKSPACE  BUDGET  IN FLIGHT  JOBS  FREE  QUEUED  JOBS     EXTERNAL  NEXT",
        "main          100         70     1    30      40     1  not counted  waiting (40: waits)",
    ]
    ledger_states.extra = "count_external = true\n"
    ledger_states.write()
    rows = cli("budget", "--config", ledger_states.config, "--json").json()
    assert rows == [
        {
            "workspace": "main",
            "budget": 100,
            "in_flight": 70,
            "in_flight_jobs": 1,
            "free": 30,
            "queued": 40,
            "queued_jobs": 1,
            "count_external": True,
            "external": None,
            "next_job": "waiting",
            "next_requests": 40,
            "never_fits": [],
            "tokens": [
                {"model": "mistral-small-latest", "in_flight": 0, "budget": None, "free": None}
            ],
            "never_fits_tokens": [],
            "in_config": True,
        }
    ]
    noted = cli("budget", "--config", ledger_states.config).out
    assert "daemon only" in noted
    assert "only a running daemon counts them (count_external = true)" in noted


def test_cancel_each_state(cli: CliRunner, ledger_states: Project) -> None:
    """cancel: queued is local, running is remote, done is a no-op; all exit 0."""
    config = ledger_states.config
    queued = cli("cancel", "waiting", "--config", config)
    assert queued.code == 0
    assert queued.out.startswith(
        "cancel requested for 'waiting' (queued): nothing was sent to the provider; the daemon "
        "marks it done, cancelled\n"
    )
    assert "a running daemon acts on it within one intake cycle (30 s)" in queued.out
    again = cli("cancel", "waiting", "--config", config)
    assert again.out.startswith("cancel of 'waiting' was already requested (state queued)")
    running = cli("cancel", "running", "--config", config)
    assert "the daemon cancels remote job batch-123, then downloads any partial" in running.out
    done = cli("cancel", "finished", "--config", config)
    assert (done.code, done.out) == (
        0,
        "job 'finished' is already done, partial: nothing to cancel\n",
    )
    rows = {row["name"]: row for row in cli("status", "--config", config, "--json").json()}
    assert rows["waiting"]["cancel_requested"] and rows["running"]["cancel_requested"]
    assert "cancel requested" in cli("status", "--config", config).out
    events = cli("show", "waiting", "--config", config, "--json").json()["events"]
    assert events[-1]["detail"] == "cancel requested"


def test_read_commands_never_take_the_daemon_lock(
    cli: CliRunner, ledger_states: Project, tmp_path: Path
) -> None:
    """While a daemon holds the ledger lock, status/show/cancel still work."""
    from orchestrator.ledger.lock import DaemonLock

    config = load_config(ledger_states.config)
    database = Path(config.ledger.url.removeprefix("sqlite:///"))
    lock = DaemonLock.acquire(database)
    try:
        assert cli("status", "--config", ledger_states.config).code == 0
        assert cli("show", "running", "--config", ledger_states.config).code == 0
        assert cli("cancel", "waiting", "--config", ledger_states.config).code == 0
        assert json.loads(cli("budget", "--config", ledger_states.config, "--json").out)
    finally:
        lock.release()
