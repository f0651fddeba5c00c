"""Downloads: streamed, verified, resumed with Range, atomic; over a real socket on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import anyio
import pytest

from orchestrator import fsutil
from orchestrator.errors import (
    DownloadIntegrityError,
    PermanentProviderError,
    TransientProviderError,
)
from orchestrator.providers._transport.download import ResumableDownload
from orchestrator.providers._transport.partfile import PartFile, meta_path, part_path
from orchestrator.providers.base import DownloadedFile
from orchestrator.providers.mistral import MistralProvider
from tests.providers.rawserver import Behaviour, serve

pytestmark = pytest.mark.anyio

KEY = "sk-download-test-key"
CONTENT = b"".join(
    b'{"custom_id": "%d", "response": {"status_code": 200, "body": {"n": %d}}}\n' % (i, i)
    for i in range(20_000)
)  # about 1.4 MB: several 1 MiB chunks
SHA = hashlib.sha256(CONTENT).hexdigest()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith((".part", ".json")))


async def download(base_url: str, dest: Path) -> tuple[MistralProvider, DownloadedFile]:
    provider = MistralProvider(base_url, KEY, timeout=10.0)
    try:
        return provider, await provider.download_file("file-1", dest)
    finally:
        await provider.aclose()


async def test_full_download_is_verified(tmp_path: Path) -> None:
    """A plain 200: bytes, sha256 and lines are right, and nothing but dest is left."""
    dest = tmp_path / "output.jsonl"
    async with serve(CONTENT) as server:
        provider, got = await download(server.base_url, dest)
    assert got.path == dest
    assert (got.bytes, got.sha256, got.lines) == (len(CONTENT), SHA, 20_000)
    assert dest.read_bytes() == CONTENT
    assert leftovers(tmp_path) == []
    request = server.content_requests()[0]
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["accept-encoding"] == "identity"
    assert "range" not in request.headers
    assert provider.calls[("download_file", 200)] == 1


async def test_cut_body_with_length_is_resumed_with_range(tmp_path: Path) -> None:
    """A connection dropped mid-body resumes with Range: bytes=N- and a matching 206."""
    dest = tmp_path / "output.jsonl"
    async with serve(CONTENT, Behaviour("cut", cut_at=300_000)) as server:
        provider, got = await download(server.base_url, dest)
    assert got.sha256 == SHA
    assert dest.read_bytes() == CONTENT
    first, second = server.content_requests()
    assert "range" not in first.headers
    assert second.headers["range"] == "bytes=300000-"
    assert second.headers["if-range"] == '"v1"'
    assert provider.calls[("download_file", 206)] == 1
    assert leftovers(tmp_path) == []


async def test_silently_short_close_delimited_body_is_detected(tmp_path: Path) -> None:
    """A body without Content-Length cut short is caught by the file's size, then resumed."""
    dest = tmp_path / "output.jsonl"
    async with serve(CONTENT, Behaviour("close_cut", cut_at=123_457)) as server:
        _, got = await download(server.base_url, dest)
    assert got.sha256 == SHA
    assert [s.path for s in server.seen] == [
        "/v1/files/file-1/content",
        "/v1/files/file-1",  # the size, since the response announced none
        "/v1/files/file-1/content",
    ]
    assert server.content_requests()[1].headers["range"] == "bytes=123457-"


async def test_server_ignoring_range_restarts_from_zero(tmp_path: Path) -> None:
    """A 200 answer to a Range request restarts the file from 0 and rehashes."""
    dest = tmp_path / "output.jsonl"
    async with serve(
        CONTENT, Behaviour("cut", cut_at=500_000), Behaviour("ignore_range")
    ) as server:
        _, got = await download(server.base_url, dest)
    assert got.sha256 == SHA
    assert got.bytes == len(CONTENT)
    assert dest.read_bytes() == CONTENT


async def test_mismatched_content_range_restarts_from_zero(tmp_path: Path) -> None:
    """A 206 that does not continue at our offset is not appended: start again at 0."""
    dest = tmp_path / "output.jsonl"
    async with serve(CONTENT, Behaviour("cut", cut_at=400_000), Behaviour("bad_range")) as server:
        _, got = await download(server.base_url, dest)
    assert got.sha256 == SHA
    third = server.content_requests()[2]
    assert "range" not in third.headers


