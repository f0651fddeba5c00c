"""Mistral's batch dialect: lines ``{custom_id, body}``, its endpoints and limits. Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from orchestrator.inputs.dialect import MISSING, LineCheck, LineRules, shown

MISTRAL_ENDPOINTS: tuple[str, ...] = (
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/fim/completions",
    "/v1/moderations",
    "/v1/chat/moderations",
    "/v1/ocr",
    "/v1/classifications",
    "/v1/chat/classifications",
    "/v1/conversations",
    "/v1/audio/transcriptions",
)
"""Mistral's batch ``ApiEndpoint`` enum (OpenAPI ``CreateBatchJobRequest.endpoint``)."""

_BODY_KEYS: Mapping[str, tuple[str, ...]] = {
    "/v1/chat/completions": ("messages",),
    "/v1/embeddings": ("input",),
    "/v1/fim/completions": ("prompt",),
    "/v1/moderations": ("input",),
    "/v1/classifications": ("input",),
    "/v1/chat/moderations": ("input", "messages"),
    "/v1/chat/classifications": ("input", "messages"),
    "/v1/ocr": ("document",),
}
"""Body keys an endpoint needs (any one of them); endpoints not listed take any object."""


def line_check(endpoint: str) -> LineCheck:
    """The check of one line for ``endpoint``: ``body`` is an object with the keys it needs."""
    keys = _BODY_KEYS.get(endpoint, ())

    def check(request: Mapping[str, object]) -> Sequence[str]:
        body = request.get("body", MISSING)
        if type(body) is not dict:
            what = "missing" if body is MISSING else f"must be an object, got {shown(body)}"
            return (f"{what} (body)",)
        if keys:
            problem = _body(body, keys, endpoint)
            if problem:
                return (problem,)
        return ()

    return check


MISTRAL = LineRules(
    name="mistral",
    endpoints=MISTRAL_ENDPOINTS,
    max_requests=1_000_000,
    max_bytes=512 * 1024 * 1024,
    line_check=line_check,
)
"""Mistral's rules: 1,000,000 requests and 512 MB (its upload limit) per batch."""


def _body(body: dict[str, object], keys: tuple[str, ...], endpoint: str) -> str | None:
    """What is wrong with ``body`` for this endpoint, or None."""
    for key in keys:
        value = body.get(key, MISSING)
        if value is MISSING:
            continue
        if key == "messages":
            return _messages(value)
        if _empty(value):
            return f"must not be empty, got {shown(value)} (body.{key})"
        return None
    if len(keys) == 1:
        return f"missing: required by {endpoint} (body.{keys[0]})"
    names = " or ".join(keys)
    fields = ", ".join(f"body.{key}" for key in keys)
    return f"missing: {endpoint} requires {names} ({fields})"


def _empty(value: object) -> bool:
    return value is None or value == "" or value == [] or value == {}


def _messages(value: object) -> str | None:
    if type(value) is not list:
        return f"must be a non-empty list, got {shown(value)} (body.messages)"
    if not value:
        return "must not be an empty list (body.messages)"
    for position, message in enumerate(value):
        if type(message) is not dict:
            return f"must be an object, got {shown(message)} (body.messages[{position}])"
    return None
