"""The official SDK (openai 3.57.0, strict response validation) drives the OpenAI wire over a
real socket; raw JSON types are checked too, since pydantic's lax mode would coerce them."""

from __future__ import annotations

import json

import openai
import pytest

from orchestrator.emulator import FaultSettings
from tests.emulator.openai_helpers import (
    CHAT,
    MODEL,
    body,
    chat_lines,
    check_batch_json,
    check_error_json,
    check_file_json,
    create,
    jsonl,
    line,
    read_lines,
    served,
)


def test_files_create_retrieve_list_content_delete() -> None:
    """Files: create, retrieve, list (purpose, order, cursor), content, delete, then 404."""
    with served() as (_emu, clock, client):
        content = chat_lines(3)
        ids = []
        for i in range(3):
            created = client.files.create(file=(f"in{i}.jsonl", content), purpose="batch")
            assert created.purpose == "batch" and created.bytes == len(content)
            ids.append(created.id)
            clock.advance(1)
        other = client.files.create(file=("notes.txt", b"hello"), purpose="user_data")
        raw = client.files.with_raw_response.retrieve(ids[0])
        check_file_json(json.loads(raw.text))
        assert client.files.retrieve(ids[0]).filename == "in0.jsonl"
        listed = client.files.list(purpose="batch")
        assert [f.id for f in listed] == ids[::-1]
        page = client.files.list(purpose="batch", order="asc", limit=2)
        assert [f.id for f in page.data] == ids[:2] and page.has_more
        assert [f.id for f in client.files.list(purpose="batch", order="asc", limit=2)] == ids
        assert other.id in {f.id for f in client.files.list()}
        assert client.files.content(ids[1]).content == content
        deleted = client.files.delete(ids[1])
        assert deleted.id == ids[1] and deleted.deleted and deleted.object == "file"
        with pytest.raises(openai.NotFoundError) as info:
            client.files.retrieve(ids[1])
        assert info.value.status_code == 404
        check_error_json({"error": body(info)})


def test_upload_refusals() -> None:
    """The Batch API takes only .jsonl files up to its size limit: 400s in OpenAI's shape."""
    with served(max_batch_file_bytes=1000) as (_emu, _clock, client):
        with pytest.raises(openai.BadRequestError) as info:
            client.files.create(file=("in.csv", chat_lines(1)), purpose="batch")
        assert body(info)["message"] == "Invalid file format for Batch API. Must be .jsonl"
        with pytest.raises(openai.BadRequestError) as info:
            client.files.create(file=("in.jsonl", chat_lines(20)), purpose="batch")
        assert body(info)["message"].startswith("File is too large.")
        assert body(info)["code"] == "file_too_large"
        assert list(client.files.list()) == []


