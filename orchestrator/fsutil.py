"""Atomic, durable file writing: ``<name>.part`` + fsync + rename + fsync the folder.

A reader (or a daemon restarted after a crash or a power cut) sees either the old file or the
whole new one under the final name, never a half-written file. The ``.part`` name is fixed so
that a download interrupted by a crash can be found and resumed; it also means one writer per
destination at a time (the daemon guarantees that: one job owns one results folder).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

PART_SUFFIX = ".part"
"""Suffix of the temporary file a write goes to before it is renamed into place."""


def part_path(dest: Path) -> Path:
    """The temporary ``.part`` path used while writing ``dest``."""
    return dest.with_name(dest.name + PART_SUFFIX)


def fsync_dir(path: Path) -> None:
    """Flush a directory entry table to disk, so a rename or create in it survives power loss.

    Raises:
        OSError: the folder cannot be opened (missing, not a folder, no permission).
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_dir(path: Path) -> None:
    """Create ``path`` and missing parents durably (each new entry's parent is fsynced).

    Raises:
        NotADirectoryError: ``path`` or one of its parents exists and is not a folder.
        OSError: a folder cannot be created.
    """
    missing: list[Path] = []
    current = path
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    if current.exists() and not current.is_dir():
        raise NotADirectoryError(f"{current} exists and is not a folder; cannot create {path}")
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another process made it first: fine
            folder.mkdir()
        fsync_dir(folder.parent)


def publish(part: Path, dest: Path) -> None:
    """Rename a fully written and fsynced ``part`` onto ``dest`` and fsync the folder.

    ``os.replace`` is atomic on POSIX within one filesystem, and ``part`` always sits beside
    ``dest``. The folder fsync makes the new name itself durable.
    """
    os.replace(part, dest)
    fsync_dir(dest.parent)


def discard(path: Path) -> None:
    """Remove ``path`` if it exists (a stale or failed ``.part``); missing is fine."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def atomic_write(dest: Path) -> contextlib.AbstractContextManager[BinaryIO]:
    """Open ``dest.part`` for binary writing; on a clean exit publish it onto ``dest`` durably.

    On an exception inside the block the ``.part`` is removed and ``dest`` is untouched.
    Missing parent folders are created.

    Example::

        with atomic_write(path) as f:
            f.write(b"hello\\n")

    Raises:
        OSError: the folder cannot be created or written, or the disk is full.
    """
    return _atomic_write(dest)


@contextlib.contextmanager
def _atomic_write(dest: Path) -> Iterator[BinaryIO]:
    ensure_dir(dest.parent)
    part = part_path(dest)
    try:
        with part.open("wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        publish(part, dest)
    except BaseException:
        discard(part)
        raise


def write_bytes_atomic(dest: Path, data: bytes) -> None:
    """Write ``data`` to ``dest`` atomically and durably (see :func:`atomic_write`)."""
    with atomic_write(dest) as f:
        f.write(data)


def write_text_atomic(dest: Path, text: str) -> None:
    """Write ``text`` as UTF-8 to ``dest`` atomically and durably (see :func:`atomic_write`)."""
    write_bytes_atomic(dest, text.encode("utf-8"))


def write_json_atomic(dest: Path, obj: object) -> None:
    """Write ``obj`` as pretty, key-sorted UTF-8 JSON (one trailing newline) atomically.

    The document is serialised before anything touches the disk, so an unserialisable value
    leaves ``dest`` (and the folder) exactly as it was.

    Raises:
        TypeError: ``obj`` holds a value JSON cannot represent; the message names the path.
        ValueError: ``obj`` holds NaN or an infinity (not valid JSON), or a circular reference.
        OSError: the file cannot be written.
    """
    try:
        text = json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False)
    except TypeError as exc:
        raise TypeError(f"cannot write {dest} as JSON: {exc}") from exc
    except ValueError as exc:
        raise ValueError(f"cannot write {dest} as JSON: {exc}") from exc
    write_text_atomic(dest, text + "\n")
