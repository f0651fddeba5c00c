"""The Mistral provider against the bundled emulator, in-process (httpx.ASGITransport)."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import httpx
import pytest

from orchestrator.clock import FakeClock
from orchestrator.emulator import Emulator, EmulatorSettings, FaultSettings
from orchestrator.errors import (
    CapacityRefused,
    PermanentProviderError,
    RateLimited,
    TransientProviderError,
)
from orchestrator.model import RemotePhase
from orchestrator.providers.base import RemoteJob
from orchestrator.providers.mistral import MistralProvider
from tests.providers.conftest import API_KEY, MakeProvider, settings, write_requests

pytestmark = pytest.mark.anyio

CHAT = "/v1/chat/completions"
MODEL = "mistral-small-latest"


async def create(
    provider: MistralProvider, tmp_path: Path, n: int = 10, **metadata: str
) -> RemoteJob:
    """Upload an n-request input and create a job for it."""
    src = write_requests(tmp_path / f"in-{uuid.uuid4().hex[:8]}.jsonl", n)
    file_id = await provider.upload_file(src)
    return await provider.create_job(
        input_file_ids=[file_id],
        model=MODEL,
        endpoint=CHAT,
        metadata=metadata,
        timeout_hours=24,
    )


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


async def raw_content(emulator: Emulator, file_id: str) -> bytes:
    async with emulator.client(API_KEY) as client:
        response = await client.get(f"/v1/files/{file_id}/content")
        response.raise_for_status()
        return response.content


async def test_full_lifecycle(
    mistral: MistralProvider, emulator: Emulator, clock: FakeClock, tmp_path: Path
) -> None:
    """upload → create (QUEUED, total 0) → RUNNING → SUCCESS → verified download."""
    job = await create(mistral, tmp_path, 10, orchestrator_job_id="orch-1")
    assert job.status == "QUEUED"
    assert job.phase is RemotePhase.VALIDATING
    assert job.total == 0
    assert job.metadata == {"orchestrator_job_id": "orch-1"}
    clock.advance(5.001)
    running = await mistral.get_job(job.id)
    assert running.phase in (RemotePhase.RUNNING, RemotePhase.SUCCEEDED)
    assert running.total == 10
    clock.advance(60)
    done = await mistral.get_job(job.id)
    assert done.status == "SUCCESS"
    assert done.phase is RemotePhase.SUCCEEDED
    assert (done.total, done.completed, done.succeeded, done.failed) == (10, 10, 10, 0)
    assert done.output_file is not None
    assert done.error_file is None
    assert done.completed_at is not None

    dest = tmp_path / "results" / "output.jsonl"
    got = await mistral.download_file(done.output_file, dest)
    expected = await raw_content(emulator, done.output_file)
    assert got.path == dest
    assert got.bytes == len(expected)
    assert got.sha256 == hashlib.sha256(expected).hexdigest()
    assert got.lines == 10
    assert dest.read_bytes() == expected
    assert names(dest.parent) == ["output.jsonl"]
    assert mistral.calls[("upload_file", 200)] == 1
    assert mistral.calls[("create_job", 200)] == 1
    assert mistral.calls[("download_file", 200)] == 1


@pytest.mark.parametrize(
    "emulator_settings", [settings(failure_fraction=0.3, seed=3)], indirect=True
)
async def test_partial_failures_have_an_error_file(
    mistral: MistralProvider, clock: FakeClock, tmp_path: Path
) -> None:
    """Failed requests land in the error file; counts and line totals agree."""
    job = await create(mistral, tmp_path, 50)
    clock.advance(3600)
    done = await mistral.get_job(job.id)
    assert done.phase is RemotePhase.SUCCEEDED
    assert done.failed > 0
    assert done.succeeded + done.failed == 50
    assert done.output_file is not None
    assert done.error_file is not None
    out = await mistral.download_file(done.output_file, tmp_path / "output.jsonl")
    err = await mistral.download_file(done.error_file, tmp_path / "errors.jsonl")
    assert out.lines == done.succeeded
    assert err.lines == done.failed


@pytest.mark.parametrize("emulator_settings", [settings(throughput=0.001)], indirect=True)
async def test_cancel_a_running_job(
    mistral: MistralProvider, clock: FakeClock, tmp_path: Path
) -> None:
    """A slow running job cancels deterministically: CANCELLING, then CANCELLED."""
    job = await create(mistral, tmp_path, 10)
    clock.advance(10)
    assert (await mistral.get_job(job.id)).phase is RemotePhase.RUNNING
    cancelling = await mistral.cancel_job(job.id)
    assert cancelling.status == "CANCELLATION_REQUESTED"
    assert cancelling.phase is RemotePhase.CANCELLING
    clock.advance(60)
    final = await mistral.get_job(job.id)
    assert final.status == "CANCELLED"
    assert final.phase is RemotePhase.CANCELLED


async def test_list_pages_250_jobs_in_3_calls(mistral: MistralProvider, tmp_path: Path) -> None:
    """250 jobs at 100 a page: exactly 3 list calls, every job once."""
    src = write_requests(tmp_path / "in.jsonl", 1)
    file_id = await mistral.upload_file(src)
    created = set()
    for i in range(250):
        job = await mistral.create_job(
            input_file_ids=[file_id],
            model=MODEL,
            endpoint=CHAT,
            metadata={"orchestrator_job_id": f"orch-{i}"},
            timeout_hours=24,
        )
        created.add(job.id)
    before = mistral.calls[("list_jobs", 200)]
    listed = [job.id async for job in mistral.list_jobs()]
    assert mistral.calls[("list_jobs", 200)] - before == 3
    assert len(listed) == 250
    assert set(listed) == created


async def test_metadata_filter_and_active_only(
    mistral: MistralProvider, clock: FakeClock, tmp_path: Path
) -> None:
    """metadata finds exactly the tagged job; active_only drops finished ones."""
    first = await create(mistral, tmp_path, 5, orchestrator_job_id="orch-1", team="a")
    clock.advance(3600)  # the first job finishes
    second = await create(mistral, tmp_path, 5, orchestrator_job_id="orch-2", team="a")
    found = [j async for j in mistral.list_jobs(metadata={"orchestrator_job_id": "orch-2"})]
    assert [j.id for j in found] == [second.id]
    both = [j.id async for j in mistral.list_jobs(metadata={"team": "a"})]
    assert sorted(both) == sorted([first.id, second.id])
    active = [j async for j in mistral.list_jobs(active_only=True)]
    assert [j.id for j in active] == [second.id]
    assert active[0].phase is RemotePhase.VALIDATING
    none = [j async for j in mistral.list_jobs(metadata={"orchestrator_job_id": "orch-9"})]
    assert none == []


async def test_rate_limited_calls_are_retried(
    mistral: MistralProvider, emulator: Emulator, tmp_path: Path
) -> None:
    """429 + Retry-After on some get calls: retried until success, counted by status."""
    job = await create(mistral, tmp_path, 5)
    emulator.set_faults(
        FaultSettings(rate_limit_rate=0.5, retry_after=1.0, seed=1, routes={"jobs.get"})
    )
    for _ in range(10):
        assert (await mistral.get_job(job.id)).id == job.id
    assert mistral.calls[("get_job", 429)] > 0
    assert mistral.calls[("get_job", 200)] == 10


async def test_rate_limit_that_never_ends_raises_rate_limited(
    mistral: MistralProvider, emulator: Emulator, tmp_path: Path
) -> None:
    """Every attempt refused: RateLimited carries the server's Retry-After."""
    job = await create(mistral, tmp_path, 5)
    emulator.set_faults(FaultSettings(rate_limit_rate=1.0, retry_after=2.5, routes={"jobs.get"}))
    with pytest.raises(RateLimited) as info:
        await mistral.get_job(job.id)
    assert info.value.retry_after == pytest.approx(2.5)
    assert mistral.calls[("get_job", 429)] == 3  # stamina's test mode: 3 attempts


