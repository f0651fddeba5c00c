"""Builders for daemon tests: configs with generated inputs, crash and fault transports."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from orchestrator.clock import FakeClock
from orchestrator.config import Config, load_config
from orchestrator.daemon.app import embedded_api_key
from orchestrator.daemon.context import Runtime, WorkspaceRuntime
from orchestrator.daemon.waker import Waker
from orchestrator.emulator import Emulator, EmulatorSettings
from orchestrator.polling import PollPolicy
from orchestrator.providers.mistral import MistralProvider


def write_chat_input(path: Path, n: int, *, prefix: str = "req") -> Path:
    """A valid chat-completions JSONL input of ``n`` requests."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            body = {"max_tokens": 16, "messages": [{"role": "user", "content": f"q{i}"}]}
            f.write(json.dumps({"custom_id": f"{prefix}-{i}", "body": body}) + "\n")
    return path


def write_config(
    folder: Path,
    jobs: Sequence[tuple[str, int]],
    *,
    budget: int = 1_000_000,
    count_external: bool = False,
    priorities: dict[str, int] | None = None,
    extra: str = "",
) -> Path:
    """A config with one embedded workspace ``main`` and one chat job per (name, size)."""
    lines = [
        "[ledger]",
        'url = "sqlite:///var/ledger.db"',
        "[results]",
        'dir = "var/results"',
        "[polling]",
        'initial = "5s"',
        'max = "10m"',
        "[workspaces.main]",
        'base_url = "embedded"',
        f"pending_budget = {budget}",
        f"count_external = {'true' if count_external else 'false'}",
        extra,
    ]
    for name, size in jobs:
        write_chat_input(folder / "data" / f"{name}.jsonl", size, prefix=name)
        lines += [
            "[[jobs]]",
            f'name = "{name}"',
            'workspace = "main"',
            f'input = "data/{name}.jsonl"',
            'model = "mistral-small-latest"',
            'endpoint = "/v1/chat/completions"',
            f"priority = {(priorities or {}).get(name, 0)}",
        ]
    path = folder / "orchestrator.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def clock() -> FakeClock:
    """Shared by the daemon and the emulator; every sleep jumps time forward."""
    return FakeClock(autojump=True)


@pytest.fixture
def emulator_factory(clock: FakeClock) -> Iterator[Callable[..., Emulator]]:
    """Make emulators on the shared clock (closed at teardown)."""
    made: list[Emulator] = []

    def make(**overrides: Any) -> Emulator:
        settings: dict[str, Any] = {
            "time_scale": 1.0,
            "throughput": 10.0,
            "validation_seconds": 30.0,
            "failure_fraction": 0.0,
            "seed": 3,
        }
        settings.update(overrides)
        emulator = Emulator(EmulatorSettings(**settings), clock=clock)
        made.append(emulator)
        return emulator

    yield make
    for emulator in made:
        emulator.close()


def load(path: Path) -> Config:
    """Load a test config."""
    return load_config(path)


class Crash(BaseException):
    """Stands for the process dying: nothing in the daemon catches a BaseException."""


def contains_crash(exc: BaseException) -> bool:
    """Whether ``exc`` is a :class:`Crash`, or holds one (in a group, or as its cause)."""
    if isinstance(exc, Crash):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return any(contains_crash(inner) for inner in exc.exceptions)
    return exc.__cause__ is not None and contains_crash(exc.__cause__)


class CrashingTransport(httpx.AsyncBaseTransport):
    """Lets requests through until ``when`` matches, then dies before or after the server acts.

    ``after=True`` is the nasty case: the server did the work (created the job, stored the
    file) but the client never learns of it. ``cut_body_after`` dies mid-body instead.
    """

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport,
        *,
        when: Callable[[httpx.Request], bool],
        after: bool = True,
        cut_body_after: int | None = None,
    ) -> None:
        self._inner = inner
        self._when = when
        self._after = after
        self._cut = cut_body_after
        self.fired = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        hit = not self.fired and self._when(request)
        if hit and not self._after and self._cut is None:
            self.fired = True
            raise Crash(f"crash before {request.method} {request.url.path}")
        response = await self._inner.handle_async_request(request)
        if not hit:
            return response
        self.fired = True
        if self._cut is None:
            await response.aclose()
            raise Crash(f"crash after {request.method} {request.url.path}")
        body = await response.aread()
        cut = self._cut

        async def stream() -> Any:
            yield body[:cut]
            raise Crash(f"crash mid-body of {request.url.path} after {cut} bytes")

        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=_AsyncStream(stream()),
            request=request,
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


class _AsyncStream(httpx.AsyncByteStream):
    def __init__(self, iterator: Any) -> None:
        self._iterator = iterator

    async def __aiter__(self) -> Any:
        async for chunk in self._iterator:
            yield chunk


def is_route(method: str, suffix: str) -> Callable[[httpx.Request], bool]:
    """Match requests by method and path suffix (e.g. POST /v1/batch/jobs)."""

    def match(request: httpx.Request) -> bool:
        return request.method == method and request.url.path.endswith(suffix)

    return match


class ObservingTransport(httpx.AsyncBaseTransport):
    """Calls ``on_response`` after each exchange: a deterministic point to act from in a test."""

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport,
        on_response: Callable[[httpx.Request, httpx.Response], Awaitable[None]],
    ) -> None:
        self._inner = inner
        self._on_response = on_response

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        await self._on_response(request, response)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


def embedded_provider(emulator: Emulator, clock: FakeClock) -> MistralProvider:
    """A provider talking to ``emulator`` in-process, as the ``main`` embedded workspace."""
    return MistralProvider(
        base_url="http://embedded",
        api_key=embedded_api_key("main"),
        transport=httpx.ASGITransport(app=emulator.app),
        clock=clock,
    )


def loop_runtime(clock: FakeClock, ledger: Any, tmp_path: Path) -> Runtime:
    """The process-wide collaborators one loop needs, with default polling."""
    return Runtime(
        clock=clock,
        ledger=ledger,
        results_dir=tmp_path / "results",
        policy=PollPolicy(),
        activity=Waker(clock),
    )


def loop_workspace(
    clock: FakeClock,
    provider: MistralProvider,
    *,
    count_external: bool = False,
    admission: Waker | None = None,
) -> WorkspaceRuntime:
    """The ``main`` workspace (budget 1,000,000) as one loop sees it."""
    return WorkspaceRuntime(
        name="main",
        provider=provider,
        pending_budget=1_000_000,
        count_external=count_external,
        admission=admission or Waker(clock),
        poll=Waker(clock),
        collect=Waker(clock),
    )
