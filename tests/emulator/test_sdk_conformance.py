"""The official SDK (mistralai 3.7.0) drives the emulator over a real socket.

Every 200 response it receives is also checked against Mistral's OpenAPI document
(``tests/data/mistral-openapi-batch.yaml``) with openapi-core.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Final, Literal

import httpx
import httpx2
import pytest
from mistralai.client import Mistral
from mistralai.client.errors import SDKError
from mistralai.client.models import BatchRequest
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse

from orchestrator.clock import FakeClock
from orchestrator.emulator import Emulator, EmulatorSettings
from orchestrator.emulator.server import serve_in_thread

SPEC = Path(__file__).parent.parent / "data" / "mistral-openapi-batch.yaml"
MODEL = "mistral-small-latest"
CHAT: Final[Literal["/v1/chat/completions"]] = "/v1/chat/completions"


class Recorder:
    """Keeps every exchange the SDK makes, to validate it against the OpenAPI document."""

    def __init__(self) -> None:
        self.exchanges: list[tuple[httpx2.Request, int, dict[str, str], bytes]] = []

    def __call__(self, response: httpx2.Response) -> None:
        response.read()
        self.exchanges.append(
            (response.request, response.status_code, dict(response.headers), response.content)
        )


@pytest.fixture(scope="module")
def openapi() -> OpenAPI:
    """Mistral's OpenAPI document (files and batch routes)."""
    return OpenAPI.from_file_path(str(SPEC))


@pytest.fixture
def served() -> Iterator[tuple[Emulator, FakeClock, str]]:
    """An emulator on a FakeClock, served by uvicorn on a free local port."""
    clock = FakeClock()
    settings = EmulatorSettings(
        validation_seconds=10.0, throughput=10.0, cancel_seconds=2.0, failure_fraction=0.25
    )
    with Emulator(settings, clock=clock) as emu, serve_in_thread(emu) as url:
        yield emu, clock, url


@pytest.fixture
def sdk(served: tuple[Emulator, FakeClock, str]) -> Iterator[tuple[Mistral, Recorder]]:
    """The SDK pointed at the emulator, recording its exchanges."""
    recorder = Recorder()
    with httpx2.Client(event_hooks={"response": [recorder]}) as client:
        yield Mistral(api_key="sdk-key", server_url=served[2], client=client), recorder


def requests_jsonl(n: int) -> bytes:
    """``n`` chat requests."""
    return b"".join(
        json.dumps(
            {"custom_id": f"q{i}", "body": {"messages": [{"role": "user", "content": f"q {i}"}]}}
        ).encode()
        + b"\n"
        for i in range(n)
    )


def validate(openapi: OpenAPI, recorder: Recorder) -> set[str]:
    """Validate every recorded 200 against the document; return the operations seen."""
    seen = set()
    for request, status, headers, body in recorder.exchanges:
        assert status == 200, (request.url, status, body[:300])
        url = httpx.URL(str(request.url))
        args = [(k, v) for k, v in url.params.multi_items()]
        mock_request = MockRequest(
            "https://api.mistral.ai",
            request.method.lower(),
            url.path,
            args=args,  # type: ignore[arg-type]
            headers=dict(request.headers),
        )
        content_type = headers.get("content-type", "")
        seen.add(f"{request.method} {url.path}")
        if content_type == "application/octet-stream":
            # openapi-core cannot check a binary body against `format: binary`; the document
            # asks for exactly this content type on the content route, and nothing else.
            assert url.path.endswith("/content"), url.path
            continue
        mock_response = MockResponse(body, status_code=status, content_type=content_type)
        openapi.validate_response(mock_request, mock_response)
    return seen


