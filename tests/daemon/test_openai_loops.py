"""The daemon's loops over an OpenAI workspace: bulk polling without filters, reconcile
without a metadata filter, token-limit requeues, and the one rewritten upload per job.

The remote side is :class:`tests.providers.openai_fake.FakeOpenAI` (the emulator's OpenAI
wire is not there yet): batches listed newest first, no status or metadata filter.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest

from orchestrator.clock import FakeClock
from orchestrator.daemon.context import Runtime, WorkspaceRuntime, backoff
from orchestrator.daemon.poll import Poller
from orchestrator.daemon.submit import CLOCK_SKEW_MARGIN, Submitter
from orchestrator.daemon.waker import Waker
from orchestrator.ledger import SqlLedger
from orchestrator.ledger.migrate import upgrade
from orchestrator.model import CLIENT_TOKEN_KEY, Job, JobSpec, JobState, Outcome
from orchestrator.providers.openai import OpenAIProvider
from tests.daemon.conftest import (
    embedded_provider,
    loop_runtime,
    loop_workspace,
    write_chat_input,
)
from tests.providers.openai_fake import FakeOpenAI

pytestmark = pytest.mark.anyio

KEY = "sk-openai-loops"
NOW = 1_750_000_000.0
LIMIT_MESSAGE = (
    "Enqueued token limit reached for gpt-4o-mini in organization org-1. Limit: 2,000,000 "
    "enqueued tokens. Please try again once some in_progress batches have been completed."
)


@attrs.define
class World:
    """A ledger, a fake OpenAI project and the loops' collaborators, on one clock."""

    clock: FakeClock
    ledger: SqlLedger
    fake: FakeOpenAI
    provider: OpenAIProvider
    runtime: Runtime
    workspace: WorkspaceRuntime
    tmp_path: Path

    async def add(self, name: str, *, inputs: tuple[Path, ...] = (), requests: int = 2) -> Job:
        """A queued job of ``requests`` requests for gpt-4o-mini."""
        if not inputs:
            inputs = (write_chat_input(self.tmp_path / f"{name}.jsonl", requests, prefix=name),)
        spec = JobSpec(
            name=name,
            workspace="main",
            model="gpt-4o-mini",
            endpoint="/v1/chat/completions",
            inputs=tuple(str(p) for p in inputs),
        )
        job, _ = await self.ledger.add_job(
            spec, definition_hash=f"h-{name}", request_count=requests
        )
        return job

    async def submitting(self, name: str) -> Job:
        """A job whose create intent is recorded (its file uploaded as ``file-<name>``)."""
        job = await self.add(name)
        file_id = f"file-{name}"
        self.fake.files[file_id] = {"id": file_id, "object": "file", "bytes": 10}
        self.fake.contents[file_id] = b"{}\n"
        await self.ledger.transition(job.id, JobState.QUEUED, JobState.ADMITTED)
        await self.ledger.update(job.id, JobState.ADMITTED, input_file_ids=(file_id,))
        return await self.ledger.transition(job.id, JobState.ADMITTED, JobState.SUBMITTING)

    async def running(self, name: str, **batch: Any) -> tuple[Job, str]:
        """A job running on a batch of the fake (status ``in_progress`` unless given)."""
        job = await self.submitting(name)
        batch.setdefault("status", "in_progress")
        batch.setdefault("request_counts", {"total": 0, "completed": 0, "failed": 0})
        remote = self.fake.add_batch(metadata={CLIENT_TOKEN_KEY: job.client_token}, **batch)
        job = await self.ledger.transition(
            job.id, JobState.SUBMITTING, JobState.RUNNING, remote_id=remote["id"]
        )
        return job, remote["id"]