def test_batch_lifecycle_and_results() -> None:
    """validating (0/0/0) → in_progress → finalizing → completed, with output and error files."""
    with served(failure_fraction=0.25) as (emu, clock, client):
        n = 20
        file_id = client.files.create(file=("in.jsonl", chat_lines(n)), purpose="batch").id
        batch = client.batches.create(
            input_file_id=file_id,
            endpoint=CHAT,
            completion_window="24h",
            metadata={"orchestrator_job_id": "7"},
        )
        assert batch.status == "validating" and batch.model == MODEL
        assert batch.request_counts is not None and batch.request_counts.total == 0
        assert batch.expires_at == batch.created_at + 86_400 and batch.in_progress_at is None
        assert batch.metadata == {"orchestrator_job_id": "7"}
        clock.advance(11)  # V = 10 s, 10 lines/s: 10 lines done
        running = client.batches.retrieve(batch.id)
        assert running.status == "in_progress" and running.in_progress_at == batch.created_at + 10
        counts = running.request_counts
        assert counts is not None and counts.total == n
        assert counts.completed + counts.failed == 10
        clock.advance(1.5)
        finalizing = client.batches.retrieve(batch.id)
        assert finalizing.status == "finalizing" and finalizing.output_file_id is None
        assert finalizing.finalizing_at == batch.created_at + 12
        clock.advance(2)
        raw = client.batches.with_raw_response.retrieve(batch.id)
        check_batch_json(json.loads(raw.text))
        done = raw.parse()
        assert done.status == "completed" and done.completed_at == batch.created_at + 14
        counts = done.request_counts
        assert counts is not None and counts.completed + counts.failed == n
        assert 0 < counts.failed < n and done.errors is None
        assert done.output_file_id is not None and done.error_file_id is not None
        outputs = read_lines(client, done.output_file_id)
        errors = read_lines(client, done.error_file_id)
        assert len(outputs) == counts.completed and len(errors) == counts.failed
        assert {r["custom_id"] for r in outputs + errors} == {f"r{i}" for i in range(n)}
        for record in outputs:
            assert set(record) == {"id", "custom_id", "response", "error"}
            assert record["id"].startswith("batch_req_") and record["error"] is None
            response = record["response"]
            assert response["status_code"] == 200 and response["request_id"].startswith("req_")
            body = response["body"]
            assert body["object"] == "chat.completion" and body["model"] == MODEL
            assert body["usage"]["total_tokens"] == (
                body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
            )
        for record in errors:
            assert record["error"] is None and record["response"]["status_code"] == 422
            check_error_json(record["response"]["body"])
        assert done.usage is not None
        prompt = sum(r["response"]["body"]["usage"]["prompt_tokens"] for r in outputs)
        assert done.usage.input_tokens == prompt
        output_file = client.files.retrieve(done.output_file_id)
        assert output_file.purpose == "batch_output"
        stats = emu.workspace_stats("sdk-key")
        assert stats["jobs_by_orchestrator_job_id"] == {"7": 1}


def test_list_auto_paginates_newest_first() -> None:
    """batches.list pages with `after` (limit 1-100), newest first, across several pages."""
    with served() as (_emu, clock, client):
        file_id = client.files.create(file=("in.jsonl", chat_lines(2)), purpose="batch").id
        created = []
        for _ in range(7):
            created.append(
                client.batches.create(
                    input_file_id=file_id, endpoint=CHAT, completion_window="24h"
                ).id
            )
            clock.advance(1)
        first = client.batches.list(limit=3)
        assert [b.id for b in first.data] == created[::-1][:3] and first.has_more
        raw = json.loads(client.batches.with_raw_response.list(limit=3).text)
        assert raw["object"] == "list" and raw["first_id"] == created[-1]
        assert raw["last_id"] == created[-3] and raw["has_more"] is True
        assert [b.id for b in client.batches.list(limit=3)] == created[::-1]
        assert [b.id for b in client.batches.list()] == created[::-1]
        last = client.batches.list(limit=3, after=created[1])
        assert [b.id for b in last.data] == [created[0]] and not last.has_more
        with pytest.raises(openai.BadRequestError) as info:
            client.batches.list(limit=101)
        assert body(info)["param"] == "limit"


def test_cancel_then_cancelled_with_partial_output() -> None:
    """cancel → cancelling (for cancel_seconds) → cancelled, keeping what was done."""
    with served(cancel_seconds=600.0) as (_emu, clock, client):
        file_id = client.files.create(file=("in.jsonl", chat_lines(100)), purpose="batch").id
        batch = create(client, file_id)
        clock.advance(12)  # 20 lines done
        cancelling = client.batches.cancel(batch.id)
        assert cancelling.status == "cancelling"
        assert cancelling.cancelling_at == batch.created_at + 12
        clock.advance(300)
        assert client.batches.retrieve(batch.id).status == "cancelling"
        assert client.batches.cancel(batch.id).status == "cancelling"
        clock.advance(301)
        raw = client.batches.with_raw_response.retrieve(batch.id)
        check_batch_json(json.loads(raw.text))
        cancelled = raw.parse()
        assert cancelled.status == "cancelled" and cancelled.cancelled_at is not None
        counts = cancelled.request_counts
        assert counts is not None and (counts.total, counts.completed, counts.failed) == (
            100,
            20,
            0,
        )
        assert cancelled.output_file_id is not None and cancelled.error_file_id is None
        assert len(read_lines(client, cancelled.output_file_id)) == 20


