"""The upload body's reader: a cancelled upload leaves no input file open."""

from __future__ import annotations

import gc
import hashlib
import warnings
from pathlib import Path

import anyio
import pytest

from orchestrator.providers._transport.upload import UPLOAD_CHUNK_BYTES, UploadBody

pytestmark = pytest.mark.anyio


async def test_a_cancelled_upload_closes_its_input_file(tmp_path: Path) -> None:
    """A replica stopping mid-upload cancels the body: the file is closed, not left to the GC."""
    path = tmp_path / "input.jsonl"
    path.write_bytes(b'{"custom_id": "a", "body": {}}\n' * (3 * UPLOAD_CHUNK_BYTES // 31))
    chunks = UploadBody(paths=(path,)).chunks(hashlib.sha256())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        with anyio.CancelScope() as scope:
            async for _ in chunks:
                scope.cancel()  # delivered while the body reads its next chunk
        await chunks.aclose()
        del chunks
        gc.collect()
    leaks = [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert not leaks, [str(w.message) for w in leaks]
