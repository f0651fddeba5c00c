"""Intake through the daemon: identity across restarts, missing inputs, jobs added while it runs."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from structlog.testing import capture_logs

from orchestrator.cli import _ledger, main
from orchestrator.clock import FakeClock
from orchestrator.config import load_config
from orchestrator.daemon import Daemon
from orchestrator.ledger import SqlLedger
from orchestrator.model import Job, JobState, Outcome
from tests.cli.conftest import START, CliRunner, Project, emulator, job_table, write_input


def _jobs(project: Project) -> dict[str, Job]:
    config = load_config(project.config)

    async def read() -> list[Job]:
        async with await SqlLedger.connect(config.ledger.url) as ledger:
            return await ledger.list_jobs()

    return {job.name: job for job in anyio.run(read)}


def test_restarts_never_resubmit_and_a_changed_input_is_refused(
    cli: CliRunner, project: Project, run_daemon: Callable[..., dict[str, int]]
) -> None:
    """Two runs on one config: one remote job each; a changed file: error, job untouched."""
    data = project.add_job("survey", 5)
    project.add_job("other", 3)
    assert sum(run_daemon(project.config).values()) == 2
    first = _jobs(project)
    assert {job.state for job in first.values()} == {JobState.DONE}

    created = run_daemon(project.config, migrate=False)
    assert sum(created.values()) == 2, "a restart on the same config creates nothing"
    assert _jobs(project) == first

    write_input(data, 6)  # same name, other contents
    with capture_logs() as logs:
        created = run_daemon(project.config, migrate=False)
    assert sum(created.values()) == 2
    assert _jobs(project) == first, "the existing job is untouched"
    (conflict,) = [e for e in logs if e["event"] == "intake.definition_conflict"]
    assert conflict["error"] == (
        "job 'survey' is already in the ledger with a different definition (input contents "
        "changed); the existing job (done, succeeded) is untouched: give the new definition "
        "another name (a name stays taken by a queued, running, finished or cancelled job; "
        "`orchestrator rerun NAME` runs a final job again)"
    )
    check = cli("check-config", "--config", project.config)
    assert check.code == 2
    assert (
        "survey  main          6 requests  /v1/chat/completions  mistral-small-latest: ERROR: "
        "job 'survey' is already in the ledger (done) with a different definition" in check.out
    )
    assert "other   main          3 requests" in check.out
    assert "already in the ledger (done, succeeded): nothing to send" in check.out


def test_a_missing_input_rejects_only_that_job(
    cli: CliRunner, project: Project, run_daemon: Callable[..., dict[str, int]]
) -> None:
    """The daemon starts; the job is rejected naming file and key; the others run."""
    project.add_job("good", 4)
    project.jobs.append(job_table("lost", input="data/lost.jsonl"))
    project.write()
    missing = project.root / "data" / "lost.jsonl"

    check = cli("check-config", "--config", project.config)
    assert check.code == 2
    assert (
        f"lost  main  ERROR: {project.config}: jobs[1].input: input file {missing} does not exist"
        in check.out
    )
    assert check.err == (
        f"orchestrator: check-config: 1 error in {project.config} (listed above)\n"
    )

    run_daemon(project.config)
    jobs = _jobs(project)
    assert (jobs["good"].state, jobs["good"].outcome) == (JobState.DONE, Outcome.SUCCEEDED)
    lost = jobs["lost"]
    assert lost.state is JobState.REJECTED
    assert lost.error == (
        f"{project.config}: jobs[1].input: input file {missing} does not exist: the job is "
        "rejected and nothing was uploaded\n"
        f"  {project.config}: jobs[1].input: input file {missing} does not exist"
    )
    status = cli("status", "--config", project.config)
    assert f"  lost: {project.config}: jobs[1].input: input file {missing} does not exist" in (
        status.out
    )


def test_check_config_reports_every_kind_of_problem(
    cli: CliRunner, project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bad lines, a job over the budget, a missing key variable, a bad jobs file: exit 2."""
    project.budget = 5
    project.add_job("big", 6)
    bad = project.root / "data" / "bad.jsonl"
    bad.write_text('{"custom_id": "a", "body": {"messages": []}}\n{"custom_id": "b"}\n')
    project.jobs.append(job_table("bad", input="data/bad.jsonl"))
    jobs_dir = project.root / "jobs.d"
    jobs_dir.mkdir()
    (jobs_dir / "a.toml").write_text("[[jobs]]\nname = 1\n")
    project.extra = (
        '[workspaces.real]\napi_key_env = "ORCH_TEST_KEY_UNSET"\n[intake]\njobs_dir = "jobs.d"\n'
    )
    project.write()
    # [intake] appears twice now: keep one table.
    text = project.config.read_text().replace('[intake]\nrescan_interval = "30s"\n', "")
    project.config.write_text(text)
    monkeypatch.delenv("ORCH_TEST_KEY_UNSET", raising=False)
    result = cli("check-config", "--config", project.config)
    assert result.code == 2
    out = result.out
    assert f"error: {jobs_dir / 'a.toml'}: jobs[0].name: expected a string, got 1" in out
    assert (
        f"error: {project.config}: workspaces.real.api_key_env: environment variable "
        "ORCH_TEST_KEY_UNSET is not set" in out
    )
    assert (
        "big  main          6 requests  /v1/chat/completions  mistral-small-latest: ERROR: more "
        "than the whole budget of workspace 'main' (5 pending requests)" in out
    )
    assert "bad  main  INVALID: invalid batch input for /v1/chat/completions" in out
    assert f"      {bad}:1: must not be an empty list (body.messages)" in out
    assert f"      {bad}:2: missing (body)" in out
    assert "4 errors: nothing was sent" in out
    assert "ledger sqlite:///" in out and "not created yet" in out


