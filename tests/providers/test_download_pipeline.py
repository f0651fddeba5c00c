"""The download pipeline: reads overlap hashing and writing, yet no received byte is lost."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from orchestrator.providers._transport import download as _download
from orchestrator.providers._transport.download import ResumableDownload
from orchestrator.providers.mistral import MistralProvider
from tests.providers.rawserver import Behaviour, serve

pytestmark = pytest.mark.anyio

KEY = "sk-pipeline-test-key"
CONTENT = b"".join(b'{"custom_id": "%d", "n": %d}\n' % (i, i * i) for i in range(60_000))
SHA = hashlib.sha256(CONTENT).hexdigest()


def _download_of(provider: MistralProvider, dest: Path, **kwargs: int) -> ResumableDownload:
    return ResumableDownload(
        provider._api,
        operation="download_file",
        url="/v1/files/file-1/content",
        dest=dest,
        source="test:file-1",
        size_hint=lambda: provider.file_size("file-1"),
        **kwargs,
    )


async def test_cut_with_many_chunks_in_flight_resumes_at_the_exact_byte(tmp_path: Path) -> None:
    """With small chunks queued behind the writer, a cut still keeps every byte received."""
    dest = tmp_path / "output.jsonl"
    cut = 1_000_003  # not a chunk boundary
    async with serve(CONTENT, Behaviour("cut", cut_at=cut)) as server:
        provider = MistralProvider(server.base_url, KEY, timeout=10.0)
        try:
            got = await _download_of(
                provider, dest, chunk_bytes=16 * 1024, checkpoint_bytes=64 * 1024
            ).run()
        finally:
            await provider.aclose()
    assert (got.bytes, got.sha256, got.lines) == (len(CONTENT), SHA, 60_000)
    assert dest.read_bytes() == CONTENT
    first, second = server.content_requests()
    assert "range" not in first.headers
    assert second.headers["range"] == f"bytes={cut}-"


async def test_a_failed_write_stops_the_download_with_the_disk_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write error in the worker thread surfaces as itself (no group) and leaves nothing."""
    real_write = _download.PartFile.write

    def failing_write(self: _download.PartFile, chunk: bytes) -> None:
        if self.size >= 100_000:
            raise OSError(28, "No space left on device")
        real_write(self, chunk)

    monkeypatch.setattr(_download.PartFile, "write", failing_write)
    dest = tmp_path / "output.jsonl"
    async with serve(CONTENT) as server:
        provider = MistralProvider(server.base_url, KEY, timeout=10.0)
        try:
            with pytest.raises(OSError, match="No space left"):
                await _download_of(provider, dest, chunk_bytes=32 * 1024).run()
        finally:
            await provider.aclose()
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    assert len(server.content_requests()) == 1  # a disk error is not retried


async def test_pipeline_depth_bounds_what_is_held_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stuck disk makes the reader wait: only a few chunks are ever held unwritten."""
    chunk = 32 * 1024
    gate = threading.Event()
    real_write = _download.PartFile.write
    seen = {"read": 0, "most_ahead": 0}

    def gated_write(self: _download.PartFile, data: bytes) -> None:
        gate.wait(10)  # the disk is stuck until the test has looked
        real_write(self, data)

    original_read = ResumableDownload._read

    async def counting_read(
        self: ResumableDownload,
        chunks: AsyncIterator[bytes],
        total: int | None,
        writer: _download._BlockWriter,
    ) -> None:
        async def counted() -> AsyncIterator[bytes]:
            async for piece in chunks:
                seen["read"] += len(piece)
                seen["most_ahead"] = max(seen["most_ahead"], seen["read"] - self._part.size)
                yield piece

        await original_read(self, counted(), total, writer)

    monkeypatch.setattr(_download.PartFile, "write", gated_write)
    monkeypatch.setattr(ResumableDownload, "_read", counting_read)
    dest = tmp_path / "output.jsonl"
    results = []
    async with serve(CONTENT) as server:
        provider = MistralProvider(server.base_url, KEY, timeout=10.0)
        try:
            download = _download_of(provider, dest, chunk_bytes=chunk)
            async with anyio.create_task_group() as tg:

                async def run() -> None:
                    results.append(await download.run())

                tg.start_soon(run)
                await anyio.wait_all_tasks_blocked()
                while seen["read"] < _download.PIPELINE_BLOCKS * chunk:
                    await anyio.wait_all_tasks_blocked()
                ahead_while_stuck = seen["most_ahead"]
                gate.set()
        finally:
            gate.set()
            await provider.aclose()
    assert results[0].sha256 == SHA
    # Queued chunks, the one being written, the one waiting to be queued, and the batch
    # being filled; each at most one transport read (64 KiB) over the chunk size.
    limit = (_download.PIPELINE_BLOCKS + 3) * (chunk + 64 * 1024)
    assert _download.PIPELINE_BLOCKS * chunk <= ahead_while_stuck <= limit
    assert seen["most_ahead"] <= limit
    assert len(CONTENT) > 2 * limit  # without the bound the reader would have run further
