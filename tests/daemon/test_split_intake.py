"""Intake of split jobs: identity, part files, per-job overrides and config errors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from orchestrator.cli import main
from orchestrator.clock import FakeClock
from orchestrator.config import Config
from orchestrator.daemon.intake import Intake
from orchestrator.daemon.parts import write_part_inputs
from orchestrator.daemon.waker import Waker
from orchestrator.inputs import estimate_tokens
from orchestrator.ledger import SqlLedger
from orchestrator.ledger.migrate import upgrade
from orchestrator.model import JobState
from tests.daemon.conftest import load, write_chat_input, write_config

pytestmark = pytest.mark.anyio


async def _scan(config: Config, clock: FakeClock) -> tuple[int, list[str]]:
    """One intake pass by a fresh process (nothing cached); returns (added, error events)."""
    await upgrade(config.ledger.url)
    async with await SqlLedger.connect(config.ledger.url, clock=clock) as ledger:
        intake = Intake(
            config=config, ledger=ledger, clock=clock, waker=Waker(clock), on_new_job=lambda j: None
        )
        with capture_logs() as logs:
            added = await intake.scan()
    return added, [str(e["error"]) for e in logs if e["log_level"] == "error"]


def _inputs(config: Config) -> list[Path]:
    return sorted((config.results.dir / "big" / "parts").glob("*/input.jsonl"))


async def test_parts_hold_the_input_in_order_and_a_rescan_is_a_no_op(
    tmp_path: Path, clock: FakeClock
) -> None:
    """Parts of <= split lines, byte for byte in order; rescanning neither adds nor rewrites."""
    config = load(write_config(tmp_path, [("big", 2500)], extra="split_requests = 1000"))
    assert await _scan(config, clock) == (1, [])
    written = _inputs(config)
    assert [p.parent.name for p in written] == ["0001", "0002", "0003"]
    source = (tmp_path / "data" / "big.jsonl").read_bytes()
    assert b"".join(p.read_bytes() for p in written) == source
    assert [len(p.read_bytes().splitlines()) for p in written] == [1000, 1000, 500]
    stamps = [(p.stat().st_ino, p.stat().st_mtime_ns) for p in written]
    assert await _scan(config, clock) == (0, [])
    assert [(p.stat().st_ino, p.stat().st_mtime_ns) for p in _inputs(config)] == stamps
    async with await SqlLedger.connect(config.ledger.url, clock=clock) as ledger:
        parent = await ledger.get_by_name("big")
        parts = await ledger.parts(parent.id)
    assert [p.inputs for p in parts] == [(str(p),) for p in written]


async def test_a_crash_before_the_insert_rewrites_the_parts(
    tmp_path: Path, clock: FakeClock
) -> None:
    """Stale part files without a ledger row (a crash) are replaced at the next intake."""
    config = load(write_config(tmp_path, [("big", 1500)], extra="split_requests = 1000"))
    stale = config.results.dir / "big" / "parts" / "0007" / "input.jsonl"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"left by a crash\n")
    assert await _scan(config, clock) == (1, [])
    assert [p.parent.name for p in _inputs(config)] == ["0001", "0002"]


async def test_existing_jobs_keep_their_identity_when_splitting_is_enabled(
    tmp_path: Path, clock: FakeClock
) -> None:
    """A ledger's job smaller than the new part size is still the same job on rescan."""
    config = load(write_config(tmp_path, [("small", 500)]))
    assert await _scan(config, clock) == (1, [])
    config = load(write_config(tmp_path, [("small", 500)], extra="split_requests = 1000"))
    assert await _scan(config, clock) == (0, [])


