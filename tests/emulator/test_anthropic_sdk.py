"""The official SDK (anthropic 2.16.0, strict response validation) drives the Anthropic wire
over a real socket; raw JSON is checked too (the SDK never validates result lines)."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest

from orchestrator.clock import FakeClock
from orchestrator.emulator import Emulator, EmulatorSettings
from tests.emulator.openai_helpers import serve_in_thread

KEY = "sk-ant-test-key"
MODEL = "claude-sonnet-4-5"
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def request(custom_id: str, **params: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "params": {
            "model": MODEL,
            "max_tokens": 64,
            "messages": [{"role": "user", "content": f"hello {custom_id}"}],
            **params,
        },
    }


@contextlib.contextmanager
def served(**settings: Any) -> Iterator[tuple[Emulator, FakeClock, anthropic.Anthropic, str]]:
    """An Anthropic-dialect emulator on a FakeClock over a real socket, and a strict client."""
    clock = FakeClock()
    defaults: dict[str, Any] = {"validation_seconds": 1.0, "throughput": 10.0}
    with (
        Emulator(
            EmulatorSettings(**{**defaults, **settings}), clock=clock, dialect="anthropic"
        ) as emu,
        serve_in_thread(emu) as url,
        anthropic.Anthropic(
            api_key=KEY, base_url=url, max_retries=0, _strict_response_validation=True
        ) as client,
    ):
        yield emu, clock, client, url


def check_batch_json(data: dict[str, Any]) -> None:
    """A ``MessageBatch`` as raw JSON: every field, exact types, RFC 3339 times."""
    assert data["type"] == "message_batch"
    assert re.fullmatch(r"msgbatch_01[0-9A-Za-z]{22}", data["id"])
    assert data["processing_status"] in ("in_progress", "canceling", "ended")
    counts = data["request_counts"]
    assert set(counts) == {"processing", "succeeded", "errored", "canceled", "expired"}
    assert all(type(v) is int and v >= 0 for v in counts.values())
    for key in ("created_at", "expires_at"):
        assert TIMESTAMP.match(data[key]), key
    for key in ("ended_at", "cancel_initiated_at", "archived_at", "results_url"):
        assert data[key] is None or isinstance(data[key], str), key
    assert (data["results_url"] is not None) == (data["processing_status"] == "ended")


def check_error(info: pytest.ExceptionInfo[anthropic.APIStatusError], kind: str) -> str:
    body = info.value.response.json()
    assert body["type"] == "error" and body["error"]["type"] == kind
    assert isinstance(body["request_id"], str)
    assert info.value.response.headers["request-id"] == body["request_id"]
    message: str = body["error"]["message"]
    return message


def test_create_retrieve_results_with_frozen_counts() -> None:
    """in_progress with {processing: n} until the end, then ended with its counts and every
    custom_id once in the results (succeeded and errored lines in Anthropic's shapes)."""
    with served(failure_fraction=0.3) as (_emu, clock, client, _url):
        batch = client.messages.batches.create(requests=[request(f"r-{i}") for i in range(20)])  # type: ignore[misc]
        check_batch_json(client.messages.batches.with_raw_response.retrieve(batch.id).json())
        assert batch.processing_status == "in_progress"
        assert batch.request_counts.processing == 20 and batch.request_counts.succeeded == 0
        clock.advance(1.5)
        mid = client.messages.batches.retrieve(batch.id)
        assert mid.processing_status == "in_progress" and mid.request_counts.processing == 20
        clock.advance(10)
        done = client.messages.batches.retrieve(batch.id)
        assert done.processing_status == "ended" and done.ended_at is not None
        counts = done.request_counts
        assert counts.processing == 0 and counts.succeeded + counts.errored == 20
        assert counts.errored > 0
        assert done.results_url and done.results_url.endswith(f"/{batch.id}/results")
        results = list(client.messages.batches.results(batch.id))
        assert sorted(r.custom_id for r in results) == sorted(f"r-{i}" for i in range(20))
        kinds = {r.result.type for r in results}
        assert kinds == {"succeeded", "errored"}
        raw = httpx.get(
            done.results_url,
            headers={"x-api-key": KEY, "anthropic-version": "2023-06-01"},
        )
        assert raw.headers["content-type"] == "application/x-jsonl"
        for text in raw.text.splitlines():
            line = json.loads(text)
            assert set(line) == {"custom_id", "result"}
            result = line["result"]
            if result["type"] == "succeeded":
                message = result["message"]
                assert message["type"] == "message" and message["role"] == "assistant"
                assert message["content"][0]["type"] == "text"
                assert type(message["usage"]["input_tokens"]) is int
                assert message["stop_reason"] in ("end_turn", "max_tokens")
            else:
                error = result["error"]
                assert error["type"] == "error" and "type" in error["error"]
                assert "request_id" in error


def test_list_pages_newest_first_with_both_cursors() -> None:
    """Newest first; after_id = last_id and before_id = first_id page through; the SDK's
    auto-pagination reads everything once."""
    with served() as (_emu, clock, client, _url):
        ids = []
        for i in range(5):
            ids.append(client.messages.batches.create(requests=[request(f"b{i}")]).id)  # type: ignore[misc]
            clock.advance(1)
        newest = ids[::-1]
        page = client.messages.batches.list(limit=2)
        assert [b.id for b in page.data] == newest[:2] and page.has_more
        assert page.first_id == newest[0] and page.last_id == newest[1]
        assert [b.id for b in client.messages.batches.list(limit=2)] == newest
        after = client.messages.batches.list(limit=2, after_id=newest[1])
        assert [b.id for b in after.data] == newest[2:4] and after.has_more
        before = client.messages.batches.list(limit=2, before_id=newest[3])
        assert [b.id for b in before.data] == newest[1:3] and before.has_more
        last = client.messages.batches.list(limit=2, after_id=newest[3])
        assert [b.id for b in last.data] == newest[4:] and not last.has_more
        with pytest.raises(anthropic.BadRequestError):
            client.messages.batches.list(limit=1001)


def test_cancel_delete_and_404s() -> None:
    """Results and delete refused before the end; cancel → canceling → ended with canceled
    requests; delete then 404 in Anthropic's error shape."""
    with served(cancel_seconds=5.0) as (_emu, clock, client, url):
        batch = client.messages.batches.create(requests=[request(f"c{i}") for i in range(50)])  # type: ignore[misc]
        early = httpx.get(
            f"{url}/v1/messages/batches/{batch.id}/results",
            headers={"x-api-key": KEY, "anthropic-version": "2023-06-01"},
        )
        assert early.status_code == 404
        assert early.json()["error"]["type"] == "not_found_error"
        with pytest.raises(anthropic.BadRequestError) as bad:
            client.messages.batches.delete(batch.id)
        assert "cancel it first" in check_error(bad, "invalid_request_error")
        clock.advance(2)
        canceling = client.messages.batches.cancel(batch.id)
        assert canceling.processing_status == "canceling"
        assert canceling.cancel_initiated_at is not None
        clock.advance(10)
        ended = client.messages.batches.retrieve(batch.id)
        assert ended.processing_status == "ended" and ended.request_counts.canceled > 0
        results = list(client.messages.batches.results(batch.id))
        assert len(results) == 50
        assert {r.result.type for r in results} <= {"succeeded", "canceled", "errored"}
        deleted = client.messages.batches.delete(batch.id)
        assert deleted.id == batch.id and deleted.type == "message_batch_deleted"
        with pytest.raises(anthropic.NotFoundError) as gone:
            client.messages.batches.retrieve(batch.id)
        assert batch.id in check_error(gone, "not_found_error")


def test_create_refusals_name_the_field() -> None:
    """Schema faults are 400s with the request's path; nothing is created."""
    with served() as (_emu, _clock, client, _url):
        cases = [
            ([{"custom_id": "bad id!", "params": request("x")["params"]}], "custom_id"),
            ([request("a"), request("a")], "unique"),
            ([request("m", max_tokens=0)], "requests.0.params.max_tokens"),
            ([request("s", stream=True)], "requests.0.params.stream"),
        ]
        for requests, needle in cases:
            with pytest.raises(anthropic.BadRequestError) as info:
                client.messages.batches.create(requests=requests)  # type: ignore[arg-type]
            assert needle in check_error(info, "invalid_request_error")
        assert list(client.messages.batches.list()) == []


def test_auth_and_version_headers() -> None:
    """x-api-key and Bearer both authenticate; a missing version is a 400, no key a 401."""
    with served() as (_emu, _clock, _client, url):
        path = f"{url}/v1/messages/batches"
        ok = {"anthropic-version": "2023-06-01"}
        assert httpx.get(path, headers={**ok, "x-api-key": KEY}).status_code == 200
        bearer = {"anthropic-version": "2026-10-21", "authorization": f"Bearer {KEY}"}
        assert httpx.get(path, headers=bearer).status_code == 200
        missing = httpx.get(path, headers={"x-api-key": KEY})
        assert missing.status_code == 400
        assert missing.json()["error"]["message"] == "anthropic-version: header is required"
        unauthorized = httpx.get(path, headers=ok)
        assert unauthorized.status_code == 401
        assert unauthorized.json()["error"]["type"] == "authentication_error"
