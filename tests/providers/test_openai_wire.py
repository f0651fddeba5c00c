"""The OpenAI provider's wire behaviour, against ``shared/api/openai-batch.md``.

Scripted responses (httpx.MockTransport) pin every request's method, path, headers and body;
the in-memory API of :mod:`tests.providers.openai_fake` covers paging and uploads end to end;
the raw socket server of :mod:`tests.providers.rawserver` covers download verify and resume.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from orchestrator.clock import FakeClock
from orchestrator.errors import (
    CapacityRefused,
    DownloadIntegrityError,
    PermanentProviderError,
    RateLimited,
    TransientProviderError,
)
from orchestrator.model import RemotePhase
from orchestrator.providers.openai import OpenAIProvider, phase_for, strip_v1
from tests.providers.openai_fake import FakeOpenAI, parse_multipart
from tests.providers.rawserver import Behaviour, serve

pytestmark = pytest.mark.anyio

KEY = "sk-openai-wire-test-0001"
NOW = 1_750_000_000.0

Handler = Callable[[httpx.Request], httpx.Response]
MakeProvider = Callable[..., OpenAIProvider]


def batch_body(
    batch_id: str = "batch_1", status: str = "in_progress", **extra: Any
) -> dict[str, Any]:
    """A Batch object as the OAS describes it."""
    body: dict[str, Any] = {
        "id": batch_id,
        "object": "batch",
        "endpoint": "/v1/chat/completions",
        "errors": None,
        "input_file_id": "file-in",
        "completion_window": "24h",
        "status": status,
        "output_file_id": None,
        "error_file_id": None,
        "created_at": 1_700_000_000,
        "in_progress_at": 1_700_000_010,
        "expires_at": 1_700_086_400,
        "completed_at": None,
        "failed_at": None,
        "request_counts": {"total": 10, "completed": 3, "failed": 1},
        "metadata": {"team": "research"},
    }
    body.update(extra)
    return body


class Script:
    """A MockTransport handler that replays responses in order and records every request."""

    def __init__(self, *responses: httpx.Response | Handler | Exception) -> None:
        self.responses = list(responses)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        item = self.responses.pop(0) if len(self.responses) > 1 else self.responses[0]
        if isinstance(item, Exception):
            raise item
        if callable(item):
            return item(request)
        return item


@pytest.fixture
async def make_provider() -> AsyncIterator[MakeProvider]:
    """Build providers over a handler (a Script or a FakeOpenAI); the fixture closes them."""
    made: list[OpenAIProvider] = []

    def build(handler: Any, **kwargs: Any) -> OpenAIProvider:
        kwargs.setdefault("clock", FakeClock(start=NOW))
        provider = OpenAIProvider(
            kwargs.pop("base_url", "https://api.openai.test"),
            kwargs.pop("api_key", KEY),
            transport=httpx.MockTransport(handler),
            **kwargs,
        )
        made.append(provider)
        return provider

    yield build
    for provider in made:
        await provider.aclose()


def ok(body: object) -> httpx.Response:
    return httpx.Response(200, json=body)


def oai_error(status: int, message: str, code: str | None = None, **headers: str) -> httpx.Response:
    body = {
        "error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}
    }
    return httpx.Response(status, json=body, headers=headers)


async def collect(it: AsyncIterator[Any]) -> list[Any]:
    return [x async for x in it]


async def create(provider: OpenAIProvider, **kwargs: Any) -> Any:
    args: dict[str, Any] = {
        "input_file_ids": ["file-in"],
        "model": "gpt-4o-mini",
        "endpoint": "/v1/chat/completions",
        "metadata": {"orchestrator_job_id": "orch-1"},
        "timeout_hours": 24,
    }
    args.update(kwargs)
    return await provider.create_job(**args)


# Transport and auth ---------------------------------------------------------------------------


async def test_headers_carry_bearer_key_organization_and_project(
    make_provider: MakeProvider,
) -> None:
    """Authorization is Bearer <key>; OpenAI-Organization/-Project only when configured."""
    script = Script(ok(batch_body()))
    provider = make_provider(script, organization="org-abc", project="proj_xyz")
    await provider.get_job("batch_1")
    plain = make_provider(script)
    await plain.get_job("batch_1")
    first, second = script.requests
    assert first.method == "GET"
    assert first.url.path == "/v1/batches/batch_1"
    assert first.headers["authorization"] == f"Bearer {KEY}"
    assert first.headers["openai-organization"] == "org-abc"
    assert first.headers["openai-project"] == "proj_xyz"
    assert "openai-organization" not in second.headers
    assert "openai-project" not in second.headers
    assert KEY not in str(first.url)


@pytest.mark.parametrize(
    ("given", "root"),
    [
        ("https://api.openai.com", "https://api.openai.com"),
        ("https://api.openai.com/v1", "https://api.openai.com"),
        ("https://api.openai.com/v1/", "https://api.openai.com"),
        ("https://proxy.example/openai/v1", "https://proxy.example/openai"),
    ],
)
async def test_a_trailing_v1_is_accepted_and_dropped(
    make_provider: MakeProvider, given: str, root: str
) -> None:
    """The SDK's /v1 root and the server root both work; paths are /v1/... once."""
    script = Script(ok(batch_body()))
    provider = make_provider(script, base_url=given)
    assert provider.base_url == root == strip_v1(given)
    await provider.get_job("batch_1")
    assert str(script.requests[0].url) == f"{root}/v1/batches/batch_1"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"completion_window": "48h"}, "completion_window must be one of '24h'"),
        ({"organization": "org x"}, "organization must be a non-empty id"),
        ({"project": ""}, "project must be a non-empty id"),
    ],
)
def test_constructor_refuses_bad_settings(kwargs: dict[str, Any], match: str) -> None:
    """A window OpenAI does not take, or a header id with spaces, is refused at once."""
    with pytest.raises(ValueError, match=match):
        OpenAIProvider("https://api.openai.com", KEY, **kwargs)


