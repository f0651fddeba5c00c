"""The daemon core: budget, capacity refusals, external jobs, bulk polling, cancel, locking."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import sqlalchemy as sa

from orchestrator.clock import FakeClock
from orchestrator.config import Config
from orchestrator.daemon import Daemon
from orchestrator.daemon.app import embedded_api_key
from orchestrator.daemon.poll import Poller
from orchestrator.emulator import Emulator, FaultSettings
from orchestrator.errors import LedgerLocked
from orchestrator.ledger import SqlLedger
from orchestrator.ledger.migrate import upgrade
from orchestrator.ledger.schema import jobs as jobs_table
from orchestrator.model import CLIENT_TOKEN_KEY, JobSpec, JobState, Outcome
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


@asynccontextmanager
async def _provider(emulator: Emulator, clock: FakeClock) -> AsyncIterator[MistralProvider]:
    provider = embedded_provider(emulator, clock)
    try:
        yield provider
    finally:
        await provider.aclose()


async def _jobs(config: Config, clock: FakeClock) -> dict[str, Any]:
    ledger = await SqlLedger.connect(config.ledger.url, clock=clock)
    try:
        return {job.name: job for job in await ledger.list_jobs()}
    finally:
        await ledger.close()


async def test_budget_is_never_exceeded_and_the_queue_drains(
    tmp_path: Path, clock: FakeClock, emulator_factory: Callable[..., Emulator]
) -> None:
    """Six jobs against a budget of 100: the pipe stays within budget and everything finishes."""
    sizes = [("a", 60), ("b", 50), ("c", 40), ("d", 30), ("e", 20), ("f", 90)]
    config = load(write_config(tmp_path, sizes, budget=100))
    emulator = emulator_factory(throughput=2.0)
    await Daemon(config, clock=clock, emulator=emulator).run(exit_when_idle=True, migrate=True)
    stats = emulator.workspace_stats(embedded_api_key("main"))
    assert stats["max_pending"] <= 100
    assert stats["jobs_created"] == len(sizes)
    jobs = await _jobs(config, clock)
    assert all(job.outcome is Outcome.SUCCEEDED for job in jobs.values())


async def test_job_larger_than_the_budget_is_rejected_with_advice(
    tmp_path: Path, clock: FakeClock, emulator_factory: Callable[..., Emulator]
) -> None:
    """A job that can never fit is rejected, says how to fix it, and blocks nobody."""
    config = load(write_config(tmp_path, [("huge", 120), ("small", 10)], budget=100))
    emulator = emulator_factory()
    await Daemon(config, clock=clock, emulator=emulator).run(exit_when_idle=True, migrate=True)
    jobs = await _jobs(config, clock)
    assert jobs["huge"].state is JobState.REJECTED
    assert "120 requests but the workspace budget is 100" in jobs["huge"].error
    assert "split the input" in jobs["huge"].error
    assert jobs["small"].outcome is Outcome.SUCCEEDED


async def test_job_over_its_model_token_budget_is_rejected_with_figures(
    tmp_path: Path, clock: FakeClock, emulator_factory: Callable[..., Emulator]
) -> None:
    """Splitting off, a job estimated above its model's token budget is rejected with both
    figures; a job that fits runs."""
    extra = (
        'token_budget = 1_000_000\n[workspaces.main.token_budgets]\n"mistral-small-latest" = 100'
    )
    config = load(write_config(tmp_path, [("wide", 20), ("narrow", 2)], extra=extra))
    emulator = emulator_factory()
    await Daemon(config, clock=clock, emulator=emulator).run(exit_when_idle=True, migrate=True)
    jobs = await _jobs(config, clock)
    wide = jobs["wide"]
    assert wide.state is JobState.REJECTED
    assert wide.prompt_tokens > 100
    assert (
        f"is estimated at {wide.prompt_tokens:,} prompt tokens but the workspace's token budget "
        "for mistral-small-latest is 100: it can never be admitted" in (wide.error or "")
    )
    assert jobs["narrow"].outcome is Outcome.SUCCEEDED


async def test_capacity_refusal_requeues_with_backoff_never_fails(
    tmp_path: Path, clock: FakeClock, emulator_factory: Callable[..., Emulator]
) -> None:
    """When the provider's budget is smaller than configured, refused creates go back to queued."""
    config = load(write_config(tmp_path, [("first", 40), ("second", 30)], budget=1_000))
    # Slow enough that the first job is far from done when the second create arrives, even
    # with the fake clock leaping ahead while the daemon waits on I/O.
    emulator = emulator_factory(pending_budget=50, throughput=0.002)
    await Daemon(config, clock=clock, emulator=emulator).run(exit_when_idle=True, migrate=True)
    stats = emulator.workspace_stats(embedded_api_key("main"))
    assert stats["refused_creates"] >= 1
    assert stats["jobs_created"] == 2
    jobs = await _jobs(config, clock)
    assert all(job.outcome is Outcome.SUCCEEDED for job in jobs.values())
    ledger = await SqlLedger.connect(config.ledger.url, clock=clock)
    try:
        refused = [
            job
            for job in jobs.values()
            if "provider refused for capacity" in [e.detail for e in await ledger.events(job.id)]
        ]
    finally:
        await ledger.close()
    # Whichever create came second was refused, went back to queued, and later ran.
    assert len(refused) == 1
    assert refused[0].step_retries >= 1


