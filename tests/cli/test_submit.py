"""`orchestrator submit`: every flag checked like a [[jobs]] table, then a daemon runs the job."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cli.conftest import CliRunner, Project, write_input

CHAT = "/v1/chat/completions"


def submit(
    project: Project, name: str, *inputs: Path | str, **flags: str | list[str]
) -> list[str | Path]:
    """The argv of a submit of a chat job."""
    argv: list[str | Path] = ["submit", "--config", project.config, "--name", name]
    for path in inputs:
        argv += ["--input", path]
    argv += ["--model", str(flags.pop("model", "mistral-small-latest"))]
    argv += ["--endpoint", str(flags.pop("endpoint", CHAT))]
    for flag, value in flags.items():
        for item in value if isinstance(value, list) else [value]:
            argv += [f"--{flag.replace('_', '-')}", item]
    return argv


@pytest.fixture
def migrated(cli: CliRunner, project: Project) -> Project:
    """A project whose ledger exists."""
    assert cli("migrate", "--config", project.config).code == 0
    return project


def test_submit_queues_then_a_daemon_run_completes_it(
    cli: CliRunner, migrated: Project, run_daemon: Callable[..., dict[str, int]]
) -> None:
    """Submit records a queued job; the next daemon run submits it once and collects it."""
    data = write_input(migrated.root / "extra.jsonl", 7)
    result = cli(*submit(migrated, "extra", data, metadata=["team=research", "run=3"]))
    assert result.code == 0, result.err
    assert "queued job 'extra': 7 requests for workspace 'main' (ledger id 1)" in result.out
    assert "if none runs, `orchestrator run` will" in result.out
    (row,) = cli("status", "--config", migrated.config, "--json").json()
    assert (row["name"], row["state"], row["total"], row["pending"]) == ("extra", "queued", 7, 0)

    created = run_daemon(migrated.config)
    assert sum(created.values()) == 1
    (row,) = cli("status", "--config", migrated.config, "--json").json()
    assert (row["state"], row["outcome"], row["succeeded"]) == ("done", "succeeded", 7)
    detail = cli("show", "extra", "--config", migrated.config, "--json").json()
    assert detail["metadata"] == {"team": "research", "run": "3"}
    assert detail["inputs"] == [str(data)]


def test_submit_twice_is_a_no_op_and_a_changed_definition_is_refused(
    cli: CliRunner, migrated: Project
) -> None:
    """Same definition: exit 0, nothing new. Other model or input: exit 1, job untouched."""
    data = write_input(migrated.root / "a.jsonl", 3)
    assert cli(*submit(migrated, "a", data)).code == 0
    again = cli(*submit(migrated, "a", data, priority="5"))  # priority is not identity
    assert again.code == 0
    assert again.out.startswith(
        "job 'a' is already in the ledger with this definition (queued): nothing to do"
    )
    other = cli(*submit(migrated, "a", data, model="mistral-large-latest"))
    assert other.code == 1
    assert other.err == (
        "orchestrator: job 'a' is already in the ledger with a different definition (model "
        "changed); the existing job (queued) is untouched: give the new definition another "
        "name (a name stays taken by a queued, running, finished or cancelled job; "
        "`orchestrator rerun NAME` runs a final job again)\n"
    )
    write_input(data, 4)
    changed = cli(*submit(migrated, "a", data))
    assert changed.code == 1
    assert "(input contents changed)" in changed.err
    (row,) = cli("status", "--config", migrated.config, "--json").json()
    assert (row["name"], row["requests"], row["state"]) == ("a", 3, "queued")


def test_submit_json_reports_created(cli: CliRunner, migrated: Project) -> None:
    """--json prints the status object plus whether the job was created."""
    data = write_input(migrated.root / "a.jsonl", 2)
    first = cli(*submit(migrated, "a", data), "--json").json()
    second = cli(*submit(migrated, "a", data), "--json").json()
    assert first["created"] is True and second["created"] is False
    assert first["state"] == "queued" and first["requests"] == 2


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            {"name": "../up"},
            "--name: job name '../up' is not a safe name: it becomes a directory name, so it "
            "must be 1-128 characters of letters, digits, '.', '_' or '-', and not '.' or '..'",
        ),
        ({"workspace": "mian"}, "--workspace: unknown workspace 'mian'; did you mean 'main'?"),
        ({"metadata": ["team"]}, "--metadata: expected KEY=VALUE, got 'team'"),
        (
            {"metadata": ["a=1", "a=2"]},
            "--metadata: key 'a' is given twice; give each key once",
        ),
        (
            {"metadata": ["orchestrator_job_id=1"]},
            "--metadata: orchestrator_job_id: 'orchestrator_job_id' is reserved: the "
            "orchestrator sets it to the ledger's job token (crash recovery finds the remote "
            "job by it); use another key",
        ),
        ({"metadata": ["k="]}, "--metadata: k: metadata values must be 1-512 characters"),
        ({"timeout_hours": "200"}, "--timeout-hours: must be between 1 and 168, got 200"),
        ({"priority": str(2**31)}, "--priority: must be between -2,147,483,648 and"),
        (
            {"endpoint": "/v1/chat"},
            "--endpoint: '/v1/chat' is not a mistral batch endpoint; use one of "
            "/v1/chat/completions,",
        ),
    ],
)
def test_submit_flag_errors_name_the_flag(
    cli: CliRunner, migrated: Project, flags: dict[str, str | list[str]], message: str
) -> None:
    """A bad flag is exit 2 with `orchestrator submit: --flag: what is wrong`."""
    data = write_input(migrated.root / "a.jsonl", 2)
    name = str(flags.pop("name", "a"))
    result = cli(*submit(migrated, name, data, **flags))
    assert result.code == 2
    assert result.err.startswith(f"orchestrator: config error: orchestrator submit: {message}")
    assert cli("status", "--config", migrated.config, "--json").json() == []


def test_submit_needs_workspace_when_there_are_several(cli: CliRunner, migrated: Project) -> None:
    """Two workspaces and no --workspace: exit 2 naming them."""
    migrated.extra = '[workspaces.other]\nbase_url = "embedded"\n'
    migrated.write()
    data = write_input(migrated.root / "a.jsonl", 2)
    result = cli(*submit(migrated, "a", data))
    assert result.err == (
        "orchestrator: config error: orchestrator submit: --workspace: required: the config "
        "defines several workspaces (main, other): say which one runs the job\n"
    )
    assert cli(*submit(migrated, "a", data, workspace="other")).code == 0


def test_submit_missing_input_names_the_file(cli: CliRunner, migrated: Project) -> None:
    """A missing --input: exit 2, the path named, nothing recorded."""
    result = cli(*submit(migrated, "a", "nope.jsonl"))
    assert result.code == 2
    missing = Path.cwd() / "nope.jsonl"
    assert result.err.endswith(
        f"orchestrator: submit: orchestrator submit: --input: input file {missing} does not "
        "exist: the job is rejected and nothing was uploaded\n"
    )
    assert cli("status", "--config", migrated.config, "--json").json() == []


def test_submit_invalid_lines_are_reported_and_nothing_is_recorded(
    cli: CliRunner, migrated: Project
) -> None:
    """Bad lines: file:line for each, exit 2, no job; once fixed, the same name is accepted."""
    data = migrated.root / "bad.jsonl"
    good = json.dumps({"custom_id": "a", "body": {"messages": [{"role": "user"}]}})
    data.write_text(good + "\nnot json\n" + json.dumps({"custom_id": "a", "body": {}}) + "\n")
    result = cli(*submit(migrated, "bad", data))
    assert result.code == 2
    assert f"  {data}:2: not valid JSON: Expecting value at column 1\n" in result.err
    assert f"  {data}:3: missing: required by {CHAT} (body.messages)\n" in result.err
    assert f"  {data}:3: duplicate 'a', first used on line 1 (custom_id)\n" in result.err
    assert result.err.splitlines()[-1] == (
        f"orchestrator: submit: invalid batch input for {CHAT} in {data}: 3 problems; the job "
        "is rejected and nothing was uploaded"
    )
    assert cli("status", "--config", migrated.config, "--json").json() == []
    data.write_text(good + "\n")
    assert cli(*submit(migrated, "bad", data)).code == 0


def test_submit_refuses_a_name_the_config_defines_otherwise(
    cli: CliRunner, migrated: Project
) -> None:
    """A config job of that name with another definition: exit 2, the config place named."""
    migrated.add_job("survey", 2)
    other = write_input(migrated.root / "other.jsonl", 2)
    result = cli(*submit(migrated, "survey", other))
    assert result.code == 2
    assert result.err == (
        f"orchestrator: orchestrator submit: --name: job name 'survey' is defined in "
        f"{migrated.config}: jobs[0] with another definition: submit under another name (or "
        "edit the config instead)\n"
    )
    # The same definition as the config's is fine: it is the same job.
    same = cli(*submit(migrated, "survey", migrated.root / "data" / "survey.jsonl"))
    assert same.code == 0, same.err