# The batch object -----------------------------------------------------------------------------


async def test_get_job_maps_counts_files_and_metadata(make_provider: MakeProvider) -> None:
    """completed counts successes: succeeded=completed, progress=completed+failed."""
    body = batch_body(
        status="completed",
        output_file_id="file-out",
        error_file_id="file-err",
        completed_at=1_700_000_900,
        request_counts={"total": 100, "completed": 95, "failed": 5},
        metadata={"orchestrator_job_id": "orch-1", "n": 5},
    )
    provider = make_provider(Script(ok(body)))
    job = await provider.get_job("batch_1")
    assert (job.status, job.phase) == ("completed", RemotePhase.SUCCEEDED)
    assert (job.total, job.completed, job.succeeded, job.failed) == (100, 100, 95, 5)
    assert (job.output_file, job.error_file) == ("file-out", "file-err")
    assert job.metadata == {"orchestrator_job_id": "orch-1", "n": "5"}
    assert (job.created_at, job.completed_at) == (1_700_000_000, 1_700_000_900)
    assert (job.errors, job.error_codes) == ((), ())


async def test_validating_batch_has_zero_counts_and_no_files(make_provider: MakeProvider) -> None:
    """request_counts null/absent while validating reads as 0/0/0; an empty file id is none."""
    body = batch_body(status="validating", request_counts=None, error_file_id="", metadata=None)
    provider = make_provider(Script(ok(body)))
    job = await provider.get_job("batch_1")
    assert job.phase is RemotePhase.VALIDATING
    assert (job.total, job.completed, job.succeeded, job.failed) == (0, 0, 0, 0)
    assert job.error_file is None
    assert job.metadata == {}


@pytest.mark.parametrize(
    ("status", "phase"),
    [
        ("validating", RemotePhase.VALIDATING),
        ("in_progress", RemotePhase.RUNNING),
        ("finalizing", RemotePhase.RUNNING),
        ("cancelling", RemotePhase.CANCELLING),
        ("completed", RemotePhase.SUCCEEDED),
        ("failed", RemotePhase.FAILED),
        ("expired", RemotePhase.EXPIRED),
        ("cancelled", RemotePhase.CANCELLED),
    ],
)
def test_status_mapping(status: str, phase: RemotePhase) -> None:
    """Each documented status maps onto its phase."""
    assert phase_for(status) is phase


@pytest.mark.parametrize("status", ["COMPLETED", "paused", ""])
async def test_unknown_status_is_an_error_naming_it(
    make_provider: MakeProvider, status: str
) -> None:
    """An unknown (or upper-case) status is refused, never read as running."""
    provider = make_provider(Script(ok(batch_body(status=status))))
    with pytest.raises(PermanentProviderError, match=f"unknown status '{status}'"):
        await provider.get_job("batch_1")


