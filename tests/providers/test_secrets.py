"""The API key never leaks: not in URLs, logs (even at DEBUG), reprs or exception texts."""

from __future__ import annotations

import io
import logging
import traceback
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import structlog

from orchestrator.errors import ProviderError
from orchestrator.providers.mistral import MistralProvider
from tests.providers.rawserver import Behaviour, serve

pytestmark = pytest.mark.anyio

SENTINEL = "sk-SENTINEL-7f3a9c1e5b"


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """Every structlog event and stdlib record (httpx, httpcore too) at DEBUG, as text.

    No redacting processor is installed: the provider itself must not emit the key.
    """
    out = io.StringIO()
    old_config = structlog.get_config()
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(out)
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    old_level = root.level
    levels = {name: logging.getLogger(name).level for name in ("httpx", "httpcore")}
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    for name in levels:
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        yield out
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        structlog.configure(**old_config)


def echo_key(request: httpx.Request) -> httpx.Response:
    """A hostile server that echoes the Authorization header in its error body."""
    auth = request.headers["authorization"]
    return httpx.Response(401, json={"message": f"invalid key {auth}", "request_id": auth})


async def test_sentinel_key_never_appears(captured: io.StringIO, tmp_path: Path) -> None:
    """Successful calls, errors echoing the key and a forced exception leak nothing."""
    texts: list[str] = []
    async with serve(b"line\n" * 10, Behaviour("cut", cut_at=7)) as server:
        provider = MistralProvider(server.base_url, SENTINEL, timeout=5.0)
        try:
            await provider.download_file("file-1", tmp_path / "out.jsonl")
        finally:
            await provider.aclose()
    texts.append(repr(provider))

    provider = MistralProvider(
        "https://api.mistral.test", SENTINEL, transport=httpx.MockTransport(echo_key)
    )
    try:
        with pytest.raises(ProviderError) as info:
            await provider.get_job("job-1")
        texts += [str(info.value), repr(info.value)]
        texts.append("".join(traceback.format_exception(info.value)))
        structlog.get_logger("test").exception("forced", exc_info=info.value)
        with pytest.raises(ProviderError) as info2:
            await provider.create_job(
                input_file_ids=["f"],
                model="m",
                endpoint="/v1/chat/completions",
                metadata={},
                timeout_hours=24,
            )
        texts.append("".join(traceback.format_exception(info2.value)))
    finally:
        await provider.aclose()

    dead = MistralProvider("http://127.0.0.1:9", SENTINEL, timeout=1.0)
    try:
        with pytest.raises(ProviderError) as info3:
            await dead.get_job("job-1")
        texts.append("".join(traceback.format_exception(info3.value)))
    finally:
        await dead.aclose()

    output = captured.getvalue()
    assert "provider.call" in output  # the debug log was really captured
    assert "HTTP Request" in output or "httpcore" in output or "send_request" in output
    assert "invalid key Bearer ***" in str(info.value)
    for text in [output, *texts]:
        assert SENTINEL not in text
