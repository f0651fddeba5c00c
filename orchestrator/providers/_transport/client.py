"""The HTTP client every provider speaks through: counted, logged, mapped and retried calls.

:class:`ApiClient` owns one workspace's ``httpx.AsyncClient``, maps every failure with
:mod:`.errors`, retries only ``TransientProviderError`` with jittered exponential backoff
(stamina) while honouring the server's ``Retry-After``, counts every call per operation and
status (the metrics and the loop-cost tests read them), and scrubs the API key out of every
message it builds. It knows no vendor: headers, paths and bodies come from the dialect.
"""

from __future__ import annotations

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
from orchestrator.errors import ProviderError, RateLimited, TransientProviderError
from orchestrator.providers._transport.errors import (
    MAX_ERROR_BODY_BYTES,
    decode_json,
    map_http_error,
    map_transport_error,
    redact,
    with_unknown_outcome,
)

log = structlog.get_logger(__name__)

T = TypeVar("T")

CallCounter = Counter[tuple[str, int | str]]
"""API calls per ``(operation, HTTP status or transport error class name)``."""


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
        transient_statuses: 4xx statuses this dialect retries besides 408 and 429.
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
        transient_statuses: Iterable[int] = (),
    ) -> None:
        self.provider = provider
        self._transient_statuses = frozenset(transient_statuses)
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
            transient=self._transient_statuses,
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

    async def get_json(self, operation: str, url: str, **kwargs: Any) -> Any:
        """An idempotent GET's JSON document, retried per the policy.

        Raises:
            TransientProviderError: retries were exhausted (a body that is not JSON counts).
            ProviderError: any non-transient error, at once.
        """
        return await self.json(operation, "GET", url, **kwargs)

    async def json(self, operation: str, method: str, url: str, **kwargs: Any) -> Any:
        """An idempotent call's JSON document (a GET, a cancel), retried per the policy.

        Raises:
            TransientProviderError: retries were exhausted (a body that is not JSON counts).
            ProviderError: any non-transient error, at once.
        """

        async def once() -> Any:
            response = await self.send(operation, method, url, **kwargs)
            return decode_json(response, provider=self.provider, operation=operation)

        return await self.retrying(operation, once)

    async def json_once(
        self,
        operation: str,
        method: str,
        url: str,
        *,
        refine: Callable[[httpx.Response], ProviderError | None] | None = None,
        **kwargs: Any,
    ) -> Any:
        """A non-idempotent call's JSON document (a create): sent once, never retried.

        A lost answer may still have done the work, so every transient error says the outcome
        is unknown (the daemon reconciles by the client token before creating again).
        ``refine`` sees a refused response first and may return a more precise error, such as
        ``CapacityRefused`` for a full pending budget; ``None`` keeps the mapped one.

        Raises:
            TransientProviderError: the outcome is unknown (or a 429: nothing was done).
            ProviderError: the refined or mapped refusal.
        """
        response = await self.send(
            operation, method, url, check=False, unknown_outcome=True, **kwargs
        )
        if not response.is_success:
            refined = refine(response) if refine is not None else None
            raise refined or self.error_for(response, operation, unknown_outcome=True)
        try:
            return decode_json(response, provider=self.provider, operation=operation)
        except TransientProviderError as exc:
            raise with_unknown_outcome(exc) from None

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
