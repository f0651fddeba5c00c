"""Usage, cost and the spend limit through the CLI: status, show, budget, usage, check-config."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from orchestrator.clock import FakeClock
from orchestrator.config import load_config
from orchestrator.daemon import Daemon
from orchestrator.pricing import PER_TOKENS

from .conftest import CliRunner, Project, emulator, lines

PRICING = """
[pricing]
currency = "EUR"
batch_discount = 0.5
max_tokens = 100
[pricing.models."mistral-small-latest"]
input = 2.0
output = 6.0
"""


def _priced(project: Project, *, workspace_extra: str = "") -> None:
    project.extra = workspace_extra + "\n" + PRICING
    project.write()


def _json_file(path: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads(path.read_text(encoding="utf-8"))
    return data


def test_usage_and_cost_from_results(
    cli: CliRunner, project: Project, run_daemon: Callable[..., dict[str, int]]
) -> None:
    """A finished job's usage is its result lines' sum; cost is usage x prices x discount."""
    _priced(project)
    project.add_job("priced", 12)
    run_daemon(project.config)
    row = cli("status", "--config", project.config, "--json").json()[0]
    usage = row["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    expected = (usage["prompt_tokens"] * 2.0 + usage["completion_tokens"] * 6.0) / PER_TOKENS * 0.5
    assert row["cost"] == pytest.approx(expected, abs=1e-6)
    # The result file itself is the oracle: the sums over its lines' usage.
    output = project.root / "var" / "results" / "priced" / "output.jsonl"
    prompt = sum(
        json.loads(line)["response"]["body"]["usage"]["prompt_tokens"]
        for line in output.read_text(encoding="utf-8").splitlines()
    )
    assert usage["prompt_tokens"] == prompt
    summary = _json_file(project.root / "var" / "results" / "priced" / "job.json")
    assert summary["usage"] == {**usage, "lines_without_usage": 0}
    assert summary["cost"] == pytest.approx(expected, abs=1e-6)
    assert summary["currency"] == "EUR"

    shown = cli("show", "priced", "--config", project.config).out
    assert f"{usage['total_tokens']:,} tokens" in shown
    assert "EUR" in shown
    plain = cli("status", "--config", project.config).out
    assert "TOKENS" in plain and "COST" in plain

    table = cli("usage", "--config", project.config, "--json").json()
    assert table == [
        {
            "workspace": "main",
            "model": "mistral-small-latest",
            "month": "2026-01",
            "jobs": 1,
            **usage,
            "lines_without_usage": 0,
            "cost": pytest.approx(expected, abs=1e-6),
            "currency": "EUR",
        }
    ]
    assert cli("usage", "--config", project.config, "--month", "2026-02", "--json").json() == []
    text = cli("usage", "--config", project.config).out
    assert "mistral-small-latest" in text and "2026-01" in text
    bad = cli("usage", "--config", project.config, "--month", "2026-13")
    assert bad.code == 2 and "YYYY-MM" in bad.err


def test_no_price_means_null_cost_never_zero(
    cli: CliRunner, project: Project, run_daemon: Callable[..., dict[str, int]]
) -> None:
    """A model without a price: usage is known, cost is null (and `-` in the table)."""
    project.add_job("unpriced", 5)
    run_daemon(project.config)
    row = cli("status", "--config", project.config, "--json").json()[0]
    assert row["usage"]["total_tokens"] > 0
    assert row["cost"] is None
    assert row["cost_estimate"] is None
    summary = _json_file(project.root / "var" / "results" / "unpriced" / "job.json")
    assert summary["cost"] is None
    assert cli("usage", "--config", project.config, "--json").json()[0]["cost"] is None


def test_split_job_usage_is_the_sum_of_its_parts(
    cli: CliRunner, project: Project, run_daemon: Callable[..., dict[str, int]]
) -> None:
    """A split job's usage and cost are its parts' sums; the usage table counts them once."""
    _priced(project, workspace_extra="split_requests = 4")
    project.add_job("split", 10)
    run_daemon(project.config)
    rows = {
        r["name"]: r for r in cli("status", "--config", project.config, "--json", "--parts").json()
    }
    parent = rows["split"]
    parts = [row for name, row in rows.items() if name != "split"]
    assert len(parts) == 3
    for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
        assert parent["usage"][key] == sum(p["usage"][key] for p in parts)
    assert parent["cost"] == pytest.approx(sum(p["cost"] for p in parts), abs=1e-6)
    summary = _json_file(project.root / "var" / "results" / "split" / "job.json")
    assert summary["usage"]["total_tokens"] == parent["usage"]["total_tokens"]  # type: ignore[index]
    table = cli("usage", "--config", project.config, "--json").json()
    assert table[0]["jobs"] == 3
    assert table[0]["total_tokens"] == parent["usage"]["total_tokens"]


def _bounded_input(path: Path, n: int, prefix: str) -> Path:
    """Chat requests asking for at most 50 output tokens (what [pricing] max_tokens assumes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            body = {"messages": [{"role": "user", "content": f"{prefix} q {i}"}], "max_tokens": 50}
            f.write(json.dumps({"custom_id": f"{prefix}-{i}", "body": body}) + "\n")
    return path


MONTH_END = 1_769_896_800.0  # 2026-01-31T22:00:00Z: two hours before February


def _run_from(config: Path, start: float) -> dict[str, int]:
    """Run the daemon until idle on a fake clock that starts at ``start``."""
    clock = FakeClock(start=start, autojump=True)
    emu = emulator(clock)
    try:

        async def go() -> None:
            await Daemon(load_config(config), clock=clock, emulator=emu).run(
                exit_when_idle=True, migrate=True
            )

        anyio.run(go)
        return {name: ws["jobs_created"] for name, ws in emu.stats()["workspaces"].items()}
    finally:
        emu.close()


def test_spend_limit_holds_back_then_the_month_rolls_over(cli: CliRunner, project: Project) -> None:
    """One job's estimate fits a month, two do not: status, show and budget say who waits and
    how much is left; the daemon runs the first, then the second once the month rolls over."""
    project.extra = PRICING  # [pricing] max_tokens = 100: only for requests without a cap
    project.write()
    assert cli("migrate", "--config", project.config).code == 0
    for name in ("job-a", "job-b"):
        data = _bounded_input(project.root / "data" / f"{name}.jsonl", 10, name)
        argv = ["submit", "--config", project.config, "--name", name, "--input", data]
        argv += ["--model", "mistral-small-latest", "--endpoint", "/v1/chat/completions"]
        assert cli(*argv).code == 0
    first = cli("status", "--config", project.config, "--json").json()[0]
    estimate = first["cost_estimate"]
    # Each request's own max_tokens (50) is what the estimate prices as output.
    expected = (first["prompt_tokens"] * 2.0 + 10 * 50 * 6.0) / PER_TOKENS * 0.5
    assert estimate == pytest.approx(expected, abs=1e-6)
    limit = round(estimate * 1.5, 6)
    project.extra = f"spend_limit = {limit}\n" + project.extra
    project.write()

    rows = {r["name"]: r for r in cli("status", "--config", project.config, "--json").json()}
    assert rows["job-a"]["waits_for"] is None  # it fits: the daemon admits it at once
    assert rows["job-b"]["waits_for"] == "spend_limit"
    assert rows["job-b"]["spend_left"] == pytest.approx(limit - estimate, abs=1e-6)
    assert "waits for the spend limit" in cli("status", "--config", project.config).out
    assert "waits for the spend limit" in cli("show", "job-b", "--config", project.config).out
    (budget,) = cli("budget", "--config", project.config, "--json").json()
    assert budget["spend"]["waiting"] == "job-b"
    assert budget["spend"]["limit"] == pytest.approx(limit)
    assert "job 'job-b' waits for the spend limit" in cli("budget", "--config", project.config).out

    assert sum(_run_from(project.config, MONTH_END).values()) == 2
    table = cli("usage", "--config", project.config, "--json").json()
    assert [(row["month"], row["jobs"]) for row in table] == [("2026-01", 1), ("2026-02", 1)]
    for row in table:
        assert row["cost"] <= limit  # each month's actual cost stayed under its limit
    show = cli("show", "job-b", "--config", project.config, "--json").json()
    assert show["submitted_at"] >= "2026-02-01"


def test_check_config_prints_cost_estimates(cli: CliRunner, project: Project) -> None:
    """check-config prints each job's estimated cost, and says when one never fits."""
    _priced(project, workspace_extra="spend_limit = 0.001")
    project.add_job("small", 1)
    project.add_job("large", 50)
    result = cli("check-config", "--config", project.config)
    text = "\n".join(lines(result.out))
    assert "job 'small':" in text and "EUR" in text and "within the spend_limit" in text
    assert "job 'large':" in text and "the daemon rejects it" in text


@pytest.mark.parametrize(
    ("snippet", "key"),
    [
        ('[pricing.models."m"]\ninput = -1\noutput = 1\n', 'pricing.models."m".input'),
        ('[pricing.models."m"]\ninput = 1\noutput = 1\ncached = 2\n', 'pricing.models."m".cached'),
        ("[pricing]\nbatch_discount = 0\n", "pricing.batch_discount"),
        ("[pricing]\nbatch_discount = 1.5\n", "pricing.batch_discount"),
    ],
)
def test_bad_pricing_is_a_config_error(
    cli: CliRunner, project: Project, snippet: str, key: str
) -> None:
    """Negative prices, discounts outside (0, 1] and unknown keys name the key (exit 2)."""
    project.extra = snippet
    project.write()
    result = cli("check-config", "--config", project.config)
    assert result.code == 2
    assert key in result.err


def test_negative_spend_limit_is_a_config_error(cli: CliRunner, project: Project) -> None:
    """A negative spend_limit names workspaces.main.spend_limit."""
    project.extra = "spend_limit = -5"
    project.write()
    result = cli("status", "--config", project.config)
    assert result.code == 2 and "workspaces.main.spend_limit" in result.err
