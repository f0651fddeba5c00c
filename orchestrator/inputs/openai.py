"""OpenAI's batch dialect: lines, endpoints and per-batch limits. Pure.

A line is either OpenAI's own form ``{custom_id, method, url, body}`` (``BatchRequestInput``)
or the form every dialect takes, ``{custom_id, body}``. In OpenAI's form ``method`` must be
``"POST"`` and ``url`` the job's endpoint (OpenAI fails the whole batch on a line for another
endpoint: ``url_mismatch``). In either form ``body`` is an object holding what its endpoint
needs, and a ``body.model`` must be the job's model ("each input file can only include requests
to a single model": ``model_mismatch``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from orchestrator.inputs.dialect import MISSING, LineCheck, LineRules, body_problem, shown

OPENAI_ENDPOINTS: tuple[str, ...] = (
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/completions",
    "/v1/responses",
    "/v1/moderations",
)
"""The batch endpoints the orchestrator submits to OpenAI (of ``POST /v1/batches``' enum; the
image and video endpoints are not supported yet)."""

MAX_REQUESTS = 50_000
"""Requests per batch (OpenAI's Batch guide)."""
MAX_BYTES = 200_000_000
"""Bytes per batch input file: "200 MB", read as the smaller of 200 MB and 200 MiB."""

_BODY_KEYS: Mapping[str, tuple[str, ...]] = {
    "/v1/chat/completions": ("messages",),
    "/v1/embeddings": ("input",),
    "/v1/completions": ("prompt",),
    "/v1/responses": ("input", "prompt"),
    "/v1/moderations": ("input",),
}
"""Body keys an endpoint needs (any one of them)."""


def line_check(endpoint: str, model: str | None = None) -> LineCheck:
    """The check of one line for ``endpoint`` and the job's ``model`` (None: not checked)."""
    keys = _BODY_KEYS.get(endpoint, ())

    def check(request: Mapping[str, object]) -> Sequence[str]:
        problems: list[str] | None = None
        method = request.get("method", MISSING)
        url = request.get("url", MISSING)
        if method is not MISSING or url is not MISSING:
            problems = _form(method, url, endpoint)
        body = request.get("body", MISSING)
        if type(body) is not dict:
            what = "missing" if body is MISSING else f"must be an object, got {shown(body)}"
            return (*(problems or ()), f"{what} (body)")
        problem = body_problem(body, keys, endpoint) if keys else None
        if problem:
            problems = [*(problems or ()), problem]
        named = body.get("model", MISSING)
        if named is not MISSING and model is not None and named != model:
            problems = [
                *(problems or ()),
                f"names model {shown(named)}, but the job's model is {shown(model)}: a batch "
                "holds requests to one model (body.model)",
            ]
        return problems or ()

    return check


def _form(method: object, url: object, endpoint: str) -> list[str]:
    """What is wrong with the ``method`` and ``url`` of a line in OpenAI's form."""
    problems = []
    if method is MISSING:
        problems.append('missing: a line with a url needs method "POST" (method)')
    elif method != "POST":
        problems.append(f'must be "POST", got {shown(method)} (method)')
    if url is MISSING:
        problems.append(f"missing: a line with a method needs url {shown(endpoint)} (url)")
    elif url != endpoint:
        problems.append(
            f"must be the job's endpoint {shown(endpoint)}, got {shown(url)}: a batch holds "
            "requests to one endpoint (url)"
        )
    return problems


OPENAI = LineRules(
    name="openai",
    endpoints=OPENAI_ENDPOINTS,
    max_requests=MAX_REQUESTS,
    max_bytes=MAX_BYTES,
    line_check=line_check,
)
"""OpenAI's rules: 50,000 requests and 200 MB per batch."""
