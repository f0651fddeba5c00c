"""The OpenAI key never leaks: not in URLs, logs (even at DEBUG), reprs or exception texts."""

from __future__ import annotations

import io
import traceback
from pathlib import Path

import httpx
import pytest
import structlog

from orchestrator.errors import ProviderError
from orchestrator.providers.openai import OpenAIProvider
from tests.providers.rawserver import Behaviour, serve
from tests.providers.test_secrets import SENTINEL, captured

pytestmark = pytest.mark.anyio
__all__ = ["captured"]  # the fixture, used by name below


def echo_everything(request: httpx.Request) -> httpx.Response:
    """A hostile server echoing the Authorization header in an OpenAI error body."""
    auth = request.headers["authorization"]
    body = {"error": {"message": f"bad key {auth}", "type": "x", "param": auth, "code": None}}
    return httpx.Response(401, json=body)


async def test_sentinel_key_never_appears(captured: io.StringIO, tmp_path: Path) -> None:
    """Calls that succeed, fail echoing the key, or die on the network leak nothing."""
    texts: list[str] = []
    async with serve(b"line\n" * 10, Behaviour("cut", cut_at=7)) as server:
        provider = OpenAIProvider(server.base_url + "/v1", SENTINEL, timeout=5.0, project="p1")
        try:
            await provider.download_file("file-1", tmp_path / "out.jsonl")
        finally:
            await provider.aclose()
    texts.append(repr(provider))
    provider = OpenAIProvider(
        "https://api.openai.test", SENTINEL, transport=httpx.MockTransport(echo_everything)
    )
    try:
        for call in (
            provider.get_job("batch_1"),
            provider.cancel_job("batch_1"),
            provider.create_job(
                input_file_ids=["f"],
                model="m",
                endpoint="/v1/chat/completions",
                metadata={},
                timeout_hours=24,
            ),
        ):
            with pytest.raises(ProviderError) as info:
                await call
            texts += [str(info.value), "".join(traceback.format_exception(info.value))]
            structlog.get_logger("test").exception("forced", exc_info=info.value)
    finally:
        await provider.aclose()
    dead = OpenAIProvider("http://127.0.0.1:9", SENTINEL, timeout=1.0)
    try:
        with pytest.raises(ProviderError) as info:
            await dead.get_job("batch_1")
        texts.append("".join(traceback.format_exception(info.value)))
    finally:
        await dead.aclose()
    output = captured.getvalue()
    assert "provider.call" in output
    assert "bad key Bearer ***" in texts[1]
    for text in [output, *texts]:
        assert SENTINEL not in text
