"""A job's definition hash: its identity in the ledger. Pure.

A private module of :mod:`orchestrator.inputs`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

from orchestrator.inputs._scan import InputSummary
from orchestrator.model import JobSpec


def definition_hash(
    spec: JobSpec, summaries: Sequence[InputSummary], *, split_requests: int | None = None
) -> str:
    """The job's identity: equal definitions give equal hashes, whatever their names or paths.

    The hash is the hex sha256 of the canonical JSON (sorted keys, no spaces, ASCII) of
    ``{"endpoint", "inputs": [sha256 of each input, in order], "metadata", "model",
    "timeout_hours"}``, plus ``"split_requests"`` only for a job that is split into parts
    (so the hash of every job that is not split is what it always was). The name, priority,
    workspace and input paths are not part of it: moving or renaming an input file does not
    change the job.

    Raises:
        ValueError: ``summaries`` does not have one entry per input of ``spec``.
    """
    if len(summaries) != len(spec.inputs):
        raise ValueError(
            f"job {spec.name!r} has {len(spec.inputs)} inputs but {len(summaries)} summaries"
        )
    canonical = {
        "endpoint": spec.endpoint,
        "inputs": [summary.sha256 for summary in summaries],
        "metadata": dict(spec.metadata),
        "model": spec.model,
        "timeout_hours": spec.timeout_hours,
    }
    if split_requests is not None:
        canonical["split_requests"] = split_requests
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("ascii")).hexdigest()