async def test_a_job_recorded_whole_stays_whole_when_splitting_is_enabled(
    tmp_path: Path, clock: FakeClock
) -> None:
    """A job recorded before its workspace split jobs is not split (nor a conflict) later."""
    config = load(write_config(tmp_path, [("big", 2500)]))
    assert await _scan(config, clock) == (1, [])
    config = load(write_config(tmp_path, [("big", 2500)], extra="split_requests = 1000"))
    assert await _scan(config, clock) == (0, [])
    assert _inputs(config) == []
    async with await SqlLedger.connect(config.ledger.url, clock=clock) as ledger:
        (job,) = await ledger.list_jobs()
    assert (job.part_count, job.request_count, job.state) == (0, 2500, JobState.QUEUED)


async def test_changing_the_part_size_is_a_different_definition(
    tmp_path: Path, clock: FakeClock
) -> None:
    """Another split_requests for a recorded split job is refused; the job stays as it was."""
    config = load(write_config(tmp_path, [("big", 2500)], extra="split_requests = 1000"))
    assert await _scan(config, clock) == (1, [])
    config = load(write_config(tmp_path, [("big", 2500)], extra="split_requests = 500"))
    added, errors = await _scan(config, clock)
    assert added == 0
    assert len(errors) == 1 and "different definition" in errors[0]
    assert "split_requests" in errors[0]
    assert len(_inputs(config)) == 3


async def test_a_job_can_override_or_disable_the_workspace_part_size(
    tmp_path: Path, clock: FakeClock
) -> None:
    """split_requests in [[jobs]] wins over the workspace's; 0 turns splitting off."""
    path = write_config(tmp_path, [("big", 2500), ("whole", 1200)], extra="split_requests = 1000")
    text = (
        path.read_text()
        .replace('name = "big"', 'name = "big"\nsplit_requests = 2000')
        .replace('name = "whole"', 'name = "whole"\nsplit_requests = 0')
    )
    path.write_text(text)
    config = load(path)
    assert await _scan(config, clock) == (2, [])
    async with await SqlLedger.connect(config.ledger.url, clock=clock) as ledger:
        big = await ledger.get_by_name("big")
        whole = await ledger.get_by_name("whole")
        assert [p.request_count for p in await ledger.parts(big.id)] == [2000, 500]
    assert (whole.part_count, whole.state) == (0, JobState.QUEUED)


