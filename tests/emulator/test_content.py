"""Downloading files: Range, HEAD and signed URLs."""

from __future__ import annotations

import httpx
import pytest

from orchestrator.clock import FakeClock
from orchestrator.emulator import Emulator
from tests.emulator.conftest import upload

pytestmark = pytest.mark.anyio

DATA = bytes(range(256)) * 40  # 10,240 bytes


@pytest.mark.parametrize(
    ("header", "status", "span"),
    [
        ("bytes=100-", 206, (100, 10239)),
        ("bytes=100-199", 206, (100, 199)),
        ("bytes=10000-20000", 206, (10000, 10239)),
        ("bytes=-40", 206, (10200, 10239)),
        ("bytes=0-0", 206, (0, 0)),
        ("bytes=0-5,10-20", 200, (0, 10239)),
        ("items=0-5", 200, (0, 10239)),
    ],
)
async def test_range(
    client: httpx.AsyncClient, header: str, status: int, span: tuple[int, int]
) -> None:
    """Single byte ranges get 206 with Content-Range; other forms get the whole file."""
    file_id = await upload(client, DATA, name="blob.bin")
    response = await client.get(f"/v1/files/{file_id}/content", headers={"Range": header})
    assert response.status_code == status
    start, end = span
    assert response.content == DATA[start : end + 1]
    assert response.headers["content-length"] == str(end - start + 1)
    assert response.headers["accept-ranges"] == "bytes"
    if status == 206:
        assert response.headers["content-range"] == f"bytes {start}-{end}/{len(DATA)}"


async def test_unsatisfiable_range(client: httpx.AsyncClient) -> None:
    """A range past the end is a 416 naming the size."""
    file_id = await upload(client, DATA)
    response = await client.get(f"/v1/files/{file_id}/content", headers={"Range": "bytes=99999-"})
    assert response.status_code == 416
    assert response.headers["content-range"] == f"bytes */{len(DATA)}"


async def test_head(client: httpx.AsyncClient) -> None:
    """HEAD gives the length without the body."""
    file_id = await upload(client, DATA)
    response = await client.head(f"/v1/files/{file_id}/content")
    assert response.status_code == 200
    assert response.headers["content-length"] == str(len(DATA))
    assert response.content == b""


async def test_signed_url(emulator: Emulator, client: httpx.AsyncClient, clock: FakeClock) -> None:
    """The signed URL serves the content without a key, until it expires."""
    file_id = await upload(client, DATA)
    url = (await client.get(f"/v1/files/{file_id}/url", params={"expiry": 1})).json()["url"]
    assert url.startswith("http://emulator/signed/files/")
    async with httpx.AsyncClient(transport=emulator.transport()) as anonymous:
        response = await anonymous.get(url, headers={"Range": "bytes=10-"})
        assert response.status_code == 206 and response.content == DATA[10:]
        tampered = await anonymous.get(url[:-1] + ("0" if url[-1] != "0" else "1"))
        assert tampered.status_code == 403
        clock.advance(3601)
        expired = await anonymous.get(url)
        assert expired.status_code == 403
        assert expired.json()["code"] == "signed_url_expired"
    assert (await client.get(f"/v1/files/{file_id}/url", params={"expiry": 169})).status_code == 422
