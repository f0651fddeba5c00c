"""The emulator's persistent state: one SQLite file (stdlib ``sqlite3``) plus file blobs.

Every change is one transaction, so a process killed with SIGKILL restarts on a consistent
state (WAL with ``synchronous=NORMAL`` keeps committed transactions across process crashes).
The connection is shared by the event loop and worker threads, under one lock.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs

from orchestrator.emulator.rows import (
    INDEX_COLUMNS,
    FileRow,
    JobIndex,
    JobRow,
    file_from,
    index_from,
    job_from,
)
from orchestrator.emulator.simulation import Validation

SCHEMA_VERSION = "1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS workspaces (
    id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    max_pending INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS files (
    id TEXT PRIMARY KEY,
    workspace TEXT NOT NULL,
    filename TEXT NOT NULL,
    purpose TEXT NOT NULL,
    sample_type TEXT NOT NULL,
    source TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    num_lines INTEGER,
    mimetype TEXT,
    signature TEXT,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    visibility TEXT,
    deleted INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS files_by_workspace ON files (workspace, created_at);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    workspace TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    model TEXT,
    agent_id TEXT,
    metadata TEXT,
    tag TEXT,
    timeout_hours INTEGER NOT NULL,
    input_files TEXT NOT NULL,
    created_at REAL NOT NULL,
    requests INTEGER NOT NULL,
    params TEXT NOT NULL,
    cancel_at REAL,
    usable INTEGER,
    failed_total INTEGER,
    job_errors TEXT,
    final TEXT,
    final_status TEXT,
    deleted INTEGER NOT NULL DEFAULT 0,
    prompt_tokens INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_by_workspace ON jobs (workspace, created_at);
CREATE TABLE IF NOT EXISTS counters (
    workspace TEXT NOT NULL,
    kind TEXT NOT NULL,
    route TEXT NOT NULL,
    key TEXT NOT NULL,
    value INTEGER NOT NULL,
    PRIMARY KEY (workspace, kind, route, key)
);
"""

TAG_KEY = "orchestrator_job_id"
"""The metadata key whose values the introspection counts jobs by."""


