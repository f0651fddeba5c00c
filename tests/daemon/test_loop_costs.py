"""What the loops cost per pass: finished jobs are never read, one poll wakes admission once,
one poll cycle stores all its progress in one transaction.

Found by ``bench/scale.py``: every progress update woke the admission loop, and every admission
pass read the whole ledger (twice), so a poll cycle cost O(running x all jobs) rows; then each
progressed job cost a transaction of its own (1.8 s a cycle at 1,000 running jobs).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from sqlalchemy import event

from bench._clock import SettledClock, counting_sqlite
from orchestrator.clock import FakeClock
from orchestrator.daemon import Daemon
from orchestrator.daemon.poll import Poller
from orchestrator.daemon.submit import Submitter
from orchestrator.daemon.waker import Waker
from orchestrator.emulator import Emulator, EmulatorSettings
from orchestrator.ledger import SqlLedger
from orchestrator.ledger.engine import create_engine
from orchestrator.ledger.migrate import upgrade
from orchestrator.model import CLIENT_TOKEN_KEY, FINAL_STATES, Job, JobSpec, JobState, Outcome
from orchestrator.providers.mistral import MistralProvider
from tests.daemon.conftest import (
    ObservingTransport,
    embedded_provider,
    load,
    loop_runtime,
    loop_workspace,
    write_chat_input,
    write_config,
)

pytestmark = pytest.mark.anyio


class CountingWaker(Waker):
    """A waker that counts its wake-ups."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.wakes = 0

    def wake(self) -> None:
        self.wakes += 1
        super().wake()


class RecordingLedger:
    """Records the jobs each ``list_jobs`` call returned (everything else passes through)."""

    def __init__(self, ledger: SqlLedger) -> None:
        self._ledger = ledger
        self.listed: list[list[Job]] = []

    async def list_jobs(self, *args: Any, **kwargs: Any) -> list[Job]:
        jobs = await self._ledger.list_jobs(*args, **kwargs)
        self.listed.append(jobs)
        return jobs

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ledger, name)


def _spec(name: str, data: Path) -> JobSpec:
    return JobSpec(
        name=name, workspace="main", model="m", endpoint="/v1/chat/completions", inputs=(str(data),)
    )


async def _finished_job(ledger: SqlLedger, name: str, data: Path) -> None:
    job, _ = await ledger.add_job(_spec(name, data), definition_hash=name, request_count=2)
    steps: list[tuple[JobState, JobState, dict[str, Any]]] = [
        (JobState.QUEUED, JobState.ADMITTED, {}),
        (JobState.ADMITTED, JobState.SUBMITTING, {}),
        (JobState.SUBMITTING, JobState.RUNNING, {"remote_id": f"remote-{name}"}),
        (JobState.RUNNING, JobState.COLLECTING, {"outcome": Outcome.SUCCEEDED}),
        (JobState.COLLECTING, JobState.DONE, {}),
    ]
    for source, target, changes in steps:
        await ledger.transition(job.id, source, target, detail="test", **changes)


async def _ledger(tmp_path: Path, clock: FakeClock) -> SqlLedger:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    await upgrade(url)
    return await SqlLedger.connect(url, clock=clock)


async def test_admission_pass_never_reads_finished_jobs(
    tmp_path: Path, clock: FakeClock, emulator_factory: Callable[..., Emulator]
) -> None:
    """A ledger full of done jobs: an admission pass reads only the unfinished ones."""
    emulator = emulator_factory()
    data = write_chat_input(tmp_path / "in.jsonl", 2)
    ledger = await _ledger(tmp_path, clock)
    provider = embedded_provider(emulator, clock)
    try:
        for index in range(5):
            await _finished_job(ledger, f"old-{index}", data)
        new, _ = await ledger.add_job(_spec("new", data), definition_hash="new", request_count=2)
        recording = RecordingLedger(ledger)
        submitter = Submitter(
            loop_runtime(clock, recording, tmp_path),
            loop_workspace(clock, provider, count_external=True, admission=CountingWaker(clock)),
        )
        await submitter.cycle()
        assert (await ledger.get(new.id)).state is JobState.RUNNING
    finally:
        await provider.aclose()
        await ledger.close()
    read = [job for listed in recording.listed for job in listed]
    assert read, "the pass read the ledger"
    assert all(job.state not in FINAL_STATES for job in read)


