"""Fixtures for provider tests against the bundled emulator (in-process and over a socket)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from orchestrator.clock import FakeClock
from orchestrator.emulator import Emulator, EmulatorSettings, FaultSettings
from orchestrator.providers.mistral import MistralProvider

API_KEY = "sk-emulator-test-key-42"


def settings(**overrides: Any) -> EmulatorSettings:
    """The brief's baseline emulator settings, with overrides."""
    base: dict[str, Any] = {
        "time_scale": 1.0,
        "throughput": 1000.0,
        "validation_seconds": 5.0,
        "failure_fraction": 0.0,
        "pending_budget": 1_000_000,
        "seed": 0,
        "faults": FaultSettings(),
    }
    base.update(overrides)
    return EmulatorSettings(**base)


def write_requests(path: Path, n: int, *, start: int = 0) -> Path:
    """A valid chat-completions input of ``n`` requests."""
    with path.open("w", encoding="utf-8") as f:
        for i in range(start, start + n):
            line = {
                "custom_id": f"req-{i}",
                "body": {"max_tokens": 16, "messages": [{"role": "user", "content": f"q{i}"}]},
            }
            f.write(json.dumps(line) + "\n")
    return path


@pytest.fixture
def clock() -> FakeClock:
    """The emulator's (and provider's) time; advanced by hand."""
    return FakeClock()


@pytest.fixture
def emulator_settings(request: pytest.FixtureRequest) -> EmulatorSettings:
    """The baseline settings, or those given by ``parametrize(..., indirect=True)``."""
    given: EmulatorSettings | None = getattr(request, "param", None)
    return given or settings()


@pytest.fixture
def emulator(clock: FakeClock, emulator_settings: EmulatorSettings) -> Iterator[Emulator]:
    """An in-process emulator with temporary state."""
    emu = Emulator(emulator_settings, clock=clock, state_dir=None)
    try:
        yield emu
    finally:
        emu.close()


MakeProvider = Callable[..., MistralProvider]


@pytest.fixture
async def make_mistral(emulator: Emulator, clock: FakeClock) -> AsyncIterator[MakeProvider]:
    """Providers over ``httpx.ASGITransport(app=emulator.app)``; closed at teardown."""
    made: list[MistralProvider] = []

    def build(api_key: str = API_KEY, **kwargs: Any) -> MistralProvider:
        provider = MistralProvider(
            "http://emulator",
            api_key,
            transport=httpx.ASGITransport(app=emulator.app),
            clock=clock,
            **kwargs,
        )
        made.append(provider)
        return provider

    yield build
    for provider in made:
        await provider.aclose()


@pytest.fixture
async def mistral(make_mistral: MakeProvider) -> MistralProvider:
    """One provider over the in-process emulator."""
    return make_mistral()


@pytest.fixture
def emulator_url(emulator: Emulator) -> Iterator[str]:
    """The emulator served by uvicorn on a free port of 127.0.0.1, in a thread.

    Real sockets: bodies stream (no ASGITransport buffering), and a cut or dropped connection
    is a real one. The server is stopped and its thread joined (bounded) at teardown.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        emulator.app, log_level="critical", lifespan="off", access_log=False, timeout_keep_alive=1
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="emulator-uvicorn", daemon=True
    )
    thread.start()
    try:
        for _ in range(500):
            if server.started:
                break
            if not thread.is_alive():
                raise RuntimeError("the emulator's uvicorn thread died while starting")
            time.sleep(0.01)  # waiting for a real server thread, not simulated time
        else:
            raise RuntimeError("the emulator's uvicorn server did not start within 5 s")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
        if thread.is_alive():
            raise RuntimeError("the emulator's uvicorn thread did not stop within 10 s")


@pytest.fixture
async def socket_mistral(emulator_url: str, clock: FakeClock) -> AsyncIterator[MistralProvider]:
    """A provider talking to the emulator over a real socket."""
    provider = MistralProvider(emulator_url, API_KEY, clock=clock, timeout=10.0)
    try:
        yield provider
    finally:
        await provider.aclose()
