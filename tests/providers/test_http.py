"""Error mapping, Retry-After parsing, the retry policy and multipart bodies (no network)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from starlette.requests import Request

from orchestrator.errors import PermanentProviderError, RateLimited, TransientProviderError
from orchestrator.providers._transport.client import RetryPolicy
from orchestrator.providers._transport.errors import (
    map_http_error,
    map_transport_error,
    parse_error_body,
    parse_retry_after,
    redact,
    with_unknown_outcome,
)
from orchestrator.providers._transport.partfile import parse_content_range
from orchestrator.providers._transport.upload import MultipartUpload

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def _response(status: int, body: object = None, **headers: str) -> httpx.Response:
    if isinstance(body, (dict, list)):
        return httpx.Response(status, json=body, headers=headers)
    return httpx.Response(status, content=str(body or "").encode(), headers=headers)


@pytest.mark.parametrize(
    ("body", "message", "code"),
    [
        (
            {
                "object": "error",
                "message": "Invalid model: foo",
                "type": "invalid_request_error",
                "param": "model",
                "code": "unknown_model",
            },
            "Invalid model: foo",
            "unknown_model",
        ),
        ({"message": "Unauthorized", "request_id": "c61f"}, "Unauthorized", None),
        ({"detail": "Unauthorized"}, "Unauthorized", None),
        (
            {
                "detail": [
                    {"type": "missing", "loc": ["body", "endpoint"], "msg": "Field required"},
                    {"type": "int", "loc": ["body", "timeout_hours"], "msg": "bad int"},
                ]
            },
            "body.endpoint: Field required; body.timeout_hours: bad int",
            None,
        ),
        (
            {
                "object": "error",
                "message": {
                    "detail": [
                        {
                            "type": "extra_forbidden",
                            "loc": ["body", "foo"],
                            "msg": "Extra inputs are not permitted",
                        }
                    ]
                },
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            },
            "body.foo: Extra inputs are not permitted",
            None,
        ),
        (
            {"error": {"message": "No such batch", "type": "invalid_request_error", "code": "x"}},
            "No such batch",
            "x",
        ),
        ("<html><body>Bad gateway</body></html>", "<html><body>Bad gateway</body></html>", None),
    ],
)
def test_parse_error_body_shapes(body: object, message: str, code: str | None) -> None:
    """Every documented M7 error shape yields the provider's own message."""
    error = parse_error_body(_response(400, body))
    assert error.message == message
    assert error.code == code


def test_parse_error_body_empty_uses_reason_phrase() -> None:
    """An empty body falls back to the reason phrase."""
    assert parse_error_body(_response(404)).message == "Not Found"


def test_parse_error_body_is_bounded() -> None:
    """A huge non-JSON body is cut to a readable length."""
    error = parse_error_body(_response(500, "x" * 100_000))
    assert len(error.message) <= 500


def test_request_id_is_kept() -> None:
    """The provider's request id is part of the message (support tickets need it)."""
    err = map_http_error(
        _response(404, {"message": "Not found", "request_id": "req-1"}),
        provider="mistral",
        operation="get_job",
    )
    assert isinstance(err, PermanentProviderError)
    assert str(err) == "mistral get_job: HTTP 404: Not found (request_id=req-1)"
    assert err.status_code == 404


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408, 599])
def test_server_errors_are_transient(status: int) -> None:
    """5xx and 408 map to TransientProviderError with the status."""
    err = map_http_error(_response(status, {"message": "oops"}))
    assert type(err) is TransientProviderError
    assert err.status_code == status


@pytest.mark.parametrize("status", [400, 401, 402, 403, 404, 409, 413, 422])
def test_client_errors_are_permanent(status: int) -> None:
    """4xx other than 408/429 are permanent, with the message."""
    err = map_http_error(_response(status, {"message": "nope"}), provider="p", operation="op")
    assert type(err) is PermanentProviderError
    assert f"HTTP {status}: nope" in str(err)


def test_401_hints_at_the_key() -> None:
    """A 401 tells the operator to check the API key."""
    err = map_http_error(_response(401, {"detail": "Unauthorized"}))
    assert "check the workspace's API key" in str(err)


def test_redirect_is_permanent_and_names_target() -> None:
    """A 3xx (wrong base_url) is permanent and names where it pointed."""
    err = map_http_error(_response(301, "", location="https://elsewhere/"))
    assert isinstance(err, PermanentProviderError)
    assert "https://elsewhere/" in str(err)


def test_429_carries_retry_after_seconds() -> None:
    """429 is RateLimited with Retry-After in seconds."""
    err = map_http_error(
        _response(429, {"message": "Requests rate limit exceeded"}, **{"retry-after": "7"})
    )
    assert isinstance(err, RateLimited)
    assert err.retry_after == 7.0
    assert err.status_code == 429


def test_429_http_date_retry_after() -> None:
    """An HTTP-date Retry-After is converted with the injected now."""
    err = map_http_error(
        _response(429, "", **{"retry-after": "Thu, 01 Jan 2026 00:00:30 GMT"}), now=NOW
    )
    assert isinstance(err, RateLimited)
    assert err.retry_after == pytest.approx(30.0)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "3"}, 3.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"retry-after": "-4"}, 0.0),
        ({"retry-after": "Thu, 01 Jan 2026 00:01:00 GMT"}, 60.0),
        ({"retry-after": "Wed, 31 Dec 2025 23:00:00 GMT"}, 0.0),
        ({"retry-after": "soon"}, None),
        ({"retry-after": "nan"}, None),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after-ms": "junk", "retry-after": "9"}, 9.0),
        ({}, None),
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    """Seconds, HTTP dates, retry-after-ms, past dates and garbage."""
    assert parse_retry_after(httpx.Headers(headers), now=NOW) == expected


