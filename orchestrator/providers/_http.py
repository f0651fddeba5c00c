"""Shared HTTP plumbing for providers: error mapping, the retry policy, counted and logged calls.

Every provider speaks through one :class:`ApiClient`. It owns the ``httpx.AsyncClient``, maps
every failure onto :mod:`orchestrator.errors` (one :func:`map_http_error` for responses, one
:func:`map_transport_error` for network faults), retries only ``TransientProviderError`` with
jittered exponential backoff (stamina) while honouring the server's ``Retry-After``, counts
every call per operation and status, and scrubs the API key out of every message it builds.
"""

from __future__ import annotations

import email.utils
import json
import math
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import attrs
import httpx
import stamina
import structlog

from orchestrator.clock import Clock
from orchestrator.errors import (
    PermanentProviderError,
    ProviderError,
    RateLimited,
    TransientProviderError,
)

log = structlog.get_logger(__name__)

T = TypeVar("T")

MAX_MESSAGE_CHARS = 500
"""Provider messages are cut to this length (an HTML error page must not flood the ledger)."""

MAX_ERROR_BODY_BYTES = 64 * 1024
"""At most this much of an error response is read (an error body is never large on purpose)."""

_TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
"""Besides any other 5xx: 408 is the server timing the request out, so a retry is sound."""

CallCounter = Counter[tuple[str, int | str]]
"""API calls per ``(operation, HTTP status or transport error class name)``."""


@attrs.frozen(kw_only=True)
class ErrorBody:
    """What a provider's error response says, whatever shape it came in."""

    message: str
    code: str | None = None
    type: str | None = None
    request_id: str | None = None


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each non-empty secret replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def _shorten(text: str) -> str:
    text = " ".join(text.split())
    if len(text) > MAX_MESSAGE_CHARS:
        return text[: MAX_MESSAGE_CHARS - 1] + "…"
    return text


def _format_validation_detail(detail: list[Any]) -> str:
    """FastAPI/pydantic ``detail`` items as ``loc.path: msg`` joined by ``; ``."""
    parts = []
    for item in detail:
        if isinstance(item, Mapping):
            loc = item.get("loc")
            where = ".".join(str(p) for p in loc) if isinstance(loc, list) else ""
            msg = str(item.get("msg") or item.get("message") or item)
            parts.append(f"{where}: {msg}" if where else msg)
        else:
            parts.append(str(item))
    return "; ".join(parts)


