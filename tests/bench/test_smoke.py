"""Each benchmark harness runs end to end at a toy size and reports sensible figures."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from bench import api_calls, budget_use, downloads, intake_upload, retry_merge, scale
from tests.bench.conftest import needs_curl

Runner = Callable[..., tuple[str, dict[str, Any]]]


def test_api_calls_compares_the_daemon_with_the_documented_loop(run_harness: Runner) -> None:
    """Three short jobs: the naive loop spends more calls, every delay is measured."""
    report, figures = run_harness(
        api_calls.main, "--jobs", "3", "--shortest", "60", "--longest", "300",
        "--validation", "20", "--throughput", "0.2",
    )  # fmt: skip
    assert "API calls by route" in report
    daemon = api_calls.total_calls(figures["daemon"]["calls"])
    naive = api_calls.total_calls(figures["naive"]["calls"])
    assert naive > daemon >= 3 * 4  # upload, create, a poll and a download per job at least
    for side in ("daemon", "naive"):
        assert len(figures[side]["outcomes"]) == 3
        assert all(o["on_disk"] >= o["detected"] >= o["end"] for o in figures[side]["outcomes"])
    assert figures["remote_end_gap"] <= 1.0


def test_api_calls_runs_openais_loop_on_the_openai_wire(run_harness: Runner) -> None:
    """Three short jobs on OpenAI's wire: the naive loop polls, the daemon lists, both finish."""
    report, figures = run_harness(
        api_calls.main, "--dialect", "openai", "--jobs", "3", "--shortest", "60", "--longest",
        "300", "--validation", "20", "--throughput", "0.2", "--naive-interval", "2",
    )  # fmt: skip
    assert "Dialect: openai" in report
    assert "sleeping 2 s between two polls" in report
    daemon, naive = figures["daemon"]["calls"], figures["naive"]["calls"]
    assert api_calls.total_calls(naive) > api_calls.total_calls(daemon)
    for calls in (daemon, naive):
        assert sum(calls["jobs.create"].values()) == sum(calls["files.upload"].values()) == 3
    assert sum(naive["jobs.get"].values()) > 3 * 20  # every 2 s from creation to the end
    assert figures["daemon"]["poll_cycles"] >= 1
    for side in ("daemon", "naive"):
        assert all(o["on_disk"] >= o["detected"] >= o["end"] for o in figures[side]["outcomes"])
    assert figures["remote_end_gap"] <= 1.0


def test_api_calls_counts_list_calls_with_old_batches(run_harness: Runner) -> None:
    """Old finished batches first, the daemon alone: their calls are not the daemon's."""
    report, figures = run_harness(
        api_calls.main, "--dialect", "openai", "--jobs", "2", "--shortest", "60", "--longest",
        "120", "--validation", "20", "--throughput", "0.2", "--old-batches", "120",
        "--no-naive",
    )  # fmt: skip
    assert "120 finished one-request batches" in report
    assert "naive" not in figures
    calls = figures["daemon"]["calls"]
    assert sum(calls["jobs.create"].values()) == 2
    lists = sum(calls["jobs.list"].values())
    assert figures["daemon"]["poll_cycles"] >= 1
    assert lists >= figures["daemon"]["poll_cycles"]
    assert "list calls per cycle" in report


def test_api_calls_runs_anthropics_loop_on_the_anthropic_wire(run_harness: Runner) -> None:
    """Three short jobs on Anthropic's wire: no upload on either side, the creates carry the
    requests; the naive loop retrieves until ended, the daemon lists; both read the results."""
    report, figures = run_harness(
        api_calls.main, "--dialect", "anthropic", "--jobs", "3", "--shortest", "60",
        "--longest", "300", "--validation", "20", "--throughput", "0.2", "--naive-interval", "2",
    )  # fmt: skip
    assert "Dialect: anthropic" in report and "until `ended`" in report
    daemon, naive = figures["daemon"]["calls"], figures["naive"]["calls"]
    assert api_calls.total_calls(naive) > api_calls.total_calls(daemon)
    for calls in (daemon, naive):
        assert sum(calls["jobs.create"].values()) == sum(calls["files.content"].values()) == 3
        assert "files.upload" not in calls
    assert sum(naive["jobs.get"].values()) > 3 * 20
    for side in ("daemon", "naive"):
        assert all(o["on_disk"] >= o["detected"] >= o["end"] for o in figures[side]["outcomes"])
    assert figures["remote_end_gap"] <= 1.0


def test_api_calls_refuses_openai_jobs_over_the_batch_limit() -> None:
    """A workload whose longest job exceeds OpenAI's 50,000 requests a batch is refused."""
    with pytest.raises(SystemExit):
        api_calls.main(["--dialect", "openai", "--throughput", "1"])


