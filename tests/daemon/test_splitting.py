"""Split jobs end to end: parts through the whole machinery, a parent merged and finished."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import anyio
import httpx
import pytest

from orchestrator.cli import main
from orchestrator.clock import FakeClock
from orchestrator.config import Config
from orchestrator.daemon import Daemon, parts
from orchestrator.daemon.app import embedded_api_key
from orchestrator.emulator import Emulator
from orchestrator.fsutil import write_json_atomic
from orchestrator.ledger import SqlLedger
from orchestrator.model import Job, JobState, Outcome
from tests.daemon.conftest import (
    Crash,
    CrashingTransport,
    ObservingTransport,
    contains_crash,
    is_route,
    load,
    write_config,
)
from tests.daemon.test_crash_recovery import _run_until_crash

pytestmark = pytest.mark.anyio

MAIN = embedded_api_key("main")


def _split_config(folder: Path, size: int = 2500, *, budget: int = 1500, split: int = 1000) -> Path:
    return write_config(folder, [("big", size)], budget=budget, extra=f"split_requests = {split}")


async def _jobs(config: Config, clock: FakeClock) -> dict[str, Job]:
    async with await SqlLedger.connect(config.ledger.url, clock=clock) as ledger:
        return {job.name: job for job in await ledger.list_jobs()}


def _custom_ids(path: Path) -> list[str]:
    return [json.loads(line)["custom_id"] for line in path.read_bytes().splitlines()]


async def _assert_merged(config: Config, clock: FakeClock, emulator: Emulator, n: int) -> bytes:
    """The parent is done/succeeded with every request merged in input order; parts/ is gone."""
    jobs = await _jobs(config, clock)
    parent = jobs["big"]
    assert parent.state is JobState.DONE and parent.outcome is Outcome.SUCCEEDED, parent
    assert (parent.succeeded, parent.failed, parent.remote_id) == (n, 0, None)
    part_jobs = [job for name, job in sorted(jobs.items()) if job.parent_id == parent.id]
    assert len(part_jobs) == parent.part_count
    stats = emulator.workspace_stats(MAIN)
    for part in part_jobs:
        assert part.state is JobState.DONE and part.outcome is Outcome.SUCCEEDED
        assert stats["jobs_by_orchestrator_job_id"].get(part.client_token) == 1, stats
    assert stats["jobs_created"] == len(part_jobs)
    assert stats["max_pending"] <= 1500
    folder = config.results.dir / "big"
    assert sorted(p.name for p in folder.iterdir()) == ["job.json", "output.jsonl"]
    output = folder / "output.jsonl"
    assert _custom_ids(output) == [f"big-{i}" for i in range(n)]
    summary = json.loads((folder / "job.json").read_text())
    data = output.read_bytes()
    assert summary["files"]["output"] == {
        "path": "output.jsonl",
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "lines": n,
    }
    assert summary["remote_id"] is None and summary["outcome"] == "succeeded"
    assert [p["name"] for p in summary["parts"]] == [p.name for p in part_jobs]
    assert [p["remote_id"] for p in summary["parts"]] == [p.remote_id for p in part_jobs]
    assert sum(p["succeeded"] for p in summary["parts"]) == n
    return data


async def test_a_split_job_runs_in_parts_within_the_budget(
    tmp_path: Path, clock: FakeClock, emulator_factory: Callable[..., Emulator]
) -> None:
    """2,500 requests, parts of 1,000, budget 1,500: 3 parts, never over budget, one merge."""
    config = load(_split_config(tmp_path))
    emulator = emulator_factory()
    await Daemon(config, clock=clock, emulator=emulator).run(exit_when_idle=True, migrate=True)
    await _assert_merged(config, clock, emulator, 2500)
    jobs = await _jobs(config, clock)
    assert [jobs[f"big/part-000{i}"].request_count for i in (1, 2, 3)] == [1000, 1000, 500]
    assert jobs["big"].remote_status == "parts: 3 done"


def test_status_shows_the_parent_and_parts_only_on_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`status --json` lists the parent alone; `--parts` adds the parts with a parent field."""
    path = _split_config(tmp_path)
    config = load(path)

    async def run() -> None:
        clock = FakeClock(autojump=True)
        with Emulator(clock=clock) as emulator:
            await Daemon(config, clock=clock, emulator=emulator).run(
                exit_when_idle=True, migrate=True
            )

    anyio.run(run)
    capsys.readouterr()
    assert main(["status", "--config", str(path), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["name"] for row in rows] == ["big"]
    keys = {"name", "state", "outcome", "remote_id", "remote_status", "total", "succeeded"}
    keys |= {"failed", "pending", "error"}
    assert keys <= set(rows[0])
    assert (rows[0]["state"], rows[0]["outcome"], rows[0]["succeeded"]) == (
        "done",
        "succeeded",
        2500,
    )
    assert (rows[0]["pending"], rows[0]["part_count"]) == (0, 3)
    assert main(["status", "--config", str(path), "--json", "--parts"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["parent"] for row in rows] == [None, "big", "big", "big"]
    for row in rows:
        assert keys <= set(row)
    assert main(["show", "--config", str(path), "big"]) == 0
    shown = capsys.readouterr().out
    assert "big/part-0003  done, succeeded" in shown
    assert main(["status", "--config", str(path)]) == 0
    assert "part-0001" not in capsys.readouterr().out


async def test_too_large_for_the_budget_is_rejected_unless_split(
    tmp_path: Path, clock: FakeClock, emulator_factory: Callable[..., Emulator]
) -> None:
    """Without splitting a job over the budget is rejected as before; with it, it runs."""
    plain = load(write_config(tmp_path / "plain", [("big", 1600)], budget=1500))
    emulator = emulator_factory()
    await Daemon(plain, clock=clock, emulator=emulator).run(exit_when_idle=True, migrate=True)
    job = (await _jobs(plain, clock))["big"]
    assert job.state is JobState.REJECTED
    assert job.error is not None and "1,600 requests" in job.error and "1,500" in job.error
    split = load(_split_config(tmp_path / "split", 1600, split=1500))
    emulator = emulator_factory()
    await Daemon(split, clock=clock, emulator=emulator).run(exit_when_idle=True, migrate=True)
    await _assert_merged(split, clock, emulator, 1600)


async def test_crash_at_a_part_create_submits_each_part_once(
    tmp_path: Path, clock: FakeClock, emulator_factory: Callable[..., Emulator]
) -> None:
    """Dying right after the server created a part: a restart adopts it; one remote job each."""
    config = load(_split_config(tmp_path))
    emulator = emulator_factory()
    await _run_until_crash(
        config,
        clock,
        emulator,
        lambda inner: CrashingTransport(inner, when=is_route("POST", "/v1/batch/jobs")),
    )
    await Daemon(config, clock=clock, emulator=emulator).run(exit_when_idle=True)
    await _assert_merged(config, clock, emulator, 2500)


async def test_crash_mid_merge_redoes_it_with_the_same_bytes(
    tmp_path: Path,
    clock: FakeClock,
    emulator_factory: Callable[..., Emulator],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Dying after the merged output is published but before job.json: a restart redoes it."""
    config = load(_split_config(tmp_path))
    emulator = emulator_factory()

    def die(path: Path, obj: object) -> None:
        # A half-written merge of the next attempt must not survive either.
        (path.parent / "output.jsonl.part").write_bytes(b'{"half": ')
        raise Crash("killed while writing job.json")

    monkeypatch.setattr(parts, "write_json_atomic", die)
    with pytest.raises(BaseException) as died:
        await Daemon(config, clock=clock, emulator=emulator).run(exit_when_idle=True, migrate=True)
    assert contains_crash(died.value)
    jobs = await _jobs(config, clock)
    assert jobs["big"].state is JobState.COLLECTING
    assert (config.results.dir / "big" / "parts").is_dir()
    first = (config.results.dir / "big" / "output.jsonl").read_bytes()
    monkeypatch.setattr(parts, "write_json_atomic", write_json_atomic)
    await Daemon(config, clock=clock, emulator=emulator).run(exit_when_idle=True)
    assert await _assert_merged(config, clock, emulator, 2500) == first


async def test_cancel_of_a_parent_cancels_its_parts_and_merges_what_ran(
    tmp_path: Path, clock: FakeClock, emulator_factory: Callable[..., Emulator]
) -> None:
    """Cancel while one part runs and others wait: done/cancelled, partial output merged."""
    config = load(_split_config(tmp_path, 3000))
    emulator = emulator_factory()
    cancelled = False

    async def cancel_after_progress(request: httpx.Request, response: httpx.Response) -> None:
        # The first list that shows progress: the first part runs, the last one still waits.
        nonlocal cancelled
        if cancelled or request.method != "GET" or not request.url.path.endswith("/batch/jobs"):
            return
        listed = json.loads(await response.aread()).get("data", [])
        if any(job.get("completed_requests", 0) > 0 for job in listed):
            cancelled = True
            async with await SqlLedger.connect(config.ledger.url, clock=clock) as ledger:
                await ledger.request_cancel("big")

    daemon = Daemon(
        config,
        clock=clock,
        emulator=emulator,
        wrap_transport=lambda inner: ObservingTransport(inner, cancel_after_progress),
    )
    await daemon.run(exit_when_idle=True, migrate=True)
    jobs = await _jobs(config, clock)
    parent = jobs["big"]
    assert parent.state is JobState.DONE and parent.outcome is Outcome.CANCELLED
    part_jobs = [j for j in jobs.values() if j.parent_id == parent.id]
    assert all(j.state is JobState.DONE for j in part_jobs)
    assert any(j.remote_id is None for j in part_jobs), "a queued part was cancelled locally"
    assert any(j.remote_id is not None for j in part_jobs), "a part had started"
    assert parent.succeeded == sum(j.succeeded for j in part_jobs)
    folder = config.results.dir / "big"
    assert not (folder / "parts").exists()
    summary = json.loads((folder / "job.json").read_text())
    assert summary["outcome"] == "cancelled"
    merged = folder / "output.jsonl"
    lines = len(merged.read_bytes().splitlines()) if merged.exists() else 0
    assert lines == parent.succeeded > 0