async def test_failed_batch_carries_every_error_and_its_code(make_provider: MakeProvider) -> None:
    """errors.data[] becomes readable strings (code, message, line) and the raw codes."""
    limit = (
        "Enqueued token limit reached for gpt-4o-mini in organization org-1. Limit: "
        "2,000,000 enqueued tokens. Please try again once some in_progress batches have "
        "been completed."
    )
    errors = {
        "object": "list",
        "data": [
            {"code": "token_limit_exceeded", "message": limit, "param": None, "line": None},
            {
                "code": "invalid_json_line",
                "message": "This line is not parseable as valid JSON.",
                "param": None,
                "line": 3,
            },
            {"message": "no code here", "param": "body.model"},
        ],
    }
    body = batch_body(
        status="failed",
        errors=errors,
        failed_at=1_700_000_050,
        request_counts={"total": 0, "completed": 0, "failed": 0},
    )
    provider = make_provider(Script(ok(body)))
    job = await provider.get_job("batch_1")
    assert job.phase is RemotePhase.FAILED
    assert job.completed_at == 1_700_000_050
    assert job.errors == (
        f"token_limit_exceeded: {limit}",
        "invalid_json_line: This line is not parseable as valid JSON. (line 3)",
        "no code here (param body.model)",
    )
    assert job.error_codes == ("token_limit_exceeded", "invalid_json_line")


@pytest.mark.parametrize(
    ("body", "what"),
    [
        ([], "should be an object"),
        ({"status": "completed"}, "without an id"),
        (batch_body(status=None), "has no status"),
        (batch_body(request_counts=[1]), "request_counts is not an object"),
        (batch_body(request_counts={"total": "x"}), "'total' should be an integer"),
        (batch_body(metadata=[1]), "metadata is not an object"),
    ],
)
async def test_malformed_batch_is_a_clear_error(
    make_provider: MakeProvider, body: object, what: str
) -> None:
    """A response that breaks the schema names the field."""
    provider = make_provider(Script(ok(body)))
    with pytest.raises(PermanentProviderError, match=what):
        await provider.get_job("batch_1")


async def test_ids_are_escaped_in_paths(make_provider: MakeProvider) -> None:
    """An id cannot inject path segments or a query."""
    script = Script(ok(batch_body()))
    provider = make_provider(script)
    await provider.get_job("../files?x=1")
    assert script.requests[0].url.raw_path == b"/v1/batches/..%2Ffiles%3Fx%3D1"


# Create and cancel ----------------------------------------------------------------------------


async def test_create_sends_the_documented_body(make_provider: MakeProvider) -> None:
    """POST /v1/batches with input_file_id, endpoint, completion_window and metadata."""
    script = Script(ok(batch_body(status="validating")))
    provider = make_provider(script)
    job = await create(provider, metadata={"orchestrator_job_id": "orch-1", "team": "r"})
    assert job.phase is RemotePhase.VALIDATING
    request = script.requests[0]
    assert (request.method, request.url.path) == ("POST", "/v1/batches")
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == {
        "input_file_id": "file-in",
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
        "metadata": {"orchestrator_job_id": "orch-1", "team": "r"},
    }


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"input_file_ids": []}, "exactly one input file"),
        ({"input_file_ids": ["a", "b"]}, "exactly one input file"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "at most 16"),
        ({"metadata": {"k" * 65: "v"}}, "1 to 64 characters"),
        ({"metadata": {"k": "v" * 513}}, "at most 512"),
    ],
)
async def test_create_validates_before_sending(
    make_provider: MakeProvider, kwargs: dict[str, Any], match: str
) -> None:
    """Values OpenAI would refuse are refused locally with a specific message."""
    script = Script(ok(batch_body()))
    provider = make_provider(script)
    with pytest.raises(PermanentProviderError, match=match):
        await create(provider, **kwargs)
    assert script.requests == []


@pytest.mark.parametrize(
    "failure",
    [
        oai_error(500, "The server had an error while processing your request."),
        oai_error(409, "conflict"),
        httpx.ReadTimeout("slow"),
    ],
)
async def test_create_is_sent_once_and_says_the_outcome_is_unknown(
    make_provider: MakeProvider, failure: Any
) -> None:
    """A transient create failure is raised after one request, saying the job may exist."""
    script = Script(failure, ok(batch_body()))
    provider = make_provider(script)
    with pytest.raises(TransientProviderError, match="may have been created"):
        await create(provider)
    assert len(script.requests) == 1


