"""Line retries end to end (issue #14): the daemon, the in-process emulator of each wire, a
fake clock. Transient line failures are retried as attempts and merged into one answer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.clock import FakeClock
from orchestrator.config import load_config
from orchestrator.daemon import Daemon
from orchestrator.emulator import Emulator, EmulatorSettings
from orchestrator.ledger import SqlLedger
from orchestrator.model import Job, JobState, Outcome
from orchestrator.service.metrics import DaemonCollector
from tests.daemon.conftest import write_chat_input

MODELS = {"mistral": "mistral-small-latest", "openai": "gpt-4o-mini"}


def retry_config(folder: Path, dialect: str, n: int, *, max_attempts: int = 3) -> Path:
    write_chat_input(folder / "data" / "survey.jsonl", n, prefix="q")
    text = f"""
[ledger]
url = "sqlite:///var/ledger.db"
[results]
dir = "var/results"
[polling]
initial = "5s"
max = "2m"
[workspaces.main]
provider = "{dialect}"
base_url = "embedded"
max_attempts = {max_attempts}
retry_delay = "30s"
[[jobs]]
name = "survey"
workspace = "main"
input = "data/survey.jsonl"
model = "{MODELS[dialect]}"
endpoint = "/v1/chat/completions"
"""
    path = folder / "orchestrator.toml"
    path.write_text(text)
    return path


def emulator(clock: FakeClock, dialect: str, **overrides: float) -> Emulator:
    settings = {
        "time_scale": 60.0,
        "throughput": 1.0,
        "validation_seconds": 30.0,
        "seed": 11,
        "transient_fraction": 0.2,
        **overrides,
    }
    return Emulator(EmulatorSettings(**settings), clock=clock, dialect=dialect)  # type: ignore[arg-type]


def read_lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.anyio
@pytest.mark.parametrize("dialect", ["mistral", "openai"])
async def test_transient_failures_are_retried_and_merged(tmp_path: Path, dialect: str) -> None:
    config = load_config(retry_config(tmp_path, dialect, 120))
    clock = FakeClock(autojump=True)
    with emulator(clock, dialect, failure_fraction=0.05) as emu:
        daemon = Daemon(config, clock=clock, emulator=[emu])
        await daemon.run(exit_when_idle=True, migrate=True)
        created = sum(w["jobs_created"] for w in emu.stats()["workspaces"].values())
    assert daemon.view is not None
    families = {m.name: m for m in DaemonCollector(daemon.view).collect()}
    retried = {s.labels["reason"]: s.value for s in families["orchestrator_retried_lines"].samples}
    assert retried and set(retried) <= {"server_error", "rate_limited", "transient"}
    ledger = await SqlLedger.connect(config.ledger.url, clock=clock)
    try:
        job = await ledger.get_by_name("survey")
        attempts = await ledger.attempts_of(job.id)
    finally:
        await ledger.close()
    assert job.state is JobState.DONE
    assert len(attempts) >= 1 and created == 1 + len(attempts)
    assert sum(retried.values()) == sum(a.request_count for a in attempts)
    folder = config.results.dir / "survey"
    output, errors = read_lines(folder / "output.jsonl"), read_lines(folder / "errors.jsonl")
    ok = [r["custom_id"] for r in output]
    bad = [r["custom_id"] for r in errors]
    assert not set(ok) & set(bad)
    assert len(ok) + len(bad) == 120 and len(set(ok)) == len(ok)
    order = [f"q-{i}" for i in range(120)]
    assert ok == [c for c in order if c in set(ok)]  # input order
    assert (job.succeeded, job.failed) == (len(ok), len(bad))
    # The permanent failures (422) stay failed; nothing transient should survive 3 draws
    # of 20 % for most lines, so the errors are mostly the 422s.
    statuses = {r["response"]["status_code"] for r in errors if r.get("response")}  # type: ignore[index]
    assert 422 in statuses
    assert job.outcome is (Outcome.SUCCEEDED if not bad else Outcome.PARTIAL)
    summary = json.loads((folder / "job.json").read_text())
    assert [a["attempt"] for a in summary["attempts"]] == list(range(1, len(attempts) + 2))
    assert summary["attempts"][0]["remote_id"] == job.remote_id
    assert summary["attempts"][1]["reason"]
    assert not (folder / "attempts").exists()
    # Usage rolls up over the attempts (#15): more than attempt 1's own tokens.
    assert summary["usage"]["total_tokens"] > (job.usage.total_tokens if job.usage else 0) > 0


def test_all_transient_lines_succeed_eventually(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Only transient failures: the merged job succeeds (every line in some attempt); status
    and show report the attempts."""
    import anyio

    path = retry_config(tmp_path, "mistral", 60, max_attempts=10)
    config = load_config(path)

    async def run() -> Job:
        clock = FakeClock(autojump=True)
        with emulator(clock, "mistral") as emu:
            await Daemon(config, clock=clock, emulator=[emu]).run(exit_when_idle=True, migrate=True)
        ledger = await SqlLedger.connect(config.ledger.url, clock=clock)
        try:
            return await ledger.get_by_name("survey")
        finally:
            await ledger.close()

    job = anyio.run(run)
    assert job.outcome is Outcome.SUCCEEDED and job.succeeded == 60 and job.failed == 0
    assert job.attempt >= 2
    folder = config.results.dir / "survey"
    assert len(read_lines(folder / "output.jsonl")) == 60
    assert read_lines(folder / "errors.jsonl") == []
    capsys.readouterr()
    assert main(["status", "--config", str(path), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)  # attempts are not rows without --parts
    assert (row["attempt"], row["max_attempts"]) == (job.attempt, 10)
    assert [a["attempt"] for a in row["attempts"]] == list(range(2, job.attempt + 1))
    assert main(["show", "--config", str(path), "survey", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["step_retries"] == 0 and len(shown["attempts"]) == job.attempt - 1
    assert main(["show", "--config", str(path), "survey"]) == 0
    assert f"{job.attempt}/10" in capsys.readouterr().out


@pytest.mark.anyio
async def test_max_attempts_one_never_resubmits(tmp_path: Path) -> None:
    config = load_config(retry_config(tmp_path, "openai", 60, max_attempts=1))
    clock = FakeClock(autojump=True)
    with emulator(clock, "openai") as emu:
        await Daemon(config, clock=clock, emulator=[emu]).run(exit_when_idle=True, migrate=True)
        created = sum(w["jobs_created"] for w in emu.stats()["workspaces"].values())
    assert created == 1
    ledger = await SqlLedger.connect(config.ledger.url, clock=clock)
    try:
        job = await ledger.get_by_name("survey")
    finally:
        await ledger.close()
    assert job.outcome is Outcome.PARTIAL and job.attempt == 1


class Crash(BaseException):
    """Stands for kill -9: nothing in the daemon catches a BaseException."""


@pytest.mark.anyio
@pytest.mark.parametrize("dialect", ["mistral", "openai"])
@pytest.mark.parametrize(
    "point", ["after_attempt_recorded", "while_writing_input", "at_retry_create", "mid_merge"]
)
async def test_a_crash_between_attempts_never_submits_twice(
    tmp_path: Path, dialect: str, point: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon dies at a step between attempts; a restart finishes with one merged answer,
    each attempt created once remotely."""
    from orchestrator.daemon import attempt_files, retry
    from orchestrator.ledger import SqlLedger as Ledger

    config = load_config(retry_config(tmp_path, dialect, 40))
    clock = FakeClock(autojump=True)
    fired: list[str] = []

    def once() -> None:
        if not fired:
            fired.append(point)
            raise Crash(point)

    if point == "after_attempt_recorded":
        original_add = Ledger.add_attempt

        async def add_then_die(self: Ledger, *args: object, **kwargs: object) -> object:
            made = await original_add(self, *args, **kwargs)  # type: ignore[arg-type]
            once()
            return made

        monkeypatch.setattr(Ledger, "add_attempt", add_then_die)
    elif point == "at_retry_create":
        from orchestrator.providers.mistral import MistralProvider
        from orchestrator.providers.openai import OpenAIProvider

        provider = MistralProvider if dialect == "mistral" else OpenAIProvider
        original_create = provider.create_job
        creates: list[object] = []

        async def create_then_die(self: object, **kwargs: object) -> object:
            made = await original_create(self, **kwargs)  # type: ignore[arg-type]
            creates.append(made)
            if len(creates) == 2:  # the retry's create landed; the daemon dies before it
                once()  # records the remote id
            return made

        monkeypatch.setattr(provider, "create_job", create_then_die)
    elif point == "while_writing_input":
        original_publish = attempt_files.publish_input

        def die_before_publish(part: Path, dest: Path) -> None:
            once()  # the retry input is written to .part, not yet under its name
            original_publish(part, dest)

        monkeypatch.setattr(attempt_files, "publish_input", die_before_publish)
    else:
        original_merge = retry.merge_attempts

        def merge_then_die(**kwargs: object) -> object:
            merged = original_merge(**kwargs)  # type: ignore[arg-type]
            once()
            return merged

        monkeypatch.setattr(retry, "merge_attempts", merge_then_die)
    with emulator(clock, dialect) as emu:
        with pytest.raises(BaseExceptionGroup) as died:
            await Daemon(config, clock=clock, emulator=[emu]).run(exit_when_idle=True, migrate=True)
        assert died.group_contains(Crash)
        assert fired == [point]
        await Daemon(config, clock=clock, emulator=[emu]).run(exit_when_idle=True)
        created = sum(w["jobs_created"] for w in emu.stats()["workspaces"].values())
    ledger = await SqlLedger.connect(config.ledger.url, clock=clock)
    try:
        job = await ledger.get_by_name("survey")
        attempts = await ledger.attempts_of(job.id)
        files = {f.kind: f for f in await ledger.files(job.id)}
    finally:
        await ledger.close()
    assert job.state is JobState.DONE
    assert created == 1 + len(attempts)
    assert [a.attempt for a in attempts] == list(range(2, len(attempts) + 2))
    folder = config.results.dir / "survey"
    ok = [r["custom_id"] for r in read_lines(folder / "output.jsonl")]
    bad = [r["custom_id"] for r in read_lines(folder / "errors.jsonl")]
    assert len(ok) + len(bad) == 40 and not set(ok) & set(bad)
    assert files["output"].lines == len(ok) == job.succeeded
    assert not list(folder.glob("*.part"))


@pytest.mark.anyio
@pytest.mark.parametrize("dialect", ["mistral", "openai"])
async def test_lines_an_expired_job_never_ran_are_run_again(tmp_path: Path, dialect: str) -> None:
    """The first remote job expires with some of its 120 lines unprocessed (Mistral: in neither
    file; OpenAI: batch_expired lines); attempt 2 runs exactly those, and the job succeeds."""
    config = load_config(retry_config(tmp_path, dialect, 120))
    clock = FakeClock(autojump=True)
    per_window = 72 / 86_400  # requests a simulated second: 72 in a 24 h window
    with emulator(clock, dialect, transient_fraction=0.0, throughput=per_window) as emu:
        await Daemon(config, clock=clock, emulator=[emu]).run(exit_when_idle=True, migrate=True)
    ledger = await SqlLedger.connect(config.ledger.url, clock=clock)
    try:
        job = await ledger.get_by_name("survey")
        attempts = await ledger.attempts_of(job.id)
    finally:
        await ledger.close()
    first = (job.attempt_info or {})["first"]
    assert first["outcome"] == "expired" and 0 < first["succeeded"] < 120
    never_ran = 120 - first["succeeded"]
    assert attempts[0].request_count == never_ran
    assert dict((attempts[0].attempt_info or {})["reasons"]) == {"not_processed": never_ran}
    assert job.outcome is Outcome.SUCCEEDED and (job.succeeded, job.failed) == (120, 0)
    folder = config.results.dir / "survey"
    ok = [r["custom_id"] for r in read_lines(folder / "output.jsonl")]
    assert ok == [f"q-{i}" for i in range(120)]
    assert read_lines(folder / "errors.jsonl") == []


@pytest.mark.anyio
async def test_cancel_stops_further_attempts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`cancel NAME` just after attempt 2 is recorded (the user's cancel, through the ledger
    as the CLI does): the attempt is flagged with its job, no attempt 3 is made, and the merge
    keeps what attempt 1 produced."""
    from orchestrator.daemon.retry import RetryKeeper

    config = load_config(retry_config(tmp_path, "mistral", 120, max_attempts=5))
    clock = FakeClock(autojump=True)
    original = RetryKeeper._record

    async def record_then_cancel(self: RetryKeeper, job: object, number: int, *a: object,
                                 **k: object) -> None:  # fmt: skip
        await original(self, job, number, *a, **k)  # type: ignore[arg-type]
        flagged = await self._rt.ledger.request_cancel("survey")
        assert flagged.cancel_requested

    monkeypatch.setattr(RetryKeeper, "_record", record_then_cancel)
    with emulator(clock, "mistral", transient_fraction=0.5) as emu:
        await Daemon(config, clock=clock, emulator=[emu]).run(exit_when_idle=True, migrate=True)
        created = sum(w["jobs_created"] for w in emu.stats()["workspaces"].values())
    ledger = await SqlLedger.connect(config.ledger.url, clock=clock)
    try:
        job = await ledger.get_by_name("survey")
        attempts = await ledger.attempts_of(job.id)
    finally:
        await ledger.close()
    assert [a.attempt for a in attempts] == [2] and attempts[0].cancel_requested
    assert attempts[0].outcome is Outcome.CANCELLED and created == 1
    assert job.state is JobState.DONE and job.outcome is Outcome.CANCELLED
    folder = config.results.dir / "survey"
    ok = {r["custom_id"] for r in read_lines(folder / "output.jsonl")}
    bad = {r["custom_id"] for r in read_lines(folder / "errors.jsonl")}
    assert len(ok) + len(bad) == 120 and not ok & bad
    assert len(ok) == (job.attempt_info or {})["first"]["succeeded"]


@pytest.mark.anyio
async def test_a_split_job_retries_per_part(tmp_path: Path) -> None:
    config_path = retry_config(tmp_path, "openai", 90)
    config_path.write_text(
        config_path.read_text().replace("max_attempts = 3", "max_attempts = 3\nsplit_requests = 30")
    )
    config = load_config(config_path)
    clock = FakeClock(autojump=True)
    with emulator(clock, "openai") as emu:
        await Daemon(config, clock=clock, emulator=[emu]).run(exit_when_idle=True, migrate=True)
    ledger = await SqlLedger.connect(config.ledger.url, clock=clock)
    try:
        parent = await ledger.get_by_name("survey")
        parts = await ledger.parts(parent.id)
        retried = [a for p in parts for a in await ledger.attempts_of(p.id)]
    finally:
        await ledger.close()
    assert len(parts) == 3 and retried
    assert all(a.name.startswith("survey/part-") and "/attempt-0" in a.name for a in retried)
    assert parent.state is JobState.DONE
    folder = config.results.dir / "survey"
    ok = [r["custom_id"] for r in read_lines(folder / "output.jsonl")]
    bad = [r["custom_id"] for r in read_lines(folder / "errors.jsonl")]
    assert len(ok) + len(bad) == 90 and not set(ok) & set(bad)
    assert ok == [c for c in (f"q-{i}" for i in range(90)) if c in set(ok)]
    assert parent.succeeded == len(ok)
    assert not (folder / "parts").exists()