def test_expired_keeps_finished_lines_and_lists_the_rest() -> None:
    """Past the 24 h window: finished lines in the output, the rest as batch_expired errors."""
    with served(throughput=0.01, time_scale=3600.0) as (_emu, clock, client):
        n = 1000
        file_id = client.files.create(file=("in.jsonl", chat_lines(n)), purpose="batch").id
        batch = create(client, file_id)
        clock.advance(86_400 / 3600 + 1)
        raw = client.batches.with_raw_response.retrieve(batch.id)
        check_batch_json(json.loads(raw.text))
        expired = raw.parse()
        # 24 simulated hours are 24 clock seconds at this time scale.
        assert expired.status == "expired" and expired.expired_at == batch.created_at + 24
        assert expired.expires_at == expired.expired_at
        counts = expired.request_counts
        assert counts is not None and counts.total == n and counts.failed == 0
        done = counts.completed
        assert 0 < done < n
        assert expired.output_file_id is not None and expired.error_file_id is not None
        assert len(read_lines(client, expired.output_file_id)) == done
        left = read_lines(client, expired.error_file_id)
        assert len(left) == n - done
        assert left[0] == {
            "id": left[0]["id"],
            "custom_id": f"r{done}",
            "response": None,
            "error": {
                "code": "batch_expired",
                "message": "This request could not be executed before the completion window "
                "expired.",
            },
        }


def test_token_limit_fails_the_batch_at_validation() -> None:
    """Over the enqueued-token limit: the create answers 200, the batch then fails."""
    with served(token_limit=100) as (emu, clock, client):
        # Each line's prompt is "user" + "question rN" (15 characters): 4 tokens.
        file_id = client.files.create(file=("in.jsonl", chat_lines(20)), purpose="batch").id
        first = create(client, file_id)
        second = client.batches.create(
            input_file_id=file_id, endpoint=CHAT, completion_window="24h"
        )
        assert second.status == "validating"
        stats = emu.workspace_stats("sdk-key")
        assert stats["enqueued_tokens"] == {MODEL: 80} and stats["token_refusals"] == 1
        clock.advance(10)
        raw = client.batches.with_raw_response.retrieve(second.id)
        check_batch_json(json.loads(raw.text))
        failed = raw.parse()
        assert failed.status == "failed" and failed.failed_at == second.created_at + 10
        assert failed.in_progress_at is None and failed.output_file_id is None
        assert failed.errors is not None and failed.errors.data is not None
        (error,) = failed.errors.data
        org = "org-" + emu.workspace_id("sdk-key").removeprefix("ws-")
        assert error.code == "token_limit_exceeded" and error.line is None and error.param is None
        assert error.message == (
            f"Enqueued token limit reached for {MODEL} in organization {org}. Limit: 100 "
            "enqueued tokens. Please try again once some in_progress batches have been completed."
        )
        assert client.batches.retrieve(first.id).status == "in_progress"
        clock.advance(10)  # the first batch completes: its tokens are freed
        third = create(client, file_id)
        clock.advance(10)
        assert client.batches.retrieve(third.id).status != "failed"
        stats = emu.workspace_stats("sdk-key")
        assert stats["max_enqueued_tokens"] == {MODEL: 80} and stats["token_limit"] == 100


_BAD_FILES = [
    pytest.param(["{not json", json.dumps(line("b"))], "invalid_json_line", 1, id="json"),
    pytest.param(
        [json.dumps(line("a")), json.dumps(line("a"))], "duplicate_custom_id", 2, id="duplicate"
    ),
    pytest.param(
        [json.dumps(line("a")), json.dumps(line("b", url="/v1/embeddings"))],
        "url_mismatch",
        2,
        id="url",
    ),
    pytest.param(
        [json.dumps(line("a")), json.dumps(line("b", model="gpt-4o"))],
        "model_mismatch",
        2,
        id="model",
    ),
    pytest.param(
        [json.dumps({k: v for k, v in line("a").items() if k != "method"})],
        "missing_required_parameter",
        1,
        id="method",
    ),
    pytest.param(
        [json.dumps({k: v for k, v in line("a").items() if k != "custom_id"})],
        "missing_required_parameter",
        1,
        id="custom_id",
    ),
    pytest.param([], "empty_file", None, id="empty"),
    pytest.param(['{"custom_id":"x"}'] * 50_001, "too_many_tasks", None, id="too_many"),
]