async def test_create_refused_for_the_token_limit_is_a_capacity_refusal(
    make_provider: MakeProvider,
) -> None:
    """A create refused with token_limit_exceeded goes back to the queue, not to rejected."""
    script = Script(oai_error(400, "Enqueued token limit reached for m.", "token_limit_exceeded"))
    provider = make_provider(script)
    with pytest.raises(CapacityRefused, match="enqueued-token limit is reached"):
        await create(provider)


async def test_cancel_posts_and_is_retried(make_provider: MakeProvider) -> None:
    """cancel POSTs to /v1/batches/{id}/cancel and returns the cancelling batch."""
    script = Script(oai_error(503, "busy"), ok(batch_body(status="cancelling")))
    provider = make_provider(script)
    job = await provider.cancel_job("batch_1")
    assert job.phase is RemotePhase.CANCELLING
    assert [(r.method, r.url.path) for r in script.requests] == [
        ("POST", "/v1/batches/batch_1/cancel")
    ] * 2


# Errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind", "message", "attempts"),
    [
        (400, PermanentProviderError, "HTTP 400: bad thing (code=invalid_value)", 1),
        (401, PermanentProviderError, "check the workspace's API key", 1),
        (404, PermanentProviderError, "HTTP 404: bad thing", 1),
        (409, TransientProviderError, "HTTP 409: bad thing", 3),
        (500, TransientProviderError, "HTTP 500: bad thing", 3),
        (503, TransientProviderError, "HTTP 503: bad thing", 3),
    ],
)
async def test_error_mapping(
    make_provider: MakeProvider, status: int, kind: type[Exception], message: str, attempts: int
) -> None:
    """4xx are permanent (409 retried, as the SDK does), 5xx transient, messages kept."""
    script = Script(oai_error(status, "bad thing", "invalid_value" if status == 400 else None))
    provider = make_provider(script)
    with pytest.raises(kind, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        await provider.get_job("batch_1")
    assert getattr(info.value, "status_code", None) == status
    assert len(script.requests) == attempts


async def test_429_honours_retry_after_ms_then_succeeds(make_provider: MakeProvider) -> None:
    """A 429 with retry-after-ms is waited out inside the call, then the GET succeeds."""
    script = Script(
        oai_error(429, "Rate limit reached", "rate_limit_exceeded", **{"retry-after-ms": "20"}),
        ok(batch_body()),
    )
    provider = make_provider(script)
    assert (await provider.get_job("batch_1")).id == "batch_1"
    assert provider.calls[("get_job", 429)] == 1


async def test_long_retry_after_goes_up_as_rate_limited(make_provider: MakeProvider) -> None:
    """A Retry-After beyond max_wait is raised at once for the caller to reschedule."""
    script = Script(oai_error(429, "slow down", **{"retry-after": "300"}))
    provider = make_provider(script, max_wait=60.0)
    with pytest.raises(RateLimited) as info:
        await provider.get_job("batch_1")
    assert info.value.retry_after == 300.0
    assert len(script.requests) == 1


# Listing --------------------------------------------------------------------------------------


async def test_list_pages_by_after_cursor_newest_first(make_provider: MakeProvider) -> None:
    """limit=100, no filter parameters, after = the last id of the previous page."""
    fake = FakeOpenAI(clock=FakeClock(start=NOW), api_key=KEY)
    for _ in range(250):
        fake.add_batch()
    provider = make_provider(fake)
    jobs = await collect(provider.list_jobs())
    assert [j.id for j in jobs] == list(reversed(fake.batches))
    assert fake.calls["batches.list"] == 3
    params = [dict(r.url.params) for r in fake.requests]
    assert params[0] == {"limit": "100"}
    assert params[1] == {"limit": "100", "after": jobs[99].id}
    assert params[2] == {"limit": "100", "after": jobs[199].id}


async def test_list_stops_at_created_after(make_provider: MakeProvider) -> None:
    """Paging stops with the first page that reaches older jobs; those are not yielded."""
    clock = FakeClock(start=NOW)
    fake = FakeOpenAI(clock=clock, api_key=KEY)
    for _ in range(10_000):
        fake.add_batch()
    clock.advance(3600)
    recent = [fake.add_batch(status="in_progress")["id"] for _ in range(150)]
    provider = make_provider(fake, clock=clock)
    jobs = await collect(provider.list_jobs(created_after=NOW + 1800))
    assert [j.id for j in jobs] == list(reversed(recent))
    assert fake.calls["batches.list"] == 2


async def test_active_and_metadata_filters_are_client_side(make_provider: MakeProvider) -> None:
    """active_only and metadata are never sent; the adapter keeps the matching jobs."""
    clock = FakeClock(start=NOW)
    fake = FakeOpenAI(clock=clock, api_key=KEY)
    fake.add_batch(status="in_progress", metadata={"orchestrator_job_id": "orch-1"})
    fake.add_batch(status="completed", metadata={"orchestrator_job_id": "orch-1"})
    fake.add_batch(status="validating", metadata={"orchestrator_job_id": "orch-2"})
    provider = make_provider(fake, clock=clock)
    active = await collect(provider.list_jobs(active_only=True))
    assert [j.status for j in active] == ["validating", "in_progress"]
    mine = await collect(provider.list_jobs(metadata={"orchestrator_job_id": "orch-1"}))
    assert [j.status for j in mine] == ["completed", "in_progress"]
    assert all(set(r.url.params) == {"limit"} for r in fake.requests)


async def test_active_list_looks_back_one_window_only(make_provider: MakeProvider) -> None:
    """active_only stops paging beyond 24 h + slack: an older batch cannot still be active."""
    clock = FakeClock(start=NOW)
    fake = FakeOpenAI(clock=clock, api_key=KEY)
    for _ in range(5_000):
        fake.add_batch()
    clock.advance(3 * 86_400)
    fake.add_batch(status="in_progress")
    provider = make_provider(fake, clock=clock)
    assert len(await collect(provider.list_jobs(active_only=True))) == 1
    assert fake.calls["batches.list"] == 1


async def test_list_survives_a_server_that_repeats_a_page(make_provider: MakeProvider) -> None:
    """has_more forever with the same page neither loops, nor duplicates jobs, nor passes for
    a complete list: reconcile, which matches tokens client-side, must not read it as one."""
    page = {"object": "list", "data": [batch_body("a"), batch_body("b")], "has_more": True}
    script = Script(ok(page))
    provider = make_provider(script)
    seen: list[str] = []
    with pytest.raises(TransientProviderError, match="incomplete"):
        async for job in provider.list_jobs(page_size=2):
            seen.append(job.id)  # noqa: PERF401 (the jobs yielded before the error count)
    assert seen == ["a", "b"]
    assert len(script.requests) == 2


async def test_list_page_size_is_bounded(make_provider: MakeProvider) -> None:
    """OpenAI takes limit 1-100."""
    provider = make_provider(Script(ok({"object": "list", "data": [], "has_more": False})))
    with pytest.raises(ValueError, match="between 1 and 100"):
        await collect(provider.list_jobs(page_size=101))
    assert await collect(provider.list_jobs()) == []


# Upload ---------------------------------------------------------------------------------------


def _lines(path: Path, rows: list[dict[str, Any]], *, crlf: bool = False) -> Path:
    end = "\r\n" if crlf else "\n"
    path.write_text("".join(json.dumps(row) + end for row in rows), encoding="utf-8")
    return path


async def test_upload_rewrites_lines_into_one_jsonl_multipart(
    make_provider: MakeProvider, tmp_path: Path
) -> None:
    """Two inputs (Mistral and OpenAI forms) become one upload of OpenAI lines with the model."""
    first = _lines(
        tmp_path / "a.jsonl",
        [
            {"custom_id": "a-0", "body": {"messages": [{"role": "user", "content": "é"}]}},
            {"custom_id": "a-1", "body": {}},
        ],
        crlf=True,
    )
    second = _lines(
        tmp_path / "b.jsonl",
        [
            {
                "custom_id": "b-0",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": "gpt-4o-mini", "max_tokens": 5},
            }
        ],
    )
    fake = FakeOpenAI(clock=FakeClock(start=NOW), api_key=KEY)
    provider = make_provider(fake)
    assert provider.input_groups([first, second]) == [(first, second)]
    uploaded = await provider.upload_input(
        [first, second], endpoint="/v1/chat/completions", model="gpt-4o-mini", filename="job-0"
    )
    (request,) = fake.requests
    assert (request.method, request.url.path) == ("POST", "/v1/files")
    assert request.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert int(request.headers["content-length"]) == len(request.content)
    form = parse_multipart(request)
    assert form["purpose"][1] == b"batch"
    assert form["file"][0]["filename"] == "job-0.jsonl"
    sent = form["file"][1]
    rows = [json.loads(line) for line in sent.splitlines()]
    assert [row["custom_id"] for row in rows] == ["a-0", "a-1", "b-0"]
    for row in rows:
        assert list(row) == ["custom_id", "method", "url", "body"]
        assert (row["method"], row["url"], row["body"]["model"]) == (
            "POST",
            "/v1/chat/completions",
            "gpt-4o-mini",
        )
    assert rows[0]["body"]["messages"][0]["content"] == "é"
    assert sent.endswith(b"\n") and b"\r" not in sent
    assert uploaded.id in fake.files
    assert uploaded.bytes == len(sent) == fake.files[uploaded.id]["bytes"]
    assert uploaded.sha256 == hashlib.sha256(sent).hexdigest()


async def test_a_line_that_cannot_be_rewritten_sends_nothing(
    make_provider: MakeProvider, tmp_path: Path
) -> None:
    """A line with another endpoint's url is refused, naming file and line, before any upload."""
    src = _lines(
        tmp_path / "in.jsonl",
        [{"custom_id": "0", "body": {}}, {"custom_id": "1", "url": "/v1/embeddings", "body": {}}],
    )
    fake = FakeOpenAI(clock=FakeClock(start=NOW), api_key=KEY)
    provider = make_provider(fake)
    with pytest.raises(PermanentProviderError, match=r"in.jsonl line 2 has url '/v1/embeddings'"):
        await provider.upload_input(
            [src], endpoint="/v1/chat/completions", model="m", filename="x.jsonl"
        )
    assert fake.requests == []


async def test_upload_size_mismatch_is_retried(make_provider: MakeProvider, tmp_path: Path) -> None:
    """A provider that stored a different byte count gets the same bytes again."""
    src = _lines(tmp_path / "in.jsonl", [{"custom_id": "0", "body": {}}])
    script = Script(ok({"id": "file-1", "bytes": 3}), ok({"id": "file-2"}))
    provider = make_provider(script)
    uploaded = await provider.upload_input(
        [src], endpoint="/v1/embeddings", model="m", filename="x.jsonl"
    )
    assert uploaded.id == "file-2"
    first, second = (parse_multipart(r)["file"][1] for r in script.requests)
    assert first == second
    assert uploaded.sha256 == hashlib.sha256(first).hexdigest()


# Download -------------------------------------------------------------------------------------


async def test_download_is_verified_and_resumed_with_range(tmp_path: Path) -> None:
    """A body cut short is resumed with Range from /v1/files/{id}/content, then verified."""
    content = b"".join(b'{"custom_id": "%d", "response": {}}\n' % i for i in range(200))
    async with serve(content, Behaviour("cut", cut_at=1000)) as server:
        provider = OpenAIProvider(server.base_url, KEY, timeout=5.0)
        try:
            got = await provider.download_file("file-1", tmp_path / "output.jsonl")
        finally:
            await provider.aclose()
    assert got.bytes == len(content)
    assert got.lines == 200
    assert got.sha256 == hashlib.sha256(content).hexdigest()
    assert (tmp_path / "output.jsonl").read_bytes() == content
    requests = server.content_requests()
    assert [s.path for s in requests] == ["/v1/files/file-1/content"] * 2
    assert "range" not in requests[0].headers
    assert requests[1].headers["range"] == "bytes=1000-"
    assert all(s.headers["authorization"] == f"Bearer {KEY}" for s in server.seen)


async def test_download_short_close_delimited_body_is_caught(tmp_path: Path) -> None:
    """Without Content-Length the file object's bytes catch a silently short body."""
    content = b"line\n" * 100
    script = [Behaviour("close_cut", cut_at=10)] * 3
    async with serve(content, *script) as server:
        provider = OpenAIProvider(server.base_url, KEY, timeout=5.0, attempts=3)
        try:
            with pytest.raises((DownloadIntegrityError, TransientProviderError)):
                await provider.download_file("file-1", tmp_path / "output.jsonl")
        finally:
            await provider.aclose()
    assert not (tmp_path / "output.jsonl").exists()
    assert any(s.path == "/v1/files/file-1" for s in server.seen)