async def test_server_errors_are_retried(
    mistral: MistralProvider, emulator: Emulator, tmp_path: Path
) -> None:
    """Injected 5xx and dropped connections on list are retried to success."""
    await create(mistral, tmp_path, 5)
    emulator.set_faults(
        FaultSettings(server_error_rate=0.3, drop_rate=0.2, seed=4, routes={"jobs.list"})
    )
    for _ in range(5):
        assert len([j async for j in mistral.list_jobs()]) == 1
    failures = sum(
        n for (op, status), n in mistral.calls.items() if op == "list_jobs" and status != 200
    )
    assert failures > 0


async def test_create_is_not_retried_on_transient(
    mistral: MistralProvider, emulator: Emulator, tmp_path: Path
) -> None:
    """A 5xx on create is raised after one request; the emulator saw exactly one."""
    src = write_requests(tmp_path / "in.jsonl", 3)
    file_id = await mistral.upload_file(src)
    emulator.set_faults(FaultSettings(server_error_rate=1.0, routes={"jobs.create"}))
    with pytest.raises(TransientProviderError, match="may have been created"):
        await mistral.create_job(
            input_file_ids=[file_id], model=MODEL, endpoint=CHAT, metadata={}, timeout_hours=24
        )
    requests = emulator.workspace_stats(API_KEY)["requests"]["jobs.create"]
    assert sum(requests.values()) == 1


