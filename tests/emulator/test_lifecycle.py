"""The simulated life of a job, driven by a FakeClock, in-process."""

from __future__ import annotations

import json

import httpx
import pytest

from orchestrator.clock import FakeClock
from tests.emulator.conftest import MakeEmulator, create, jsonl, upload

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


async def test_failures_go_to_the_error_file(make_emulator: MakeEmulator, clock: FakeClock) -> None:
    """Invalid lines and simulated failures land in the error file, in the recommended shape."""
    emu = make_emulator(validation_seconds=1.0, throughput=1000.0, failure_fraction=0.2, seed=3)
    async with emu.client("k") as client:
        good = jsonl(200)
        bad = b'not json\n{"custom_id": "r0", "body": {"messages": [{"role": "user"}]}}\n'
        bad += b'{"custom_id": "x", "body": {}}\n'
        file_id = await upload(client, good + bad)
        job = await create(client, file_id)
        clock.advance(1.0)
        job = (await client.get(f"/v1/batch/jobs/{job['id']}")).json()
        assert job["total_requests"] == 203
        clock.advance(1.0)
        job = (await client.get(f"/v1/batch/jobs/{job['id']}")).json()
        assert job["status"] == "SUCCESS"
        assert job["completed_requests"] == 203
        assert job["succeeded_requests"] + job["failed_requests"] == 203
        errors = (await client.get(f"/v1/files/{job['error_file']}/content")).content
        records = [json.loads(x) for x in errors.splitlines()]
        assert len(records) == job["failed_requests"]
        codes = {r["response"]["body"]["code"] for r in records}
        assert {"invalid_json_line", "duplicate_custom_id", "invalid_request_body"} <= codes
        assert "simulated_failure" in codes
        for record in records:
            assert set(record) == {"id", "custom_id", "response", "error"}
            assert record["error"] is None
            assert record["response"]["status_code"] >= 400
            assert set(record["response"]["body"]) == {"object", "message", "type", "param", "code"}
        simulated = sum(1 for r in records if r["response"]["body"]["code"] == "simulated_failure")
        assert 20 <= simulated <= 60
        out = (await client.get(f"/v1/files/{job['output_file']}/content")).content
        assert len(out.splitlines()) == job["succeeded_requests"]


async def test_progress_counts_add_up_at_every_instant(
    make_emulator: MakeEmulator, clock: FakeClock
) -> None:
    """completed = succeeded + failed while running, and failures show up progressively."""
    emu = make_emulator(validation_seconds=0.0, throughput=10.0, failure_fraction=0.5)
    async with emu.client("k") as client:
        job = await create(client, await upload(client, jsonl(100)))
        seen = []
        for _ in range(12):
            job = (await client.get(f"/v1/batch/jobs/{job['id']}")).json()
            assert job["completed_requests"] == job["succeeded_requests"] + job["failed_requests"]
            seen.append(job["failed_requests"])
            clock.advance(1.0)
        assert seen == sorted(seen)
        assert 0 < seen[5] < seen[-1]
        assert job["status"] == "SUCCESS"


async def test_all_lines_invalid_fails_at_validation(
    make_emulator: MakeEmulator, clock: FakeClock
) -> None:
    """An input with no valid line is FAILED with job-level errors once validated."""
    emu = make_emulator(validation_seconds=5.0)
    async with emu.client("k") as client:
        job = await create(client, await upload(client, b"nope\n[1]\n"))
        clock.advance(5.0)
        job = (await client.get(f"/v1/batch/jobs/{job['id']}")).json()
        assert job["status"] == "FAILED"
        assert (job["total_requests"], job["failed_requests"]) == (2, 2)
        assert job["errors"] == [
            {"message": "Invalid input: lines that are not a JSON object", "count": 2}
        ]
        assert job["output_file"] is None and job["error_file"] is not None


async def test_timeout_keeps_partial_output(make_emulator: MakeEmulator, clock: FakeClock) -> None:
    """TIMEOUT_EXCEEDED after timeout_hours of simulated time, with the processed lines' output."""
    emu = make_emulator(validation_seconds=0.0, throughput=0.01, time_scale=3600.0)
    async with emu.client("k") as client:
        job = await create(client, await upload(client, jsonl(100)), timeout_hours=1)
        clock.advance(1.0)
        job = (await client.get(f"/v1/batch/jobs/{job['id']}")).json()
        assert job["status"] == "TIMEOUT_EXCEEDED"
        assert job["completed_requests"] == 36
        out = (await client.get(f"/v1/files/{job['output_file']}/content")).content
        assert len(out.splitlines()) == 36