async def test_persistent_truncation_fails_and_leaves_nothing(tmp_path: Path) -> None:
    """A body that stays short is a DownloadIntegrityError; no .part, no dest."""
    dest = tmp_path / "output.jsonl"
    script = [Behaviour("close_cut", cut_at=1000)] * 5
    async with serve(CONTENT, *script) as server:
        server.etag = None
        # Every resumed request is also cut: the server cuts each body after 1000 bytes.
        with pytest.raises(DownloadIntegrityError, match="cut short"):
            await download(server.base_url, dest)
    assert not dest.exists()
    assert leftovers(tmp_path) == []


async def test_persistent_connection_drops_fail_transient_and_leave_nothing(
    tmp_path: Path,
) -> None:
    """Drops on every attempt raise TransientProviderError and leave nothing behind."""
    dest = tmp_path / "output.jsonl"
    async with serve(CONTENT, *[Behaviour("cut", cut_at=10)] * 5) as server:
        with pytest.raises(TransientProviderError):
            await download(server.base_url, dest)
    assert not dest.exists()
    assert leftovers(tmp_path) == []


async def test_failed_download_keeps_the_previous_file(tmp_path: Path) -> None:
    """An existing dest is replaced only by a complete file."""
    dest = tmp_path / "output.jsonl"
    dest.write_bytes(b"previous\n")
    async with serve(CONTENT, Behaviour("status", status=404)) as server:
        with pytest.raises(PermanentProviderError, match="HTTP 404: File not found"):
            await download(server.base_url, dest)
    assert dest.read_bytes() == b"previous\n"
    assert leftovers(tmp_path) == []


async def test_longer_than_announced_is_an_integrity_error(tmp_path: Path) -> None:
    """More bytes than the announced size is refused, not silently kept."""
    dest = tmp_path / "output.jsonl"
    async with serve(CONTENT, Behaviour("longer")) as server:
        with pytest.raises(DownloadIntegrityError, match="longer than the announced"):
            await download(server.base_url, dest)
    assert not dest.exists()
    assert leftovers(tmp_path) == []


async def test_416_at_the_end_means_complete(tmp_path: Path) -> None:
    """A crash after the last byte but before the rename: the resume's 416 */N completes it."""
    dest = tmp_path / "output.jsonl"
    async with serve(CONTENT) as server:
        source = f"mistral:{server.base_url}:file-1"
        fsutil.part_path(dest).write_bytes(CONTENT)
        fsutil.write_json_atomic(meta_path(dest), {"source": source, "bytes": len(CONTENT)})
        provider, got = await download(server.base_url, dest)
    assert got.sha256 == SHA
    assert dest.read_bytes() == CONTENT
    assert server.content_requests()[0].headers["range"] == f"bytes={len(CONTENT)}-"
    assert provider.calls[("download_file", 416)] == 1
    assert leftovers(tmp_path) == []


async def test_last_line_without_newline_is_counted(tmp_path: Path) -> None:
    """A file that does not end with a newline still counts its last line; empty is 0."""
    async with serve(b"a\nb\nc") as server:
        _, got = await download(server.base_url, tmp_path / "x.jsonl")
    assert got.lines == 3
    async with serve(b"") as server:
        _, got = await download(server.base_url, tmp_path / "empty.jsonl")
    assert (got.bytes, got.lines) == (0, 0)
    assert (tmp_path / "empty.jsonl").read_bytes() == b""


async def test_leftover_part_with_checkpoint_is_resumed(tmp_path: Path) -> None:
    """A crashed run's .part is trusted up to its checkpoint and resumed from there."""
    dest = tmp_path / "output.jsonl"
    async with serve(CONTENT) as server:
        source = f"mistral:{server.base_url}:file-1"
        fsutil.part_path(dest).write_bytes(CONTENT[:700_000] + b"garbage past the checkpoint")
        fsutil.write_json_atomic(
            meta_path(dest), {"source": source, "bytes": 700_000, "total": len(CONTENT)}
        )
        _, got = await download(server.base_url, dest)
    assert got.sha256 == SHA
    assert dest.read_bytes() == CONTENT
    assert server.content_requests()[0].headers["range"] == "bytes=700000-"
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("sidecar", ["none", "other-source", "corrupt", "longer-than-part"])
async def test_untrusted_leftover_part_is_discarded(tmp_path: Path, sidecar: str) -> None:
    """A .part without a matching, sane sidecar is thrown away and the file starts at 0."""
    dest = tmp_path / "output.jsonl"
    async with serve(CONTENT) as server:
        fsutil.part_path(dest).write_bytes(b"x" * 5000)
        meta = meta_path(dest)
        if sidecar == "other-source":
            fsutil.write_json_atomic(meta, {"source": "mistral:elsewhere:file-9", "bytes": 5000})
        elif sidecar == "corrupt":
            meta.write_text("{not json")
        elif sidecar == "longer-than-part":
            source = f"mistral:{server.base_url}:file-1"
            fsutil.write_json_atomic(meta, {"source": source, "bytes": 999_999})
        _, got = await download(server.base_url, dest)
    assert got.sha256 == SHA
    assert "range" not in server.content_requests()[0].headers
    assert leftovers(tmp_path) == []


