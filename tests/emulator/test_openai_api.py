"""The OpenAI wire in-process: refusals, endpoints, tokens, persistence and the CLI options."""

from __future__ import annotations

import argparse
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from orchestrator.clock import FakeClock
from orchestrator.emulator import Emulator, EmulatorSettings
from orchestrator.emulator.openai.lines import prompt_tokens
from orchestrator.emulator.server import add_arguments, settings_from_args
from orchestrator.errors import ConfigError
from tests.emulator.openai_helpers import (
    CHAT,
    MODEL,
    chat_lines,
    check_batch_json,
    check_error_json,
    jsonl,
    line,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def emu(clock: FakeClock) -> Any:
    """An OpenAI-dialect emulator: 10 s validation, 10 lines/s, 2 s finalizing."""
    settings = EmulatorSettings(validation_seconds=10.0, throughput=10.0, token_limit=10_000)
    with Emulator(settings, clock=clock, dialect="openai") as emulator:
        yield emulator


@pytest.fixture
async def client(emu: Emulator) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client with a key and OpenAI's optional headers."""
    headers = {"OpenAI-Organization": "org-x", "OpenAI-Project": "proj-y"}
    async with emu.client("k", headers=headers) as c:
        yield c


async def _upload(client: httpx.AsyncClient, content: bytes, name: str = "in.jsonl") -> str:
    response = await client.post(
        "/v1/files", files={"file": (name, content)}, data={"purpose": "batch"}
    )
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


async def _create(client: httpx.AsyncClient, file_id: str, endpoint: str = CHAT) -> dict[str, Any]:
    body = {"input_file_id": file_id, "endpoint": endpoint, "completion_window": "24h"}
    response = await client.post("/v1/batches", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


_REFUSED_CREATES = [
    pytest.param({"endpoint": CHAT, "completion_window": "24h"}, "input_file_id", id="no-file"),
    pytest.param({"input_file_id": "F", "completion_window": "24h"}, "endpoint", id="no-endpoint"),
    pytest.param(
        {"input_file_id": "F", "endpoint": "/v1/nope", "completion_window": "24h"},
        "endpoint",
        id="bad-endpoint",
    ),
    pytest.param(
        {"input_file_id": "F", "endpoint": "/v1/videos", "completion_window": "24h"},
        "endpoint",
        id="unsupported-endpoint",
    ),
    pytest.param(
        {"input_file_id": "F", "endpoint": CHAT, "completion_window": "24h", "metadata": {"k": 1}},
        "metadata.k",
        id="metadata-value",
    ),
    pytest.param(
        {
            "input_file_id": "F",
            "endpoint": CHAT,
            "completion_window": "24h",
            "metadata": {"k" * 65: "v"},
        },
        "metadata",
        id="metadata-key",
    ),
    pytest.param(
        {
            "input_file_id": "F",
            "endpoint": CHAT,
            "completion_window": "24h",
            "output_expires_after": {"anchor": "created_at", "seconds": 60},
        },
        "output_expires_after.seconds",
        id="expires-after",
    ),
    pytest.param(
        {"input_file_id": "F", "endpoint": CHAT, "completion_window": "24h", "model": "x"},
        None,
        id="unknown-argument",
    ),
]


@pytest.mark.parametrize(("body", "param"), _REFUSED_CREATES)
async def test_create_refusals(client: httpx.AsyncClient, body: dict[str, Any], param: str) -> None:
    """A malformed create is a 400 naming the parameter; nothing is created."""
    file_id = await _upload(client, chat_lines(1))
    if body.get("input_file_id") == "F":
        body = {**body, "input_file_id": file_id}
    response = await client.post("/v1/batches", json=body)
    assert response.status_code == 400
    assert check_error_json(response.json())["param"] == param
    assert (await client.get("/v1/batches")).json()["data"] == []


async def test_create_with_every_option(client: httpx.AsyncClient) -> None:
    """metadata (16 pairs) and output_expires_after are accepted."""
    file_id = await _upload(client, chat_lines(1))
    metadata = {f"k{i}": "v" * 512 for i in range(16)}
    response = await client.post(
        "/v1/batches",
        json={
            "input_file_id": file_id, "endpoint": CHAT, "completion_window": "24h",
            "metadata": metadata,
            "output_expires_after": {"anchor": "created_at", "seconds": 3600},
        },
    )  # fmt: skip
    assert response.status_code == 200
    check_batch_json(response.json())
    assert response.json()["metadata"] == metadata


async def test_input_file_must_be_for_batch(client: httpx.AsyncClient) -> None:
    """A file uploaded for another purpose cannot feed a batch; unknown files are 404."""
    response = await client.post(
        "/v1/files", files={"file": ("a.jsonl", chat_lines(1))}, data={"purpose": "fine-tune"}
    )
    body = {"input_file_id": response.json()["id"], "endpoint": CHAT, "completion_window": "24h"}
    refused = await client.post("/v1/batches", json=body)
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "input_file_id"
    missing = await client.post("/v1/batches", json={**body, "input_file_id": "file-nope"})
    assert missing.status_code == 404
    assert check_error_json(missing.json())["message"] == "No such File object: file-nope"


async def test_upload_form_refusals(client: httpx.AsyncClient) -> None:
    """purpose is required and checked; expires_after is checked; both are 400s."""
    no_purpose = await client.post("/v1/files", files={"file": ("a.jsonl", b"{}\n")})
    assert no_purpose.status_code == 400
    assert no_purpose.json()["error"]["code"] == "missing_required_parameter"
    bad = await client.post(
        "/v1/files", files={"file": ("a.jsonl", b"{}\n")}, data={"purpose": "nope"}
    )
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "purpose"
    expiring = await client.post(
        "/v1/files",
        files={"file": ("a.txt", b"x")},
        data={"purpose": "user_data", "expires_after[anchor]": "created_at",
              "expires_after[seconds]": "7200"},
    )  # fmt: skip
    assert expiring.json()["expires_at"] == expiring.json()["created_at"] + 7200
    no_file = await client.post("/v1/files", data={"purpose": "batch"})
    assert no_file.status_code == 400
    assert (await client.get("/v1/files")).json()["data"][0]["id"] == expiring.json()["id"]


async def test_unknown_routes_and_keys(emu: Emulator, client: httpx.AsyncClient) -> None:
    """Unknown paths are 404, wrong methods 405, a missing key 401, all in OpenAI's shape."""
    assert check_error_json((await client.get("/v1/nothing")).json())["code"] is None
    wrong = await client.delete("/v1/batches")
    assert wrong.status_code == 405 and "GET" in wrong.headers["allow"]
    async with httpx.AsyncClient(transport=emu.transport(), base_url="http://e") as anonymous:
        response = await anonymous.get("/v1/batches")
    assert response.status_code == 401
    assert check_error_json(response.json())["code"] == "invalid_api_key"


async def test_content_ranges(client: httpx.AsyncClient) -> None:
    """files.content serves raw bytes with Range support, as the Mistral wire does."""
    content = chat_lines(50)
    file_id = await _upload(client, content)
    part = await client.get(f"/v1/files/{file_id}/content", headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == content[10:20]
    assert part.headers["content-range"] == f"bytes 10-19/{len(content)}"
    whole = await client.get(f"/v1/files/{file_id}/content")
    assert whole.headers["content-type"] == "application/octet-stream"
    assert whole.content == content


_BODIES: dict[str, tuple[dict[str, Any], str | None]] = {
    "/v1/chat/completions": ({"messages": [{"role": "user", "content": "hi"}]}, "chat.completion"),
    "/v1/completions": ({"prompt": "Once upon a time", "max_tokens": 8}, "text_completion"),
    "/v1/embeddings": ({"input": ["a b", "c d"], "dimensions": 8}, "list"),
    "/v1/responses": ({"input": "Say hi", "max_output_tokens": 20}, "response"),
    "/v1/moderations": ({"input": "some text"}, None),
}


@pytest.mark.parametrize("endpoint", sorted(_BODIES))
async def test_endpoints_answer_in_their_shape(
    clock: FakeClock, client: httpx.AsyncClient, endpoint: str
) -> None:
    """Each endpoint's synthetic answer has its object type and prompt tokens by the rule."""
    request, kind = _BODIES[endpoint]
    lines = [line(f"c{i}", url=endpoint, body=request) for i in range(3)]
    batch = await _create(client, await _upload(client, jsonl(lines)), endpoint)
    clock.advance(20)
    done = (await client.get(f"/v1/batches/{batch['id']}")).json()
    assert done["status"] == "completed" and done["request_counts"]["completed"] == 3
    content = await client.get(f"/v1/files/{done['output_file_id']}/content")
    records = [json.loads(x) for x in content.content.splitlines()]
    expected = prompt_tokens(endpoint, {"model": MODEL, **request})
    again = None
    for record in records:
        answer = record["response"]["body"]
        assert answer.get("object") == kind and answer["model"] == MODEL
        if "usage" in answer:
            usage = answer["usage"]
            assert usage.get("prompt_tokens", usage.get("input_tokens")) == expected
        if endpoint == "/v1/embeddings":
            assert [len(d["embedding"]) for d in answer["data"]] == [8, 8]
        if endpoint == "/v1/moderations":
            assert isinstance(answer["results"][0]["flagged"], bool)
        again = answer
    assert again is not None
    # Deterministic: the same custom_id and seed answer the same in another batch.
    batch2 = await _create(client, await _upload(client, jsonl(lines)), endpoint)
    clock.advance(20)
    done2 = (await client.get(f"/v1/batches/{batch2['id']}")).json()
    content2 = await client.get(f"/v1/files/{done2['output_file_id']}/content")
    body2 = json.loads(content2.content.splitlines()[-1])["response"]["body"]
    assert {k: v for k, v in body2.items() if k not in ("created", "created_at")} == {
        k: v for k, v in again.items() if k not in ("created", "created_at")
    }


async def test_per_request_refusals(clock: FakeClock, client: httpx.AsyncClient) -> None:
    """A body the endpoint refuses is a 400 line in the error file; the others succeed."""
    lines = [
        line("ok", url="/v1/responses", body={"input": "hi"}),
        line("short", url="/v1/responses", body={"input": "hi", "max_output_tokens": 5}),
        line("none", url="/v1/responses", body={}),
    ]
    batch = await _create(client, await _upload(client, jsonl(lines)), "/v1/responses")
    clock.advance(20)
    done = (await client.get(f"/v1/batches/{batch['id']}")).json()
    assert done["request_counts"] == {"total": 3, "completed": 1, "failed": 2}
    content = await client.get(f"/v1/files/{done['error_file_id']}/content")
    errors = {r["custom_id"]: r for r in map(json.loads, content.content.splitlines())}
    short = errors["short"]["response"]
    assert short["status_code"] == 400
    assert short["body"]["error"]["code"] == "integer_below_min_value"
    assert errors["none"]["response"]["body"]["error"]["param"] == "input"


async def test_enqueued_tokens_never_exceed_the_limit(
    emu: Emulator, clock: FakeClock, client: httpx.AsyncClient
) -> None:
    """Over many creates the per-model enqueued tokens stay within the limit (stats say so)."""
    lines = [line(f"r{i}") for i in range(300)]
    per_batch = sum(prompt_tokens(CHAT, item["body"]) for item in lines)
    file_id = await _upload(client, jsonl(lines))
    batches = []
    for _ in range(12):
        batches.append(await _create(client, file_id))
        clock.advance(3)
    clock.advance(200)
    statuses = [(await client.get(f"/v1/batches/{b['id']}")).json()["status"] for b in batches]
    stats = emu.workspace_stats("k")
    highest = stats["max_enqueued_tokens"][MODEL]
    assert highest <= stats["token_limit"] == 10_000 < highest + per_batch
    assert statuses.count("failed") == stats["token_refusals"] > 0
    # No batch finished while they were created: the ones admitted were in flight together.
    assert statuses.count("completed") * per_batch == highest
    assert stats["enqueued_tokens"] == {}
    raw = (await client.get("/_emulator/stats")).json()["workspaces"][emu.workspace_id("k")]
    assert raw["max_enqueued_tokens"] == stats["max_enqueued_tokens"]


async def test_cancel_is_idempotent_on_finished_batches(
    clock: FakeClock, client: httpx.AsyncClient
) -> None:
    """Cancelling a completed batch returns it unchanged."""
    batch = await _create(client, await _upload(client, chat_lines(2)))
    clock.advance(20)
    response = await client.post(f"/v1/batches/{batch['id']}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "completed"
    assert response.json()["cancelling_at"] is None


def test_state_folder_keeps_its_dialect(tmp_path: Path, clock: FakeClock) -> None:
    """A state folder made by one dialect refuses the other, with a clear message."""
    with Emulator(clock=clock, state_dir=tmp_path / "o", dialect="openai"):
        pass
    with Emulator(clock=clock, state_dir=tmp_path / "o", dialect="openai"):
        pass
    with pytest.raises(ValueError, match="made by the openai dialect, not mistral"):
        Emulator(clock=clock, state_dir=tmp_path / "o")
    with Emulator(clock=clock, state_dir=tmp_path / "m"):
        pass
    with pytest.raises(ValueError, match="--dialect mistral"):
        Emulator(clock=clock, state_dir=tmp_path / "m", dialect="openai")


async def test_restart_carries_on(tmp_path: Path, clock: FakeClock) -> None:
    """An OpenAI batch survives a restart on its state folder and finishes there."""
    settings = EmulatorSettings(validation_seconds=1.0, throughput=10.0)
    with Emulator(settings, clock=clock, state_dir=tmp_path, dialect="openai") as first:
        async with first.client("k") as client:
            batch = await _create(client, await _upload(client, chat_lines(100)))
            clock.advance(6.0)
            mid = (await client.get(f"/v1/batches/{batch['id']}")).json()
    assert mid["status"] == "in_progress" and mid["request_counts"]["completed"] == 50
    with Emulator(settings, clock=clock, state_dir=tmp_path, dialect="openai") as second:
        async with second.client("k") as client:
            assert (await client.get(f"/v1/batches/{batch['id']}")).json() == mid
            clock.advance(10.0)
            done = (await client.get(f"/v1/batches/{batch['id']}")).json()
    assert done["status"] == "completed" and done["request_counts"]["completed"] == 100


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_cli_options() -> None:
    """--dialect, --token-limit and --finalizing-seconds reach the settings."""
    args = _args("--dialect", "openai", "--token-limit", "2000000", "--finalizing-seconds", "7")
    settings = settings_from_args(args)
    assert args.dialect == "openai"
    assert settings.token_limit == 2_000_000 and settings.finalizing_seconds == 7.0
    assert settings_from_args(_args()).token_limit is None and _args().dialect == "mistral"
    assert _args("--dialect", "anthropic").dialect == "anthropic"
    with pytest.raises(SystemExit):
        _args("--dialect", "bedrock")


def test_cli_refuses_another_dialects_state(tmp_path: Path) -> None:
    """`emulate` on a state folder of another dialect is a config error, not a crash."""
    from orchestrator.emulator.server import run

    with Emulator(state_dir=tmp_path, dialect="openai"):
        pass
    with pytest.raises(ConfigError, match="openai dialect"):
        run(_args("--state-dir", str(tmp_path), "--port", "0"))