def _message_from(value: object) -> str | None:
    """The human message inside one of the documented shapes of ``message`` or ``detail``."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, list):
        return _format_validation_detail(value) or None
    if isinstance(value, Mapping):
        # 2024 Mistral 422: {"message": {"detail": [...]}}
        for key in ("detail", "message", "msg"):
            if key in value:
                return _message_from(value[key])
        return json.dumps(value, sort_keys=True)
    return None


def parse_error_body(response: httpx.Response, body: bytes | None = None) -> ErrorBody:
    """Extract the provider's message from an error response (its body must be read).

    Understands the documented Mistral shapes: ``{"object": "error", "message", "type",
    "code"}``, ``{"message", "request_id"}``, ``{"detail": "..."}``, ``{"detail": [{loc, msg}]}``,
    ``{"message": {"detail": [...]}}``, and OpenAI's ``{"error": {"message", ...}}``. Anything
    else falls back to the (shortened) text of the body, or the HTTP reason phrase. ``body``
    overrides ``response.content`` (for a streamed response read only in part).
    """
    request_id = response.headers.get("x-request-id") or response.headers.get("mistral-request-id")
    raw = response.content if body is None else body
    text = raw[:MAX_ERROR_BODY_BYTES].decode("utf-8", errors="replace")
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, Mapping):
        inner = data.get("error")
        if isinstance(inner, Mapping):  # OpenAI shape
            data = {**data, **inner}
        message = _message_from(data.get("message")) or _message_from(data.get("detail"))
        code = data.get("code")
        kind = data.get("type")
        rid = data.get("request_id")
        return ErrorBody(
            message=_shorten(message or text or response.reason_phrase),
            code=str(code) if code is not None else None,
            type=str(kind) if kind is not None else None,
            request_id=str(rid) if rid is not None else request_id,
        )
    fallback = text.strip() or response.reason_phrase or "no message"
    return ErrorBody(message=_shorten(fallback), request_id=request_id)


def parse_retry_after(headers: httpx.Headers, *, now: float | None) -> float | None:
    """Seconds to wait before retrying, from ``retry-after-ms`` or ``Retry-After``.

    ``Retry-After`` may be delta-seconds or an HTTP date (which needs ``now``, epoch seconds).
    A date in the past means 0. Garbage means ``None`` (no hint).
    """
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            value = float(millis) / 1000.0
        except ValueError:
            value = math.nan
        if math.isfinite(value):
            return max(0.0, value)
    raw = headers.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        seconds = float(raw)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    if now is None:
        return None
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # HTTP dates are GMT by definition
        return None
    return max(0.0, when.timestamp() - now)


def map_http_error(
    response: httpx.Response,
    *,
    body: bytes | None = None,
    provider: str = "provider",
    operation: str = "call",
    now: float | None = None,
    secrets: Iterable[str] = (),
) -> ProviderError:
    """The error for a non-2xx ``response`` (whose body has been read, or is given as ``body``).

    429 is :class:`RateLimited` carrying ``Retry-After`` in seconds; 408 and 5xx are
    :class:`TransientProviderError`; any other status is :class:`PermanentProviderError` with
    the provider's own message. Callers that know more (capacity refusals) refine the result.
    """
    status = response.status_code
    error = parse_error_body(response, body)
    details = [f"code={error.code}"] if error.code else []
    if error.request_id:
        details.append(f"request_id={error.request_id}")
    suffix = f" ({', '.join(details)})" if details else ""
    message = f"{provider} {operation}: HTTP {status}: {error.message}{suffix}"
    if status == 401:
        message += ": check the workspace's API key"
    elif 300 <= status < 400:
        target = response.headers.get("location", "?")
        message += f": unexpected redirect to {target}; check the workspace's base_url"
    message = redact(message, secrets)
    if status == 429:
        return RateLimited(message, retry_after=parse_retry_after(response.headers, now=now))
    if status in _TRANSIENT_STATUSES or status >= 500:
        return TransientProviderError(message, status_code=status)
    return PermanentProviderError(message, status_code=status)


def map_transport_error(
    exc: httpx.HTTPError,
    *,
    provider: str = "provider",
    operation: str = "call",
    secrets: Iterable[str] = (),
) -> ProviderError:
    """The error for a request that got no (complete) response.

    Timeouts, connection and read failures, a server hanging up mid-body and proxy faults are
    transient; a malformed request or URL on our side is permanent (retrying cannot help).
    """
    kind = type(exc).__name__
    detail = str(exc) or kind
    message = redact(f"{provider} {operation}: {kind}: {detail}", secrets)
    transient = (
        httpx.TimeoutException,
        httpx.NetworkError,
        httpx.RemoteProtocolError,
        httpx.ProxyError,
    )
    if isinstance(exc, transient):
        return TransientProviderError(message)
    return PermanentProviderError(
        message + ": the request itself is invalid; check the workspace's base_url"
    )


UNKNOWN_OUTCOME = (
    "the outcome is unknown: the job may have been created "
    "(reconcile by listing its metadata before creating again)"
)


def with_unknown_outcome(error: ProviderError) -> ProviderError:
    """``error`` annotated for a non-idempotent call whose effect may have happened.

    Only transient errors change: a 429 is a refusal (nothing was done), so it stays as is.
    """
    if not isinstance(error, TransientProviderError) or isinstance(error, RateLimited):
        return error
    return TransientProviderError(f"{error}; {UNKNOWN_OUTCOME}", status_code=error.status_code)


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """How transient faults are retried: jittered exponential backoff, server hints honoured.

    A ``Retry-After`` longer than ``max_wait`` is not waited for inside the call: the
    :class:`RateLimited` error goes up with its ``retry_after`` so the caller reschedules.
    """

    attempts: int = 5
    max_wait: float = 60.0
    wait_initial: float = 0.5
    wait_jitter: float = 1.0

    def __attrs_post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {self.attempts}")
        if not (self.max_wait >= 0 and math.isfinite(self.max_wait)):
            raise ValueError(
                f"max_wait must be a finite number of seconds >= 0, got {self.max_wait}"
            )

    def backoff_hook(self, exc: Exception) -> bool | float:
        """stamina's ``on=`` hook: retry transient errors, waiting ``Retry-After`` if given."""
        if isinstance(exc, RateLimited) and exc.retry_after is not None:
            if exc.retry_after > self.max_wait:
                return False
            return float(exc.retry_after)
        return isinstance(exc, TransientProviderError)


