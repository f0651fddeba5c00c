"""Where a job's results live on disk, and what its ``job.json`` says (design §9)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from orchestrator.ledger import FileKind
from orchestrator.model import Job, split_part_name
from orchestrator.usage import Usage

RESULT_NAMES: Mapping[FileKind, str] = {"output": "output.jsonl", "error": "errors.jsonl"}
PARTS_DIR = "parts"
"""The folder, inside a split job's results folder, that holds its parts."""


def part_folder(results: Path, parent: str, number: int) -> Path:
    """Where part ``number`` (1-based) of the job named ``parent`` keeps its files."""
    return results / parent / PARTS_DIR / f"{number:04d}"


def result_dir(results: Path, job: Job) -> Path:
    """Where a job's result files go: ``<results>/<name>``, or its part folder for a part.

    A job's name is a safe slug (checked at intake); a part's name holds a '/', so it is never
    used as a folder name: its files go to ``<results>/<parent>/parts/<NNNN>/``.
    """
    split = split_part_name(job.name) if job.parent_id is not None else None
    if split is not None:
        return part_folder(results, *split)
    return results / job.name


def usage_fields(
    usage: Usage | None, cost: float | None, currency: str | None = None
) -> dict[str, Any]:
    """``usage`` and ``cost`` as ``job.json`` writes them (None: not known)."""
    return {
        "usage": None
        if usage is None
        else {**usage.tokens(), "lines_without_usage": usage.lines_without_usage},
        "cost": None if cost is None else round(cost, 6),
        "currency": currency,
    }


def job_summary(
    job: Job,
    files: Any,
    *,
    usage: Usage | None = None,
    cost: float | None = None,
    currency: str | None = None,
) -> dict[str, Any]:
    """The content of ``job.json``: what a script needs to know about a finished job.

    ``usage`` and ``cost`` are the job's with its children's (parts, attempts); ``cost`` is
    None when a model has no price.
    """
    return {
        "name": job.name,
        "workspace": job.workspace,
        "state": job.state.value,
        "outcome": job.outcome.value if job.outcome else None,
        "remote_id": job.remote_id,
        "remote_status": job.remote_status,
        "model": job.model,
        "endpoint": job.endpoint,
        "requests": job.request_count,
        "total": job.total,
        "completed": job.completed,
        "succeeded": job.succeeded,
        "failed": job.failed,
        "error": job.error,
        "files": {
            f.kind: {
                "path": Path(f.path).name,
                "bytes": f.bytes,
                "sha256": f.sha256,
                "lines": f.lines,
            }
            for f in files
        },
        **usage_fields(usage, cost, currency),
    }
