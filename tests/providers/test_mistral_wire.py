"""The Mistral provider's wire behaviour against scripted responses (httpx.MockTransport).

These cover what an emulator rarely produces on purpose: exact query encoding, odd error
shapes, capacity refusals in both documented forms, malformed bodies and unknown statuses.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from orchestrator.errors import (
    CapacityRefused,
    PermanentProviderError,
    RateLimited,
    TransientProviderError,
)
from orchestrator.model import RemotePhase
from orchestrator.providers.mistral import MistralProvider, phase_for

pytestmark = pytest.mark.anyio

KEY = "sk-wire-test-key-0001"

Handler = Callable[[httpx.Request], httpx.Response]
MakeProvider = Callable[..., MistralProvider]


def job_body(job_id: str = "job-1", status: str = "RUNNING", **extra: Any) -> dict[str, Any]:
    """A BatchJob as the OpenAPI schema describes it."""
    body: dict[str, Any] = {
        "id": job_id,
        "object": "batch",
        "input_files": ["f1"],
        "metadata": {"team": "research"},
        "endpoint": "/v1/chat/completions",
        "model": "mistral-small-latest",
        "output_file": None,
        "error_file": None,
        "errors": [],
        "status": status,
        "created_at": 1_700_000_000,
        "total_requests": 10,
        "completed_requests": 4,
        "succeeded_requests": 3,
        "failed_requests": 1,
        "started_at": 1_700_000_000,
        "completed_at": None,
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
    """Build providers over scripted transports; the fixture closes them."""
    made: list[MistralProvider] = []

    def build(script: Script, **kwargs: Any) -> MistralProvider:
        provider = MistralProvider(
            "https://api.mistral.test", KEY, transport=httpx.MockTransport(script), **kwargs
        )
        made.append(provider)
        return provider

    yield build
    for provider in made:
        await provider.aclose()


def ok(body: object) -> httpx.Response:
    return httpx.Response(200, json=body)


async def collect(it: AsyncIterator[Any]) -> list[Any]:
    return [x async for x in it]


async def test_every_request_carries_the_bearer_key_only_in_the_header(
    make_provider: MakeProvider,
) -> None:
    """Authorization is Bearer <key>; the key never appears in the URL."""
    script = Script(ok(job_body()))
    provider = make_provider(script)
    await provider.get_job("job-1")
    request = script.requests[0]
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert KEY not in str(request.url)
    assert request.url.path == "/v1/batch/jobs/job-1"


async def test_get_job_maps_fields(make_provider: MakeProvider) -> None:
    """A BatchJob becomes a RemoteJob with the raw status kept beside the phase."""
    body = job_body(
        status="SUCCESS",
        output_file="out-1",
        error_file="err-1",
        completed_at=1_700_000_100,
        errors=[{"message": "bad line", "count": 3}, {"message": "other"}],
        metadata={"n": 5, "s": "x"},
    )
    provider = make_provider(Script(ok(body)))
    job = await provider.get_job("job-1")
    assert job.status == "SUCCESS"
    assert job.phase is RemotePhase.SUCCEEDED
    assert (job.total, job.completed, job.succeeded, job.failed) == (10, 4, 3, 1)
    assert (job.output_file, job.error_file) == ("out-1", "err-1")
    assert job.metadata == {"n": "5", "s": "x"}
    assert job.created_at == 1_700_000_000
    assert job.completed_at == 1_700_000_100
    assert job.errors == ("bad line (x3)", "other")


@pytest.mark.parametrize(
    ("status", "phase"),
    [
        ("QUEUED", RemotePhase.VALIDATING),
        ("RUNNING", RemotePhase.RUNNING),
        ("CANCELLATION_REQUESTED", RemotePhase.CANCELLING),
        ("SUCCESS", RemotePhase.SUCCEEDED),
        ("FAILED", RemotePhase.FAILED),
        ("TIMEOUT_EXCEEDED", RemotePhase.EXPIRED),
        ("CANCELLED", RemotePhase.CANCELLED),
    ],
)
def test_status_mapping(status: str, phase: RemotePhase) -> None:
    """Each documented status maps onto its phase."""
    assert phase_for(status) is phase


@pytest.mark.parametrize("status", ["queued", "PAUSED", ""])
async def test_unknown_status_is_an_error_naming_it(
    make_provider: MakeProvider, status: str
) -> None:
    """An unknown (or lowercase) status is refused, never read as running."""
    provider = make_provider(Script(ok(job_body(status=status))))
    with pytest.raises(PermanentProviderError, match=f"unknown status '{status}'"):
        await provider.get_job("job-1")


@pytest.mark.parametrize(
    ("body", "what"),
    [
        ([], "should be an object"),
        ({"status": "RUNNING"}, "without an id"),
        (job_body(total_requests=None), "'total_requests' should be an integer"),
        (job_body(metadata=[1]), "metadata is not an object"),
    ],
)
async def test_malformed_job_is_a_clear_error(
    make_provider: MakeProvider, body: object, what: str
) -> None:
    """A response that breaks the schema names the field."""
    provider = make_provider(Script(ok(body)))
    with pytest.raises(PermanentProviderError, match=what):
        await provider.get_job("job-1")


async def test_invalid_json_is_transient_and_retried(make_provider: MakeProvider) -> None:
    """A 200 whose body is not JSON (cut short) is retried."""
    script = Script(httpx.Response(200, content=b'{"id": "job-'), ok(job_body()))
    provider = make_provider(script)
    assert (await provider.get_job("job-1")).id == "job-1"
    assert len(script.requests) == 2


async def test_ids_are_escaped_in_paths(make_provider: MakeProvider) -> None:
    """An id cannot inject path segments or a query."""
    script = Script(ok(job_body()))
    provider = make_provider(script)
    await provider.get_job("../files?x=1")
    assert script.requests[0].url.raw_path == b"/v1/batch/jobs/..%2Ffiles%3Fx%3D1"
    with pytest.raises(ValueError, match="remote_id must be a non-empty string"):
        await provider.get_job(" ")


async def test_list_query_encoding(make_provider: MakeProvider) -> None:
    """active_only repeats status; metadata is exploded into top-level keys; pages count up."""
    script = Script(ok({"data": [job_body("a")], "object": "list", "total": 1}))
    provider = make_provider(script)
    jobs = await collect(
        provider.list_jobs(active_only=True, metadata={"orchestrator_job_id": "orch-7"})
    )
    assert [j.id for j in jobs] == ["a"]
    params = script.requests[0].url.params
    assert params.get_list("status") == ["QUEUED", "RUNNING", "CANCELLATION_REQUESTED"]
    assert params["orchestrator_job_id"] == "orch-7"
    assert params["page"] == "0"
    assert params["page_size"] == "100"
    assert "metadata" not in params


async def test_list_pages_until_total(make_provider: MakeProvider) -> None:
    """250 jobs at 100 a page take exactly 3 requests."""
    all_jobs = [job_body(f"j{i}") for i in range(250)]

    def page(request: httpx.Request) -> httpx.Response:
        n = int(request.url.params["page"])
        size = int(request.url.params["page_size"])
        chunk = all_jobs[n * size : (n + 1) * size]
        return ok({"data": chunk, "object": "list", "total": len(all_jobs)})

    script = Script(page)
    provider = make_provider(script)
    jobs = await collect(provider.list_jobs())
    assert len(jobs) == 250
    assert len(script.requests) == 3
    assert provider.calls[("list_jobs", 200)] == 3


async def test_list_stops_on_exact_multiple_via_total(make_provider: MakeProvider) -> None:
    """200 jobs: the total stops paging after 2 requests (no empty third page)."""
    all_jobs = [job_body(f"j{i}") for i in range(200)]

    def page(request: httpx.Request) -> httpx.Response:
        n = int(request.url.params["page"])
        return ok({"data": all_jobs[n * 100 : (n + 1) * 100], "total": 200})

    script = Script(page)
    provider = make_provider(script)
    assert len(await collect(provider.list_jobs())) == 200
    assert len(script.requests) == 2


async def test_list_survives_a_server_that_ignores_page(make_provider: MakeProvider) -> None:
    """A server repeating the same full page neither loops forever, nor duplicates jobs, nor
    passes for a complete list (reconcile would read "not listed" as "never created")."""
    same = [job_body(f"j{i}") for i in range(2)]
    script = Script(ok({"data": same, "total": 10}))
    provider = make_provider(script)
    seen: list[str] = []
    with pytest.raises(TransientProviderError, match="incomplete"):
        async for job in provider.list_jobs(page_size=2):
            seen.append(job.id)  # noqa: PERF401 (the jobs yielded before the error count)
    assert seen == ["j0", "j1"]
    assert len(script.requests) == 2


async def test_list_rejects_reserved_metadata_keys(make_provider: MakeProvider) -> None:
    """A metadata filter named like a list parameter is refused with the reason."""
    provider = make_provider(Script(ok({"data": [], "total": 0})))
    with pytest.raises(ValueError, match="reserved"):
        await collect(provider.list_jobs(metadata={"status": "x"}))
    with pytest.raises(ValueError, match="page_size"):
        await collect(provider.list_jobs(page_size=0))


async def test_list_without_data_is_empty(make_provider: MakeProvider) -> None:
    """A list with no data key (allowed by the schema) yields nothing."""
    provider = make_provider(Script(ok({"object": "list", "total": 0})))
    assert await collect(provider.list_jobs()) == []


async def test_create_sends_the_documented_body(make_provider: MakeProvider) -> None:
    """create posts input_files, model, endpoint, metadata and timeout_hours as JSON."""
    script = Script(ok(job_body(status="QUEUED")))
    provider = make_provider(script)
    job = await provider.create_job(
        input_file_ids=["f1", "f2"],
        model="mistral-small-latest",
        endpoint="/v1/chat/completions",
        metadata={"orchestrator_job_id": "orch-1"},
        timeout_hours=48,
    )
    assert job.phase is RemotePhase.VALIDATING
    request = script.requests[0]
    assert request.method == "POST"
    assert request.url.path == "/v1/batch/jobs"
    assert json.loads(request.content) == {
        "input_files": ["f1", "f2"],
        "model": "mistral-small-latest",
        "endpoint": "/v1/chat/completions",
        "metadata": {"orchestrator_job_id": "orch-1"},
        "timeout_hours": 48,
    }


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(
            400,
            json={
                "object": "error",
                "message": "Too many pending requests",
                "type": "invalid_request_error",
                "code": "pending_requests_limit_exceeded",
            },
        ),
        httpx.Response(
            429,
            json={"message": "The pending request limit is exceeded for this workspace"},
            headers={"retry-after": "5"},
        ),
    ],
)
async def test_capacity_refusal(make_provider: MakeProvider, response: httpx.Response) -> None:
    """Both documented capacity refusals become CapacityRefused, after one request."""
    script = Script(response)
    provider = make_provider(script)
    with pytest.raises(CapacityRefused, match="pending-request budget is full"):
        await provider.create_job(
            input_file_ids=["f1"],
            model="m",
            endpoint="/v1/chat/completions",
            metadata={},
            timeout_hours=24,
        )
    assert len(script.requests) == 1


@pytest.mark.parametrize(
    "failure",
    [
        httpx.Response(503, json={"message": "unavailable"}),
        httpx.Response(504, text="gateway timeout"),
        httpx.ReadTimeout("slow"),
        httpx.RemoteProtocolError("server hung up"),
    ],
)
async def test_create_is_never_retried_on_transient(
    make_provider: MakeProvider, failure: Any
) -> None:
    """A transient create failure is raised after one request, saying the job may exist."""
    script = Script(failure, ok(job_body()))
    provider = make_provider(script)
    with pytest.raises(TransientProviderError, match="may have been created"):
        await provider.create_job(
            input_file_ids=["f1"],
            model="m",
            endpoint="/v1/chat/completions",
            metadata={},
            timeout_hours=24,
        )
    assert len(script.requests) == 1


async def test_create_429_is_rate_limited_not_retried(make_provider: MakeProvider) -> None:
    """A plain 429 on create is RateLimited with its hint, after one request."""
    script = Script(
        httpx.Response(429, json={"message": "Rate limit"}, headers={"retry-after": "2"})
    )
    provider = make_provider(script)
    with pytest.raises(RateLimited) as info:
        await provider.create_job(
            input_file_ids=["f1"],
            model="m",
            endpoint="/v1/chat/completions",
            metadata={},
            timeout_hours=24,
        )
    assert info.value.retry_after == 2.0
    assert len(script.requests) == 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"input_file_ids": []}, "input_file_ids must be a non-empty list"),
        ({"timeout_hours": 0}, "between 1 and 168"),
        ({"timeout_hours": 169}, "between 1 and 168"),
        ({"metadata": {"k" * 33: "v"}}, "1 to 32 characters"),
        ({"metadata": {"k": ""}}, "1 to 512 characters"),
        ({"metadata": {"k": "v" * 513}}, "1 to 512 characters"),
    ],
)
async def test_create_validates_before_sending(
    make_provider: MakeProvider, kwargs: dict[str, Any], match: str
) -> None:
    """Values the API would refuse are refused locally with a specific message."""
    script = Script(ok(job_body()))
    provider = make_provider(script)
    args: dict[str, Any] = {
        "input_file_ids": ["f1"],
        "model": "m",
        "endpoint": "/v1/chat/completions",
        "metadata": {},
        "timeout_hours": 24,
    }
    args.update(kwargs)
    with pytest.raises(PermanentProviderError, match=match):
        await provider.create_job(**args)
    assert script.requests == []


async def test_transient_get_is_retried_then_succeeds(make_provider: MakeProvider) -> None:
    """503, a dropped connection, then 200: three requests, counted per status."""
    script = Script(
        httpx.Response(503, json={"message": "busy"}),
        httpx.ConnectError("refused"),
        ok(job_body()),
    )
    provider = make_provider(script)
    assert (await provider.get_job("job-1")).id == "job-1"
    assert len(script.requests) == 3
    assert provider.calls[("get_job", 503)] == 1
    assert provider.calls[("get_job", "ConnectError")] == 1
    assert provider.calls[("get_job", 200)] == 1


async def test_retries_exhausted_raise_the_last_transient(make_provider: MakeProvider) -> None:
    """When every attempt fails the last transient error comes out (3 attempts in tests)."""
    script = Script(httpx.Response(502, json={"message": "bad gateway"}))
    provider = make_provider(script)
    with pytest.raises(TransientProviderError, match="HTTP 502: bad gateway"):
        await provider.get_job("job-1")
    assert len(script.requests) == 3


async def test_long_retry_after_is_not_waited_inside_the_call(make_provider: MakeProvider) -> None:
    """A Retry-After beyond max_wait goes up at once as RateLimited for the caller."""
    script = Script(httpx.Response(429, json={"message": "slow"}, headers={"retry-after": "120"}))
    provider = make_provider(script, max_wait=60.0)
    with pytest.raises(RateLimited) as info:
        await provider.get_job("job-1")
    assert info.value.retry_after == 120.0
    assert len(script.requests) == 1


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (401, {"message": "Unauthorized", "request_id": "r1"}, "HTTP 401: Unauthorized"),
        (404, {"detail": "Batch job not found"}, "HTTP 404: Batch job not found"),
        (
            422,
            {"detail": [{"loc": ["path", "job_id"], "msg": "Input should be a valid UUID"}]},
            "HTTP 422: path.job_id: Input should be a valid UUID",
        ),
    ],
)
async def test_permanent_errors_not_retried(
    make_provider: MakeProvider, status: int, body: object, message: str
) -> None:
    """401/404/422 are permanent, carry the provider's message and are sent once."""
    script = Script(httpx.Response(status, json=body))
    provider = make_provider(script)
    with pytest.raises(PermanentProviderError, match=message) as info:
        await provider.get_job("job-1")
    assert info.value.status_code == status
    assert len(script.requests) == 1