async def test_one_poll_cycle_wakes_admission_once(
    tmp_path: Path, clock: FakeClock, emulator_factory: Callable[..., Emulator]
) -> None:
    """Ten jobs progress in one cycle: all ten are stored, admission is woken once."""
    emulator = emulator_factory(validation_seconds=0.0, throughput=1.0)
    data = write_chat_input(tmp_path / "in.jsonl", 100)
    ledger = await _ledger(tmp_path, clock)
    provider = embedded_provider(emulator, clock)
    try:
        file_id = await provider.upload_file(data)
        for index in range(10):
            job, _ = await ledger.add_job(
                _spec(f"job-{index}", data), definition_hash=f"h{index}", request_count=100
            )
            remote = await provider.create_job(
                input_file_ids=[file_id],
                model="m",
                endpoint="/v1/chat/completions",
                metadata={CLIENT_TOKEN_KEY: job.client_token},
                timeout_hours=24,
            )
            await ledger.transition(job.id, JobState.QUEUED, JobState.ADMITTED)
            await ledger.transition(job.id, JobState.ADMITTED, JobState.SUBMITTING)
            await ledger.transition(
                job.id, JobState.SUBMITTING, JobState.RUNNING, remote_id=remote.id
            )
        workspace = loop_workspace(
            clock, provider, count_external=True, admission=CountingWaker(clock)
        )
        poller = Poller(loop_runtime(clock, ledger, tmp_path), workspace)
        clock.advance(30.0)  # every job has done 30 of its 100 requests
        await poller.cycle()
        jobs = await ledger.list_jobs(states=(JobState.RUNNING,))
    finally:
        await provider.aclose()
        await ledger.close()
    assert [job.completed for job in jobs] == [30] * 10
    assert isinstance(workspace.admission, CountingWaker)
    assert workspace.admission.wakes == 1


class CommitCounter:
    """A ledger whose engine counts committed transactions."""

    def __init__(self, url: str, clock: FakeClock) -> None:
        engine = create_engine(url)
        self.commits = 0
        event.listen(engine.sync_engine, "commit", self._count)
        self.ledger = SqlLedger(engine, url=url, clock=clock)

    def _count(self, _conn: Any) -> None:
        self.commits += 1


async def _start_running(
    ledger: SqlLedger, provider: MistralProvider, data: dict[int, Path]
) -> list[Job]:
    """One running job per input (created on the emulator, recorded as running)."""
    started = []
    for size, path in data.items():
        file_id = await provider.upload_file(path)
        job, _ = await ledger.add_job(
            _spec(f"job-{size}", path), definition_hash=f"h{size}", request_count=size
        )
        remote = await provider.create_job(
            input_file_ids=[file_id],
            model="m",
            endpoint="/v1/chat/completions",
            metadata={CLIENT_TOKEN_KEY: job.client_token},
            timeout_hours=24,
        )
        await ledger.transition(job.id, JobState.QUEUED, JobState.ADMITTED)
        await ledger.transition(job.id, JobState.ADMITTED, JobState.SUBMITTING)
        started.append(
            await ledger.transition(
                job.id, JobState.SUBMITTING, JobState.RUNNING, remote_id=remote.id
            )
        )
    return started


async def test_a_poll_cycle_stores_all_progress_in_one_transaction(
    tmp_path: Path, clock: FakeClock, emulator_factory: Callable[..., Emulator]
) -> None:
    """Ten jobs progress: one commit. Two end and eight progress: one commit plus one per end."""
    emulator = emulator_factory(validation_seconds=0.0, throughput=1.0)
    sizes = [20, 25, *range(100, 180, 10)]
    data = {n: write_chat_input(tmp_path / f"in-{n}.jsonl", n, prefix=f"r{n}") for n in sizes}
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    await upgrade(url)
    counter = CommitCounter(url, clock)
    ledger = counter.ledger
    provider = embedded_provider(emulator, clock)
    try:
        await _start_running(ledger, provider, data)
        workspace = loop_workspace(
            clock, provider, count_external=True, admission=CountingWaker(clock)
        )
        poller = Poller(loop_runtime(clock, ledger, tmp_path), workspace)
        clock.advance(10.0)  # every job has done 10 requests
        before = counter.commits
        await poller.cycle()
        first_cycle = counter.commits - before
        released_first = workspace.released
        progressed = await ledger.list_jobs(states=(JobState.RUNNING,))
        clock.advance(15.0)  # the jobs of 20 and 25 requests have ended, the others have done 25
        before = counter.commits
        await poller.cycle()
        second_cycle = counter.commits - before
        after = await ledger.list_jobs()
    finally:
        await provider.aclose()
        await ledger.close()
    assert [job.completed for job in progressed] == [10] * 10
    assert first_cycle == 1
    assert sorted(job.state for job in after) == [JobState.COLLECTING] * 2 + [JobState.RUNNING] * 8
    assert [job.completed for job in after if job.state is JobState.RUNNING] == [25] * 8
    assert second_cycle == 1 + 2
    # The poller counts the budget it released, for the blocked head's due time: 10 requests
    # a job, then 25 held by the two that ended and 15 more by each of the eight.
    assert (released_first, workspace.released) == (100, 100 + 25 + 8 * 15)


