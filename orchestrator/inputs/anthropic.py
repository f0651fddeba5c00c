"""Anthropic's Message Batches dialect: lines, the endpoint and per-batch limits. Pure.

A line is either Anthropic's own form ``{custom_id, params}`` (``MessageBatchIndividualRequest``)
or the form every dialect takes, ``{custom_id, body}``; nothing else may sit beside them (the
API's request item has ``additionalProperties: false``). ``params`` (or ``body``) is a Messages
API body: ``max_tokens`` an integer >= 1 and ``messages`` a non-empty list of objects; ``model``
is optional (the job's model is filled in on the way out). A batch refuses streaming and a few
Messages features at validation (``shared/api/anthropic-batches.md`` §3): they are refused here,
before anything is sent. ``custom_id`` must match ``^[a-zA-Z0-9_-]{1,64}$``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from orchestrator.inputs.dialect import MISSING, LineCheck, LineRules, shown

ANTHROPIC_ENDPOINTS: tuple[str, ...] = ("/v1/messages",)
"""The one endpoint a Message Batch runs (each request is a Messages API call)."""

MAX_REQUESTS = 100_000
"""Requests per batch ("100,000 Message requests or 256 MB, whichever is reached first")."""
MAX_BYTES = 250_000_000
"""Input bytes per batch. The create body (the requests inline, at most 256 MB: a larger one
is a 413 from the edge) is the input plus what the rewrite adds: the ``{"requests":[…]}``
frame, a comma per line and the job's ``model`` where a line names none (about 40 bytes a
line, 4 MB at 100,000 lines); 6 MB below 256 MB leaves room for it."""

CUSTOM_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")
"""What the API takes as a ``custom_id`` (OAS ``MessageBatchIndividualRequestParams``)."""

_LINE_KEYS = frozenset({"custom_id", "params", "body"})
_NOT_IN_BATCHES: Mapping[str, str] = {
    "speed": "is not available in a batch",
    "store": "is not available in a batch",
    "previous_thread_event_id": "is not available in a batch",
    "cache_hint": "is not available in a batch",
    "context_hint": "is not available in a batch",
}
"""Messages API keys a batch refuses at validation (the Batch guide's "Batch limitations")."""


def line_check(endpoint: str, model: str | None = None) -> LineCheck:
    """The check of one line for ``endpoint`` (``/v1/messages``); ``model`` is not checked:
    a Message Batch may mix models, and a line without one gets the job's."""

    def check(request: Mapping[str, object]) -> Sequence[str]:
        problems: list[str] = []
        custom_id = request.get("custom_id", MISSING)
        if isinstance(custom_id, str) and not CUSTOM_ID.fullmatch(custom_id):
            problems.append(
                f"must be 1 to 64 letters, digits, '_' or '-', got {shown(custom_id)}: "
                "Anthropic refuses any other custom_id (custom_id)"
            )
        extra = sorted(key for key in request if key not in _LINE_KEYS)
        if extra:
            problems.append(
                f"Anthropic takes only custom_id and params in a batch request, not "
                f"{', '.join(extra)} (remove {', '.join(extra)})"
            )
        params = request.get("params", MISSING)
        body = request.get("body", MISSING)
        if params is not MISSING and body is not MISSING:
            problems.append("give params or body, not both (params)")
            return problems
        field = "params" if params is not MISSING or body is MISSING else "body"
        value = params if field == "params" else body
        if type(value) is not dict:
            what = "missing" if value is MISSING else f"must be an object, got {shown(value)}"
            problems.append(f"{what} (params)" if field == "params" else f"{what} (body)")
            return problems
        problems.extend(_params_problems(value, field))
        return problems

    return check


def _params_problems(params: Mapping[str, object], field: str) -> list[str]:
    """What is wrong with a Messages API body (``field`` names it in the messages)."""
    problems = []
    max_tokens = params.get("max_tokens", MISSING)
    if max_tokens is MISSING:
        problems.append(f"missing: a batch request needs max_tokens >= 1 ({field}.max_tokens)")
    elif type(max_tokens) is not int or max_tokens < 1:
        problems.append(f"must be an integer >= 1, got {shown(max_tokens)} ({field}.max_tokens)")
    messages = params.get("messages", MISSING)
    if messages is MISSING:
        problems.append(f"missing: required by /v1/messages ({field}.messages)")
    elif type(messages) is not list or not messages:
        problems.append(f"must be a non-empty list, got {shown(messages)} ({field}.messages)")
    else:
        for position, message in enumerate(messages):
            if type(message) is not dict:
                problems.append(
                    f"must be an object, got {shown(message)} ({field}.messages[{position}])"
                )
                break
    named = params.get("model", MISSING)
    if named is not MISSING and (not isinstance(named, str) or not named):
        problems.append(f"must be a model name, got {shown(named)} ({field}.model)")
    stream = params.get("stream", MISSING)
    if stream is True:
        problems.append(f"must not be true: a batch does not stream ({field}.stream)")
    for key, why in _NOT_IN_BATCHES.items():
        if key in params:
            problems.append(f"{why} ({field}.{key})")
    return problems


ANTHROPIC = LineRules(
    name="anthropic",
    endpoints=ANTHROPIC_ENDPOINTS,
    max_requests=MAX_REQUESTS,
    max_bytes=MAX_BYTES,
    line_check=line_check,
)
"""Anthropic's rules: 100,000 requests and 256 MB (less the rewrite's headroom) per batch."""
