"""The daemon on the Anthropic wire: crashes at every step without batch metadata, a foreign
batch of the same size in the window (several candidates, one candidate), and a 429 create.

The crash is a BaseException at the HTTP boundary, as in test_crash_recovery: like kill -9 it
leaves the ledger as the last commit did, and with ``after=True`` the server did the work.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.clock import FakeClock
from orchestrator.config import Config
from orchestrator.daemon import Daemon
from orchestrator.daemon.app import embedded_api_key
from orchestrator.emulator import Emulator, EmulatorSettings
from orchestrator.ledger import SqlLedger
from orchestrator.model import JobState, Outcome
from tests.daemon.conftest import CrashingTransport, is_route, load
from tests.daemon.test_crash_recovery import _run_until_crash

pytestmark = pytest.mark.anyio

MODEL = "claude-sonnet-4-5"
BATCHES = "/v1/messages/batches"


def write_project(folder: Path, jobs: list[tuple[str, int]], *, budget: int = 10_000) -> Config:
    lines = [
        "[ledger]", 'url = "sqlite:///var/ledger.db"', "[results]", 'dir = "var/results"',
        "[polling]", 'initial = "5s"', 'max = "10m"', "[daemon]", 'reconcile_grace = "60s"',
        "[workspaces.main]", 'provider = "anthropic"', 'base_url = "embedded"',
        f"pending_budget = {budget}",
    ]  # fmt: skip
    for name, size in jobs:
        data = folder / "data" / f"{name}.jsonl"
        data.parent.mkdir(parents=True, exist_ok=True)
        with data.open("w") as out:
            for i in range(size):
                params = {"max_tokens": 16, "messages": [{"role": "user", "content": f"q{i}"}]}
                out.write(json.dumps({"custom_id": f"{name}-{i}", "params": params}) + "\n")
        lines += [
            "[[jobs]]", f'name = "{name}"', 'workspace = "main"', f'input = "data/{name}.jsonl"',
            f'model = "{MODEL}"', 'endpoint = "/v1/messages"',
        ]  # fmt: skip
    path = folder / "orchestrator.toml"
    path.write_text("\n".join(lines) + "\n")
    return load(path)


@pytest.fixture
def emulator(clock: FakeClock) -> Iterator[Callable[..., Emulator]]:
    made: list[Emulator] = []

    def make(**overrides: Any) -> Emulator:
        settings: dict[str, Any] = {
            "time_scale": 1.0, "throughput": 10.0, "validation_seconds": 30.0,
            "failure_fraction": 0.0, "seed": 3, **overrides,
        }  # fmt: skip
        made.append(Emulator(EmulatorSettings(**settings), clock=clock, dialect="anthropic"))
        return made[-1]

    yield make
    for each in made:
        each.close()


async def foreign_batch(emu: Emulator, size: int, prefix: str = "other") -> str:
    """A batch another client of the workspace creates (same key, other custom_ids)."""
    requests = [
        {"custom_id": f"{prefix}-{i}", "params": {
            "model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}}
        for i in range(size)
    ]  # fmt: skip
    async with emu.client(
        embedded_api_key("main"), headers={"anthropic-version": "2023-06-01"}
    ) as client:
        response = await client.post(BATCHES, json={"requests": requests})
        response.raise_for_status()
        batch_id: str = response.json()["id"]
        return batch_id


async def jobs_of(config: Config, clock: FakeClock) -> list[Any]:
    ledger = await SqlLedger.connect(config.ledger.url, clock=clock)
    try:
        return [(job, await ledger.files(job.id)) for job in await ledger.list_jobs()]
    finally:
        await ledger.close()


async def assert_once_and_complete(config: Config, clock: FakeClock, emu: Emulator) -> None:
    rows = await jobs_of(config, clock)
    stats = emu.workspace_stats(embedded_api_key("main"))
    assert stats["jobs_created"] == len(rows), stats
    assert len({job.remote_id for job, _ in rows}) == len(rows)
    for job, files in rows:
        assert job.state is JobState.DONE and job.outcome is Outcome.SUCCEEDED, job
        (output,) = files
        ids = {json.loads(line)["custom_id"] for line in Path(output.path).read_text().splitlines()}
        assert ids == {f"{job.name}-{i}" for i in range(job.request_count)}


CRASHES = {
    "after-create": lambda inner: CrashingTransport(inner, when=is_route("POST", BATCHES)),
    "before-create": lambda inner: CrashingTransport(
        inner, when=is_route("POST", BATCHES), after=False
    ),
    "mid-results": lambda inner: CrashingTransport(
        inner, when=is_route("GET", "/results"), cut_body_after=50
    ),
    "after-reconcile-list": None,
}


@pytest.mark.parametrize("point", sorted(CRASHES))
async def test_crash_at_each_step_makes_one_batch_per_job(
    point: str, tmp_path: Path, clock: FakeClock, emulator: Callable[..., Emulator]
) -> None:
    """Two jobs of the same size (only the one-create slot tells their batches apart): a
    restart after any crash ends with one batch each and every result."""
    config = write_project(tmp_path, [("alpha", 20), ("beta", 20)])
    emu = emulator()
    make = CRASHES[point]
    if make is None:  # die after create, then again right after the recovery's list
        await _run_until_crash(config, clock, emu, CRASHES["after-create"])  # type: ignore[arg-type]
        make = lambda inner: CrashingTransport(inner, when=is_route("GET", BATCHES))  # noqa: E731
    await _run_until_crash(config, clock, emu, make)
    await Daemon(config, clock=clock, emulator=emu).run(exit_when_idle=True)
    await assert_once_and_complete(config, clock, emu)


async def test_several_candidates_wait_and_the_results_decide(
    tmp_path: Path, clock: FakeClock, emulator: Callable[..., Emulator]
) -> None:
    """A lost create and a foreign batch of the same size in the window: nothing is adopted
    until both end; ours is adopted by its custom_ids; the foreign one is left alone."""
    config = write_project(tmp_path, [("alpha", 15)])
    emu = emulator()
    await _run_until_crash(config, clock, emu, CRASHES["after-create"])  # type: ignore[arg-type]
    other = await foreign_batch(emu, 15)
    await Daemon(config, clock=clock, emulator=emu).run(exit_when_idle=True)
    ((job, _),) = await jobs_of(config, clock)
    assert job.state is JobState.DONE and job.outcome is Outcome.SUCCEEDED
    assert job.remote_id != other
    assert emu.workspace_stats(embedded_api_key("main"))["jobs_created"] == 2
    async with emu.client(
        embedded_api_key("main"), headers={"anthropic-version": "2023-06-01"}
    ) as client:
        theirs = (await client.get(f"{BATCHES}/{other}")).json()
    assert theirs["cancel_initiated_at"] is None and theirs["request_counts"]["succeeded"] == 15


async def test_a_single_foreign_candidate_is_refuted_by_its_results(
    tmp_path: Path, clock: FakeClock, emulator: Callable[..., Emulator]
) -> None:
    """The create died before it was sent and a foreign batch of the same size landed in the
    window: it is adopted, then its results prove it is not the job's: the job fails saying
    so, keeps no foreign results, and the batch is not cancelled."""
    config = write_project(tmp_path, [("alpha", 15)])
    emu = emulator()
    await _run_until_crash(config, clock, emu, CRASHES["before-create"])  # type: ignore[arg-type]
    other = await foreign_batch(emu, 15)
    await Daemon(config, clock=clock, emulator=emu).run(exit_when_idle=True)
    ((job, files),) = await jobs_of(config, clock)
    assert job.state is JobState.DONE and job.outcome is Outcome.FAILED
    assert job.remote_id == other and files == []
    assert job.error and "not this job's" in job.error and "rerun" in job.error
    assert not (config.results.dir / "alpha" / "output.jsonl").exists()


async def test_a_full_processing_queue_sends_the_job_back_to_the_queue(
    tmp_path: Path, clock: FakeClock, emulator: Callable[..., Emulator]
) -> None:
    """The server's queue limit below the workspace's budget: the 429 is no failure, the job
    waits in the queue with backoff and runs once the first batch ended."""
    config = write_project(tmp_path, [("alpha", 25), ("beta", 25)], budget=100)
    emu = emulator(pending_budget=30)
    await Daemon(config, clock=clock, emulator=emu).run(exit_when_idle=True, migrate=True)
    await assert_once_and_complete(config, clock, emu)
    assert emu.workspace_stats(embedded_api_key("main"))["refused_creates"] >= 1
    ledger = await SqlLedger.connect(config.ledger.url, clock=clock)
    try:
        jobs = await ledger.list_jobs()
        details = [event.detail for job in jobs for event in await ledger.events(job.id)]
    finally:
        await ledger.close()
    assert "provider refused for capacity" in details