class Store:
    """All reads and writes of the emulator's state.

    Args:
        root: the state directory; the database is ``root/emulator.db``, blobs live under
            ``root/files`` and per-job work files under ``root/jobs``.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.files_dir = root / "files"
        self.jobs_dir = root / "jobs"
        self.files_dir.mkdir(parents=True, exist_ok=True)
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        for leftover in self.files_dir.glob("*.tmp"):
            # A write interrupted by a crash: its row was never committed.
            leftover.unlink(missing_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(
            root / "emulator.db", isolation_level=None, check_same_thread=False
        )
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)
        self._add_missing_columns()
        version = self.get_meta("schema_version")
        if version is None:
            self.set_meta("schema_version", SCHEMA_VERSION)
        elif version != SCHEMA_VERSION:
            raise RuntimeError(
                f"emulator state {root} has schema version {version}, this emulator uses "
                f"{SCHEMA_VERSION}: use another --state-dir or remove this one"
            )

    def _add_missing_columns(self) -> None:
        """Columns added after schema 1 was first written (nullable or defaulted, so an older
        state folder only gains them)."""
        have = {r["name"] for r in self._query("PRAGMA table_info(jobs)")}
        if "prompt_tokens" not in have:
            self._db.execute("ALTER TABLE jobs ADD COLUMN prompt_tokens INTEGER NOT NULL DEFAULT 0")

    def is_empty(self) -> bool:
        """Whether no file or job was ever stored."""
        return not self._query("SELECT 1 FROM jobs UNION ALL SELECT 1 FROM files LIMIT 1")

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # meta ------------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        """A value of the ``meta`` table."""
        rows = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0]["value"] if rows else None

    def set_meta(self, key: str, value: str) -> None:
        """Set a value of the ``meta`` table."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    # workspaces ------------------------------------------------------------------------------

    def touch_workspace(self, workspace: str, now: float) -> None:
        """Record a workspace the first time its key is seen."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO workspaces (id, created_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
                (workspace, now),
            )

    def workspaces(self) -> list[str]:
        """Every workspace ever seen, oldest first."""
        return [r["id"] for r in self._query("SELECT id FROM workspaces ORDER BY created_at, id")]

    def raise_max_pending(self, workspace: str, pending: int) -> None:
        """Remember ``pending`` if it is the highest the workspace has held."""
        with self._tx() as db:
            db.execute(
                "UPDATE workspaces SET max_pending = MAX(max_pending, ?) WHERE id = ?",
                (pending, workspace),
            )

    def raise_counter(self, workspace: str, kind: str, route: str, key: str, value: int) -> None:
        """Set a counter to ``value`` if that is higher (a high-water mark)."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO counters (workspace, kind, route, key, value) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (workspace, kind, route, key) DO UPDATE SET value = MAX(value, ?)",
                (workspace, kind, route, key, value, value),
            )

    def max_pending(self, workspace: str) -> int:
        """The highest pending count the workspace has held."""
        rows = self._query("SELECT max_pending FROM workspaces WHERE id = ?", (workspace,))
        return int(rows[0]["max_pending"]) if rows else 0

    # counters --------------------------------------------------------------------------------

    def count(self, workspace: str, kind: str, route: str, key: str, by: int = 1) -> None:
        """Add ``by`` to a counter (requests by route and status, faults by route and kind)."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO counters (workspace, kind, route, key, value) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (workspace, kind, route, key) DO UPDATE SET value = value + ?",
                (workspace, kind, route, key, by, by),
            )

    def counters(self, workspace: str) -> dict[str, dict[str, dict[str, int]]]:
        """``{kind: {route: {key: value}}}`` for one workspace."""
        result: dict[str, dict[str, dict[str, int]]] = {}
        for r in self._query(
            "SELECT kind, route, key, value FROM counters WHERE workspace = ? "
            "ORDER BY kind, route, key",
            (workspace,),
        ):
            result.setdefault(r["kind"], {}).setdefault(r["route"], {})[r["key"]] = r["value"]
        return result

    # files -----------------------------------------------------------------------------------

    def blob_path(self, file_id: str) -> Path:
        """Where the content of a file lives."""
        return self.files_dir / file_id

    def insert_file(self, row: FileRow) -> None:
        """Store a new file's metadata (its blob is already in place)."""
        with self._tx() as db:
            self._insert_file(db, row)

    @staticmethod
    def _insert_file(db: sqlite3.Connection, row: FileRow) -> None:
        db.execute(
            "INSERT INTO files (id, workspace, filename, purpose, sample_type, source, bytes, "
            "num_lines, mimetype, signature, created_at, expires_at, visibility, deleted) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                row.id,
                row.workspace,
                row.filename,
                row.purpose,
                row.sample_type,
                row.source,
                row.bytes,
                row.num_lines,
                row.mimetype,
                row.signature,
                row.created_at,
                row.expires_at,
                row.visibility,
                int(row.deleted),
            ),
        )

    def get_file(self, workspace: str, file_id: str) -> FileRow | None:
        """A file of the workspace (deleted ones included), or ``None``."""
        rows = self._query(
            "SELECT * FROM files WHERE id = ? AND workspace = ?", (file_id, workspace)
        )
        return file_from(rows[0]) if rows else None

    def get_file_any(self, file_id: str) -> FileRow | None:
        """A file by id whatever its workspace (signed URLs carry no key)."""
        rows = self._query("SELECT * FROM files WHERE id = ?", (file_id,))
        return file_from(rows[0]) if rows else None

    def list_files(
        self,
        workspace: str,
        *,
        sample_types: Sequence[str],
        sources: Sequence[str],
        search: str | None,
        purpose: str | None,
        mimetypes: Sequence[str],
        limit: int,
        offset: int,
    ) -> tuple[list[FileRow], int]:
        """A page of the workspace's live files, newest first, and the count of all matches."""
        where = ["workspace = ?", "deleted = 0"]
        args: list[Any] = [workspace]
        for column, values in (
            ("sample_type", sample_types),
            ("source", sources),
            ("mimetype", mimetypes),
        ):
            if values:
                where.append(f"{column} IN ({', '.join('?' * len(values))})")
                args.extend(values)
        if search:
            where.append("instr(lower(filename), lower(?)) > 0")
            args.append(search)
        if purpose:
            where.append("purpose = ?")
            args.append(purpose)
        clause = " AND ".join(where)
        total = self._query(f"SELECT COUNT(*) AS n FROM files WHERE {clause}", args)[0]["n"]  # noqa: S608 (fixed column names)
        rows = self._query(
            f"SELECT * FROM files WHERE {clause} ORDER BY created_at DESC, rowid DESC "  # noqa: S608
            "LIMIT ? OFFSET ?",
            [*args, limit, offset],
        )
        return [file_from(r) for r in rows], int(total)

    def delete_file(self, workspace: str, file_id: str) -> bool:
        """Mark a live file deleted; ``False`` if there was none."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE files SET deleted = 1 WHERE id = ? AND workspace = ? AND deleted = 0",
                (file_id, workspace),
            )
            return cur.rowcount == 1

    # jobs ------------------------------------------------------------------------------------

    def job_dir(self, job_id: str) -> Path:
        """The folder of a job's work files (linked inputs, failure bitmap)."""
        return self.jobs_dir / job_id

    def insert_job(self, row: JobRow) -> None:
        """Store a new job (with its validation outcome if already known: a refused input)."""
        tag = (row.metadata or {}).get(TAG_KEY)
        v = row.validation
        with self._tx() as db:
            db.execute(
                "INSERT INTO jobs (id, workspace, endpoint, model, agent_id, metadata, tag, "
                "timeout_hours, input_files, created_at, requests, params, prompt_tokens, "
                "usable, failed_total, job_errors) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    row.id,
                    row.workspace,
                    row.endpoint,
                    row.model,
                    row.agent_id,
                    json.dumps(row.metadata) if row.metadata is not None else None,
                    tag,
                    row.timeout_hours,
                    json.dumps(row.input_files),
                    row.created_at,
                    row.requests,
                    json.dumps(attrs.asdict(row.params)),
                    row.prompt_tokens,
                    None if v is None else int(v.usable),
                    None if v is None else v.failed_total,
                    json.dumps(row.job_errors) if v is not None else None,
                ),
            )

    def get_job(self, workspace: str, job_id: str) -> JobRow | None:
        """A live job of the workspace, or ``None``."""
        rows = self._query(
            "SELECT * FROM jobs WHERE id = ? AND workspace = ? AND deleted = 0",
            (job_id, workspace),
        )
        return job_from(rows[0]) if rows else None

    def job_index(
        self,
        workspace: str,
        *,
        unfinished_only: bool = False,
        unvalidated_only: bool = False,
        model: str | None = None,
        agent_id: str | None = None,
        created_after: float | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> list[JobIndex]:
        """The workspace's live jobs, oldest first, as light rows (filters run in SQL)."""
        where = ["workspace = ?", "deleted = 0"]
        args: list[Any] = [workspace]
        if unfinished_only or unvalidated_only:
            where.append("final IS NULL")
        if unvalidated_only:
            where.append("usable IS NULL")
        if model is not None:
            where.append("model = ?")
            args.append(model)
        if agent_id is not None:
            where.append("agent_id = ?")
            args.append(agent_id)
        if created_after is not None:
            where.append("created_at > ?")
            args.append(created_after)
        for key, value in (metadata or {}).items():
            where.append(
                "EXISTS (SELECT 1 FROM json_each(jobs.metadata) AS m "
                "WHERE m.key = ? AND m.type = 'text' AND m.value = ?)"
            )
            args.extend((key, value))
        rows = self._query(
            f"SELECT {INDEX_COLUMNS} FROM jobs WHERE {' AND '.join(where)} "  # noqa: S608
            "ORDER BY created_at, rowid",
            args,
        )
        return [index_from(r) for r in rows]

    def set_cancel(self, job_id: str, at: float) -> bool:
        """Record a cancel request; ``False`` if the job was already cancelled or final."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE jobs SET cancel_at = ? "
                "WHERE id = ? AND cancel_at IS NULL AND final IS NULL",
                (at, job_id),
            )
            return cur.rowcount == 1

    def set_validation(
        self, job_id: str, validation: Validation, job_errors: list[dict[str, Any]]
    ) -> None:
        """Record the outcome of validating a job's input (first writer wins)."""
        with self._tx() as db:
            db.execute(
                "UPDATE jobs SET usable = ?, failed_total = ?, job_errors = ? "
                "WHERE id = ? AND usable IS NULL",
                (int(validation.usable), validation.failed_total, json.dumps(job_errors), job_id),
            )

    def finalize_job(self, job_id: str, final: dict[str, Any], files: Sequence[FileRow]) -> bool:
        """Freeze a terminal job's outcome and register its result files, atomically.

        Returns ``False`` (and stores nothing) if another worker finalized it first.
        """
        with self._tx() as db:
            cur = db.execute(
                "UPDATE jobs SET final = ?, final_status = ? WHERE id = ? AND final IS NULL",
                (json.dumps(final), final["status"], job_id),
            )
            if cur.rowcount != 1:
                return False
            for row in files:
                self._insert_file(db, row)
            return True

    def delete_job(self, workspace: str, job_id: str) -> bool:
        """Mark a live job deleted; ``False`` if there was none."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE jobs SET deleted = 1 WHERE id = ? AND workspace = ? AND deleted = 0",
                (job_id, workspace),
            )
            return cur.rowcount == 1

    def job_counts(self, workspace: str) -> tuple[int, int, dict[str, int]]:
        """(jobs created, jobs deleted, jobs created per ``orchestrator_job_id`` value)."""
        created = self._query(
            "SELECT COUNT(*) AS n, COALESCE(SUM(deleted), 0) AS d FROM jobs WHERE workspace = ?",
            (workspace,),
        )[0]
        tags = {
            r["tag"]: r["n"]
            for r in self._query(
                "SELECT tag, COUNT(*) AS n FROM jobs WHERE workspace = ? AND tag IS NOT NULL "
                "GROUP BY tag ORDER BY tag",
                (workspace,),
            )
        }
        return int(created["n"]), int(created["d"]), tags

    def file_count(self, workspace: str, source: str) -> int:
        """How many files of this source the workspace ever had."""
        rows = self._query(
            "SELECT COUNT(*) AS n FROM files WHERE workspace = ? AND source = ?",
            (workspace, source),
        )
        return int(rows[0]["n"])
