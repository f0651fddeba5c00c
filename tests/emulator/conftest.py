"""Fixtures for the emulator tests: a FakeClock, an emulator on it, in-process clients."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest

from orchestrator.clock import FakeClock
from orchestrator.emulator import Emulator, EmulatorSettings

KEY = "test-key"

MakeEmulator = Callable[..., Emulator]


def jsonl(n: int, *, prefix: str = "r", max_tokens: int | None = None) -> bytes:
    """``n`` chat requests as JSONL, custom ids ``{prefix}{i}``."""
    lines = []
    for i in range(n):
        body: dict[str, Any] = {"messages": [{"role": "user", "content": f"question {i}"}]}
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        lines.append(json.dumps({"custom_id": f"{prefix}{i}", "body": body}))
    return ("\n".join(lines) + "\n").encode()


async def upload(client: httpx.AsyncClient, content: bytes, name: str = "in.jsonl") -> str:
    """Upload ``content`` as a batch file; return its id."""
    response = await client.post(
        "/v1/files",
        files={"file": (name, content, "application/octet-stream")},
        data={"purpose": "batch"},
    )
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


async def create(client: httpx.AsyncClient, file_id: str, **extra: Any) -> dict[str, Any]:
    """Create a chat job on one input file; return the job."""
    body = {"input_files": [file_id], "model": "mistral-small-latest",
            "endpoint": "/v1/chat/completions", **extra}  # fmt: skip
    response = await client.post("/v1/batch/jobs", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


@pytest.fixture
def clock() -> FakeClock:
    """A clock that only moves when the test says so."""
    return FakeClock()


@pytest.fixture
def make_emulator(clock: FakeClock) -> Iterator[Callable[..., Emulator]]:
    """Build emulators on the fake clock; all are closed at the end."""
    made: list[Emulator] = []

    def factory(**kwargs: Any) -> Emulator:
        state_dir = kwargs.pop("state_dir", None)
        emu = Emulator(EmulatorSettings(**kwargs), clock=clock, state_dir=state_dir)
        made.append(emu)
        return emu

    yield factory
    for emu in made:
        emu.close()


@pytest.fixture
def emulator(make_emulator: Callable[..., Emulator]) -> Emulator:
    """An emulator with a 10 s validation, 100 requests/s and a 2 s cancellation."""
    return make_emulator(validation_seconds=10.0, throughput=100.0, cancel_seconds=2.0)


@pytest.fixture
async def client(emulator: Emulator) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client of ``emulator`` with the test key."""
    async with emulator.client(KEY) as c:
        yield c
