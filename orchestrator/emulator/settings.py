"""Settings of the emulator: the simulation knobs and the injected faults.

Both are frozen values. A job keeps the simulation knobs it was created with (they are stored
beside it), so changing the settings, or restarting the process with other flags, only affects
new jobs and never rewrites the timeline of a running one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs

ROUTES: frozenset[str] = frozenset(
    {
        "files.upload",
        "files.list",
        "files.retrieve",
        "files.delete",
        "files.content",
        "files.url",
        "files.signed_content",
        "jobs.create",
        "jobs.list",
        "jobs.get",
        "jobs.cancel",
        "jobs.delete",
    }
)
"""The route names fault settings and counters refer to: a vocabulary of operations that every
dialect names its routes from (Mistral's routes use all of them; a dialect with a new kind of
operation adds its name here)."""

MIB = 1024 * 1024


def _positive(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{type(instance).__name__}.{attribute.name} must be > 0, got {value!r}")


def _non_negative(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value >= 0:
        raise ValueError(f"{type(instance).__name__}.{attribute.name} must be >= 0, got {value!r}")


def _fraction(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(
            f"{type(instance).__name__}.{attribute.name} must be between 0 and 1, got {value!r}"
        )


def _routes(value: Iterable[str] | None) -> frozenset[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        # A lone string would be split into characters: accept "a,b" as a convenience.
        value = [part.strip() for part in value.split(",") if part.strip()]
    routes = frozenset(value)
    unknown = sorted(routes - ROUTES)
    if unknown:
        raise ValueError(
            f"FaultSettings.routes: unknown route name(s) {', '.join(unknown)}; "
            f"known routes are {', '.join(sorted(ROUTES))}"
        )
    return routes


def _per_route(value: Mapping[str, Any] | None) -> dict[str, FaultSettings]:
    result: dict[str, FaultSettings] = {}
    for route, override in (value or {}).items():
        if route not in ROUTES:
            raise ValueError(
                f"FaultSettings.per_route: unknown route name {route!r}; "
                f"known routes are {', '.join(sorted(ROUTES))}"
            )
        result[route] = (
            override if isinstance(override, FaultSettings) else FaultSettings.from_dict(override)
        )
    return result


@attrs.frozen(kw_only=True)
class FaultSettings:
    """Faults injected into the wire's routes, reproducible from ``seed``.

    Each request on a faulted route draws once: below ``rate_limit_rate`` it gets a 429 with
    ``Retry-After``; in the next ``server_error_rate`` a 500, 502 or 503; in the next
    ``drop_rate`` the connection is closed without a response (before or after the request was
    processed, half of each); in the next ``truncate_rate`` a 200/206 response announces its full
    ``Content-Length`` but the connection closes part-way through the body. ``latency`` seconds
    (on the emulator's clock) are added to every faulted request.

    Attributes:
        rate_limit_rate: fraction of requests answered 429.
        retry_after: the ``Retry-After`` value, in seconds, sent with a 429.
        server_error_rate: fraction of requests answered 500, 502 or 503.
        latency: seconds added to every request on a faulted route.
        drop_rate: fraction of connections closed without a response.
        truncate_rate: fraction of successful responses cut short.
        seed: makes the sequence of faults on each route reproducible.
        routes: only these routes get faults (``None``: every route of the wire).
        per_route: other settings for some routes, replacing these for them.
    """

    rate_limit_rate: float = attrs.field(default=0.0, validator=_fraction)
    retry_after: float = attrs.field(default=1.0, validator=_non_negative)
    server_error_rate: float = attrs.field(default=0.0, validator=_fraction)
    latency: float = attrs.field(default=0.0, validator=_non_negative)
    drop_rate: float = attrs.field(default=0.0, validator=_fraction)
    truncate_rate: float = attrs.field(default=0.0, validator=_fraction)
    seed: int = 0
    routes: frozenset[str] | None = attrs.field(default=None, converter=_routes)
    per_route: dict[str, FaultSettings] = attrs.field(factory=dict, converter=_per_route)

    def __attrs_post_init__(self) -> None:
        total = self.rate_limit_rate + self.server_error_rate + self.drop_rate + self.truncate_rate
        if total > 1.0 + 1e-9:
            raise ValueError(
                "FaultSettings: rate_limit_rate + server_error_rate + drop_rate + truncate_rate "
                f"must not exceed 1, got {total:g}"
            )

    @property
    def active(self) -> bool:
        """Whether any fault or latency can be injected at all."""
        own = (
            self.rate_limit_rate
            + self.server_error_rate
            + self.drop_rate
            + self.truncate_rate
            + self.latency
        )
        return own > 0 or any(o.active for o in self.per_route.values())

    def for_route(self, route: str) -> FaultSettings | None:
        """The settings that apply to ``route``, or ``None`` when it gets no faults."""
        if route in self.per_route:
            return self.per_route[route]
        if self.routes is not None and route not in self.routes:
            return None
        return self

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form, the inverse of :meth:`from_dict`."""
        return {
            "rate_limit_rate": self.rate_limit_rate,
            "retry_after": self.retry_after,
            "server_error_rate": self.server_error_rate,
            "latency": self.latency,
            "drop_rate": self.drop_rate,
            "truncate_rate": self.truncate_rate,
            "seed": self.seed,
            "routes": sorted(self.routes) if self.routes is not None else None,
            "per_route": {name: o.to_dict() for name, o in sorted(self.per_route.items())},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FaultSettings:
        """Build from a mapping such as a JSON body.

        Raises:
            ValueError: an unknown key, a value of the wrong type or out of range.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"fault settings must be a JSON object, got {type(data).__name__}")
        known = {a.name for a in attrs.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"unknown fault setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        kwargs: dict[str, Any] = {}
        for name, value in data.items():
            if name in {"routes", "per_route"}:
                kwargs[name] = value
            elif name == "seed":
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ValueError(f"fault setting seed must be an integer, got {value!r}")
                kwargs[name] = value
            else:
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise ValueError(f"fault setting {name} must be a number, got {value!r}")
                kwargs[name] = float(value)
        return cls(**kwargs)


def _api_keys(value: Iterable[str] | None) -> frozenset[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    keys = frozenset(value)
    if not keys or any(not isinstance(k, str) or not k.strip() for k in keys):
        raise ValueError(
            "EmulatorSettings.api_keys must be None (any key) or a non-empty set of non-empty keys"
        )
    return keys


def _optional_positive(
    instance: object, attribute: attrs.Attribute[Any], value: int | None
) -> None:
    if value is not None:
        _positive(instance, attribute, value)


def _token_range(value: tuple[int, int]) -> tuple[int, int]:
    low, high = (int(v) for v in value)
    if not 1 <= low <= high:
        raise ValueError(
            f"EmulatorSettings.completion_tokens must be (low, high) with 1 <= low <= high, "
            f"got {value!r}"
        )
    return (low, high)


@attrs.frozen(kw_only=True)
class EmulatorSettings:
    """How the emulated service behaves.

    Attributes:
        time_scale: simulated seconds per clock second (``3600`` runs an hour per second).
        throughput: requests processed per simulated second, per job.
        validation_seconds: simulated seconds a job stays ``QUEUED`` (``total_requests = 0``).
        cancel_seconds: simulated seconds from ``CANCELLATION_REQUESTED`` to ``CANCELLED``.
        failure_fraction: fraction of valid requests that fail (chosen per ``custom_id``),
            the same way on every run: a 422 that no retry changes.
        transient_fraction: fraction of valid requests that fail with a 503 on one run,
            drawn again for each run of the custom_id (a retry usually succeeds).
        pending_budget: the most pending requests a workspace may hold.
        seed: seeds the synthetic results and the choice of failing requests.
        api_keys: the accepted bearer keys; ``None`` accepts any non-empty key.
        faults: the faults to inject (none by default).
        max_file_bytes: the upload size limit (Mistral: 512 MB).
        max_inline_requests: the limit on inline ``requests`` in a create (Mistral: 10,000).
        embedding_dimensions: length of the synthetic embedding vectors.
        completion_tokens: (low, high) range of synthetic completion lengths, in tokens.
        inline_outputs_max_bytes: the largest result a ``?inline=true`` get returns.
        finalizing_seconds: simulated seconds a batch stays ``finalizing`` after its last line
            (OpenAI; Mistral has no such status).
        token_limit: the most prompt tokens a workspace may have enqueued per model in
            ``validating``/``in_progress``/``finalizing`` batches (OpenAI; ``None``: no limit).
        max_batch_file_bytes: the largest ``purpose=batch`` upload (OpenAI: 200 MB).
    """

    time_scale: float = attrs.field(default=1.0, validator=_positive)
    throughput: float = attrs.field(default=1000.0, validator=_positive)
    validation_seconds: float = attrs.field(default=5.0, validator=_non_negative)
    cancel_seconds: float = attrs.field(default=2.0, validator=_non_negative)
    failure_fraction: float = attrs.field(default=0.0, validator=_fraction)
    transient_fraction: float = attrs.field(default=0.0, validator=_fraction)
    pending_budget: int = attrs.field(default=1_000_000, validator=_positive)
    seed: int = 0
    api_keys: frozenset[str] | None = attrs.field(default=None, converter=_api_keys)
    faults: FaultSettings = attrs.field(factory=FaultSettings)
    max_file_bytes: int = attrs.field(default=512 * MIB, validator=_positive)
    max_inline_requests: int = attrs.field(default=10_000, validator=_positive)
    embedding_dimensions: int = attrs.field(default=1024, validator=_positive)
    completion_tokens: tuple[int, int] = attrs.field(default=(16, 512), converter=_token_range)
    inline_outputs_max_bytes: int = attrs.field(default=64 * MIB, validator=_positive)
    finalizing_seconds: float = attrs.field(default=2.0, validator=_non_negative)
    token_limit: int | None = attrs.field(default=None, validator=_optional_positive)
    max_batch_file_bytes: int = attrs.field(default=200 * MIB, validator=_positive)
