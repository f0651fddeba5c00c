"""Every operator mistake: one readable line on stderr, the §9 exit code, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.conftest import CliRunner, Project, write_input


def _no_traceback(err: str) -> None:
    assert "Traceback" not in err
    assert 'File "' not in err


def test_missing_config_flag_is_a_usage_error(cli: CliRunner) -> None:
    """No --config and no ORCH_CONFIG: exit 2 with the hint to set either."""
    result = cli("status")
    assert result.code == 2
    assert result.err.endswith(
        "orchestrator status: error: the following arguments are required: --config/-c "
        "(or set ORCH_CONFIG)\n"
    )
    _no_traceback(result.err)


def test_orch_config_replaces_the_flag(
    cli: CliRunner, project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ORCH_CONFIG names the config when --config is absent."""
    monkeypatch.setenv("ORCH_CONFIG", str(project.config))
    result = cli("check-config")
    assert result.code == 0, result.err
    assert f"config {project.config}" in result.out


def test_config_file_not_found(cli: CliRunner, tmp_path: Path) -> None:
    """A config path that does not exist: exit 2, the file named."""
    missing = tmp_path / "nope.toml"
    result = cli("status", "--config", missing)
    assert result.code == 2
    assert result.err == f"orchestrator: config error: {missing}: config file not found\n"


def test_config_errors_name_file_and_dotted_key(cli: CliRunner, project: Project) -> None:
    """An unknown key, a bad type, an unknown workspace: file and dotted key in one line."""
    project.extra = "pending_budgte = 5\n"
    project.write()
    result = cli("check-config", "--config", project.config)
    assert result.code == 2
    assert result.err == (
        f"orchestrator: config error: {project.config}: workspaces.main.pending_budgte: "
        "unknown key 'pending_budgte'; did you mean 'pending_budget'?\n"
    )
    project.extra = ""
    project.jobs = [
        '[[jobs]]\nname = "x"\nworkspace = "other"\ninput = "a.jsonl"\n'
        'model = "m"\nendpoint = "/v1/chat/completions"\n'
    ]
    project.write()
    result = cli("run", "--config", project.config)
    assert result.code == 2
    assert result.err.startswith(
        f"orchestrator: config error: {project.config}: jobs[0].workspace: "
        "unknown workspace 'other'"
    )
    project.jobs = [
        '[[jobs]]\nname = "../etc"\nworkspace = "main"\ninput = "a.jsonl"\n'
        'model = "m"\nendpoint = "/v1/chat/completions"\n'
    ]
    project.write()
    result = cli("status", "--config", project.config)
    assert result.code == 2
    assert f"{project.config}: jobs[0].name: job name '../etc' is not a safe name" in result.err
    _no_traceback(result.err)