def test_http_date_without_now_is_ignored() -> None:
    """Without a clock reading an HTTP date cannot be converted: no hint."""
    headers = httpx.Headers({"retry-after": "Thu, 01 Jan 2026 00:01:00 GMT"})
    assert parse_retry_after(headers, now=None) is None


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ConnectError("refused"),
        httpx.ReadError("reset"),
        httpx.ReadTimeout("slow"),
        httpx.ConnectTimeout("slow"),
        httpx.PoolTimeout("busy"),
        httpx.RemoteProtocolError("peer closed connection without sending complete message"),
        httpx.ProxyError("proxy down"),
    ],
)
def test_network_faults_are_transient(exc: httpx.HTTPError) -> None:
    """Network faults, timeouts and a server hanging up mid-body are transient."""
    err = map_transport_error(exc, provider="mistral", operation="get_job")
    assert type(err) is TransientProviderError
    assert str(err).startswith(f"mistral get_job: {type(exc).__name__}: ")


@pytest.mark.parametrize(
    "exc", [httpx.UnsupportedProtocol("ftp"), httpx.LocalProtocolError("bad header")]
)
def test_local_faults_are_permanent(exc: httpx.HTTPError) -> None:
    """A request we cannot even send is permanent."""
    assert isinstance(map_transport_error(exc), PermanentProviderError)


def test_secrets_are_redacted_from_messages() -> None:
    """A secret echoed by a server or an exception never reaches the error text."""
    key = "sk-SENTINEL-123"
    err = map_http_error(_response(400, {"message": f"bad key {key}"}), secrets=[key])
    assert key not in str(err)
    assert "***" in str(err)
    err2 = map_transport_error(httpx.ConnectError(f"to {key}"), secrets=[key])
    assert key not in str(err2)
    assert redact("a b a", ["a", ""]) == "*** b ***"


def test_with_unknown_outcome_marks_transient_only() -> None:
    """Transient errors of a create say the job may exist; 429 and permanent do not change."""
    marked = with_unknown_outcome(TransientProviderError("boom", status_code=502))
    assert "may have been created" in str(marked)
    assert marked.status_code == 502
    limited = RateLimited("slow down", retry_after=1.0)
    assert with_unknown_outcome(limited) is limited
    permanent = PermanentProviderError("no")
    assert with_unknown_outcome(permanent) is permanent


def test_retry_policy_hook() -> None:
    """Transient retried; Retry-After is the wait; above max_wait or permanent: not retried."""
    policy = RetryPolicy(attempts=3, max_wait=10.0)
    assert policy.backoff_hook(TransientProviderError("x")) is True
    assert policy.backoff_hook(RateLimited("x", retry_after=None)) is True
    assert policy.backoff_hook(RateLimited("x", retry_after=4.0)) == 4.0
    assert policy.backoff_hook(RateLimited("x", retry_after=11.0)) is False
    assert policy.backoff_hook(PermanentProviderError("x")) is False
    assert policy.backoff_hook(ValueError("x")) is False


def test_retry_policy_validates() -> None:
    """Nonsense settings are refused with a message naming the setting."""
    with pytest.raises(ValueError, match="attempts"):
        RetryPolicy(attempts=0)
    with pytest.raises(ValueError, match="max_wait"):
        RetryPolicy(max_wait=-1)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("bytes 10-99/100", (10, 99, 100)),
        ("bytes */100", (None, None, 100)),
        ("bytes 0-9/*", (0, 9, None)),
        ("BYTES 5-5/6", (5, 5, 6)),
        ("items 0-1/2", None),
        ("bytes 1-2", None),
        (None, None),
    ],
)
def test_parse_content_range(value: str | None, expected: tuple[object, ...] | None) -> None:
    """Content-Range forms, and junk as None."""
    got = parse_content_range(value)
    if expected is None:
        assert got is None
    else:
        assert got is not None
        assert (got.first, got.last, got.total) == expected


@pytest.mark.anyio
async def test_multipart_body_parses_and_matches_length(tmp_path: Path) -> None:
    """The streamed body is valid multipart with an exact Content-Length."""
    src = tmp_path / "in.jsonl"
    payload = b'{"custom_id": "0", "body": {}}\n' * 1000
    src.write_bytes(payload)
    form = MultipartUpload(path=src, filename='we"ird\nname.jsonl', fields=(("purpose", "batch"),))
    headers = form.headers(len(payload))
    body = b"".join([chunk async for chunk in form.stream(len(payload))])
    assert int(headers["Content-Length"]) == len(body)
    # Parse it back with the same machinery a server would use.
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/",
        "headers": [(b"content-type", headers["Content-Type"].encode())],
    }
    sent = False

    async def receive() -> dict[str, object]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    request = Request(scope, receive)
    async with request.form() as parsed:
        assert parsed["purpose"] == "batch"
        upload = parsed["file"]
        assert not isinstance(upload, str)
        assert upload.filename == "we%22ird%0Aname.jsonl"
        assert await upload.read() == payload


@pytest.mark.anyio
async def test_multipart_stream_detects_a_shrinking_file(tmp_path: Path) -> None:
    """A file that shrank after its size was taken fails loudly instead of sending garbage."""
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"12345")
    form = MultipartUpload(path=src, filename="in.jsonl", fields=())
    with pytest.raises(OSError, match="shrank"):
        _ = [chunk async for chunk in form.stream(10)]