async def test_dropped_create_after_processing_can_be_reconciled(
    mistral: MistralProvider, emulator: Emulator, tmp_path: Path
) -> None:
    """A create whose answer is lost may still have made the job: listing finds it."""
    src = write_requests(tmp_path / "in.jsonl", 3)
    file_id = await mistral.upload_file(src)
    emulator.set_faults(FaultSettings(drop_rate=1.0, seed=0, routes={"jobs.create"}))
    outcomes = []
    for i in range(6):
        try:
            await mistral.create_job(
                input_file_ids=[file_id],
                model=MODEL,
                endpoint=CHAT,
                metadata={"orchestrator_job_id": f"orch-{i}"},
                timeout_hours=24,
            )
        except TransientProviderError:
            found = [
                j async for j in mistral.list_jobs(metadata={"orchestrator_job_id": f"orch-{i}"})
            ]
            outcomes.append(len(found))
    # Dropped before processing: nothing exists; dropped after: exactly one job exists.
    assert sorted(set(outcomes)) == [0, 1]


@pytest.mark.parametrize("emulator_settings", [settings(pending_budget=25)], indirect=True)
async def test_capacity_refusal(mistral: MistralProvider, tmp_path: Path) -> None:
    """A create past the pending budget is CapacityRefused, not a generic failure."""
    await create(mistral, tmp_path, 20)
    with pytest.raises(CapacityRefused, match="pending-request budget is full") as info:
        await create(mistral, tmp_path, 10)
    assert info.value.status_code == 400
    assert mistral.calls[("create_job", 400)] == 1


@pytest.mark.parametrize(
    "emulator_settings", [settings(api_keys=frozenset({"the-right-key"}))], indirect=True
)
async def test_wrong_key_is_a_permanent_401(make_mistral: MakeProvider) -> None:
    """A refused key is permanent, says so, and is sent once."""
    provider = make_mistral("the-wrong-key")
    with pytest.raises(PermanentProviderError, match=r"HTTP 401.*check the workspace's API key"):
        await provider.get_job(str(uuid.uuid4()))
    assert provider.calls[("get_job", 401)] == 1


