"""Injected faults: rates, reproducibility, per-route settings, in-process behaviour."""

from __future__ import annotations

import httpx
import pytest

from orchestrator.clock import FakeClock
from orchestrator.emulator import Emulator, EmulatorSettings, FaultSettings
from orchestrator.emulator.faults import FaultInjector
from tests.emulator.conftest import MakeEmulator, create, jsonl, upload

pytestmark = pytest.mark.anyio


def test_rates_are_respected() -> None:
    """Over many draws each fault kind shows up at about its rate."""
    injector = FaultInjector(
        FaultSettings(rate_limit_rate=0.1, server_error_rate=0.2, drop_rate=0.1, truncate_rate=0.1)
    )
    kinds = [injector.decide("jobs.get").kind for _ in range(10_000)]
    share = {k: kinds.count(k) / len(kinds) for k in set(kinds)}
    assert share["rate_limit"] == pytest.approx(0.1, abs=0.02)
    assert share["server_error"] == pytest.approx(0.2, abs=0.02)
    assert share["drop_before"] + share["drop_after"] == pytest.approx(0.1, abs=0.02)
    assert share["truncate"] == pytest.approx(0.1, abs=0.02)
    assert share[None] == pytest.approx(0.5, abs=0.02)


def test_same_seed_same_faults() -> None:
    """A seed fixes each route's sequence; interleaving other routes does not change it."""
    settings = FaultSettings(server_error_rate=0.3, seed=9)
    a, b = FaultInjector(settings), FaultInjector(settings)
    first = [a.decide("jobs.get") for _ in range(50)]
    second = []
    for _ in range(50):
        b.decide("jobs.list")
        second.append(b.decide("jobs.get"))
    assert first == second
    other = FaultInjector(FaultSettings(server_error_rate=0.3, seed=10))
    assert [other.decide("jobs.get") for _ in range(50)] != first


def test_routes_and_overrides() -> None:
    """routes restricts faults; per_route replaces the settings for a route."""
    settings = FaultSettings(
        server_error_rate=1.0,
        routes={"jobs.get"},
        per_route={"files.content": FaultSettings(truncate_rate=1.0)},
    )
    injector = FaultInjector(settings)
    assert injector.decide("jobs.get").kind == "server_error"
    assert injector.decide("jobs.list").kind is None
    assert injector.decide("files.content").kind == "truncate"


def test_bad_fault_settings() -> None:
    """Unknown routes and impossible rates are refused with clear messages."""
    with pytest.raises(ValueError, match="unknown route name"):
        FaultSettings(routes={"jobs.nope"})
    with pytest.raises(ValueError, match="must not exceed 1"):
        FaultSettings(rate_limit_rate=0.6, server_error_rate=0.6)
    with pytest.raises(ValueError, match="between 0 and 1"):
        FaultSettings(drop_rate=2)
    with pytest.raises(ValueError, match="unknown fault setting"):
        FaultSettings.from_dict({"rate": 1})


async def test_rate_limit_and_server_errors(make_emulator: MakeEmulator) -> None:
    """429 carries Retry-After and Mistral's body; 5xx use the error shape; stats count them."""
    emu = make_emulator(faults=FaultSettings(rate_limit_rate=1.0, retry_after=2.5))
    async with emu.client("k") as client:
        response = await client.get("/v1/batch/jobs")
        assert response.status_code == 429
        assert response.headers["retry-after"] == "3"
        assert response.headers["retry-after-ms"] == "2500"
        assert response.json()["code"] == "1300"
        emu.set_faults(FaultSettings(server_error_rate=1.0))
        response = await client.get("/v1/batch/jobs")
        assert response.status_code in (500, 502, 503)
        assert response.json()["type"] == "server_error"
        emu.set_faults(FaultSettings())
        assert (await client.get("/v1/batch/jobs")).status_code == 200
    stats = emu.workspace_stats("k")
    assert stats["faults"]["jobs.list"] == {"rate_limit": 1, "server_error": 1}
    assert sum(stats["requests"]["jobs.list"].values()) == 3


async def test_in_process_drop_raises_like_httpx(make_emulator: MakeEmulator) -> None:
    """In-process a dropped connection raises httpx.RemoteProtocolError."""
    emu = make_emulator(faults=FaultSettings(drop_rate=1.0, routes={"jobs.create"}))
    async with emu.client("k") as client:
        file_id = await upload(client, jsonl(3))
        for _ in range(20):
            with pytest.raises(httpx.RemoteProtocolError):
                await create(client, file_id)
        stats = emu.workspace_stats("k")
        before = stats["faults"]["jobs.create"].get("drop_before", 0)
        after = stats["faults"]["jobs.create"].get("drop_after", 0)
        assert before + after == 20 and before and after
        # A drop after processing still created the job: the client cannot tell.
        assert stats["jobs_created"] == after
        assert stats["requests"]["jobs.create"] == {"dropped": 20}


async def test_in_process_truncation(make_emulator: MakeEmulator, clock: FakeClock) -> None:
    """A truncated download raises httpx.RemoteProtocolError naming the byte counts."""
    emu = make_emulator(faults=FaultSettings(truncate_rate=1.0, routes={"files.content"}))
    async with emu.client("k") as client:
        file_id = await upload(client, jsonl(100))
        with pytest.raises(httpx.RemoteProtocolError, match="expected"):
            await client.get(f"/v1/files/{file_id}/content")


async def test_latency_uses_the_clock(clock: FakeClock) -> None:
    """Latency waits on the injected clock (autojump makes it instant and visible)."""
    jumping = FakeClock(autojump=True)
    settings = EmulatorSettings(faults=FaultSettings(latency=30.0))
    with Emulator(settings, clock=jumping) as emu:
        async with emu.client("k") as client:
            start = jumping.now()
            assert (await client.get("/v1/files")).status_code == 200
            assert jumping.now() - start == 30.0


async def test_faults_over_http(emulator: Emulator, client: httpx.AsyncClient) -> None:
    """PUT /_emulator/faults changes the faults; bad settings are a 400."""
    response = await client.put(
        "/_emulator/faults", json={"server_error_rate": 1.0, "routes": ["jobs.get"]}
    )
    assert response.status_code == 200
    assert emulator.faults.server_error_rate == 1.0
    bad = await client.put("/_emulator/faults", json={"server_error_rate": 3})
    assert bad.status_code == 400 and "between 0 and 1" in bad.json()["message"]
    assert (await client.get("/_emulator/faults")).json()["routes"] == ["jobs.get"]
