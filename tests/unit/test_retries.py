"""Line retries' pure rules, each dialect's classification, the config keys, the file passes."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pytest

from orchestrator.config import load_config
from orchestrator.daemon.attempt_files import merge_attempts, write_retry_input
from orchestrator.errors import ConfigError
from orchestrator.model import Outcome
from orchestrator.providers.mistral import MISTRAL_RESULT_LINES
from orchestrator.providers.openai import OPENAI_RESULT_LINES
from orchestrator.retries import (
    Reason,
    Verdict,
    attempt_name,
    merged_outcome,
    never_processed_reason,
    next_attempt_delay,
    split_attempt_name,
    wants_another_attempt,
)


def line(custom_id: str, status: int | None, code: str | None = None) -> dict[str, object]:
    response = None if status is None else {"status_code": status, "body": {"code": code}}
    error = {"code": code, "message": "m"} if status is None and code else None
    return {"id": "x", "custom_id": custom_id, "response": response, "error": error}


@pytest.mark.parametrize("rules", [MISTRAL_RESULT_LINES, OPENAI_RESULT_LINES])
@pytest.mark.parametrize(
    ("status", "verdict", "reason"),
    [
        (200, Verdict.SUCCEEDED, None),
        (429, Verdict.RETRY, Reason.RATE_LIMITED),
        (500, Verdict.RETRY, Reason.SERVER_ERROR),
        (503, Verdict.RETRY, Reason.SERVER_ERROR),
        (400, Verdict.FINAL, None),
        (422, Verdict.FINAL, None),
        (404, Verdict.FINAL, None),
    ],
)
def test_a_status_decides_for_every_http_dialect(
    rules: object, status: int, verdict: Verdict, reason: Reason | None
) -> None:
    result = rules.classify(line("a", status))  # type: ignore[attr-defined]
    assert (result.custom_id, result.verdict, result.reason) == ("a", verdict, reason)


def test_openai_codes() -> None:
    expired = OPENAI_RESULT_LINES.classify(line("e", None, "batch_expired"))
    assert (expired.verdict, expired.reason) == (Verdict.RETRY, Reason.NOT_PROCESSED)
    cancelled = OPENAI_RESULT_LINES.classify(line("c", None, "batch_cancelled"))
    assert cancelled.verdict is Verdict.FINAL
    transient = OPENAI_RESULT_LINES.classify(line("t", None, "server_error"))
    assert (transient.verdict, transient.reason) == (Verdict.RETRY, Reason.TRANSIENT)
    assert not OPENAI_RESULT_LINES.retries_job_failure(["invalid_json_line"])
    assert OPENAI_RESULT_LINES.retries_job_failure([])


def test_mistral_rate_limit_code_without_a_status_is_retried() -> None:
    result = MISTRAL_RESULT_LINES.classify({"custom_id": "r", "error": {"code": "1300"}})
    assert (result.verdict, result.reason) == (Verdict.RETRY, Reason.TRANSIENT)
    unknown = MISTRAL_RESULT_LINES.classify({"custom_id": "r", "error": {"message": "?"}})
    assert unknown.verdict is Verdict.FINAL
    assert MISTRAL_RESULT_LINES.classify("not an object").custom_id is None


def test_pure_rules() -> None:
    assert [next_attempt_delay(60, n) for n in (2, 3, 4)] == [60, 120, 240]
    assert next_attempt_delay(3600, 20) == 6 * 3600
    assert wants_another_attempt(attempt=1, max_attempts=3, cancelled=False, retryable=2)
    assert not wants_another_attempt(attempt=3, max_attempts=3, cancelled=False, retryable=2)
    assert not wants_another_attempt(attempt=1, max_attempts=3, cancelled=True, retryable=2)
    assert not wants_another_attempt(attempt=1, max_attempts=1, cancelled=False, retryable=2)
    assert not wants_another_attempt(attempt=1, max_attempts=3, cancelled=False, retryable=0)
    assert never_processed_reason(Outcome.EXPIRED, completed=5, job_failure_retryable=False) is (
        Reason.NOT_PROCESSED
    )
    assert never_processed_reason(Outcome.CANCELLED, completed=0, job_failure_retryable=True) is (
        None
    )
    assert never_processed_reason(Outcome.FAILED, completed=0, job_failure_retryable=True) is (
        Reason.JOB_FAILED
    )
    assert never_processed_reason(Outcome.FAILED, completed=3, job_failure_retryable=True) is None
    assert merged_outcome(succeeded=5, failed=0, last=Outcome.PARTIAL, cancelled=False) is (
        Outcome.SUCCEEDED
    )
    assert merged_outcome(succeeded=5, failed=1, last=Outcome.EXPIRED, cancelled=False) is (
        Outcome.EXPIRED
    )
    assert merged_outcome(succeeded=0, failed=3, last=Outcome.PARTIAL, cancelled=False) is (
        Outcome.FAILED
    )
    assert merged_outcome(succeeded=2, failed=3, last=Outcome.PARTIAL, cancelled=True) is (
        Outcome.CANCELLED
    )
    assert split_attempt_name(attempt_name("a/part-0001", 3)) == ("a/part-0001", 3)
    assert split_attempt_name("plain") is None


WORKSPACE = """
[workspaces.main]
base_url = "embedded"
"""


@pytest.mark.parametrize(
    ("toml", "key", "message"),
    [
        ("max_attempts = 0", "workspaces.main.max_attempts", "between 1 and 20, got 0"),
        ("max_attempts = 21", "workspaces.main.max_attempts", "between 1 and 20, got 21"),
        ("max_attempts = 2.5", "workspaces.main.max_attempts", "expected an integer"),
        ('retry_delay = "-1m"', "workspaces.main.retry_delay", "expected"),
        ("retry_delay = -5", "workspaces.main.retry_delay", "zero or more"),
    ],
)
def test_bad_retry_settings_are_config_errors(
    tmp_path: Path, toml: str, key: str, message: str
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(WORKSPACE + toml + "\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert caught.value.key == key
    assert message in str(caught.value) and str(path) in str(caught.value)


def test_retry_settings_and_a_jobs_override(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text('{"custom_id": "a", "body": {"messages": [{}]}}\n')
    job = (
        '[[jobs]]\nname = "j"\nworkspace = "main"\ninput = "in.jsonl"\n'
        'model = "m"\nendpoint = "/v1/chat/completions"\n'
    )
    path = tmp_path / "c.toml"
    path.write_text(WORKSPACE + job)
    config = load_config(path, environ={})
    ws = config.workspaces["main"]
    assert (ws.max_attempts, ws.retry_delay, config.jobs[0].max_attempts) == (3, 60.0, None)
    path.write_text(
        WORKSPACE + 'max_attempts = 1\nretry_delay = "10s"\n' + job + "max_attempts = 7\n"
    )
    config = load_config(path, environ={})
    assert (config.workspaces["main"].max_attempts, config.workspaces["main"].retry_delay) == (
        1,
        10.0,
    )
    assert config.jobs[0].max_attempts == 7
    path.write_text(WORKSPACE + job + "max_attempts = 25\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert caught.value.key == "jobs[0].max_attempts"


def write_jsonl(path: Path, records: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_retry_input_and_merge(tmp_path: Path) -> None:
    """Attempt 1: a ok, b 500, c 422, d never ran (expired); attempt 2 runs b and d."""
    inputs = write_jsonl(
        tmp_path / "in.jsonl", [{"custom_id": c, "body": {"n": c}} for c in "abcd"]
    )
    out1 = write_jsonl(tmp_path / "o1.jsonl", [line("a", 200)])
    err1 = write_jsonl(tmp_path / "e1.jsonl", [line("c", 422), line("b", 500)])
    dest = tmp_path / "job" / "attempts" / "02" / "input.jsonl"
    (tmp_path / "job").mkdir()
    written = write_retry_input(
        inputs=[str(inputs)], results=[out1, err1], rules=MISTRAL_RESULT_LINES,
        never_ran=Reason.NOT_PROCESSED, dest=dest,
    )  # fmt: skip
    assert written.lines == 2
    assert written.reasons == {"server_error": 1, "not_processed": 1}
    assert [json.loads(x)["custom_id"] for x in dest.read_text().splitlines()] == ["b", "d"]
    assert dest.read_text().splitlines()[0] == inputs.read_text().splitlines()[1]  # verbatim
    out2 = write_jsonl(tmp_path / "o2.jsonl", [line("d", 200)])
    err2 = write_jsonl(tmp_path / "e2.jsonl", [line("b", 503)])
    output, errors = merge_attempts(
        inputs=[str(inputs)], attempts=[[out1, err1], [out2, err2]],
        rules=MISTRAL_RESULT_LINES, output=tmp_path / "job" / "output.jsonl",
        errors=tmp_path / "job" / "errors.jsonl", never_ran_message="never ran",
    )  # fmt: skip
    ok = [json.loads(x) for x in output.path.read_text().splitlines()]
    bad = [json.loads(x) for x in errors.path.read_text().splitlines()]
    assert [r["custom_id"] for r in ok] == ["a", "d"]
    assert [(r["custom_id"], r["response"]["status_code"]) for r in bad] == [("b", 503), ("c", 422)]
    assert (output.lines, errors.lines) == (2, 2)
    assert sorted(p.name for p in (tmp_path / "job").iterdir()) == [
        "attempts",
        "errors.jsonl",
        "output.jsonl",
    ]


def test_a_request_no_attempt_ran_gets_an_error_line(tmp_path: Path) -> None:
    inputs = write_jsonl(tmp_path / "in.jsonl", [{"custom_id": "x", "body": {}}])
    output, errors = merge_attempts(
        inputs=[str(inputs)], attempts=[[]], rules=OPENAI_RESULT_LINES,
        output=tmp_path / "output.jsonl", errors=tmp_path / "errors.jsonl",
        never_ran_message="expired",
    )  # fmt: skip
    assert output.lines == 0
    record = json.loads(errors.path.read_text())
    assert record == {
        "custom_id": "x",
        "response": None,
        "error": {"code": "not_processed", "message": "expired"},
    }


def _merge_peak(folder: Path, n: int) -> int:
    """Peak Python allocations of merging one attempt of ``n`` lines (1 in 7 failed)."""
    folder.mkdir()
    with (folder / "in.jsonl").open("w") as f:
        for i in range(n):
            f.write(json.dumps({"custom_id": f"id-{i:06d}", "body": {"p": "x" * 50}}) + "\n")
    with (folder / "o.jsonl").open("w") as o, (folder / "e.jsonl").open("w") as e:
        for i in range(n):
            (o if i % 7 else e).write(json.dumps(line(f"id-{i:06d}", 200 if i % 7 else 500)) + "\n")
    tracemalloc.start()
    try:
        output, errors = merge_attempts(
            inputs=[str(folder / "in.jsonl")],
            attempts=[[folder / "o.jsonl", folder / "e.jsonl"]],
            rules=MISTRAL_RESULT_LINES, output=folder / "output.jsonl",
            errors=folder / "errors.jsonl", never_ran_message="-",
        )  # fmt: skip
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert output.lines + errors.lines == n
    return peak


def test_the_merge_holds_no_line_in_memory(tmp_path: Path) -> None:
    """Python allocations of the merge do not grow with the number of lines: the index is on
    disk (a dict of the 9,000 more custom ids would add about a megabyte)."""
    small = _merge_peak(tmp_path / "small", 1_000)
    large = _merge_peak(tmp_path / "large", 10_000)
    assert large - small < 256 * 1024, f"peak grew from {small:,} to {large:,} bytes"