def test_bad_environment_override_names_the_variable(
    cli: CliRunner, project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bad ORCH_* value is an error naming the variable."""
    monkeypatch.setenv("ORCH_HTTP_LISTEN", "nowhere")
    result = cli("status", "--config", project.config)
    assert result.code == 2
    assert result.err.startswith("orchestrator: config error: environment: ORCH_HTTP_LISTEN: ")
    monkeypatch.delenv("ORCH_HTTP_LISTEN")
    monkeypatch.setenv("ORCH_LOG_LEVEL", "loud")
    result = cli("status", "--config", project.config)
    assert result.code == 2
    assert result.err == (
        "orchestrator: environment: ORCH_LOG_LEVEL: expected one of DEBUG, INFO, WARNING, "
        "ERROR, got 'loud'\n"
    )


def test_ledger_that_does_not_exist_says_how_to_create_it(cli: CliRunner, project: Project) -> None:
    """status/show/cancel/results/budget/submit before any migrate: exit 1 with the command."""
    ledger = project.root / "var" / "ledger.db"
    data = write_input(project.root / "in.jsonl", 2)
    expected = (
        f"orchestrator: the ledger {ledger} does not exist yet: create it with `orchestrator "
        f"migrate --config {project.config}` (or start the daemon with `orchestrator run "
        f"--config {project.config} --migrate`)\n"
    )
    for argv in (
        ["status"],
        ["show", "x"],
        ["cancel", "x"],
        ["results", "x"],
        ["budget"],
        [
            "submit",
            "--name",
            "x",
            "--input",
            data,
            "--model",
            "m",
            "--endpoint",
            "/v1/chat/completions",
        ],
    ):
        result = cli(*argv, "--config", project.config)
        assert (result.code, result.err) == (1, expected), argv
    assert not ledger.exists(), "reading must not create the ledger"


def test_unknown_job_name_is_exit_1_with_a_hint(cli: CliRunner, project: Project) -> None:
    """show/cancel/results of an unknown name: the close names and how to list them."""
    project.add_job("cheese-survey", 3)
    assert cli("migrate", "--config", project.config).code == 0
    data = project.root / "data" / "cheese-survey.jsonl"
    submit = ["submit", "--config", project.config, "--model", "mistral-small-latest"]
    submit += ["--endpoint", "/v1/chat/completions", "--input", data, "--name", "cheese-survey"]
    assert cli(*submit).code == 0
    for command in ("show", "cancel", "results"):
        result = cli(command, "cheese", "--config", project.config)
        assert result.code == 1
        assert result.err == (
            "orchestrator: no job 'cheese' in the ledger: did you mean 'cheese-survey'? "
            f"`orchestrator status --config {project.config}` lists the 1 jobs\n"
        )
        assert result.out == ""
    result = cli("show", "zzz", "--config", project.config)
    assert "did you mean" not in result.err


def test_unknown_name_in_an_empty_ledger(cli: CliRunner, project: Project) -> None:
    """The hint says the ledger is empty rather than pointing at `status`."""
    assert cli("migrate", "--config", project.config).code == 0
    result = cli("show", "x", "--config", project.config)
    assert (result.code, result.err) == (
        1,
        "orchestrator: no job 'x' in the ledger: the ledger holds no job yet\n",
    )


def test_ledger_at_an_old_schema_says_to_migrate(cli: CliRunner, project: Project) -> None:
    """A ledger file that exists but was never migrated: the migrate command is named."""
    ledger = project.root / "var" / "ledger.db"
    ledger.parent.mkdir(parents=True)
    ledger.write_bytes(b"")
    result = cli("status", "--config", project.config)
    assert result.code == 1
    assert "is at schema revision none, expected" in result.err
    assert "run `orchestrator migrate --config FILE` (or `run --migrate`)" in result.err
    assert f"(config {project.config}, ledger sqlite:///{ledger})" in result.err
    _no_traceback(result.err)


def test_bad_subcommand_and_bad_flag_values(cli: CliRunner, project: Project) -> None:
    """Usage errors: exit 2 with argparse's one line, never a traceback."""
    result = cli("statsu")
    assert result.code == 2
    assert "invalid choice: 'statsu'" in result.err
    result = cli("status", "--config", project.config, "--state", "sleeping")
    assert result.code == 2
    assert "argument --state: invalid choice: 'sleeping'" in result.err
    result = cli("status", "--config", project.config, "--log-level", "chatty")
    assert result.code == 2
    assert "expected one of DEBUG, INFO, WARNING, ERROR, got 'chatty'" in result.err
    _no_traceback(result.err)


def test_help_lists_the_environment_overrides(cli: CliRunner) -> None:
    """--help (top level and per command) documents every ORCH_* variable."""
    for argv in (["--help"], ["run", "--help"], ["status", "--help"], ["submit", "--help"]):
        result = cli(*argv)
        assert result.code == 0
        for name in (
            "ORCH_CONFIG",
            "ORCH_LEDGER_URL",
            "ORCH_RESULTS_DIR",
            "ORCH_JOBS_DIR",
            "ORCH_HTTP_LISTEN",
            "ORCH_LOG_LEVEL",
        ):
            assert name in result.out, (argv, name)
    assert "exit codes: 0 success, 2 usage or configuration error" in cli("--help").out