async def test_cancelled_download_keeps_a_resumable_part(tmp_path: Path) -> None:
    """Cancelling mid-body keeps the .part and its checkpoint; the next call resumes."""
    dest = tmp_path / "output.jsonl"
    async with serve(CONTENT, Behaviour("stall", cut_at=1_200_000)) as server:
        provider = MistralProvider(server.base_url, KEY, timeout=10.0)
        try:
            download = ResumableDownload(
                provider._api,
                operation="download_file",
                url="/v1/files/file-1/content",
                dest=dest,
                source="test:file-1",
                size_hint=lambda: provider.file_size("file-1"),
                chunk_bytes=64 * 1024,
                checkpoint_bytes=256 * 1024,
            )
            async with anyio.create_task_group() as tg:
                tg.start_soon(download.run)
                await anyio.wait_all_tasks_blocked()
                # Everything the server sent is in (at most one 64 KiB batch still in memory).
                while download._part.size < 1_200_000 - 64 * 1024:
                    await anyio.wait_all_tasks_blocked()
                tg.cancel_scope.cancel()
            meta = json.loads(meta_path(dest).read_text())
            assert meta["source"] == "test:file-1"
            assert 0 < meta["bytes"] <= 1_200_000
            assert fsutil.part_path(dest).stat().st_size == 1_200_000  # the batch was kept
            assert fsutil.part_path(dest).exists()
            assert not dest.exists()

            again = ResumableDownload(
                provider._api,
                operation="download_file",
                url="/v1/files/file-1/content",
                dest=dest,
                source="test:file-1",
                size_hint=lambda: provider.file_size("file-1"),
            )
            got = await again.run()
        finally:
            await provider.aclose()
    assert got.sha256 == SHA
    assert server.content_requests()[1].headers["range"] == f"bytes={meta['bytes']}-"
    assert leftovers(tmp_path) == []


async def test_writers_sharing_a_folder_each_fill_their_own_part(tmp_path: Path) -> None:
    """Replicas sharing the results folder: each writer fills its own ``.part`` (never a
    dead or stalled replica's, which is not resumed), and once the file is complete whatever
    other writers left (a dead replica's .part and sidecar) is removed."""
    dest = tmp_path / "output.jsonl"
    part_path(dest, "rdead").write_bytes(CONTENT[:300_000])
    fsutil.write_json_atomic(meta_path(dest, "rdead"), {"source": "x", "bytes": 300_000})
    assert len({part_path(dest, "ra"), part_path(dest, "rb"), fsutil.part_path(dest)}) == 3
    async with serve(CONTENT) as server:
        provider = MistralProvider(server.base_url, KEY, timeout=10.0)
        try:
            got = await provider.download_file("file-1", dest, writer="ra")
        finally:
            await provider.aclose()
    assert got.sha256 == SHA
    assert dest.read_bytes() == CONTENT
    assert leftovers(tmp_path) == []
    assert "range" not in server.content_requests()[0].headers


def test_a_stale_writer_whose_copy_was_removed_fails_without_touching_the_file(
    tmp_path: Path,
) -> None:
    """A writer that stalled while another completed the file finds its .part gone: it fails
    with an integrity error (the collector retries or, fenced, gives up) and the complete
    file stays as the other writer published it."""
    dest = tmp_path / "output.jsonl"
    dest.write_bytes(CONTENT)
    stale = PartFile(dest, "test:file-1", "rstale")
    stale.open()
    stale.file.write(b"half a file")
    part_path(dest, "rstale").unlink()  # what the other writer's clean-up does
    with pytest.raises(DownloadIntegrityError, match="another writer completed"):
        stale.finish()
    assert dest.read_bytes() == CONTENT
    assert leftovers(tmp_path) == []
