"""A rejected job is fixed under its own name; a final job is run again with `rerun`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cli.conftest import CliRunner, Project, write_input

RunDaemon = Callable[..., dict[str, int]]


def _status(cli: CliRunner, project: Project) -> dict[str, dict[str, object]]:
    result = cli("status", "--config", project.config, "--json")
    assert result.code == 0, result.err
    return {row["name"]: row for row in result.json()}


def test_fixing_a_rejected_input_runs_the_job_under_its_own_name(
    cli: CliRunner, project: Project, run_daemon: RunDaemon
) -> None:
    """The newcomer's check: fix the file, run again, the job runs; the old report is kept."""
    data = project.add_job("survey", 4)
    good = data.read_text()
    data.write_text(good + '{"custom_id": "survey-9"}\n')
    run_daemon(project.config)
    before = _status(cli, project)["survey"]
    assert before["state"] == "rejected"
    assert "data/survey.jsonl:5" in str(before["error"])
    rejected_id = cli("show", "--config", project.config, "survey", "--json").json()["id"]

    data.write_text(good)
    check = cli("check-config", "--config", project.config)
    assert check.code == 0, check.out
    assert "survey  main          4 requests" in check.out
    assert "replaces the rejected job of this name, would be queued" in check.out

    assert sum(run_daemon(project.config, migrate=False).values()) == 1
    after = _status(cli, project)["survey"]
    assert (after["state"], after["outcome"], after["succeeded"]) == ("done", "succeeded", 4)
    assert after["error"] is None
    show = cli("show", "--config", project.config, "survey", "--json").json()
    assert show["id"] == rejected_id
    details = [event["detail"] for event in show["events"]]
    assert details[0] == "rejected at intake"
    assert details[1].startswith("redefined, created; the earlier definition was rejected: ")
    assert "data/survey.jsonl:5" in details[1]

    data.write_text(good + '{"custom_id": "survey-9"}\n')  # a job that ran keeps its name
    assert sum(run_daemon(project.config, migrate=False).values()) == 1
    assert _status(cli, project)["survey"] == after


def _cancelled(
    cli: CliRunner, project: Project, run_daemon: RunDaemon, name: str, size: int
) -> Path:
    """Submit a job of ``size`` requests, cancel it while queued, let the daemon end it."""
    data = write_input(project.root / "data" / f"{name}.jsonl", size, prefix=name)
    assert cli("migrate", "--config", project.config).code == 0
    flags = ("--model", "mistral-small-latest", "--endpoint", "/v1/chat/completions")
    submitted = cli("submit", "--config", project.config, "--name", name, "--input", data, *flags)
    assert submitted.code == 0, submitted.err
    assert cli("cancel", "--config", project.config, name).code == 0
    run_daemon(project.config)
    assert _status(cli, project)[name]["outcome"] == "cancelled"
    return data