async def test_count_external_keeps_room_for_jobs_we_did_not_create(
    tmp_path: Path, clock: FakeClock, emulator_factory: Callable[..., Emulator]
) -> None:
    """With count_external, a foreign 70-request job leaves room for only 30 of ours."""
    config = load(write_config(tmp_path, [("ours", 50)], budget=100, count_external=True))
    emulator = emulator_factory(throughput=0.01, validation_seconds=0.0)
    async with _provider(emulator, clock) as provider:
        file_id = await provider.upload_file(write_chat_input(tmp_path / "x.jsonl", 70))
        foreign = await provider.create_job(
            input_file_ids=[file_id],
            model="m",
            endpoint="/v1/chat/completions",
            metadata={"owner": "someone-else"},
            timeout_hours=24,
        )
        clock.advance(1.0)  # past validation: the foreign job reports its total
        await Daemon(config, clock=clock, emulator=emulator).run(exit_when_idle=True, migrate=True)
        jobs = await _jobs(config, clock)
        ours = await provider.get_job(jobs["ours"].remote_id)
        foreign = await provider.get_job(foreign.id)
    # Ours was created while the foreign job still ran (so the budget mattered) ...
    assert foreign.completed_at is not None and ours.created_at < foreign.completed_at
    # ... and only once the foreign job had released enough: never over the budget.
    assert emulator.workspace_stats(embedded_api_key("main"))["max_pending"] <= 100


