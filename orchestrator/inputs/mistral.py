"""Mistral's batch dialect: lines ``{custom_id, body}``, its endpoints and limits. Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from orchestrator.inputs.dialect import MISSING, LineCheck, LineRules, body_problem, shown

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


def line_check(endpoint: str, model: str | None = None) -> LineCheck:
    """The check of one line for ``endpoint``: ``body`` is an object with the keys it needs.

    ``model`` is not checked: Mistral names the model on the batch, and ignores a line's.
    """
    keys = _BODY_KEYS.get(endpoint, ())

    def check(request: Mapping[str, object]) -> Sequence[str]:
        body = request.get("body", MISSING)
        if type(body) is not dict:
            what = "missing" if body is MISSING else f"must be an object, got {shown(body)}"
            return (f"{what} (body)",)
        if keys:
            problem = body_problem(body, keys, endpoint)
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