async def test_cancel_posts_and_returns_the_job(make_provider: MakeProvider) -> None:
    """cancel POSTs to /cancel and returns the CANCELLATION_REQUESTED job; it is retried."""
    script = Script(httpx.Response(500, text="oops"), ok(job_body(status="CANCELLATION_REQUESTED")))
    provider = make_provider(script)
    job = await provider.cancel_job("job-1")
    assert job.phase is RemotePhase.CANCELLING
    assert [r.method for r in script.requests] == ["POST", "POST"]
    assert script.requests[0].url.path == "/v1/batch/jobs/job-1/cancel"


async def test_upload_streams_a_multipart_body(make_provider: MakeProvider, tmp_path: Path) -> None:
    """upload sends purpose=batch and the file part with the exact length."""
    src = tmp_path / "in.jsonl"
    src.write_bytes(b'{"custom_id": "0", "body": {}}\n')
    script = Script(ok({"id": "file-1", "object": "file", "bytes": src.stat().st_size}))
    provider = make_provider(script)
    assert await provider.upload_file(src) == "file-1"
    request = script.requests[0]
    assert request.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert int(request.headers["content-length"]) == len(request.content)
    assert b'name="purpose"\r\n\r\nbatch\r\n' in request.content
    assert b'filename="in.jsonl"' in request.content
    assert b'{"custom_id": "0", "body": {}}\n' in request.content