async def test_cancel(client: httpx.AsyncClient, clock: FakeClock) -> None:
    """Cancel: CANCELLATION_REQUESTED with frozen progress, then CANCELLED with partial output."""
    job = await create(client, await upload(client, jsonl(1000)))
    clock.advance(12.0)
    response = await client.post(f"/v1/batch/jobs/{job['id']}/cancel")
    assert response.status_code == 200
    job = response.json()
    assert (job["status"], job["completed_requests"]) == ("CANCELLATION_REQUESTED", 200)
    clock.advance(1.0)
    again = (await client.post(f"/v1/batch/jobs/{job['id']}/cancel")).json()
    assert (again["status"], again["completed_requests"]) == ("CANCELLATION_REQUESTED", 200)
    clock.advance(1.0)
    job = (await client.get(f"/v1/batch/jobs/{job['id']}")).json()
    assert (job["status"], job["completed_requests"], job["total_requests"]) == (
        "CANCELLED",
        200,
        1000,
    )
    out = (await client.get(f"/v1/files/{job['output_file']}/content")).content
    assert len(out.splitlines()) == 200
    finished = (await client.post(f"/v1/batch/jobs/{job['id']}/cancel")).json()
    assert finished["status"] == "CANCELLED"


async def test_list_filters_and_pages(client: httpx.AsyncClient, clock: FakeClock) -> None:
    """List: repeated status, metadata as top-level keys, order, pages and total."""
    file_id = await upload(client, jsonl(10))
    ids = []
    for i in range(5):
        job = await create(client, file_id, metadata={"orchestrator_job_id": str(i), "team": "a"})
        ids.append(job["id"])
        clock.advance(1.0)
    clock.advance(7.5)  # the first three are past validation (they need 0.1 s of work)
    page = (await client.get("/v1/batch/jobs", params={"page": 0, "page_size": 2})).json()
    assert page["object"] == "list" and page["total"] == 5
    assert [j["id"] for j in page["data"]] == [ids[4], ids[3]]
    page = (
        await client.get(
            "/v1/batch/jobs", params={"order_by": "created", "page": 2, "page_size": 2}
        )
    ).json()
    assert [j["id"] for j in page["data"]] == [ids[4]]
    query = httpx.QueryParams([("status", "SUCCESS"), ("status", "RUNNING")])
    page = (await client.get("/v1/batch/jobs", params=query)).json()
    assert page["total"] == 3
    assert {j["status"] for j in page["data"]} == {"SUCCESS"}
    page = (await client.get("/v1/batch/jobs", params={"status": "QUEUED"})).json()
    assert [j["id"] for j in page["data"]] == [ids[4], ids[3]]
    page = (
        await client.get("/v1/batch/jobs", params={"orchestrator_job_id": "2", "team": "a"})
    ).json()
    assert [j["id"] for j in page["data"]] == [ids[2]]
    page = (
        await client.get("/v1/batch/jobs", params={"orchestrator_job_id": "2", "team": "b"})
    ).json()
    assert page == {"data": [], "object": "list", "total": 0}
    after = "2026-01-01T00:00:02.5Z"
    page = (await client.get("/v1/batch/jobs", params={"created_after": after})).json()
    assert page["total"] == 2


async def test_inline_requests_and_outputs(client: httpx.AsyncClient, clock: FakeClock) -> None:
    """Inline requests run like a file; ?inline=true returns the result lines once terminal."""
    requests = [{"custom_id": f"c{i}", "body": {"input": [f"text {i}", "more"]}} for i in range(3)]
    response = await client.post(
        "/v1/batch/jobs",
        json={"requests": requests, "model": "mistral-embed", "endpoint": "/v1/embeddings"},
    )
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["input_files"] == []
    running = (await client.get(f"/v1/batch/jobs/{job['id']}", params={"inline": "true"})).json()
    assert running["outputs"] is None
    clock.advance(20.0)
    job = (await client.get(f"/v1/batch/jobs/{job['id']}", params={"inline": "true"})).json()
    assert job["status"] == "SUCCESS"
    assert sorted(o["custom_id"] for o in job["outputs"]) == ["c0", "c1", "c2"]
    body = job["outputs"][0]["response"]["body"]
    assert len(body["data"]) == 2 and len(body["data"][0]["embedding"]) == 1024


async def test_delete_job(client: httpx.AsyncClient, clock: FakeClock) -> None:
    """Only a finished job can be deleted; afterwards it is gone."""
    job = await create(client, await upload(client, jsonl(10)))
    refused = await client.delete(f"/v1/batch/jobs/{job['id']}")
    assert refused.status_code == 400
    assert refused.json()["code"] == "job_not_finished"
    clock.advance(60.0)
    deleted = await client.delete(f"/v1/batch/jobs/{job['id']}")
    assert deleted.json() == {"id": job["id"], "object": "batch", "deleted": True}
    assert (await client.get(f"/v1/batch/jobs/{job['id']}")).status_code == 404