@asynccontextmanager
async def world(tmp_path: Path) -> AsyncIterator[World]:
    """A fresh :class:`World` (closed at the end)."""
    clock = FakeClock(start=NOW)
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    await upgrade(url)
    ledger = await SqlLedger.connect(url, clock=clock)
    fake = FakeOpenAI(clock=clock, api_key=KEY)
    provider = OpenAIProvider(
        "https://api.openai.test/v1", KEY, transport=fake.transport(), clock=clock
    )
    workspace = WorkspaceRuntime(
        name="main",
        provider=provider,
        pending_budget=1_000_000,
        count_external=False,
        admission=Waker(clock),
        poll=Waker(clock),
        collect=Waker(clock),
    )
    try:
        yield World(
            clock=clock,
            ledger=ledger,
            fake=fake,
            provider=provider,
            runtime=loop_runtime(clock, ledger, tmp_path),
            workspace=workspace,
            tmp_path=tmp_path,
        )
    finally:
        await provider.aclose()
        await ledger.close()


# Polling ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("history", [0, 10_000])
async def test_300_running_jobs_cost_three_list_calls_whatever_the_history(
    tmp_path: Path, history: int
) -> None:
    """⌈300/100⌉ list calls, no GET, whether or not 10,000 old finished batches exist."""
    async with world(tmp_path) as w:
        for _ in range(history):
            w.fake.add_batch()
        w.clock.advance(86_400)
        running = [await w.running(f"job-{i}") for i in range(300)]
        for _, batch_id in running[:100]:
            w.fake.set_status(
                batch_id, "in_progress", request_counts={"total": 2, "completed": 1, "failed": 0}
            )
        w.fake.calls.clear()
        await Poller(w.runtime, w.workspace).cycle()
        jobs = await w.ledger.list_jobs(states=(JobState.RUNNING,))
    assert dict(w.fake.calls) == {"batches.list": math.ceil(300 / 100)}
    assert sorted(job.completed for job in jobs) == [0] * 200 + [1] * 100


async def test_jobs_that_ended_are_read_from_the_list_without_a_get(tmp_path: Path) -> None:
    """An unfiltered list also holds our finished batches: they go to collecting directly."""
    async with world(tmp_path) as w:
        ended, ended_id = await w.running("ended")
        still, _ = await w.running("still")
        w.fake.set_status(
            ended_id,
            "completed",
            output_file_id="file-out",
            request_counts={"total": 2, "completed": 1, "failed": 1},
        )
        w.fake.calls.clear()
        await Poller(w.runtime, w.workspace).cycle()
        done = await w.ledger.get(ended.id)
        other = await w.ledger.get(still.id)
    assert dict(w.fake.calls) == {"batches.list": 1}
    assert done.state is JobState.COLLECTING
    assert (done.outcome, done.succeeded, done.failed) == (Outcome.PARTIAL, 1, 1)
    assert other.state is JobState.RUNNING


async def test_a_job_missing_from_the_list_window_is_fetched(tmp_path: Path) -> None:
    """A running job older than the list's window (adopted long after) costs one GET."""
    async with world(tmp_path) as w:
        old, old_id = await w.running("old")
        w.clock.advance(7200)
        await w.ledger.update(old.id, JobState.RUNNING, submitted_at=w.clock.now())
        for _ in range(250):
            w.fake.add_batch()
        w.clock.advance(3600)
        await w.running("new")
        w.fake.calls.clear()
        await Poller(w.runtime, w.workspace).cycle()
    assert w.fake.calls["batches.get"] == 1
    assert w.fake.calls["batches.list"] <= 4
    assert w.fake.requests[-1].url.path == f"/v1/batches/{old_id}"


# Token limit -----------------------------------------------------------------------------------


