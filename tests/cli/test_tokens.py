"""Token budgets on the operator's surface: check-config, status and budget."""

from __future__ import annotations

import json

from orchestrator.inputs import estimate_tokens
from tests.cli.conftest import CliRunner, Project

MODEL = "mistral-small-latest"


def test_check_config_status_and_budget_show_prompt_tokens(
    cli: CliRunner, project: Project
) -> None:
    """check-config estimates each job and says whether it can fit; status and budget show
    the estimates recorded at intake."""
    project.extra = f'[workspaces.main.token_budgets]\n"{MODEL}" = 100\n'
    small = project.add_job("small", 2)
    project.add_job("large", 30)
    estimate = sum(estimate_tokens(json.loads(line)) for line in small.read_text().splitlines())
    check = cli("check-config", "--config", project.config)
    assert check.code == 2
    assert f"~{estimate:,} prompt tokens (estimated), within the token budget of 100" in check.out
    assert f"ERROR: can never fit the token budget of {MODEL} in workspace 'main' (100 " in (
        check.out
    )
    assert cli("migrate", "--config", project.config).code == 0
    assert cli("submit", "--config", project.config, "--name", "extra", "--workspace", "main",
               "--model", MODEL, "--endpoint", "/v1/chat/completions",
               "--input", str(small)).code == 0  # fmt: skip
    rows = {row["name"]: row for row in cli("status", "--config", project.config, "--json").json()}
    assert rows["extra"]["prompt_tokens"] == estimate
    budget = cli("budget", "--config", project.config, "--json").json()
    assert budget[0]["tokens"] == [{"model": MODEL, "in_flight": 0, "budget": 100, "free": 100}]
    text = cli("budget", "--config", project.config).out
    assert f"main: {MODEL}: 0 prompt tokens in flight (estimated), token budget 100" in text
