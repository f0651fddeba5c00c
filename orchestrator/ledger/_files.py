"""SQL of a job's downloaded result files, on the caller's connection."""

from __future__ import annotations

import re
from os import PathLike

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from orchestrator.ledger._queries import require_job
from orchestrator.ledger.schema import FILE_KINDS, result_files
from orchestrator.ledger.values import FileKind, ResultFile, file_from_row, file_usage_columns
from orchestrator.usage import Usage

_SHA256 = re.compile(r"[0-9a-f]{64}")


def new_file_record(
    job_id: int,
    kind: FileKind,
    *,
    path: str | PathLike[str],
    bytes: int,  # shadows the builtin: it is the field's name in the ledger and job.json
    sha256: str,
    lines: int,
    at: float,
    usage: Usage | None = None,
) -> ResultFile:
    """A checked result-file record.

    Raises:
        ValueError: unknown kind, negative size or line count, or a sha256 that is not 64
            lowercase hex digits.
    """
    if kind not in FILE_KINDS:
        raise ValueError(f"result file kind must be one of {FILE_KINDS}, not {kind!r}")
    if bytes < 0 or lines < 0:
        raise ValueError(f"job {job_id} {kind} file: bytes and lines must be >= 0")
    if not _SHA256.fullmatch(sha256):
        raise ValueError(
            f"job {job_id} {kind} file: sha256 must be 64 lowercase hex digits, got {sha256!r}"
        )
    return ResultFile(
        job_id=job_id,
        kind=kind,
        path=str(path),
        bytes=bytes,
        sha256=sha256,
        lines=lines,
        recorded_at=at,
        usage=usage,
    )


async def upsert_file(conn: AsyncConnection, record: ResultFile) -> None:
    """Record ``record``, replacing the job's file of the same kind."""
    fields = {
        "path": record.path,
        "bytes": record.bytes,
        "sha256": record.sha256,
        "lines": record.lines,
        "recorded_at": record.recorded_at,
        **file_usage_columns(record.usage),
    }
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    statement = (
        insert(result_files)
        .values(job_id=record.job_id, kind=record.kind, **fields)
        .on_conflict_do_update(index_elements=["job_id", "kind"], set_=fields)
    )
    await conn.execute(statement)


async def job_files(conn: AsyncConnection, job_id: int) -> list[ResultFile]:
    """The job's recorded result files, output first (JobNotFound for no such job)."""
    rows = (
        await conn.execute(sa.select(result_files).where(result_files.c.job_id == job_id))
    ).all()
    if not rows:
        await require_job(conn, job_id)
    return sorted((file_from_row(row) for row in rows), key=lambda f: FILE_KINDS.index(f.kind))