def test_check_config_ok_lists_what_would_be_submitted(cli: CliRunner, project: Project) -> None:
    """A good config: exit 0, each job new, and the budget verdict per workspace."""
    project.budget = 10
    project.add_job("a", 4)
    project.add_job("b", 4)
    result = cli("check-config", "--config", project.config)
    assert result.code == 0, result.out
    assert "a  main          4 requests  /v1/chat/completions  mistral-small-latest: new" in (
        result.out
    )
    assert (
        "  main: 8 new requests in 2 job(s); 0 in flight and 0 queued in the ledger; budget 10: "
        "fits at once" in result.out
    )
    assert result.out.rstrip().endswith("config ok: nothing was sent")
    project.add_job("c", 4)
    more = cli("check-config", "--config", project.config).out
    assert "budget 10: more than the budget at once: jobs wait in the queue" in more
    # A jobs folder that does not exist yet is a warning, not an error.
    project.extra = '[workspaces.x]\nbase_url = "embedded"\n'
    project.write()
    text = project.config.read_text().replace(
        'rescan_interval = "30s"', 'rescan_interval = "30s"\njobs_dir = "later"'
    )
    project.config.write_text(text)
    result = cli("check-config", "--config", project.config)
    assert result.code == 0
    assert "does not exist (or is not a folder): create it (no jobs are read from it" in (
        result.out
    )


# A daemon running in the test's event loop, on a clock that only moves when told ------------


@asynccontextmanager
async def _daemon(project: Project, clock: FakeClock) -> AsyncIterator[Daemon]:
    """The daemon in the background (ledger migrated, first intake pass done)."""
    config = load_config(project.config)
    with emulator(clock, validation_seconds=5.0) as emu:
        daemon = Daemon(config, clock=clock, emulator=emu)
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: daemon.run(migrate=True))
            await _eventually(lambda: _ready(daemon))
            try:
                yield daemon
            finally:
                assert daemon.runtime is not None
                daemon.runtime.stop()


async def _ready(daemon: Daemon) -> bool:
    await anyio.wait_all_tasks_blocked()
    return daemon.runtime is not None and signal.getsignal(signal.SIGHUP) not in (
        signal.SIG_DFL,
        None,
    )


async def _eventually(check: Callable[[], Awaitable[bool]], *, limit: float = 20.0) -> None:
    """Wait (real time, bounded) until ``check`` holds; the fake clock does not move."""
    with anyio.fail_after(limit):
        while not await check():
            await anyio.wait_all_tasks_blocked()


async def _state(project: Project, name: str) -> JobState | None:
    config = load_config(project.config)
    async with await SqlLedger.connect(config.ledger.url) as ledger:
        return {job.name: job.state for job in await ledger.list_jobs()}.get(name)


def _submit_argv(project: Project, name: str, data: Path) -> list[str]:
    return [
        "submit", "--config", str(project.config), "--name", name, "--input", str(data),
        "--model", "mistral-small-latest", "--endpoint", "/v1/chat/completions",
    ]  # fmt: skip


