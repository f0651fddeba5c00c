"""Fixtures for provider tests against the bundled emulator (in-process and over a socket)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

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
