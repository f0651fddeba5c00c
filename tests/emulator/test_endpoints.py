"""Synthetic results per endpoint, and the remaining corners of the API."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from orchestrator.clock import FakeClock
from orchestrator.emulator import Emulator, EmulatorSettings
from orchestrator.emulator.server import add_arguments, settings_from_args
from orchestrator.emulator.store import Store
from orchestrator.errors import ConfigError
from tests.emulator.conftest import MakeEmulator, create, jsonl, upload

pytestmark = pytest.mark.anyio

CASES: list[tuple[str, dict[str, Any], set[str]]] = [
    (
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5},
        {"id", "object", "model", "usage", "created", "choices"},
    ),
    ("/v1/fim/completions", {"prompt": "def f(", "suffix": ")"}, {"choices", "usage"}),
    ("/v1/embeddings", {"input": ["a", "b"]}, {"data", "usage", "model"}),
    ("/v1/moderations", {"input": "text"}, {"results", "model"}),
    ("/v1/chat/moderations", {"input": [{"role": "user", "content": "x"}]}, {"results"}),
    ("/v1/ocr", {"document": {"document_url": "https://x/y.pdf"}}, {"pages", "usage_info"}),
    ("/v1/classifications", {"input": ["a"]}, {"results", "id"}),
    ("/v1/chat/classifications", {"input": [{"role": "user", "content": "x"}]}, {"results"}),
    ("/v1/conversations", {"inputs": "hello"}, {"outputs", "usage", "conversation_id"}),
    ("/v1/audio/transcriptions", {"file_url": "https://x/a.mp3"}, {"text", "usage"}),
]


@pytest.mark.parametrize(("endpoint", "body", "keys"), CASES, ids=[c[0] for c in CASES])
async def test_endpoint_shapes(
    make_emulator: MakeEmulator,
    clock: FakeClock,
    endpoint: str,
    body: dict[str, Any],
    keys: set[str],
) -> None:
    """Each endpoint yields its own body shape; a body missing its key field fails."""
    emu = make_emulator(validation_seconds=0.0, embedding_dimensions=8)
    async with emu.client("k") as client:
        content = (
            json.dumps({"custom_id": "ok", "body": body})
            + "\n"
            + json.dumps({"custom_id": "bad", "body": {"unrelated": 1}})
            + "\n"
        ).encode()
        job = await create(client, await upload(client, content), endpoint=endpoint)
        clock.advance(10.0)
        job = (await client.get(f"/v1/batch/jobs/{job['id']}", params={"inline": "true"})).json()
    assert (job["status"], job["succeeded_requests"], job["failed_requests"]) == ("SUCCESS", 1, 1)
    results = {o["custom_id"]: o["response"] for o in job["outputs"]}
    assert results["ok"]["status_code"] == 200
    assert keys <= set(results["ok"]["body"])
    assert results["bad"]["status_code"] in (400, 422)
    if endpoint == "/v1/chat/completions":
        choice = results["ok"]["body"]["choices"][0]
        assert choice["finish_reason"] == "length"
        assert results["ok"]["body"]["usage"]["completion_tokens"] == 5
    if endpoint == "/v1/embeddings":
        assert [len(d["embedding"]) for d in results["ok"]["body"]["data"]] == [8, 8]


async def test_model_filter_and_created_by_me(client: httpx.AsyncClient) -> None:
    """The list filters on model; created_by_me is accepted (every job is the key's own)."""
    file_id = await upload(client, jsonl(1))
    await create(client, file_id, model="a")
    await create(client, file_id, model="b")
    page = (await client.get("/v1/batch/jobs", params={"model": "a"})).json()
    assert [j["model"] for j in page["data"]] == ["a"]
    page = (await client.get("/v1/batch/jobs", params={"created_by_me": "true"})).json()
    assert page["total"] == 2


async def test_metadata_filter_as_json(client: httpx.AsyncClient) -> None:
    """metadata may also come as one JSON object parameter."""
    file_id = await upload(client, jsonl(1))
    await create(client, file_id, metadata={"k": "v"})
    await create(client, file_id, metadata={"k": "w"})
    page = (await client.get("/v1/batch/jobs", params={"metadata": '{"k": "w"}'})).json()
    assert [j["metadata"] for j in page["data"]] == [{"k": "w"}]
    bad = await client.get("/v1/batch/jobs", params={"metadata": "[1]"})
    assert bad.status_code == 422


async def test_inline_outputs_limit(make_emulator: MakeEmulator, clock: FakeClock) -> None:
    """A result too large for ?inline=true is a clear 400."""
    emu = make_emulator(validation_seconds=0.0, inline_outputs_max_bytes=100)
    async with emu.client("k") as client:
        job = await create(client, await upload(client, jsonl(5)))
        clock.advance(60)
        response = await client.get(f"/v1/batch/jobs/{job['id']}", params={"inline": "true"})
    assert response.status_code == 400
    assert response.json()["code"] == "inline_outputs_too_large"


async def test_upload_fields(client: httpx.AsyncClient) -> None:
    """purpose defaults to fine-tune; expiry (hours) sets expires_at; purpose filters lists."""
    response = await client.post(
        "/v1/files", files={"file": ("a.txt", b"x\n")}, data={"expiry": "2", "visibility": "user"}
    )
    meta = response.json()
    assert (meta["purpose"], meta["sample_type"], meta["visibility"]) == (
        "fine-tune",
        "instruct",
        "user",
    )
    assert meta["expires_at"] == meta["created_at"] + 7200
    assert meta["mimetype"] == "text/plain"  # the part's own content type
    await upload(client, jsonl(1))
    listing = (await client.get("/v1/files", params={"purpose": "batch"})).json()
    assert listing["total"] == 1
    bad = await client.post("/v1/files", files={"file": ("a", b"x")}, data={"expiry": "soon"})
    assert bad.status_code == 422


async def test_signed_url_of_a_deleted_file(emulator: Emulator, client: httpx.AsyncClient) -> None:
    """A signed URL stops working once its file is deleted."""
    file_id = await upload(client, b"abc\n")
    url = (await client.get(f"/v1/files/{file_id}/url")).json()["url"]
    await client.delete(f"/v1/files/{file_id}")
    async with httpx.AsyncClient(transport=emulator.transport()) as anonymous:
        assert (await anonymous.get(url)).status_code == 404


async def test_empty_input_fails(make_emulator: MakeEmulator, clock: FakeClock) -> None:
    """An input without request lines FAILS at validation with a job-level error."""
    emu = make_emulator(validation_seconds=1.0)
    async with emu.client("k") as client:
        job = await create(client, await upload(client, b"\n\n"))
        clock.advance(1.0)
        job = (await client.get(f"/v1/batch/jobs/{job['id']}")).json()
    assert (job["status"], job["total_requests"]) == ("FAILED", 0)
    assert job["errors"] == [{"message": "The input contains no request lines.", "count": 1}]
    assert job["output_file"] is None and job["error_file"] is None


def test_settings_validation() -> None:
    """Bad settings are refused with the field named."""
    with pytest.raises(ValueError, match=r"time_scale must be > 0"):
        EmulatorSettings(time_scale=0)
    with pytest.raises(ValueError, match=r"api_keys"):
        EmulatorSettings(api_keys=[""])
    with pytest.raises(ValueError, match=r"completion_tokens"):
        EmulatorSettings(completion_tokens=(10, 5))
    assert EmulatorSettings(api_keys="one").api_keys == frozenset({"one"})


def test_cli_options(monkeypatch: pytest.MonkeyPatch) -> None:
    """emulate options (and ORCH_EMULATOR_* variables) become settings."""
    monkeypatch.setenv("ORCH_EMULATOR_TIME_SCALE", "60")
    monkeypatch.setenv("ORCH_EMULATOR_API_KEYS", "a,b")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        ["--throughput", "5", "--fault-routes", "jobs.get,jobs.list", "--drop-rate", "0.1"]
    )
    settings = settings_from_args(args)
    assert (settings.time_scale, settings.throughput) == (60.0, 5.0)
    assert settings.api_keys == frozenset({"a", "b"})
    assert settings.faults.routes == frozenset({"jobs.get", "jobs.list"})
    assert settings.faults.drop_rate == 0.1
    args = parser.parse_args(["--fault-routes", "jobs.nope"])
    with pytest.raises(ConfigError, match="unknown route"):
        settings_from_args(args)


def test_schema_version_mismatch(tmp_path: Path) -> None:
    """State written by another schema version is refused with a clear message."""
    Store(tmp_path).close()
    store = Store(tmp_path)
    store.set_meta("schema_version", "999")
    store.close()
    with pytest.raises(RuntimeError, match="schema version 999"):
        Store(tmp_path)
