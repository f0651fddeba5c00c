"""The workspace pending budget, determinism, and the introspection data."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from orchestrator.clock import FakeClock
from orchestrator.emulator import Emulator
from tests.emulator.conftest import MakeEmulator, create, jsonl, upload

pytestmark = pytest.mark.anyio


async def test_budget_refuses_then_admits(make_emulator: MakeEmulator, clock: FakeClock) -> None:
    """A create over the budget is a 400 with a stable code; progress frees room."""
    emu = make_emulator(pending_budget=1000, validation_seconds=10.0, throughput=10.0)
    async with emu.client("k") as client:
        big = await upload(client, jsonl(600))
        await create(client, big)
        refused = await client.post(
            "/v1/batch/jobs",
            json={"input_files": [big], "model": "m", "endpoint": "/v1/chat/completions"},
        )
        assert refused.status_code == 400
        body = refused.json()
        assert body["code"] == "pending_requests_limit_exceeded"
        assert body["type"] == "invalid_request_error" and body["param"] is None
        assert body["message"].startswith("Pending requests limit exceeded: ")
        # The first job has 600 pending until validation ends, then drains at 10/s: after
        # 30 s of work 300 are pending, and another 600 fits (300 + 600 <= 1000) ...
        clock.advance(10.0 + 30.0)
        await create(client, big)
        # ... but a third does not.
        refused = await client.post(
            "/v1/batch/jobs",
            json={"input_files": [big], "model": "m", "endpoint": "/v1/chat/completions"},
        )
        assert refused.status_code == 400
    stats = emu.workspace_stats("k")
    assert stats["jobs_created"] == 2 and stats["refused_creates"] == 2
    assert stats["max_pending"] == 900
    assert stats["pending"] == 900
    assert stats["max_pending"] <= stats["pending_budget"] == 1000


async def test_a_job_bigger_than_the_budget_is_refused(make_emulator: MakeEmulator) -> None:
    """A job that can never fit is refused too."""
    emu = make_emulator(pending_budget=10)
    async with emu.client("k") as client:
        response = await client.post(
            "/v1/batch/jobs",
            json={"input_files": [await upload(client, jsonl(11))], "endpoint": "/v1/embeddings"},
        )
    assert response.status_code == 400
    assert "11" in response.json()["message"]


async def test_budget_is_per_workspace(make_emulator: MakeEmulator) -> None:
    """One workspace's pending requests do not count against another's budget."""
    emu = make_emulator(pending_budget=10)
    async with emu.client("a") as a, emu.client("b") as b:
        await create(a, await upload(a, jsonl(10)))
        await create(b, await upload(b, jsonl(10)))
    assert emu.workspace_stats("a")["max_pending"] == 10
    assert emu.workspace_stats("b")["max_pending"] == 10


async def _results(emu: Emulator, clock: FakeClock, key: str) -> list[dict[str, Any]]:
    async with emu.client(key) as client:
        job = await create(client, await upload(client, jsonl(50)))
        clock.advance(3600)
        job = (await client.get(f"/v1/batch/jobs/{job['id']}", params={"inline": "true"})).json()
    return sorted(job["outputs"], key=lambda o: o["custom_id"])


async def test_results_are_deterministic_per_seed(
    make_emulator: MakeEmulator, clock: FakeClock
) -> None:
    """Same seed, same bodies and same failing lines; another seed differs."""
    kwargs = {"failure_fraction": 0.3, "validation_seconds": 0.0}
    first = await _results(make_emulator(seed=1, **kwargs), clock, "a")
    second = await _results(make_emulator(seed=1, **kwargs), clock, "b")
    third = await _results(make_emulator(seed=2, **kwargs), clock, "c")

    def strip(outputs: list[dict[str, Any]]) -> list[tuple[str, str]]:
        # The jobs ran at different times: everything but the timestamp must match.
        for o in outputs:
            o["response"]["body"].pop("created", None)
        return [(o["custom_id"], json.dumps(o["response"], sort_keys=True)) for o in outputs]

    assert strip(first) == strip(second)
    assert strip(first) != strip(third)
    failing = {o["custom_id"] for o in first if o["response"]["status_code"] != 200}
    assert 5 <= len(failing) <= 25


async def test_stats_count_requests_and_tags(
    emulator: Emulator, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    """Stats: jobs per orchestrator_job_id, requests per route and status, also over HTTP."""
    file_id = await upload(client, jsonl(3))
    await create(client, file_id, metadata={"orchestrator_job_id": "42"})
    await create(client, file_id, metadata={"orchestrator_job_id": "42"})
    await create(client, file_id, metadata={"orchestrator_job_id": "43"})
    await client.get("/v1/batch/jobs")
    await client.get("/v1/batch/jobs/not-a-uuid")
    stats = emulator.workspace_stats("test-key")
    assert stats["jobs_by_orchestrator_job_id"] == {"42": 2, "43": 1}
    assert stats["files_uploaded"] == 1
    assert stats["requests"]["jobs.create"] == {"200": 3}
    assert stats["requests"]["jobs.get"] == {"422": 1}
    served = (await client.get("/_emulator/stats")).json()
    ws = Emulator.workspace_id("test-key")
    assert served["caller_workspace"] == ws
    assert served["workspaces"][ws]["jobs_created"] == 3
    assert "test-key" not in json.dumps(served)
    async with httpx.AsyncClient(transport=emulator.transport(), base_url="http://e") as anon:
        await anon.get("/v1/files")
    assert emulator.stats()["unauthenticated"] == {"files.list": {"401": 1}}