async def test_a_burst_of_creates_costs_one_list_call_not_one_each(tmp_path: Path) -> None:
    """100 jobs submitted together: the poller lists at most twice in the burst, not 100 times."""
    # SettledClock: with a plain autojump clock, simulated time leaps while aiosqlite commits,
    # and the burst would be spread over minutes of simulated time (bench/_clock.py).
    clock = SettledClock()
    emulator = Emulator(
        EmulatorSettings(time_scale=1.0, throughput=10.0, validation_seconds=60.0, seed=3),
        clock=clock,
    )
    config = load(write_config(tmp_path, [(f"job-{i:03d}", 2) for i in range(100)]))
    routes: list[tuple[float, str]] = []

    async def record(request: httpx.Request, _response: httpx.Response) -> None:
        routes.append((clock.now(), f"{request.method} {request.url.path}"))

    def observe(inner: httpx.AsyncBaseTransport) -> httpx.AsyncBaseTransport:
        return ObservingTransport(inner, record)

    daemon = Daemon(config, clock=clock, emulator=emulator, wrap_transport=observe)
    try:
        with counting_sqlite():
            await daemon.run(exit_when_idle=True, migrate=True)
    finally:
        emulator.close()
    creates = [at for at, route in routes if route == "POST /v1/batch/jobs"]
    lists = [at for at, route in routes if route == "GET /v1/batch/jobs"]
    assert len(creates) == 100
    assert creates[-1] - creates[0] < 1.0, "the burst took no simulated time"
    during_burst = [at for at in lists if at <= creates[-1]]
    assert len(during_burst) <= 2, during_burst
    # The first list after the burst comes soon after it, not polling.initial later.
    assert min(at for at in lists if at > creates[-1]) - creates[-1] <= 5.0
    # All 100 jobs validate for 60 s, then end together: a few list calls in all.
    assert len(lists) <= 12, lists


async def test_a_blocked_head_is_admitted_soon_after_it_fits(tmp_path: Path) -> None:
    """A 300-request head behind a 600-request job (budget 600, 1 request/s): admitted at once
    when the running job has done 300, though the poll interval had grown to minutes."""
    clock = SettledClock()
    emulator = Emulator(
        EmulatorSettings(time_scale=1.0, throughput=1.0, validation_seconds=30.0, seed=3),
        clock=clock,
    )
    config = load(write_config(tmp_path, [("first", 600), ("head", 300)], budget=600))
    lists: list[float] = []

    async def record(request: httpx.Request, _response: httpx.Response) -> None:
        if (request.method, request.url.path) == ("GET", "/v1/batch/jobs"):
            lists.append(clock.now())

    def observe(inner: httpx.AsyncBaseTransport) -> httpx.AsyncBaseTransport:
        return ObservingTransport(inner, record)

    daemon = Daemon(config, clock=clock, emulator=emulator, wrap_transport=observe)
    try:
        with counting_sqlite():
            await daemon.run(exit_when_idle=True, migrate=True)
        ledger = await SqlLedger.connect(config.ledger.url, clock=clock)
        try:
            first, head = await ledger.get_by_name("first"), await ledger.get_by_name("head")
            admitted = [
                e.at for e in await ledger.events(head.id) if e.to_state is JobState.ADMITTED
            ]
        finally:
            await ledger.close()
    finally:
        emulator.close()
    assert first.submitted_at is not None
    fits_at = first.submitted_at + 30.0 + 300.0  # validation, then 300 requests at 1/s
    # Without the head's due time the interval had grown to 83 s, and it was admitted 90 s late.
    assert fits_at <= admitted[0] <= fits_at + 6.0, admitted[0] - fits_at
    # Two jobs over 660 s: 32 list calls (one poll a second would make 660).
    assert len(lists) <= 40, " ".join(f"{at - first.submitted_at:.1f}" for at in lists)


async def test_the_idle_watcher_counts_jobs_by_state_and_never_lists_them(
    tmp_path: Path, clock: FakeClock
) -> None:
    """``--exit-when-idle`` waits while a job runs and stops once all are final, reading counts."""
    data = write_chat_input(tmp_path / "in.jsonl", 2)
    ledger = await _ledger(tmp_path, clock)
    try:
        for index in range(3):
            await _finished_job(ledger, f"old-{index}", data)
        job, _ = await ledger.add_job(_spec("live", data), definition_hash="live", request_count=2)
        recording = RecordingLedger(ledger)
        runtime = loop_runtime(clock, recording, tmp_path)
        daemon = Daemon(load(write_config(tmp_path, [])), clock=clock)
        async with anyio.create_task_group() as tg:
            tg.start_soon(daemon._exit_when_idle, runtime)  # the watcher alone
            await clock.sleep(1.0)
            assert not runtime.stopping.is_set()
            await ledger.transition(job.id, JobState.QUEUED, JobState.REJECTED, error="test")
            runtime.activity.wake()
        assert runtime.stopping.is_set()
    finally:
        await ledger.close()
    assert recording.listed == []