def test_full_lifecycle(
    served: tuple[Emulator, FakeClock, str], sdk: tuple[Mistral, Recorder], openapi: OpenAPI
) -> None:
    """Upload, create, get, list (status + metadata), inline get, download, files, delete."""
    emu, clock, _ = served
    client, recorder = sdk
    uploaded = client.files.upload(
        file={"file_name": "in.jsonl", "content": requests_jsonl(40)}, purpose="batch"
    )
    assert (uploaded.num_lines, uploaded.sample_type, uploaded.source) == (
        40,
        "batch_request",
        "upload",
    )
    job = client.batch.jobs.create(
        input_files=[uploaded.id],
        model=MODEL,
        endpoint=CHAT,
        metadata={"orchestrator_job_id": "sdk-1"},
        timeout_hours=24,
    )
    assert (job.status, job.total_requests, job.errors) == ("QUEUED", 0, [])
    listed = client.batch.jobs.list(
        status=["QUEUED", "RUNNING"], metadata={"orchestrator_job_id": "sdk-1"}
    )
    assert listed.total == 1 and listed.data and listed.data[0].id == job.id
    assert client.batch.jobs.list(status=["SUCCESS"]).total == 0
    assert client.batch.jobs.list(metadata={"orchestrator_job_id": "other"}).total == 0
    clock.advance(12.0)
    running = client.batch.jobs.get(job_id=job.id)
    assert (running.status, running.total_requests, running.completed_requests) == (
        "RUNNING",
        40,
        20,
    )
    assert running.succeeded_requests + running.failed_requests == 20
    clock.advance(10.0)
    done = client.batch.jobs.get(job_id=job.id, inline=True)
    assert done.status == "SUCCESS" and done.completed_requests == 40
    assert isinstance(done.outputs, list) and len(done.outputs) == 40
    assert isinstance(done.output_file, str) and isinstance(done.error_file, str)
    assert done.completed_at
    output = client.files.download(file_id=done.output_file).read()
    errors = client.files.download(file_id=done.error_file).read()
    assert len(output.splitlines()) == done.succeeded_requests
    assert len(errors.splitlines()) == done.failed_requests > 0
    result = client.files.retrieve(file_id=done.output_file)
    assert (result.sample_type, result.source, result.deleted) == ("batch_result", "mistral", False)
    files = client.files.list(sample_type=["batch_result", "batch_error"], source=["mistral"])
    assert files.total == 2
    assert {f.id for f in files.data} == {done.output_file, done.error_file}
    assert client.files.list(search="in.json").total == 1
    signed = client.files.get_signed_url(file_id=done.output_file, expiry=2)
    assert httpx.get(signed.url, timeout=10).content == output
    deleted = client.batch.jobs.delete(job_id=job.id)
    assert deleted.deleted and deleted.id == job.id
    assert client.files.delete(file_id=uploaded.id).deleted
    assert client.files.retrieve(file_id=uploaded.id).deleted is True
    seen = validate(openapi, recorder)
    assert len(seen) >= 9
    stats = emu.workspace_stats("sdk-key")
    assert stats["jobs_by_orchestrator_job_id"] == {"sdk-1": 1}


def test_cancel_and_inline_requests(
    served: tuple[Emulator, FakeClock, str], sdk: tuple[Mistral, Recorder], openapi: OpenAPI
) -> None:
    """Inline requests, cancellation, and an embeddings result."""
    _, clock, _ = served
    client, recorder = sdk
    job = client.batch.jobs.create(
        requests=[BatchRequest(custom_id=str(i), body={"input": f"text {i}"}) for i in range(200)],
        model="mistral-embed",
        endpoint="/v1/embeddings",
        timeout_hours=2,
    )
    assert job.input_files == []
    clock.advance(15.0)
    cancelling = client.batch.jobs.cancel(job_id=job.id)
    assert (cancelling.status, cancelling.completed_requests) == ("CANCELLATION_REQUESTED", 50)
    clock.advance(2.0)
    cancelled = client.batch.jobs.get(job_id=job.id)
    assert (cancelled.status, cancelled.completed_requests, cancelled.total_requests) == (
        "CANCELLED",
        50,
        200,
    )
    assert isinstance(cancelled.output_file, str)
    lines = client.files.download(file_id=cancelled.output_file).read().splitlines()
    first = json.loads(lines[0])["response"]["body"]
    assert first["object"] == "list" and len(first["data"][0]["embedding"]) == 1024
    listed = client.batch.jobs.list(status=["CANCELLED"])
    assert listed.total == 1
    validate(openapi, recorder)


def test_errors_reach_the_sdk(sdk: tuple[Mistral, Recorder]) -> None:
    """4xx answers surface as SDKError with the status and Mistral's body."""
    client, _ = sdk
    with pytest.raises(SDKError) as info:
        client.batch.jobs.get(job_id="00000000-0000-4000-8000-000000000000")
    assert info.value.status_code == 404
    assert json.loads(info.value.body)["code"] == "job_not_found"
    with pytest.raises(SDKError) as info:
        client.batch.jobs.create(input_files=[], endpoint=CHAT, model=MODEL, timeout_hours=500)
    assert info.value.status_code == 422
    # The SDK refuses to send an empty key itself; a bare client shows the server's answer.
    response = httpx.get(f"{client.sdk_configuration.server_url}/v1/batch/jobs", timeout=10)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    assert response.json()["message"] == "Unauthorized"