def test_budget_use_runs_the_daemon_with_a_token_budget(run_harness: Runner) -> None:
    """An OpenAI workspace bound by tokens: within budget, no batch refused by the provider."""
    report, figures = run_harness(
        budget_use.main, "--jobs", "3", "--scale", "0.0005", "--rate", "4000", "--validation",
        "5", "--token-budget", "20000000", "--split", "100000",
    )  # fmt: skip
    assert "of the token budget" in report
    tokens = figures["daemon"]["tokens"]
    assert tokens["budget"] == 10_000
    assert 0 < tokens["utilisation"] <= 1
    assert tokens["provider_limit"] == tokens["budget"]
    assert 0 < tokens["max_enqueued"] <= tokens["budget"]
    assert tokens["refusals"] == 0
    assert tokens["provider_counted"] < tokens["estimated"]  # our estimate is conservative
    assert figures["daemon"]["batch_jobs"] > 3


def test_budget_use_runs_the_daemon_and_the_models(run_harness: Runner) -> None:
    """A four-job backlog: the real run and every model report a share of the budget."""
    report, figures = run_harness(
        budget_use.main, "--jobs", "4", "--scale", "0.001", "--rate", "2000", "--validation", "5"
    )
    assert "the daemon** (real run" in report
    assert 0 < figures["daemon"]["utilisation"] <= 1
    assert figures["daemon"]["max_pending"] <= figures["daemon"]["budget"]
    assert figures["daemon"]["refused_creates"] == 0
    assert {m["rule"] for m in figures["models"]} >= {"head-of-line", "easy-backfill"}
    assert all(0 < m["utilisation"] <= 1 for m in figures["models"])


def test_budget_use_runs_the_daemon_with_splitting(run_harness: Runner) -> None:
    """The same backlog split by the daemon: more batch jobs than jobs, never over budget."""
    report, figures = run_harness(
        budget_use.main, "--jobs", "4", "--scale", "0.001", "--rate", "2000", "--validation",
        "5", "--split", "100000",
    )  # fmt: skip
    daemon = figures["daemon"]
    assert "split_requests = 100,000" in report
    assert daemon["split"] == 100
    assert daemon["batch_jobs"] > 4
    assert 0 < daemon["utilisation"] <= 1
    assert daemon["max_pending"] <= daemon["budget"]
    assert daemon["refused_creates"] == 0


@needs_curl
def test_downloads_compares_curl_and_the_daemon_path(run_harness: Runner) -> None:
    """A 0.2 MB file: both clients download every byte; the child reports its memory."""
    report, figures = run_harness(downloads.main, "--sizes-mb", "0.2", "--runs", "1", "--no-daemon")
    assert "Ratios of medians" in report
    (entry,) = figures["sizes"].values()
    (daemon,) = entry["runs"]["daemon"]
    assert daemon["bytes"] == entry["bytes"] == entry["runs"]["curl_file"][0]["bytes"]
    assert 0 < daemon["peak_rss_mib"] < 500


@needs_curl
def test_intake_upload_compares_wc_curl_and_the_daemon(run_harness: Runner) -> None:
    """A 1,000-line input: validation counts every line; both uploads send the whole file."""
    report, figures = run_harness(intake_upload.main, "--lines", "1000", "--runs", "1")
    assert "validation / wc -l" in report
    runs = figures["sizes"]["1000"]["runs"]
    assert runs["wc"][0]["lines"] == runs["validate"][0]["requests"] == 1000
    assert runs["upload"][0]["bytes"] == figures["sizes"]["1000"]["bytes"]
    assert runs["curl_sink"][0]["sent"] >= figures["sizes"]["1000"]["bytes"]


def test_scale_measures_poll_cycles_of_a_real_daemon(run_harness: Runner) -> None:
    """Twenty jobs, two running: the daemon polls them and the cycle costs are reported."""
    report, figures = run_harness(scale.main, "--sizes", "20", "--cycles", "2", "--interval", "0.1")
    assert "jobs in ledger" in report
    entry = figures["sizes"]["20"]
    assert entry["active"] == 2
    assert entry["cycles"] == entry["polled"] == 2
    assert entry["api_calls_per_cycle"] >= 1
    assert entry["cpu_per_cycle"] > 0


def test_retry_merge_memory_stays_flat(run_harness: Runner) -> None:
    """The retry passes at two toy sizes: counts right, peak RSS not growing with lines."""
    report, figures = run_harness(retry_merge.main, "--sizes", "1000,20000")
    assert "peak RSS" in report
    small, large = figures["runs"]
    assert (small["retry_lines"], large["retry_lines"]) == (100, 2000)
    assert large["output_lines"] + large["error_lines"] == 20_000
    assert large["error_lines"] == 20_000 // 50  # the 422s; every 500 succeeded by attempt 3
    assert large["peak_rss_mib"] - small["peak_rss_mib"] < 16