@asynccontextmanager
async def _running_jobs(
    tmp_path: Path, clock: FakeClock, emulator: Emulator, *, count: int
) -> AsyncIterator[tuple[SqlLedger, Poller]]:
    """``count`` jobs running on the emulator and in a fresh ledger, and a poller for them."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    await upgrade(url)
    ledger = await SqlLedger.connect(url, clock=clock)
    try:
        async with _provider(emulator, clock) as provider:
            data = write_chat_input(tmp_path / "in.jsonl", 2)
            file_id = await provider.upload_file(data)
            for i in range(count):
                spec = JobSpec(
                    name=f"job-{i}",
                    workspace="main",
                    model="m",
                    endpoint="/v1/chat/completions",
                    inputs=(str(data),),
                )
                job, _ = await ledger.add_job(spec, definition_hash=f"h{i}", request_count=2)
                remote = await provider.create_job(
                    input_file_ids=[file_id],
                    model="m",
                    endpoint="/v1/chat/completions",
                    metadata={CLIENT_TOKEN_KEY: job.client_token},
                    timeout_hours=24,
                )
                for source, target in (
                    (JobState.QUEUED, JobState.ADMITTED),
                    (JobState.ADMITTED, JobState.SUBMITTING),
                ):
                    job = await ledger.transition(job.id, source, target, detail="test")
                await ledger.transition(
                    job.id, JobState.SUBMITTING, JobState.RUNNING, detail="t", remote_id=remote.id
                )
            runtime = loop_runtime(clock, ledger, tmp_path)
            yield ledger, Poller(runtime, loop_workspace(clock, provider))
    finally:
        await ledger.close()


async def test_one_poll_cycle_lists_300_jobs_in_three_calls(
    tmp_path: Path, clock: FakeClock, emulator_factory: Callable[..., Emulator]
) -> None:
    """Bulk polling: ⌈300/100⌉ list calls and no per-job GET refresh 300 running jobs."""
    emulator = emulator_factory(validation_seconds=10_000.0)
    async with _running_jobs(tmp_path, clock, emulator, count=300) as (_, poller):
        before = emulator.workspace_stats(embedded_api_key("main"))["requests"]
        await poller.cycle()
        after = emulator.workspace_stats(embedded_api_key("main"))["requests"]
    spent = {
        route: sum(after[route].values()) - sum(before.get(route, {}).values()) for route in after
    }
    assert {route: n for route, n in spent.items() if n} == {"jobs.list": math.ceil(300 / 100)}


async def test_poll_failures_are_counted_and_never_change_a_job(
    tmp_path: Path, clock: FakeClock, emulator_factory: Callable[..., Emulator]
) -> None:
    """With every poll call failing, the job stays running and the failure count grows."""
    emulator = emulator_factory()
    async with _running_jobs(tmp_path, clock, emulator, count=1) as (ledger, poller):
        emulator.set_faults(
            FaultSettings(server_error_rate=1.0, routes=frozenset({"jobs.list", "jobs.get"}))
        )
        for _ in range(3):
            await poller.cycle()
        (job,) = await ledger.list_jobs()
    assert poller.consecutive_failures == 3
    assert job.state is JobState.RUNNING
    assert job.error is None


async def test_cancel_queued_job_is_local_and_running_job_keeps_partial_results(
    tmp_path: Path, clock: FakeClock, emulator_factory: Callable[..., Emulator]
) -> None:
    """A queued job is cancelled without any call; a running one remotely, then collected."""
    config = load(write_config(tmp_path, [("running", 60), ("waiting", 60)], budget=100))
    emulator = emulator_factory(validation_seconds=0.0, throughput=0.01, cancel_seconds=10.0)
    asked = anyio.Event()

    async def cancel_once_progressing(request: httpx.Request, response: httpx.Response) -> None:
        # The first poll that shows progress: cancel both jobs, as `orchestrator cancel` would.
        if asked.is_set() or request.method != "GET" or "/v1/batch/jobs" not in request.url.path:
            return
        body = json.loads(await response.aread())
        listed = body.get("data", [body])
        if any(job.get("completed_requests", 0) > 0 for job in listed):
            asked.set()
            ledger = await SqlLedger.connect(config.ledger.url, clock=clock)
            try:
                await ledger.request_cancel("waiting")
                await ledger.request_cancel("running")
            finally:
                await ledger.close()

    daemon = Daemon(
        config,
        clock=clock,
        emulator=emulator,
        wrap_transport=lambda inner: ObservingTransport(inner, cancel_once_progressing),
    )
    await daemon.run(exit_when_idle=True, migrate=True)

    assert asked.is_set()
    jobs = await _jobs(config, clock)
    assert jobs["waiting"].outcome is Outcome.CANCELLED
    assert jobs["waiting"].remote_id is None
    running = jobs["running"]
    assert running.outcome is Outcome.CANCELLED
    assert running.remote_status == "CANCELLED"
    assert 0 < running.succeeded < 60
    output = config.results.dir / "running" / "output.jsonl"
    assert len(output.read_text().splitlines()) == running.succeeded
    assert emulator.workspace_stats(embedded_api_key("main"))["jobs_created"] == 1


async def test_second_daemon_on_the_same_sqlite_ledger_fails_fast(
    tmp_path: Path, clock: FakeClock, emulator_factory: Callable[..., Emulator]
) -> None:
    """One daemon per SQLite file: the second gets LedgerLocked at once, the first goes on."""
    config = load(write_config(tmp_path, [("solo", 5)]))
    emulator = emulator_factory(validation_seconds=0.0, throughput=0.001)
    first = Daemon(config, clock=clock, emulator=emulator)

    async def second() -> None:
        while first.runtime is None:  # noqa: ASYNC110 (the daemon exposes no started event)
            await anyio.sleep(0.01)
        with pytest.raises(LedgerLocked, match="another orchestrator daemon holds the ledger"):
            await Daemon(config, clock=clock, emulator=emulator).run()
        tg.cancel_scope.cancel()

    async with anyio.create_task_group() as tg:
        tg.start_soon(second)
        await first.run(migrate=True)


async def test_duplicates_of_our_jobs_are_cancelled_and_nothing_else_is(
    tmp_path: Path, clock: FakeClock, emulator_factory: Callable[..., Emulator]
) -> None:
    """The poll cycle cancels a remote job carrying the token of one of our settled jobs
    (running or done) under another id, once; the jobs themselves, a job still being
    reconciled, a stranger's job and an untagged job are left alone."""
    emulator = emulator_factory(validation_seconds=10_000.0)
    key = embedded_api_key("main")
    async with (
        _running_jobs(tmp_path, clock, emulator, count=3) as (ledger, poller),
        _provider(emulator, clock) as provider,
    ):
        running, finished, in_doubt = await ledger.list_jobs()
        # `finished` is done in the ledger although its remote job still runs: its own remote
        # job is listed as a stranger's would be, and must survive.
        for source, target in (
            (JobState.RUNNING, JobState.COLLECTING),
            (JobState.COLLECTING, JobState.DONE),
        ):
            finished = await ledger.transition(
                finished.id, source, target, detail="t", outcome=Outcome.SUCCEEDED
            )
        # `in_doubt` is back in submitting: recovery, not the sweep, decides for it.
        in_doubt = await ledger.get(in_doubt.id)
        file_id = await provider.upload_file(write_chat_input(tmp_path / "dup.jsonl", 2))

        async def create(metadata: dict[str, str]) -> str:
            remote = await provider.create_job(
                input_file_ids=[file_id],
                model="m",
                endpoint="/v1/chat/completions",
                metadata=metadata,
                timeout_hours=24,
            )
            return remote.id

        duplicates = {
            await create({CLIENT_TOKEN_KEY: running.client_token}): running,
            await create({CLIENT_TOKEN_KEY: finished.client_token}): finished,
        }
        untouched = [
            await create({CLIENT_TOKEN_KEY: "orch-of-another-ledger"}),
            await create({"team": "research"}),
            await create({}),
        ]
        async with ledger._write() as conn:  # a create in flight: roll the job back to submitting
            await conn.execute(
                sa.update(jobs_table)
                .where(jobs_table.c.id == in_doubt.id)
                .values(state=JobState.SUBMITTING.value, remote_id=None)
            )
        untouched.append(await create({CLIENT_TOKEN_KEY: in_doubt.client_token}))
        untouched += [running.remote_id, finished.remote_id, in_doubt.remote_id]

        await poller.cycle()
        await poller.cycle()  # cancels are not sent twice

        statuses = {rid: (await provider.get_job(rid)).status for rid in duplicates}
        assert set(statuses.values()) <= {"CANCELLATION_REQUESTED", "CANCELLED"}, statuses
        for rid in untouched:
            assert rid is not None
            assert (await provider.get_job(rid)).status in {"QUEUED", "RUNNING"}, rid
        cancels = emulator.workspace_stats(key)["requests"].get("jobs.cancel", {})
        assert sum(cancels.values()) == len(duplicates)
        for rid, owner in duplicates.items():
            details = [event.detail for event in await ledger.events(owner.id)]
            assert f"duplicate remote job {rid} cancelled (this job is {owner.remote_id})" in (
                details
            )