async def test_token_limit_failure_requeues_with_backoff_and_says_why(tmp_path: Path) -> None:
    """failed + token_limit_exceeded before processing: queued again, never failed."""
    async with world(tmp_path) as w:
        job, batch_id = await w.running("big")
        w.fake.set_status(
            batch_id,
            "failed",
            errors={
                "object": "list",
                "data": [{"code": "token_limit_exceeded", "message": LIMIT_MESSAGE, "line": None}],
            },
            request_counts={"total": 0, "completed": 0, "failed": 0},
        )
        await Poller(w.runtime, w.workspace).cycle()
        after = await w.ledger.get(job.id)
        events = await w.ledger.events(job.id)
    assert after.state is JobState.QUEUED
    assert after.outcome is None
    assert after.step_retries == job.step_retries + 1
    assert after.not_before == pytest.approx(w.clock.now() + backoff(after.step_retries))
    assert after.remote_id is None
    assert after.input_file_ids == job.input_file_ids  # the upload is reused
    assert after.error is not None and "token_limit_exceeded" in after.error
    detail = events[-1].detail or ""
    assert events[-1].from_state is JobState.RUNNING and events[-1].to_state is JobState.QUEUED
    assert batch_id in detail
    assert "token_limit_exceeded" in detail
    assert "enqueued-token limit for gpt-4o-mini: 2,000,000" in detail
    assert w.workspace.released == job.request_count


async def test_other_validation_failures_are_collected_with_their_errors(tmp_path: Path) -> None:
    """A batch failed for its content ends like any failed batch, its errors in the history."""
    async with world(tmp_path) as w:
        job, batch_id = await w.running("bad")
        w.fake.set_status(
            batch_id,
            "failed",
            errors={
                "object": "list",
                "data": [{"code": "invalid_json_line", "message": "Not valid JSON.", "line": 2}],
            },
        )
        await Poller(w.runtime, w.workspace).cycle()
        after = await w.ledger.get(job.id)
        events = await w.ledger.events(job.id)
    assert (after.state, after.outcome) == (JobState.COLLECTING, Outcome.FAILED)
    assert "invalid_json_line: Not valid JSON. (line 2)" in (events[-1].detail or "")


# Reconcile -------------------------------------------------------------------------------------


async def _reconcile(w: World) -> None:
    w.clock.advance(w.runtime.reconcile_grace + 1)
    w.fake.calls.clear()
    await Submitter(w.runtime, w.workspace).cycle()


async def test_reconcile_finds_a_lost_create_by_paging_back_to_the_intent(tmp_path: Path) -> None:
    """The batch a lost create made is adopted; pages older than the intent are not read."""
    async with world(tmp_path) as w:
        for _ in range(10_000):
            w.fake.add_batch()
        w.clock.advance(86_400)
        job = await w.submitting("lost")
        w.clock.advance(5)
        landed = w.fake.add_batch(
            status="validating", metadata={CLIENT_TOKEN_KEY: job.client_token}
        )
        for _ in range(250):
            w.fake.add_batch(metadata={CLIENT_TOKEN_KEY: "orch-someone-else"})
        await _reconcile(w)
        after = await w.ledger.get(job.id)
    assert (after.state, after.remote_id) == (JobState.RUNNING, landed["id"])
    assert dict(w.fake.calls) == {"batches.list": 3}


async def test_reconcile_creates_only_once_the_window_is_read(tmp_path: Path) -> None:
    """No batch with the token since the intent: one create, after a bounded walk."""
    async with world(tmp_path) as w:
        for _ in range(10_000):
            w.fake.add_batch()
        w.clock.advance(86_400)
        job = await w.submitting("absent")
        for _ in range(150):
            w.fake.add_batch()
        await _reconcile(w)
        after = await w.ledger.get(job.id)
    assert after.state is JobState.RUNNING
    assert w.fake.calls["batches.create"] == 1
    assert w.fake.calls["batches.list"] == 2
    body = json.loads(w.fake.requests[-1].content)
    assert body["metadata"] == {CLIENT_TOKEN_KEY: job.client_token}


