"""Classifying provider responses: error bodies, transient vs permanent, unknown outcomes.

One :func:`map_http_error` for responses and one :func:`map_transport_error` for network faults
turn every failure into :mod:`orchestrator.errors`; only ``TransientProviderError`` is retried.
The error-body parser understands every vendor shape we speak (Mistral, OpenAI, Anthropic), so a
new dialect reuses it rather than writing its own; a dialect refines the mapped error only where
its API says more (Mistral's capacity refusal, for instance). Messages never carry a secret.
"""

from __future__ import annotations

import email.utils
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

import attrs
import httpx

from orchestrator.errors import (
    PermanentProviderError,
    ProviderError,
    RateLimited,
    TransientProviderError,
)

MAX_MESSAGE_CHARS = 500
"""Provider messages are cut to this length (an HTML error page must not flood the ledger)."""

MAX_ERROR_BODY_BYTES = 64 * 1024
"""At most this much of an error response is read (an error body is never large on purpose)."""

_TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
"""Besides any other 5xx: 408 is the server timing the request out, so a retry is sound."""

REQUEST_ID_HEADERS: tuple[str, ...] = ("x-request-id", "mistral-request-id", "request-id")
"""Response headers that carry the provider's request id, first found wins (OpenAI and
Mistral send ``x-request-id``, Anthropic ``request-id``); a body's ``request_id`` beats them."""


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
    ``{"message": {"detail": [...]}}``, OpenAI's ``{"error": {"message", ...}}`` and Anthropic's
    ``{"type": "error", "error": {"type", "message"}, "request_id"}``. Anything
    else falls back to the (shortened) text of the body, or the HTTP reason phrase. ``body``
    overrides ``response.content`` (for a streamed response read only in part).
    """
    request_id = next(
        (value for name in REQUEST_ID_HEADERS if (value := response.headers.get(name))), None
    )
    raw = response.content if body is None else body
    text = raw[:MAX_ERROR_BODY_BYTES].decode("utf-8", errors="replace")
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, Mapping):
        inner = data.get("error")
        if isinstance(inner, Mapping):  # OpenAI and Anthropic nest it
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
    transient: Iterable[int] = (),
) -> ProviderError:
    """The error for a non-2xx ``response`` (whose body has been read, or is given as ``body``).

    429 is :class:`RateLimited` carrying ``Retry-After`` in seconds; 408, 5xx and the
    dialect's own ``transient`` statuses (OpenAI's SDK retries 409) are
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
    if status in _TRANSIENT_STATUSES or status >= 500 or status in set(transient):
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


def malformed(provider: str, operation: str, what: str) -> PermanentProviderError:
    """The error for a 2xx answer whose JSON is not what the API documents.

    Permanent: the same request gets the same answer, and treating an unknown shape as some
    default (a job "running" forever) would hide an API change.
    """
    return PermanentProviderError(f"{provider} {operation}: unexpected response: {what}")