class ApiClient:
    """One provider workspace's HTTP client: counted, logged, mapped and retried calls.

    Args:
        provider: short provider name used in messages and logs.
        base_url: the API root, e.g. ``https://api.mistral.ai``.
        headers: headers sent on every request (the Authorization header lives here only).
        secrets: values scrubbed from every message this client builds.
        transport: an httpx transport (tests pass the emulator's ASGI transport).
        timeout: seconds for each of connect, read, write and pool waits.
        policy: the retry policy.
        clock: the injected clock (call durations and ``Retry-After`` dates).
    """

    def __init__(
        self,
        *,
        provider: str,
        base_url: str,
        headers: Mapping[str, str],
        secrets: Iterable[str],
        transport: httpx.AsyncBaseTransport | None,
        timeout: float,
        policy: RetryPolicy,
        clock: Clock,
    ) -> None:
        self.provider = provider
        self.policy = policy
        self.calls: CallCounter = Counter()
        self._secrets = tuple(s for s in secrets if s)
        self._clock = clock
        self._client = httpx.AsyncClient(
            base_url=base_url,
            headers=dict(headers),
            transport=transport,
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,
        )

    def redact(self, text: str) -> str:
        """``text`` without this client's secrets."""
        return redact(text, self._secrets)

    def error_for(
        self,
        response: httpx.Response,
        operation: str,
        body: bytes | None = None,
        *,
        unknown_outcome: bool = False,
    ) -> ProviderError:
        """:func:`map_http_error` bound to this client (body read, or given as ``body``)."""
        error = map_http_error(
            response,
            body=body,
            provider=self.provider,
            operation=operation,
            now=self._clock.now(),
            secrets=self._secrets,
        )
        return with_unknown_outcome(error) if unknown_outcome else error

    def transport_error(self, exc: httpx.HTTPError, operation: str) -> ProviderError:
        """:func:`map_transport_error` bound to this client."""
        return map_transport_error(
            exc, provider=self.provider, operation=operation, secrets=self._secrets
        )

    async def retrying(self, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        """Run ``call`` until it succeeds, retrying ``TransientProviderError`` per the policy.

        Raises:
            TransientProviderError: the last transient error once attempts are exhausted (or a
                ``RateLimited`` whose ``Retry-After`` exceeds ``max_wait``).
            ProviderError: any non-transient error, at once.
        """
        last: TransientProviderError | None = None
        async for attempt in stamina.retry_context(
            on=self.policy.backoff_hook,
            attempts=self.policy.attempts,
            timeout=None,
            wait_initial=self.policy.wait_initial,
            wait_max=self.policy.max_wait,
            wait_jitter=self.policy.wait_jitter,
        ):
            if last is not None:
                log.warning(
                    "provider.retry",
                    provider=self.provider,
                    operation=operation,
                    attempt=attempt.num,
                    error=str(last),
                    retry_after=getattr(last, "retry_after", None),
                )
            with attempt:
                try:
                    return await call()
                except TransientProviderError as exc:
                    last = exc
                    raise
        raise AssertionError("unreachable: stamina re-raises the last error")  # pragma: no cover

    def _record(self, operation: str, status: int | str, started: float, **fields: object) -> None:
        self.calls[(operation, status)] += 1
        log.debug(
            "provider.call",
            provider=self.provider,
            operation=operation,
            status=status,
            duration=round(self._clock.now() - started, 6),
            **fields,
        )

    async def send(
        self,
        operation: str,
        method: str,
        url: str,
        *,
        check: bool = True,
        unknown_outcome: bool = False,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send one request (no retry) and return its read response.

        With ``check`` (the default) a non-2xx status raises its mapped error; without it the
        caller inspects the response. ``unknown_outcome`` marks transient errors of a
        non-idempotent call (see :func:`with_unknown_outcome`).

        Raises:
            ProviderError: the mapped error for a non-2xx status or a transport failure.
        """
        started = self._clock.now()
        try:
            response = await self._client.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            self._record(operation, type(exc).__name__, started, method=method)
            error = self.transport_error(exc, operation)
            raise (with_unknown_outcome(error) if unknown_outcome else error) from None
        self._record(operation, response.status_code, started, method=method)
        if check and not response.is_success:
            error = self.error_for(response, operation)
            raise with_unknown_outcome(error) if unknown_outcome else error
        return response

    @asynccontextmanager
    async def stream(
        self,
        operation: str,
        method: str,
        url: str,
        *,
        ok: Callable[[httpx.Response], bool] = lambda r: r.is_success,
        **kwargs: Any,
    ) -> AsyncIterator[httpx.Response]:
        """Open one streamed request (no retry); yield the response with its body unread.

        ``ok`` decides which statuses the caller handles itself; any other status is read
        (bounded) and raised as its mapped error. Transport failures while the caller reads
        the body are the caller's to map (see :meth:`transport_error`).

        Raises:
            ProviderError: the mapped error for a refused status or a transport failure.
        """
        started = self._clock.now()
        request = self._client.build_request(method, url, **kwargs)
        try:
            response = await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            self._record(operation, type(exc).__name__, started, method=method)
            raise self.transport_error(exc, operation) from None
        try:
            self._record(operation, response.status_code, started, method=method)
            if not ok(response):
                body = await _read_bounded(response)
                raise self.error_for(response, operation, body)
            yield response
        except httpx.HTTPError as exc:
            raise self.transport_error(exc, operation) from None
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()


async def _read_bounded(response: httpx.Response) -> bytes:
    """At most :data:`MAX_ERROR_BODY_BYTES` of a streamed (error) body."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size >= MAX_ERROR_BODY_BYTES:
            break
    return b"".join(chunks)[:MAX_ERROR_BODY_BYTES]


def decode_json(response: httpx.Response, *, provider: str, operation: str) -> Any:
    """The JSON document of a 2xx response.

    Raises:
        TransientProviderError: the body is not JSON (typically a body cut short in transit, or
            a proxy's page); for a GET a retry is sound, for a create the outcome is unknown.
    """
    try:
        return json.loads(response.content)
    except ValueError as exc:
        raise TransientProviderError(
            f"{provider} {operation}: HTTP {response.status_code} response is not valid JSON "
            f"({exc}); the body may have been cut short",
            status_code=response.status_code,
        ) from None
