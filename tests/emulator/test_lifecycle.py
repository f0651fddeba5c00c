"""The simulated life of a job, driven by a FakeClock, in-process."""

from __future__ import annotations

import json

import httpx
import pytest

from orchestrator.clock import FakeClock
from tests.emulator.conftest import create, jsonl, upload

pytestmark = pytest.mark.anyio


async def test_queued_running_success(client: httpx.AsyncClient, clock: FakeClock) -> None:
    """A job validates, progresses at the set throughput, and succeeds with an output file."""
    file_id = await upload(client, jsonl(500))
    job = await create(client, file_id, metadata={"orchestrator_job_id": "7"})
    assert job["status"] == "QUEUED"
    assert job["total_requests"] == 0
    assert job["output_file"] is None and job["errors"] == []
    clock.advance(9.9)
    job = (await client.get(f"/v1/batch/jobs/{job['id']}")).json()
    assert (job["status"], job["total_requests"], job["started_at"]) == ("QUEUED", 0, None)
    clock.advance(0.1 + 2.5)
    job = (await client.get(f"/v1/batch/jobs/{job['id']}")).json()
    assert job["status"] == "RUNNING"
    assert job["total_requests"] == 500
    assert job["completed_requests"] == 250 == job["succeeded_requests"]
    assert job["output_file"] is None
    clock.advance(2.5)
    job = (await client.get(f"/v1/batch/jobs/{job['id']}")).json()
    assert job["status"] == "SUCCESS"
    assert job["completed_requests"] == job["succeeded_requests"] == 500
    assert job["error_file"] is None
    assert job["completed_at"] == int(clock.now())
    content = await client.get(f"/v1/files/{job['output_file']}/content")
    assert content.headers["content-type"] == "application/octet-stream"
    lines = [json.loads(x) for x in content.content.splitlines()]
    assert len(lines) == 500
    assert {x["custom_id"] for x in lines} == {f"r{i}" for i in range(500)}
    first = lines[0]
    assert first["response"]["status_code"] == 200
    assert first["response"]["body"]["object"] == "chat.completion"
    assert first["error"] is None