async def test_reconcile_never_adopts_a_batch_refused_for_the_token_limit(tmp_path: Path) -> None:
    """An earlier attempt's token-limit failure carries the token too: a new batch is made."""
    async with world(tmp_path) as w:
        job = await w.submitting("again")
        refused = w.fake.add_batch(
            status="failed",
            metadata={CLIENT_TOKEN_KEY: job.client_token},
            errors={"object": "list", "data": [{"code": "token_limit_exceeded", "message": "x"}]},
            request_counts={"total": 0, "completed": 0, "failed": 0},
        )
        await _reconcile(w)
        after = await w.ledger.get(job.id)
    assert after.state is JobState.RUNNING
    assert after.remote_id not in (None, refused["id"])
    assert w.fake.calls["batches.create"] == 1


async def test_reconcile_looks_back_a_clock_skew_margin(tmp_path: Path) -> None:
    """A batch stamped before our intent by a provider clock that lags is still found."""
    async with world(tmp_path) as w:
        job = await w.submitting("skewed")
        landed = w.fake.add_batch(
            created_at=int(w.clock.now() - CLOCK_SKEW_MARGIN / 2),
            metadata={CLIENT_TOKEN_KEY: job.client_token},
            status="in_progress",
        )
        await _reconcile(w)
        after = await w.ledger.get(job.id)
    assert after.remote_id == landed["id"]
    assert w.fake.calls["batches.create"] == 0


# Upload ----------------------------------------------------------------------------------------


async def test_a_job_of_two_files_is_one_rewritten_upload_with_its_digest(tmp_path: Path) -> None:
    """Both inputs go up as one .jsonl of OpenAI lines; the ledger records its sha256."""
    async with world(tmp_path) as w:
        first = write_chat_input(tmp_path / "a.jsonl", 3, prefix="a")
        second = write_chat_input(tmp_path / "b.jsonl", 2, prefix="b")
        job = await w.add("two", inputs=(first, second), requests=5)
        await Submitter(w.runtime, w.workspace).cycle()
        after = await w.ledger.get(job.id)
    assert after.state is JobState.RUNNING
    (file_id,) = after.input_file_ids
    sent = w.fake.contents[file_id]
    assert after.input_file_sha256s == (hashlib.sha256(sent).hexdigest(),)
    rows = [json.loads(line) for line in sent.splitlines()]
    assert [row["custom_id"] for row in rows] == ["a-0", "a-1", "a-2", "b-0", "b-1"]
    assert {(row["url"], row["body"]["model"]) for row in rows} == {
        ("/v1/chat/completions", "gpt-4o-mini")
    }
    assert w.fake.files[file_id]["filename"] == "two-0.jsonl"
    assert w.fake.calls["files.create"] == 1
    assert w.fake.calls["batches.create"] == 1


async def test_mistral_uploads_each_file_as_it_is_and_records_its_digest(
    tmp_path: Path, clock: FakeClock, emulator_factory: Any
) -> None:
    """The Mistral path is unchanged (one upload per file, bytes as they are) plus digests."""
    emulator = emulator_factory()
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    await upgrade(url)
    ledger = await SqlLedger.connect(url, clock=clock)
    provider = embedded_provider(emulator, clock)
    try:
        paths = [write_chat_input(tmp_path / f"{n}.jsonl", 2, prefix=n) for n in ("a", "b")]
        spec = JobSpec(
            name="m",
            workspace="main",
            model="mistral-small-latest",
            endpoint="/v1/chat/completions",
            inputs=tuple(str(p) for p in paths),
        )
        job, _ = await ledger.add_job(spec, definition_hash="h", request_count=4)
        await Submitter(
            loop_runtime(clock, ledger, tmp_path), loop_workspace(clock, provider)
        ).cycle()
        after = await ledger.get(job.id)
    finally:
        await provider.aclose()
        await ledger.close()
    assert len(after.input_file_ids) == 2
    assert after.input_file_sha256s == tuple(
        hashlib.sha256(p.read_bytes()).hexdigest() for p in paths
    )