@pytest.mark.anyio
async def test_submit_wakes_a_running_daemon_at_once(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    """submit signals the local daemon (SIGHUP): admitted without the clock moving."""
    clock = FakeClock(start=START)
    data = write_input(project.root / "late.jsonl", 3)
    async with _daemon(project, clock):
        code = await anyio.to_thread.run_sync(lambda: main(_submit_argv(project, "late", data)))
        assert code == 0
        assert f"the daemon (pid {os.getpid()}) was woken to act now" in (capsys.readouterr().out)
        await _eventually(lambda: _left_queue(project, "late"))


async def _left_queue(project: Project, name: str) -> bool:
    state = await _state(project, name)
    return state is not None and state is not JobState.QUEUED


@pytest.mark.anyio
async def test_a_submitted_job_is_admitted_within_one_intake_cycle(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the signal (e.g. another host), the next intake pass (30 s) admits it."""
    monkeypatch.setattr(_ledger, "lock_holder", lambda path: None)
    clock = FakeClock(start=START)
    data = write_input(project.root / "late.jsonl", 3)
    async with _daemon(project, clock):
        code = await anyio.to_thread.run_sync(lambda: main(_submit_argv(project, "late", data)))
        assert code == 0
        await anyio.wait_all_tasks_blocked()
        assert await _state(project, "late") is JobState.QUEUED
        for _ in range(30):  # one rescan_interval, a second at a time
            clock.advance(1.0)
            await anyio.wait_all_tasks_blocked()
            if await _left_queue(project, "late"):
                break
        await _eventually(lambda: _left_queue(project, "late"), limit=5.0)


@pytest.mark.anyio
async def test_jobs_added_to_the_main_config_are_read_on_sighup(project: Project) -> None:
    """Edit config.toml while the daemon runs, send SIGHUP: the new job is queued."""
    clock = FakeClock(start=START)
    async with _daemon(project, clock):
        project.add_job("added", 2)
        signal.raise_signal(signal.SIGHUP)
        await _eventually(lambda: _has(project, "added"))


async def _has(project: Project, name: str) -> bool:
    return await _state(project, name) is not None


@pytest.mark.anyio
async def test_intake_announces_jobs_and_cancels_written_by_another_process(
    project: Project,
) -> None:
    """Queued jobs it did not add and fresh cancel requests wake the loops, each once."""
    from orchestrator.daemon.intake import Intake, admit_spec
    from orchestrator.daemon.waker import Waker
    from orchestrator.ledger.migrate import upgrade
    from orchestrator.model import JobSpec

    project.add_job("own", 2)
    config = load_config(project.config)
    await upgrade(config.ledger.url)
    clock = FakeClock(start=START)
    new: list[str] = []
    cancels: list[str] = []
    async with await SqlLedger.connect(config.ledger.url, clock=clock) as ledger:
        intake = Intake(
            config=config,
            ledger=ledger,
            clock=clock,
            waker=Waker(clock),
            on_new_job=lambda job: new.append(job.name),
            on_cancel=lambda job: cancels.append(job.name),
        )
        assert await intake.scan() == 1
        assert new == ["own"]
        spec = JobSpec(
            name="submitted",
            workspace="main",
            model="m",
            endpoint="/v1/chat/completions",
            inputs=(str(write_input(project.root / "s.jsonl", 1)),),
        )
        await admit_spec(ledger, spec)  # as `orchestrator submit` does, from elsewhere
        assert await intake.scan() == 0
        assert new == ["own", "submitted"]
        await ledger.request_cancel("own")
        await intake.scan()
        await intake.scan()
        assert cancels == ["own"]
        assert new == ["own", "submitted", "own"], "a queued cancel wakes admission"


@pytest.mark.anyio
async def test_intake_rereads_the_main_config_and_survives_a_bad_edit(project: Project) -> None:
    """A broken edit is reported once, the last good jobs stay; a new workspace needs a restart."""
    from orchestrator.daemon.intake import Intake
    from orchestrator.daemon.waker import Waker
    from orchestrator.ledger.migrate import upgrade

    project.add_job("first", 1)
    config = load_config(project.config)
    await upgrade(config.ledger.url)
    clock = FakeClock(start=START)
    async with await SqlLedger.connect(config.ledger.url, clock=clock) as ledger:
        intake = Intake(
            config=config, ledger=ledger, clock=clock, waker=Waker(clock), on_new_job=print
        )
        with capture_logs() as logs:
            assert await intake.scan() == 1
            good = project.config.read_text()
            project.config.write_text(good + "\n[[jobs]]\nname = 'half-written'\n")
            assert await intake.scan() == 0
            assert await intake.scan() == 0
            assert [spec.name for spec in intake.specs()] == ["first"]
            project.extra = '[workspaces.later]\nbase_url = "embedded"\n'
            project.jobs.append(job_table("elsewhere", input="data/first.jsonl", workspace="later"))
            project.add_job("second", 1)
            assert await intake.scan() == 1
        (invalid,) = [e for e in logs if e["event"] == "intake.config_invalid"]
        assert invalid["error"].endswith("jobs[1].workspace: missing required key")
        (late,) = [e for e in logs if e["event"] == "intake.unknown_workspace"]
        assert late["error"] == (
            "job 'elsewhere': workspace 'later' was added to the config after the daemon "
            "started: restart the daemon to use it"
        )
        assert [e["jobs"] for e in logs if e["event"] == "intake.config_reread"] == [3]
        names = {job.name for job in await ledger.list_jobs()}
    assert names == {"first", "second"}