@pytest.mark.parametrize(
    ("where", "value", "message"),
    [
        ("workspace", "2000", "more than the workspace's pending_budget (1,500)"),
        ("workspace", "-1", "must be at least 0"),
        ("workspace", '"1000"', "expected an integer"),
        ("job", "2000", "more than the workspace's pending_budget (1,500)"),
        ("job", "-1", "must be at least 0"),
        ("job", "1.5", "expected an integer"),
    ],
)
def test_bad_part_sizes_are_config_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str, value: str, message: str
) -> None:
    """check-config exits 2 and names the file and key of a bad split_requests."""
    if where == "workspace":
        path = write_config(tmp_path, [("big", 10)], budget=1500, extra=f"split_requests = {value}")
        key = "workspaces.main.split_requests"
    else:
        path = write_config(tmp_path, [("big", 10)], budget=1500)
        path.write_text(path.read_text() + f"split_requests = {value}\n")
        key = "jobs[0].split_requests"
    assert main(["check-config", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and key in err and message in err, err


def test_check_config_reports_the_parts_a_job_would_get(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A job over the budget but split is fine: check-config says how it would be split."""
    path = write_config(tmp_path, [("big", 2500)], budget=1500, extra="split_requests = 1000")
    assert main(["check-config", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "would be split into 3 parts of at most 1,000" in out
    assert "split_requests = 1,000" in out


def test_an_input_changed_after_validation_publishes_no_part(tmp_path: Path) -> None:
    """Splitting re-reads the inputs: bytes that differ from the validated ones fail it whole."""
    source = tmp_path / "in.jsonl"
    write_chat_input(source, 5)
    validated = hashlib.sha256(source.read_bytes()).hexdigest()
    parts = write_part_inputs([str(source)], tmp_path / "results", "big", 2, [validated])
    assert [part.request_count for part in parts] == [2, 2, 1]

    write_chat_input(source, 5, prefix="edited")  # same line count, other bytes
    with pytest.raises(OSError, match="changed after it was validated"):
        write_part_inputs([str(source)], tmp_path / "results", "big", 2, [validated])
    assert not list((tmp_path / "results" / "big" / "parts").glob("*/input.jsonl"))


def test_a_part_stays_under_the_upload_limit_even_across_input_files(tmp_path: Path) -> None:
    """Parts are cut by requests and by bytes: one spanning two files stays under the limit."""
    first = write_chat_input(tmp_path / "a.jsonl", 3)
    second = write_chat_input(tmp_path / "b.jsonl", 3, prefix="abc")  # lines of equal length
    lines = first.read_bytes().splitlines(keepends=True) + second.read_bytes().splitlines(
        keepends=True
    )
    limit = len(lines[0]) + len(lines[1]) + 1  # two lines fit, three do not
    parts = write_part_inputs(
        [str(first), str(second)], tmp_path / "results", "big", 100, max_bytes=limit
    )
    assert [part.request_count for part in parts] == [2, 2, 2]
    written = [Path(part.inputs[0]).read_bytes() for part in parts]
    assert all(len(data) <= limit for data in written)
    assert b"".join(written) == b"".join(lines)  # in order, byte for byte


def _estimates(path: Path) -> list[int]:
    return [estimate_tokens(json.loads(line)) for line in path.read_bytes().splitlines()]


async def test_openai_jobs_split_at_50_000_by_default(tmp_path: Path, clock: FakeClock) -> None:
    """An OpenAI workspace without split_requests splits at its per-batch limit."""
    config = load(write_config(tmp_path, [("big", 50_001)], extra='provider = "openai"'))
    assert await _scan(config, clock) == (1, [])
    async with await SqlLedger.connect(config.ledger.url, clock=clock) as ledger:
        parent = await ledger.get_by_name("big")
        parts = await ledger.parts(parent.id)
    assert [p.request_count for p in parts] == [50_000, 1]
    assert parent.prompt_tokens == sum(_estimates(tmp_path / "data" / "big.jsonl"))
    assert [p.prompt_tokens for p in parts] == [sum(_estimates(Path(p.inputs[0]))) for p in parts]


async def test_openai_over_the_limit_with_splitting_off_is_rejected(
    tmp_path: Path, clock: FakeClock
) -> None:
    """split_requests = 0: a job over 50,000 requests is rejected, saying how to fix it."""
    extra = 'provider = "openai"\nsplit_requests = 0'
    config = load(write_config(tmp_path, [("big", 50_001), ("small", 3)], extra=extra))
    assert (await _scan(config, clock))[0] == 2
    async with await SqlLedger.connect(config.ledger.url, clock=clock) as ledger:
        big = await ledger.get_by_name("big")
        small = await ledger.get_by_name("small")
    assert big.state is JobState.REJECTED
    assert big.error is not None
    assert "50,001 requests, more than the limit of 50,000 per batch (max_requests)" in big.error
    assert "split_requests" in big.error
    assert small.state is JobState.QUEUED
    assert small.prompt_tokens == sum(_estimates(tmp_path / "data" / "small.jsonl")) > 0


async def test_parts_stay_within_the_model_token_budget(tmp_path: Path, clock: FakeClock) -> None:
    """A job over its model's token budget is split so that every part fits it."""
    extra = "split_requests = 1000\ntoken_budget = 500"
    config = load(write_config(tmp_path, [("big", 300)], extra=extra))
    assert await _scan(config, clock) == (1, [])
    async with await SqlLedger.connect(config.ledger.url, clock=clock) as ledger:
        parent = await ledger.get_by_name("big")
        parts = await ledger.parts(parent.id)
    assert len(parts) > 1
    assert all(0 < p.prompt_tokens <= 500 for p in parts)
    assert sum(p.prompt_tokens for p in parts) == parent.prompt_tokens
    assert sum(p.request_count for p in parts) == 300
