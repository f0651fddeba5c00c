"""The Mistral provider against the emulator over a real socket (uvicorn on 127.0.0.1).

Streaming, cut bodies and Range resumes need real connections: httpx.ASGITransport buffers
whole bodies, so these run against a uvicorn server in a thread.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import stamina

from orchestrator.clock import FakeClock
from orchestrator.emulator import Emulator, FaultSettings
from orchestrator.errors import TransientProviderError
from orchestrator.model import RemotePhase
from orchestrator.providers.mistral import MistralProvider
from tests.providers.conftest import API_KEY, write_requests

pytestmark = pytest.mark.anyio


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


async def finished_job_output(
    provider: MistralProvider, clock: FakeClock, tmp_path: Path, n: int
) -> str:
    """Run an n-request job to SUCCESS over the socket; return its output file id."""
    src = write_requests(tmp_path / "in.jsonl", n)
    file_id = await provider.upload_file(src)
    job = await provider.create_job(
        input_file_ids=[file_id],
        model="mistral-small-latest",
        endpoint="/v1/chat/completions",
        metadata={"orchestrator_job_id": "orch-1"},
        timeout_hours=24,
    )
    clock.advance(3600)
    done = await provider.get_job(job.id)
    assert done.phase is RemotePhase.SUCCEEDED
    assert done.output_file is not None
    return done.output_file


async def reference(provider: MistralProvider, file_id: str, tmp_path: Path) -> bytes:
    """The file's true bytes (downloaded once with no faults)."""
    got = await provider.download_file(file_id, tmp_path / "reference.jsonl")
    data = (tmp_path / "reference.jsonl").read_bytes()
    assert got.sha256 == hashlib.sha256(data).hexdigest()
    return data


async def test_truncated_download_is_detected_and_resumed(
    socket_mistral: MistralProvider, emulator: Emulator, clock: FakeClock, tmp_path: Path
) -> None:
    """Bodies cut mid-stream are resumed with Range (206) and end byte-identical."""
    file_id = await finished_job_output(socket_mistral, clock, tmp_path, 3000)
    expected = await reference(socket_mistral, file_id, tmp_path)
    assert len(expected) > 1 << 20  # more than one server chunk
    emulator.set_faults(FaultSettings(truncate_rate=0.6, seed=7, routes={"files.content"}))
    for i in range(5):
        dest = tmp_path / "out" / f"output-{i}.jsonl"
        with stamina.set_testing(True, attempts=20):  # enough for any streak of cuts
            got = await socket_mistral.download_file(file_id, dest)
        assert got.bytes == len(expected)
        assert got.sha256 == hashlib.sha256(expected).hexdigest()
        assert got.lines == 3000
        assert dest.read_bytes() == expected
    stats = emulator.workspace_stats(API_KEY)
    assert stats["faults"]["files.content"]["truncate"] > 0
    assert stats["requests"]["files.content"].get("206", 0) > 0  # resumed, not restarted
    assert socket_mistral.calls[("download_file", 206)] > 0
    assert names(tmp_path / "out") == [f"output-{i}.jsonl" for i in range(5)]


async def test_download_that_always_breaks_leaves_nothing(
    socket_mistral: MistralProvider, emulator: Emulator, clock: FakeClock, tmp_path: Path
) -> None:
    """Every response cut: a transient error after the attempts, no .part, no file."""
    file_id = await finished_job_output(socket_mistral, clock, tmp_path, 500)
    emulator.set_faults(FaultSettings(truncate_rate=1.0, seed=1, routes={"files.content"}))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(TransientProviderError, match="RemoteProtocolError"):
        await socket_mistral.download_file(file_id, out / "output.jsonl")
    assert names(out) == []
    ranges = emulator.workspace_stats(API_KEY)["requests"]["files.content"]
    assert ranges.get("206", 0) == 2  # attempts 2 and 3 resumed where the last one stopped


async def test_dropped_connections_are_retried(
    socket_mistral: MistralProvider, emulator: Emulator, clock: FakeClock, tmp_path: Path
) -> None:
    """Connections closed without a response, on polls and downloads, are retried."""
    file_id = await finished_job_output(socket_mistral, clock, tmp_path, 200)
    expected = await reference(socket_mistral, file_id, tmp_path)
    emulator.set_faults(
        FaultSettings(
            drop_rate=0.4, server_error_rate=0.2, seed=3, routes={"files.content", "jobs.list"}
        )
    )
    for i in range(3):
        got = await socket_mistral.download_file(file_id, tmp_path / f"o{i}.jsonl")
        assert got.sha256 == hashlib.sha256(expected).hexdigest()
        jobs = [
            j async for j in socket_mistral.list_jobs(metadata={"orchestrator_job_id": "orch-1"})
        ]
        assert len(jobs) == 1
    faults = emulator.workspace_stats(API_KEY)["faults"]
    assert (
        sum(faults.get("files.content", {}).values()) + sum(faults.get("jobs.list", {}).values())
        > 0
    )


async def test_large_upload_streams_over_the_socket(
    socket_mistral: MistralProvider, emulator: Emulator, tmp_path: Path
) -> None:
    """A multi-MiB input uploads intact (the emulator counts the same bytes and lines)."""
    src = write_requests(tmp_path / "big.jsonl", 60_000)
    size = src.stat().st_size
    assert size > 5 << 20
    file_id = await socket_mistral.upload_file(src)
    async with emulator.client(API_KEY) as client:
        meta = (await client.get(f"/v1/files/{file_id}")).json()
    assert meta["bytes"] == size
    assert meta["num_lines"] == 60_000
