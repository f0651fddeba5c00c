"""Faults and downloads over a real socket (uvicorn in a thread)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import httpx
import pytest
from mistralai.client import Mistral
from mistralai.client.utils.retries import BackoffStrategy, RetryConfig

from orchestrator.clock import FakeClock
from orchestrator.emulator import Emulator, EmulatorSettings, FaultSettings
from orchestrator.emulator.server import serve_in_thread

KEY = {"Authorization": "Bearer k"}


@pytest.fixture
def served() -> Iterator[tuple[Emulator, str]]:
    """An emulator served on a free port."""
    with Emulator(EmulatorSettings(), clock=FakeClock()) as emu, serve_in_thread(emu) as url:
        yield emu, url


def _upload(url: str, content: bytes) -> str:
    response = httpx.post(
        f"{url}/v1/files", headers=KEY, files={"file": ("f.jsonl", content)}, timeout=10
    )
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def test_dropped_connection(served: tuple[Emulator, str], caplog: pytest.LogCaptureFixture) -> None:
    """A drop closes the socket without a response; the server stays healthy and quiet."""
    emu, url = served
    emu.set_faults(FaultSettings(drop_rate=1.0, routes={"jobs.list"}))
    with caplog.at_level(logging.WARNING), httpx.Client(base_url=url, headers=KEY) as client:
        for _ in range(6):
            with pytest.raises(httpx.RemoteProtocolError):
                client.get("/v1/batch/jobs")
        assert client.get("/v1/files").status_code == 200
    assert emu.workspace_stats("k")["requests"]["jobs.list"] == {"dropped": 6}
    assert not [r for r in caplog.records if r.name.startswith("uvicorn")]


def test_truncated_download(served: tuple[Emulator, str], caplog: pytest.LogCaptureFixture) -> None:
    """A truncated body announces its full length, sends less, and closes; Range resumes it."""
    emu, url = served
    content = bytes(range(256)) * 8192  # 2 MiB
    file_id = _upload(url, content)
    emu.set_faults(FaultSettings(truncate_rate=1.0, routes={"files.content"}, seed=1))
    received = b""
    with caplog.at_level(logging.WARNING), httpx.Client(base_url=url, headers=KEY) as client:
        with (
            pytest.raises(httpx.RemoteProtocolError),
            client.stream("GET", f"/v1/files/{file_id}/content") as response,
        ):
            assert response.headers["content-length"] == str(len(content))
            for chunk in response.iter_raw():
                received += chunk
        assert 0 < len(received) < len(content)
        assert content.startswith(received)
        emu.set_faults(FaultSettings())
        rest = client.get(
            f"/v1/files/{file_id}/content", headers={"Range": f"bytes={len(received)}-"}
        )
        assert rest.status_code == 206
        assert rest.headers["content-range"] == (
            f"bytes {len(received)}-{len(content) - 1}/{len(content)}"
        )
        assert received + rest.content == content
    assert not [r for r in caplog.records if r.name.startswith("uvicorn")]


def test_sdk_retries_rate_limits(served: tuple[Emulator, str]) -> None:
    """The SDK's own retry honours the emulator's 429s and gets through."""
    emu, url = served
    emu.set_faults(FaultSettings(rate_limit_rate=0.5, retry_after=0.01, seed=4))
    retry = RetryConfig("backoff", BackoffStrategy(1, 10, 1.1, 5000), False)
    with Mistral(api_key="k", server_url=url, retry_config=retry) as client:
        for _ in range(5):
            assert client.batch.jobs.list().total == 0
    faults = emu.workspace_stats("k")["faults"]["jobs.list"]
    assert faults["rate_limit"] >= 1
