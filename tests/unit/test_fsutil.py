"""Atomic file writing: the final name holds the old file or the whole new one, never half."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from orchestrator import fsutil


def test_write_json_atomic_writes_sorted_pretty_json(tmp_path: Path) -> None:
    """The document is key-sorted, indented, UTF-8 and ends with one newline."""
    dest = tmp_path / "job.json"
    fsutil.write_json_atomic(dest, {"b": 1, "a": "fromage é"})
    text = dest.read_text(encoding="utf-8")
    assert text == '{\n  "a": "fromage é",\n  "b": 1\n}\n'
    assert json.loads(text) == {"a": "fromage é", "b": 1}
    assert not fsutil.part_path(dest).exists()


def test_write_json_atomic_replaces_existing_file(tmp_path: Path) -> None:
    """A second write replaces the first completely."""
    dest = tmp_path / "job.json"
    fsutil.write_json_atomic(dest, {"n": list(range(100))})
    fsutil.write_json_atomic(dest, {"n": 1})
    assert json.loads(dest.read_text()) == {"n": 1}


def test_unserialisable_value_leaves_old_file_untouched(tmp_path: Path) -> None:
    """A TypeError names the path, and neither the file nor a .part changes."""
    dest = tmp_path / "job.json"
    fsutil.write_json_atomic(dest, {"ok": True})
    with pytest.raises(TypeError, match=r"cannot write .*job\.json as JSON"):
        fsutil.write_json_atomic(dest, {"bad": object()})
    assert json.loads(dest.read_text()) == {"ok": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job.json"]


def test_nan_is_refused(tmp_path: Path) -> None:
    """NaN is not JSON: refused with a ValueError naming the path."""
    dest = tmp_path / "job.json"
    with pytest.raises(ValueError, match=r"job\.json"):
        fsutil.write_json_atomic(dest, {"x": math.nan})
    assert not dest.exists()


def test_exception_inside_block_removes_part_and_keeps_old(tmp_path: Path) -> None:
    """A failure halfway through the block keeps the old content and removes the .part."""
    dest = tmp_path / "out.bin"
    fsutil.write_bytes_atomic(dest, b"old")
    with pytest.raises(RuntimeError, match="boom"), fsutil.atomic_write(dest) as f:
        f.write(b"new but half")
        assert fsutil.part_path(dest).exists()
        raise RuntimeError("boom")
    assert dest.read_bytes() == b"old"
    assert not fsutil.part_path(dest).exists()


def test_dest_is_not_visible_until_the_block_ends(tmp_path: Path) -> None:
    """While the block runs only the .part exists."""
    dest = tmp_path / "out.bin"
    with fsutil.atomic_write(dest) as f:
        f.write(b"data")
        assert not dest.exists()
        assert fsutil.part_path(dest).name == "out.bin.part"
    assert dest.read_bytes() == b"data"


def test_missing_parents_are_created(tmp_path: Path) -> None:
    """Parent folders that do not exist yet are created."""
    dest = tmp_path / "a" / "b" / "c" / "job.json"
    fsutil.write_text_atomic(dest, "x\n")
    assert dest.read_text() == "x\n"


def test_parent_that_is_a_file_is_a_clear_error(tmp_path: Path) -> None:
    """A path whose parent is a regular file fails with NotADirectoryError naming it."""
    blocker = tmp_path / "results"
    blocker.write_text("not a folder")
    with pytest.raises(NotADirectoryError, match="is not a folder"):
        fsutil.write_text_atomic(blocker / "job" / "job.json", "x")


def test_stale_part_from_a_crash_is_overwritten(tmp_path: Path) -> None:
    """A leftover .part (a crashed writer) does not leak into the new file."""
    dest = tmp_path / "job.json"
    fsutil.part_path(dest).write_bytes(b"garbage from a crash" * 100)
    fsutil.write_json_atomic(dest, [1])
    assert dest.read_text() == "[\n  1\n]\n"
    assert not fsutil.part_path(dest).exists()


def test_publish_and_fsync_dir(tmp_path: Path) -> None:
    """publish renames onto dest; fsync_dir works on a folder and refuses a missing one."""
    part = tmp_path / "x.part"
    part.write_bytes(b"1")
    fsutil.publish(part, tmp_path / "x")
    assert (tmp_path / "x").read_bytes() == b"1"
    assert not part.exists()
    with pytest.raises(FileNotFoundError):
        fsutil.fsync_dir(tmp_path / "missing")


def test_discard_is_idempotent(tmp_path: Path) -> None:
    """discard removes a file and ignores a missing one."""
    f = tmp_path / "f"
    f.write_bytes(b"")
    fsutil.discard(f)
    fsutil.discard(f)
    assert not f.exists()


def test_written_file_uses_umask_permissions(tmp_path: Path) -> None:
    """The published file has ordinary permissions (not a private temp file's 0600)."""
    dest = tmp_path / "job.json"
    old = os.umask(0o022)
    try:
        fsutil.write_json_atomic(dest, {})
    finally:
        os.umask(old)
    assert dest.stat().st_mode & 0o777 == 0o644