async def test_upload_size_mismatch_is_retried(make_provider: MakeProvider, tmp_path: Path) -> None:
    """A provider that stored a different byte count gets the file again."""
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"x\n" * 10)
    script = Script(ok({"id": "f", "bytes": 3}), ok({"id": "f2", "bytes": 20}))
    provider = make_provider(script)
    assert await provider.upload_file(src, filename="custom.jsonl") == "f2"
    assert len(script.requests) == 2
    assert b'filename="custom.jsonl"' in script.requests[1].content


async def test_upload_missing_file_is_clear(make_provider: MakeProvider, tmp_path: Path) -> None:
    """A missing input names the path and sends nothing."""
    script = Script(ok({"id": "f"}))
    provider = make_provider(script)
    with pytest.raises(FileNotFoundError, match="no such file"):
        await provider.upload_file(tmp_path / "missing.jsonl")
    assert script.requests == []


@pytest.mark.parametrize(
    ("base_url", "key", "match"),
    [
        ("api.mistral.ai", KEY, "http"),
        ("ftp://api.mistral.ai", KEY, "http"),
        ("https://user:pw@api.mistral.ai", KEY, "credentials"),
        ("https://api.mistral.ai", "", "empty"),
        ("https://api.mistral.ai", KEY + "\n", "whitespace"),
        ("https://api.mistral.ai", "clé-secrète", "non-ASCII"),
    ],
)
def test_constructor_validates_without_echoing_the_key(base_url: str, key: str, match: str) -> None:
    """Bad settings are clear errors and never print the key."""
    with pytest.raises(ValueError, match=match) as info:
        MistralProvider(base_url, key)
    if key:
        assert key.strip() not in str(info.value)


async def test_repr_hides_the_key(make_provider: MakeProvider) -> None:
    """The provider's repr shows the base URL and never the key."""
    provider = make_provider(Script(ok({})))
    assert repr(provider) == "MistralProvider(base_url='https://api.mistral.test')"
    assert KEY not in repr(provider.__dict__)
