"""``orchestrator ledger copy``: SQLite -> PostgreSQL -> SQLite with the same status, refusals."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest

from orchestrator.clock import FakeClock
from orchestrator.ledger import SqlLedger
from tests.cli.conftest import START, CliRunner, Project
from tests.ledger.databases import scratch_postgres_database
from tests.ledger.test_copy import build, dump, without_leases


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """An empty PostgreSQL database of this test's own (the ledger suite's helper, sync)."""
    with (
        anyio.from_thread.start_blocking_portal() as portal,
        portal.wrap_async_context_manager(scratch_postgres_database()) as url,
    ):
        yield url


def _sqlite(project: Project, name: str = "ledger.db") -> str:
    return f"sqlite:///{project.root / 'var' / name}"


def _status(cli: CliRunner, project: Project, url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """``status --json --parts`` of the project's config, on the ledger at ``url``."""
    monkeypatch.setenv("ORCH_LEDGER_URL", url)
    try:
        result = cli("status", "--config", project.config, "--json", "--parts")
    finally:
        monkeypatch.delenv("ORCH_LEDGER_URL")
    assert result.code == 0, result.err
    return result.out


@pytest.mark.postgres
def test_round_trip_keeps_status_and_rows(
    project: Project,
    cli: CliRunner,
    run_daemon: Callable[..., dict[str, int]],
    postgres_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Daemon-made and hand-made jobs: status --json and every row survive both copies."""
    project.add_job("alpha", 40)
    project.add_job("beta", 25)
    run_daemon(project.config)  # two done jobs with result files and full histories
    source, back = _sqlite(project), _sqlite(project, "back.db")
    anyio.run(build, source, FakeClock(start=START + 100))  # every state, parts, leases
    expected = _status(cli, project, source, monkeypatch)
    assert '"name": "big/part-0001"' in expected and '"state": "done"' in expected

    there = cli("ledger", "copy", "--from", source, "--to", postgres_url)
    assert there.code == 0, there.err
    assert there.out.startswith("copied 12 jobs, ") and "leases cleared on" in there.out
    again = cli("ledger", "copy", "--from", postgres_url, "--to", back)
    assert again.code == 0, again.err

    assert _status(cli, project, postgres_url, monkeypatch) == expected
    assert _status(cli, project, back, monkeypatch) == expected
    rows = without_leases(anyio.run(dump, source))
    assert rows["result_files"] and rows["job_events"]
    assert without_leases(anyio.run(dump, postgres_url)) == rows
    assert without_leases(anyio.run(dump, back)) == rows


def test_a_daemon_carries_on_on_the_copy(
    project: Project,
    cli: CliRunner,
    run_daemon: Callable[..., dict[str, int]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The daemon runs on a copied ledger: a new job gets the next id and is done."""
    project.add_job("alpha", 10)
    run_daemon(project.config)
    moved = f"sqlite:///{project.root / 'moved' / 'ledger.db'}"
    result = cli("ledger", "copy", "--from", _sqlite(project), "--to", moved)
    assert result.code == 0, result.err
    project.add_job("beta", 10)
    monkeypatch.setenv("ORCH_LEDGER_URL", moved)
    run_daemon(project.config, migrate=False)
    monkeypatch.delenv("ORCH_LEDGER_URL")

    async def jobs() -> list[tuple[int, str, str]]:
        async with await SqlLedger.connect(moved) as ledger:
            return [(job.id, job.name, job.state.value) for job in await ledger.list_jobs()]

    assert sorted(anyio.run(jobs)) == [(1, "alpha", "done"), (2, "beta", "done")]


@pytest.mark.parametrize(
    ("source", "target", "message"),
    [
        ("mysql://h/db", "sqlite:///{tmp}/b.db", "--from: unsupported ledger database 'mysql'"),
        ("sqlite:///{tmp}/nothing.db", "sqlite:///{tmp}/b.db", "--from: the SQLite ledger"),
        ("sqlite:///{tmp}/var/ledger.db", "sqlite:///{tmp}/var/../var/ledger.db", "same ledger"),
        ("sqlite:///{tmp}/var/ledger.db", "nonsense", "--to: cannot parse ledger URL"),
    ],
)
def test_usage_errors_exit_2_in_one_line(
    project: Project, cli: CliRunner, source: str, target: str, message: str
) -> None:
    """A bad, missing or repeated URL: exit 2, one line on stderr, no file created."""
    anyio.run(functools.partial(build, _sqlite(project), FakeClock(start=START), owner=None))
    fill = {"tmp": str(project.root)}
    result = cli("ledger", "copy", "--from", source.format(**fill), "--to", target.format(**fill))
    assert result.code == 2 and message in result.err
    assert len(result.err.splitlines()) == 1 and result.out == ""
    assert not (project.root / "b.db").exists()


def test_refuses_a_non_empty_target_and_a_held_source(project: Project, cli: CliRunner) -> None:
    """A target with rows, and a source whose daemon lock is held (the pid named): exit 2."""
    source, target = _sqlite(project), _sqlite(project, "other.db")
    anyio.run(functools.partial(build, source, FakeClock(start=START), owner=None))
    anyio.run(functools.partial(build, target, FakeClock(start=START), owner=None))
    before = anyio.run(dump, target)
    result = cli("ledger", "copy", "--from", source, "--to", target)
    assert result.code == 2 and "--to: the ledger" in result.err and "not empty" in result.err
    assert anyio.run(dump, target) == before

    async def copy_while_held() -> None:
        async with await SqlLedger.connect(source) as ledger, ledger.daemon_lock():
            held = await anyio.to_thread.run_sync(
                cli, "ledger", "copy", "--from", source, "--to", _sqlite(project, "new.db")
            )
        assert held.code == 2, held.err
        assert f"--from: a running daemon (pid {os.getpid()}) holds the ledger" in held.err

    anyio.run(copy_while_held)
    assert not (project.root / "var" / "new.db").exists()


def test_help_lists_ledger_copy(cli: CliRunner) -> None:
    """``orchestrator --help`` names the command; ``ledger copy --help`` explains it."""
    assert "ledger" in cli("--help").out
    text = cli("ledger", "copy", "--help").out
    assert "--from URL" in text and "--to URL" in text and "empty" in text


def test_missing_flag_is_a_usage_error(cli: CliRunner, tmp_path: Path) -> None:
    """``--to`` is required."""
    result = cli("ledger", "copy", "--from", f"sqlite:///{tmp_path}/a.db")
    assert result.code == 2 and "--to" in result.err