@pytest.mark.parametrize(("lines", "code", "line_no"), _BAD_FILES)
def test_validation_failures(lines: list[str], code: str, line_no: int | None) -> None:
    """A bad input file: 200 at create, then `failed` with errors.data[] and no files."""
    with served() as (_emu, clock, client):
        file_id = client.files.create(file=("in.jsonl", jsonl(lines)), purpose="batch").id
        batch = create(client, file_id)
        assert batch.status == "validating"
        clock.advance(10)
        raw = json.loads(client.batches.with_raw_response.retrieve(batch.id).text)
        check_batch_json(raw)
        assert raw["status"] == "failed" and raw["request_counts"]["total"] == 0
        assert raw["output_file_id"] is None and raw["error_file_id"] is None
        entry = raw["errors"]["data"][0]
        assert entry["code"] == code and entry["line"] == line_no


def test_every_line_failed_is_completed_without_output() -> None:
    """Every request refused by its endpoint: completed, output_file_id null, 400 lines."""
    with served() as (_emu, clock, client):
        lines = [line(f"r{i}", body={"messages": []}) for i in range(5)]
        file_id = client.files.create(file=("in.jsonl", jsonl(lines)), purpose="batch").id
        batch = create(client, file_id)
        clock.advance(20)
        done = client.batches.retrieve(batch.id)
        assert done.status == "completed" and done.output_file_id is None and done.errors is None
        counts = done.request_counts
        assert counts is not None and (counts.total, counts.completed, counts.failed) == (5, 0, 5)
        assert done.error_file_id is not None
        for record in read_lines(client, done.error_file_id):
            assert record["error"] is None and record["response"]["status_code"] == 400
            error = check_error_json(record["response"]["body"])
            assert error["param"] == "messages" and error["type"] == "invalid_request_error"


def test_error_statuses() -> None:
    """401, 404, 400 and injected 429 (with retry-after) and 5xx map to the SDK's errors."""
    with served(api_keys={"sdk-key"}) as (emu, _clock, client):
        with pytest.raises(openai.AuthenticationError) as auth:
            client.with_options(api_key="wrong").batches.list()
        assert body(auth)["code"] == "invalid_api_key"
        with pytest.raises(openai.NotFoundError):
            client.batches.retrieve("batch_" + "0" * 32)
        with pytest.raises(openai.NotFoundError):
            client.batches.create(input_file_id="file-x", endpoint=CHAT, completion_window="24h")
        file_id = client.files.create(file=("in.jsonl", chat_lines(1)), purpose="batch").id
        with pytest.raises(openai.BadRequestError) as bad:
            client.batches.create(
                input_file_id=file_id,
                endpoint=CHAT,
                completion_window="48h",  # type: ignore[arg-type]
            )
        assert body(bad)["param"] == "completion_window"
        with pytest.raises(openai.BadRequestError) as bad:
            client.batches.create(
                input_file_id=file_id,
                endpoint=CHAT,
                completion_window="24h",
                metadata={f"k{i}": "v" for i in range(17)},
            )
        assert body(bad)["param"] == "metadata"
        emu.set_faults(FaultSettings(rate_limit_rate=1.0, retry_after=3, routes={"jobs.list"}))
        with pytest.raises(openai.RateLimitError) as limited:
            client.batches.list()
        assert limited.value.response.headers["retry-after"] == "3"
        assert body(limited)["code"] == "rate_limit_exceeded"
        emu.set_faults(FaultSettings(server_error_rate=1.0, routes={"jobs.get"}))
        with pytest.raises(openai.InternalServerError):
            client.batches.retrieve("batch_" + "0" * 32)


def test_sdk_retries_through_rate_limits() -> None:
    """The SDK's own retries honour retry-after-ms and get through."""
    with served() as (emu, _clock, client):
        emu.set_faults(FaultSettings(rate_limit_rate=0.5, retry_after=0.01, seed=4))
        retrying = client.with_options(max_retries=5)
        for _ in range(4):
            assert list(retrying.batches.list()) == []
        assert emu.workspace_stats("sdk-key")["faults"]["jobs.list"]["rate_limit"] >= 1
