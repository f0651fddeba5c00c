"""How many times the emulator has run each custom_id: the attempt number of a line.

A line that fails transiently (``transient_fraction``) is decided per custom_id and per run:
the n-th job that holds a custom_id draws again, so a request resubmitted after a simulated
500 usually succeeds on the next attempt, reproducibly for a seed. The counts live in their
own SQLite file beside the emulator's state (one row per custom_id, on disk: constant memory
for any number of lines), counted once per job when its input is validated.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

RUNS_FILE = "line_runs.db"


def _key(custom_id: str) -> int:
    """A signed 64-bit key for ``custom_id`` (SQLite's INTEGER PRIMARY KEY)."""
    digest = hashlib.blake2b(custom_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class LineRuns:
    """The run counter of one emulator (thread-safe: validation runs in worker threads)."""

    def __init__(self, root: Path) -> None:
        self._db = sqlite3.connect(root / RUNS_FILE, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS runs (key INTEGER PRIMARY KEY, n INTEGER NOT NULL)"
        )
        self._lock = threading.Lock()

    def bump(self, custom_ids: Sequence[str]) -> list[int]:
        """Count one more run of each of ``custom_ids``; return each one's run number (1...)."""
        keys = [_key(c) for c in custom_ids]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT INTO runs (key, n) VALUES (?, 1) "
                    "ON CONFLICT (key) DO UPDATE SET n = n + 1",
                    [(k,) for k in keys],
                )
                numbers = [
                    self._db.execute("SELECT n FROM runs WHERE key = ?", (k,)).fetchone()[0]
                    for k in keys
                ]
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        return numbers

    def close(self) -> None:
        with self._lock:
            self._db.close()
