"""Shared helpers of the OpenAI-wire tests: input lines, a served emulator, raw-JSON checks."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any, Final, Literal

import openai
import pytest
from openai import OpenAI
from openai.types import Batch

from orchestrator.clock import FakeClock
from orchestrator.emulator import Emulator, EmulatorSettings
from orchestrator.emulator.server import serve_in_thread

MODEL = "gpt-4o-mini"
CHAT: Final[Literal["/v1/chat/completions"]] = "/v1/chat/completions"
KEY = "sdk-key"


def line(
    custom_id: str, *, url: str = CHAT, model: str = MODEL, body: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One ``{custom_id, method, url, body}`` request (a chat question by default)."""
    if body is None:
        body = {"messages": [{"role": "user", "content": f"question {custom_id}"}]}
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": {"model": model, **body}}


def jsonl(items: list[dict[str, Any]] | list[str]) -> bytes:
    """JSONL of dicts (or of raw line texts)."""
    return b"".join(
        (item if isinstance(item, str) else json.dumps(item)).encode() + b"\n" for item in items
    )


def chat_lines(n: int, prefix: str = "r", **kwargs: Any) -> bytes:
    """``n`` chat requests, custom ids ``{prefix}{i}``."""
    return jsonl([line(f"{prefix}{i}", **kwargs) for i in range(n)])


@contextlib.contextmanager
def served(**settings: Any) -> Iterator[tuple[Emulator, FakeClock, OpenAI]]:
    """An OpenAI-dialect emulator on a FakeClock over a real socket, and a strict SDK client."""
    clock = FakeClock()
    defaults: dict[str, Any] = {
        "validation_seconds": 10.0,
        "throughput": 10.0,
        "cancel_seconds": 60.0,
        "finalizing_seconds": 2.0,
    }
    emu_settings = EmulatorSettings(**{**defaults, **settings})
    with (
        Emulator(emu_settings, clock=clock, dialect="openai") as emu,
        serve_in_thread(emu) as url,
        OpenAI(
            api_key=KEY, base_url=f"{url}/v1", max_retries=0, _strict_response_validation=True
        ) as client,
    ):
        yield emu, clock, client


def check_file_json(data: dict[str, Any]) -> None:
    """A ``FileObject`` as raw JSON: exact types, not what pydantic would coerce."""
    assert isinstance(data["id"], str) and data["id"].startswith("file-")
    assert len(data["id"]) == len("file-") + 22
    assert data["object"] == "file"
    for key in ("bytes", "created_at"):
        assert type(data[key]) is int, key
    assert isinstance(data["filename"], str) and isinstance(data["purpose"], str)
    assert data["status"] in ("uploaded", "processed", "error")
    assert data["expires_at"] is None or type(data["expires_at"]) is int


_TIMESTAMPS = (
    "in_progress_at", "expires_at", "finalizing_at", "completed_at", "failed_at", "expired_at",
    "cancelling_at", "cancelled_at",
)  # fmt: skip


def check_batch_json(data: dict[str, Any]) -> None:
    """A ``Batch`` as raw JSON: every required field, exact types, nullable timestamps."""
    batch_id = data["id"]
    assert batch_id.startswith("batch_") and len(batch_id) == 6 + 32
    int(batch_id[6:], 16)
    assert data["object"] == "batch"
    assert data["completion_window"] == "24h"
    assert isinstance(data["endpoint"], str) and isinstance(data["input_file_id"], str)
    assert type(data["created_at"]) is int
    for key in _TIMESTAMPS:
        assert data[key] is None or type(data[key]) is int, key
    counts = data["request_counts"]
    assert set(counts) == {"total", "completed", "failed"}
    assert all(type(v) is int for v in counts.values())
    errors = data["errors"]
    if errors is not None:
        assert errors["object"] == "list"
        for entry in errors["data"]:
            assert set(entry) == {"code", "message", "param", "line"}
            assert entry["line"] is None or type(entry["line"]) is int
    for key in ("output_file_id", "error_file_id"):
        assert data[key] is None or data[key].startswith("file-")
    if data["usage"] is not None:
        usage = data["usage"]
        assert type(usage["input_tokens"]) is int and type(usage["total_tokens"]) is int
        assert type(usage["input_tokens_details"]["cached_tokens"]) is int
        assert type(usage["output_tokens_details"]["reasoning_tokens"]) is int


def check_error_json(data: dict[str, Any]) -> dict[str, Any]:
    """``{"error": {message, type, param, code}}``; returns the inner object."""
    assert set(data) == {"error"}
    error = data["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and isinstance(error["type"], str)
    return dict(error)


def read_lines(client: OpenAI, file_id: str) -> list[dict[str, Any]]:
    """The JSONL records of a result file."""
    content = client.files.content(file_id).content
    return [json.loads(x) for x in content.splitlines() if x.strip()]


def create(client: OpenAI, file_id: str) -> Batch:
    """A chat batch on one input file."""
    return client.batches.create(input_file_id=file_id, endpoint=CHAT, completion_window="24h")


def body(info: pytest.ExceptionInfo[openai.APIStatusError]) -> dict[str, Any]:
    """The ``error`` object an SDK exception carries (``e.body``)."""
    data = info.value.body
    assert isinstance(data, dict)
    return data
