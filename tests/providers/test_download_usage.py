"""The download's usage sums over a real socket: whole, resumed with Range, restarted, leftover."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator import fsutil
from orchestrator.providers._transport.partfile import meta_path
from orchestrator.providers.mistral import MistralProvider
from orchestrator.usage import Usage
from tests.providers.rawserver import Behaviour, serve

pytestmark = pytest.mark.anyio

KEY = "sk-download-usage-key"


def _line(i: int) -> bytes:
    if i % 7 == 0:  # an error-like line: no usage
        return json.dumps({"custom_id": str(i), "response": None, "error": {"code": 1}}).encode()
    body = {
        "choices": [{"message": {"content": "x" * (i % 50)}}],
        "usage": {"prompt_tokens": i, "completion_tokens": 2 * i, "total_tokens": 3 * i},
    }
    return json.dumps(
        {"custom_id": str(i), "response": {"status_code": 200, "body": body}}
    ).encode()


LINES = 20_000
CONTENT = b"\n".join(_line(i) for i in range(LINES)) + b"\n"  # ~2 MB: several chunks
WITH = [i for i in range(LINES) if i % 7]
EXPECTED = Usage(
    prompt_tokens=sum(WITH),
    completion_tokens=2 * sum(WITH),
    total_tokens=3 * sum(WITH),
    lines=LINES,
    lines_without_usage=LINES - len(WITH),
)


async def _download(base_url: str, dest: Path) -> Usage:
    provider = MistralProvider(base_url, KEY, timeout=10.0)
    try:
        return (await provider.download_file("file-1", dest)).usage
    finally:
        await provider.aclose()


@pytest.mark.parametrize(
    "behaviours",
    [
        (),
        (Behaviour("cut", cut_at=1_100_000),),
        (Behaviour("cut", cut_at=900_000), Behaviour("ignore_range")),
    ],
    ids=["whole", "resumed", "restarted"],
)
async def test_usage_is_the_same_however_the_bytes_arrive(
    tmp_path: Path, behaviours: tuple[Behaviour, ...]
) -> None:
    """A cut resumed with Range, or restarted from 0, sums exactly what a whole download does."""
    dest = tmp_path / "output.jsonl"
    async with serve(CONTENT, *behaviours) as server:
        usage = await _download(server.base_url, dest)
        requests = len(server.content_requests())
    assert requests == 1 + (len(behaviours) > 0)
    assert dest.read_bytes() == CONTENT
    assert usage == EXPECTED


async def test_a_leftover_part_is_rescanned_before_it_resumes(tmp_path: Path) -> None:
    """A crashed run's .part: its bytes count (re-read to rebuild the hash), none twice."""
    dest = tmp_path / "output.jsonl"
    async with serve(CONTENT) as server:
        source = f"mistral:{server.base_url}:file-1"
        fsutil.part_path(dest).write_bytes(CONTENT[:700_001])
        fsutil.write_json_atomic(
            meta_path(dest), {"source": source, "bytes": 700_001, "total": len(CONTENT)}
        )
        usage = await _download(server.base_url, dest)
    assert usage == EXPECTED
