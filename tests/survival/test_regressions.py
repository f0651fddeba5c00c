"""Regression tests for what the survival suites found outside the test harness.

- The bad-input corpus (a 3 MiB line cut short) showed ``not valid JSON: Unterminated string
  starting at at column 73``: :mod:`orchestrator.inputs` now drops the ``at`` that some
  ``json`` messages end with, so the column is named once.
- The state machine on OpenAI's dialect: a batch that expired before running its one request
  (``validating`` -> ``expired``) writes that request to its error file as ``batch_expired``,
  not counted in ``request_counts.failed`` (``shared/api/openai-batch.md`` §5), and the
  collector set ``error file has 1 lines but the provider reports 0 failed requests`` on the
  done job. An expired job's error file may now hold its never-run requests too.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.daemon.collect import _count_mismatches
from orchestrator.errors import InputError
from orchestrator.inputs import validate_inputs
from orchestrator.ledger import FileKind, ResultFile
from orchestrator.model import Job, JobState, Outcome


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b'{"custom_id": "a", "body": {"x": "open', "Unterminated string starting at column 34"),
        (b'{"custom_id": "a\x01"}', "Invalid control character at column 17"),
        (b'{"custom_id": "a"} x', "Extra data at column 20"),
    ],
)
def test_json_messages_name_the_column_once(tmp_path: Path, line: bytes, message: str) -> None:
    """JSON messages that end in "at" name their column once: "… starting at column N"."""
    path = tmp_path / "in.jsonl"
    path.write_bytes(line + b"\n")
    with pytest.raises(InputError) as caught:
        validate_inputs([path], endpoint="/v1/chat/completions")
    assert caught.value.problems == (f"{path}:1: not valid JSON: {message}",)


def _job(outcome: Outcome, *, requests: int, succeeded: int, failed: int) -> Job:
    return Job(
        id=1,
        name="j",
        workspace="main",
        model="gpt-4o-mini",
        endpoint="/v1/chat/completions",
        inputs=(),
        metadata={},
        timeout_hours=24,
        priority=0,
        definition_hash="h",
        client_token="t",
        request_count=requests,
        state=JobState.COLLECTING,
        outcome=outcome,
        total=requests,
        completed=succeeded + failed,
        succeeded=succeeded,
        failed=failed,
    )


def _files(output: int, error: int) -> dict[FileKind, ResultFile]:
    lines: dict[FileKind, int] = {"output": output, "error": error}
    return {
        kind: ResultFile(
            job_id=1, kind=kind, path=kind, bytes=n, sha256="", lines=n, recorded_at=0.0
        )
        for kind, n in lines.items()
        if n
    }


@pytest.mark.parametrize(
    ("outcome", "counts", "lines", "problems"),
    [
        # (requests, succeeded, failed), (output lines, error lines)
        (Outcome.EXPIRED, (1, 0, 0), (0, 1), 0),  # the example: expired while validating
        (Outcome.EXPIRED, (11, 3, 1), (3, 8), 0),  # 3 done, 1 failed, 7 never ran (OpenAI)
        (Outcome.EXPIRED, (11, 3, 1), (3, 1), 0),  # the never-run ones nowhere (Mistral)
        (Outcome.EXPIRED, (11, 3, 1), (3, 9), 1),  # more error lines than requests left
        (Outcome.EXPIRED, (11, 3, 1), (3, 0), 1),  # fewer than failed
        (Outcome.CANCELLED, (11, 3, 1), (3, 8), 1),  # only an expiry writes never-run ones
    ],
)
def test_an_expired_jobs_error_file_may_hold_its_never_run_requests(
    outcome: Outcome, counts: tuple[int, int, int], lines: tuple[int, int], problems: int
) -> None:
    """Error lines of an expired job: its failed requests plus at most those that never ran."""
    requests, succeeded, failed = counts
    job = _job(outcome, requests=requests, succeeded=succeeded, failed=failed)
    assert len(_count_mismatches(job, _files(*lines))) == problems