def test_rerun_records_the_same_definition_under_the_next_free_name(
    cli: CliRunner, project: Project, run_daemon: RunDaemon
) -> None:
    """A cancelled job reruns as NAME.2, then NAME.3; --as names it; each runs once."""
    _cancelled(cli, project, run_daemon, "survey", 3)

    first = cli("rerun", "--config", project.config, "survey")
    assert first.code == 0, first.err
    assert first.out.startswith(
        "queued job 'survey.2', a rerun of 'survey' (done, cancelled): 3 requests for "
        "workspace 'main'"
    )
    second = cli("rerun", "--config", project.config, "survey", "--json")
    assert second.code == 0, second.err
    assert (second.json()["name"], second.json()["rerun_of"]) == ("survey.3", "survey")
    named = cli("rerun", "--config", project.config, "survey", "--as", "survey-again")
    assert named.code == 0, named.err

    assert sum(run_daemon(project.config, migrate=False).values()) == 3
    rows = _status(cli, project)
    for name in ("survey.2", "survey.3", "survey-again"):
        assert (rows[name]["state"], rows[name]["outcome"]) == ("done", "succeeded")
        assert rows[name]["succeeded"] == 3
    assert rows["survey"]["outcome"] == "cancelled", "the original is untouched"
    show = cli("show", "--config", project.config, "survey")
    assert "rerun as survey.2" in show.out and "rerun as survey-again" in show.out
    assert "rerun of survey" in cli("show", "--config", project.config, "survey.2").out

    again = cli("rerun", "--config", project.config, "survey.2")
    assert again.code == 2
    assert again.err == (
        "orchestrator: rerun: job 'survey.2' ended succeeded; nothing failed (--force runs it "
        "again anyway)\n"
    )
    forced = cli("rerun", "--config", project.config, "survey.2", "--force")
    assert forced.code == 0, forced.err
    assert "queued job 'survey.2.2'" in forced.out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("nope",), "rerun: no job 'nope' in the ledger: "),
        (("queued-one",), "rerun: job 'queued-one' is queued: only a final job can be rerun"),
        (("survey", "--as", "queued-one"), "rerun: --as: job name 'queued-one' is already in"),
        (("survey", "--as", "../x"), "rerun: --as: job name '../x' is not a safe name"),
    ],
)
def test_bad_reruns_change_nothing(
    cli: CliRunner,
    project: Project,
    run_daemon: RunDaemon,
    argv: tuple[str, ...],
    message: str,
) -> None:
    """Unknown, unfinished, taken or unsafe names: one line on stderr, exit 2, ledger as it was."""
    _cancelled(cli, project, run_daemon, "survey", 3)
    queued = write_input(project.root / "q.jsonl", 2)
    assert cli("submit", "--config", project.config, "--name", "queued-one", "--input", queued,
               "--model", "mistral-small-latest", "--endpoint", "/v1/chat/completions"
               ).code == 0  # fmt: skip
    before = _status(cli, project)
    result = cli("rerun", "--config", project.config, *argv)
    assert result.code == 2
    assert result.err.startswith(f"orchestrator: {message}")
    assert result.err.count("\n") == 1
    assert _status(cli, project) == before


def test_a_rerun_needs_the_inputs_the_job_ran_on(
    cli: CliRunner, project: Project, run_daemon: RunDaemon
) -> None:
    """Changed input contents are a new job, not a rerun: exit 2, nothing recorded."""
    data = _cancelled(cli, project, run_daemon, "survey", 3)
    write_input(data, 4)
    result = cli("rerun", "--config", project.config, "survey")
    assert result.code == 2
    assert result.err == (
        "orchestrator: rerun: job 'survey': its inputs are not what it ran on (input contents "
        "or split_requests changed since): that is a new job, so define it under a new name\n"
    )
    data.unlink()
    gone = cli("rerun", "--config", project.config, "survey")
    assert gone.code == 2 and "does not exist" in gone.err
    assert set(_status(cli, project)) == {"survey"}


def test_a_part_is_rerun_through_its_parent(
    cli: CliRunner, project: Project, run_daemon: RunDaemon
) -> None:
    """`rerun NAME/part-0001` says to rerun the whole job; the parent reruns split again."""
    project.extra = "split_requests = 2\n"
    project.write()
    _cancelled(cli, project, run_daemon, "big", 5)
    part = cli("rerun", "--config", project.config, "big/part-0001")
    assert part.code == 2
    assert part.err == (
        "orchestrator: rerun: job 'big/part-0001' is a part of 'big': rerun the whole job "
        "(`orchestrator rerun big`)\n"
    )
    whole = cli("rerun", "--config", project.config, "big", "--json")
    assert whole.code == 0, whole.err
    run_daemon(project.config, migrate=False)
    rows = _status(cli, project)
    assert (rows["big.2"]["state"], rows["big.2"]["outcome"]) == ("done", "succeeded")
    show = cli("show", "--config", project.config, "big.2", "--json").json()
    assert [p["name"] for p in show["parts"]] == [
        "big.2/part-0001",
        "big.2/part-0002",
        "big.2/part-0003",
    ]