async def test_unknown_job_is_a_permanent_404(mistral: MistralProvider) -> None:
    """An unknown job id is a 404 with the provider's message."""
    with pytest.raises(PermanentProviderError, match="HTTP 404") as info:
        await mistral.get_job(str(uuid.uuid4()))
    assert info.value.status_code == 404
    assert mistral.calls[("get_job", 404)] == 1


async def test_malformed_id_is_a_permanent_422(mistral: MistralProvider) -> None:
    """A non-UUID id is refused by validation (422) with the field named."""
    with pytest.raises(PermanentProviderError, match=r"HTTP 422: .*job_id") as info:
        await mistral.get_job("not-a-uuid")
    assert info.value.status_code == 422


async def test_invalid_create_is_a_permanent_error(mistral: MistralProvider) -> None:
    """A create the API refuses (unknown file) is permanent with the message."""
    with pytest.raises(PermanentProviderError) as info:
        await mistral.create_job(
            input_file_ids=[str(uuid.uuid4())],
            model=MODEL,
            endpoint=CHAT,
            metadata={},
            timeout_hours=24,
        )
    assert not isinstance(info.value, CapacityRefused)
    assert info.value.status_code is not None and 400 <= info.value.status_code < 500


async def test_unknown_file_download_is_permanent_and_leaves_nothing(
    mistral: MistralProvider, tmp_path: Path
) -> None:
    """A 404 download leaves no .part and no file."""
    with pytest.raises(PermanentProviderError, match="HTTP 404"):
        await mistral.download_file(str(uuid.uuid4()), tmp_path / "output.jsonl")
    assert names(tmp_path) == []


async def test_truncated_download_in_process_is_retried(
    mistral: MistralProvider, emulator: Emulator, clock: FakeClock, tmp_path: Path
) -> None:
    """In-process cuts (RemoteProtocolError) are retried until the file is whole."""
    job = await create(mistral, tmp_path, 200)
    clock.advance(3600)
    done = await mistral.get_job(job.id)
    assert done.output_file is not None
    expected = await raw_content(emulator, done.output_file)
    emulator.set_faults(FaultSettings(truncate_rate=0.5, seed=2, routes={"files.content"}))
    for i in range(4):
        got = await mistral.download_file(done.output_file, tmp_path / f"out-{i}.jsonl")
        assert got.sha256 == hashlib.sha256(expected).hexdigest()
    faults = emulator.workspace_stats(API_KEY)["faults"]
    assert faults["files.content"]["truncate"] > 0


async def test_upload_survives_transient_faults(
    mistral: MistralProvider, emulator: Emulator, tmp_path: Path
) -> None:
    """Uploads are retried through 5xx (a fresh body each attempt)."""
    emulator.set_faults(FaultSettings(server_error_rate=0.5, seed=5, routes={"files.upload"}))
    src = write_requests(tmp_path / "in.jsonl", 100)
    ids = {await mistral.upload_file(src) for _ in range(4)}
    assert len(ids) == 4
    assert mistral.calls[("upload_file", 200)] == 4


async def test_upload_over_the_size_limit_is_permanent(clock: FakeClock, tmp_path: Path) -> None:
    """The provider's refusal of a too-large file is permanent, with its message."""
    with Emulator(settings(max_file_bytes=1000), clock=clock) as emu:
        provider = MistralProvider(
            "http://emulator", API_KEY, transport=httpx.ASGITransport(app=emu.app), clock=clock
        )
        try:
            src = write_requests(tmp_path / "in.jsonl", 100)
            with pytest.raises(PermanentProviderError) as info:
                await provider.upload_file(src)
        finally:
            await provider.aclose()
    assert info.value.status_code is not None and 400 <= info.value.status_code < 500


def test_settings_fixture_matches_the_brief() -> None:
    """The baseline settings are the brief's (a guard for the fixtures above)."""
    s: EmulatorSettings = settings()
    assert (s.time_scale, s.throughput, s.validation_seconds, s.pending_budget) == (
        1.0,
        1000.0,
        5.0,
        1_000_000,
    )
