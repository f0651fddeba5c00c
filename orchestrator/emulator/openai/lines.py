"""OpenAI's input lines: ``{custom_id, method, url, body}``, judged as the Batch API does.

Two kinds of problems, as ``openai-batch.md`` §5-§7 describe:

- **the file** (checked at create by :meth:`OpenAIRules.scan`; the batch answers 200 and then
  fails validation with ``errors.data[]``): a line that is not JSON, lacks ``custom_id``,
  ``method``, ``url`` or ``body``, uses another method than POST, repeats a ``custom_id``,
  names another url than the batch's endpoint or another model than the first line; an empty
  file; more than 50,000 requests. ``line`` is 1-based over the non-blank lines.
- **a request** (the endpoint refuses it: HTTP 400 in the error file): a body without what the
  endpoint needs (``messages``, ``input``, ``prompt``), or a value out of range.

The prompt-token estimate (:func:`prompt_tokens`) is what the enqueued-token limit counts and
what the synthetic ``usage`` reports.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from orchestrator.emulator.lines import (
    SIMULATED_FAILURE,
    Line,
    LineError,
    fails_by_chance,
    iter_raw_lines,
)
from orchestrator.emulator.rows import JobRow
from orchestrator.emulator.rules import Scan

ENDPOINTS: tuple[str, ...] = (
    "/v1/responses",
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/completions",
    "/v1/moderations",
    "/v1/images/generations",
    "/v1/images/edits",
    "/v1/videos",
)
"""The ``endpoint`` values the API accepts (OAS ``CreateBatchRequest``)."""

SUPPORTED: tuple[str, ...] = ENDPOINTS[:5]
"""The endpoints the emulator has synthetic answers for."""

MAX_REQUESTS = 50_000
"""Requests per batch (the guide's limit)."""

MAX_ERRORS = 10
"""Validation stops after this many problems (they are all reported)."""

PROMPT_FIELD: dict[str, str] = {
    "/v1/chat/completions": "messages",
    "/v1/embeddings": "input",
    "/v1/completions": "prompt",
    "/v1/responses": "input",
    "/v1/moderations": "input",
}
"""The body field holding each endpoint's prompt (what the token estimate counts)."""


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def prompt_tokens(endpoint: str, body: dict[str, Any]) -> int:
    """The prompt tokens of one request: ``max(1, ceil(chars / 4))``, where ``chars`` counts
    the characters of every string value (keys excluded) inside the endpoint's prompt field
    (:data:`PROMPT_FIELD`; a token is about four characters of English)."""
    chars = sum(len(s) for s in _strings(body.get(PROMPT_FIELD.get(endpoint, "input"))))
    return max(1, math.ceil(chars / 4))


def _problem(code: str, message: str, line: int | None, param: str | None = None) -> dict[str, Any]:
    return {"code": code, "message": message, "param": param, "line": line}


def _missing(field: str, line: int) -> dict[str, Any]:
    return _problem(
        "missing_required_parameter",
        f"Missing required parameter: '{field}'.",
        line,
        field,
    )


class OpenAIRules:
    """OpenAI's rules for a batch's input (see the module docstring)."""

    def scan(self, paths: Sequence[Path], *, endpoint: str, requests: int) -> Scan:
        """Check the file as a whole, find its model and estimate its prompt tokens."""
        if requests == 0:
            return Scan(errors=[_problem("empty_file", "The input file is empty.", None)])
        if requests > MAX_REQUESTS:
            message = (
                f"The input file has {requests:,} requests; a batch may include at most "
                f"{MAX_REQUESTS:,}."
            )
            return Scan(errors=[_problem("too_many_tasks", message, None)])
        errors: list[dict[str, Any]] = []
        seen: set[str] = set()
        model: str | None = None
        tokens = 0
        for index, raw in enumerate(iter_raw_lines(paths)):
            if len(errors) >= MAX_ERRORS:
                break
            n = index + 1
            try:
                data = json.loads(raw)
            except ValueError:
                data = None
            if not isinstance(data, dict):
                errors.append(
                    _problem("invalid_json_line", "This line is not parseable as valid JSON.", n)
                )
                continue
            problem = self._structure(data, n, endpoint, seen)
            if problem is not None:
                errors.append(problem)
                continue
            body = data["body"]
            name = body["model"]
            if model is None:
                model = name
            elif name != model:
                message = (
                    f"This line uses model '{name}' but an earlier line uses '{model}': a batch "
                    "may only include requests to a single model."
                )
                errors.append(_problem("model_mismatch", message, n, "body.model"))
                continue
            tokens += prompt_tokens(endpoint, body)
        return Scan(model=model, prompt_tokens=tokens, errors=errors)

    @staticmethod
    def _structure(
        data: dict[str, Any], n: int, endpoint: str, seen: set[str]
    ) -> dict[str, Any] | None:
        custom_id = data.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id:
            return _missing("custom_id", n)
        if custom_id in seen:
            message = (
                f"The custom_id '{custom_id}' is used more than once in this file; each request "
                "needs a unique custom_id."
            )
            return _problem("duplicate_custom_id", message, n, "custom_id")
        seen.add(custom_id)
        method = data.get("method")
        if method is None:
            return _missing("method", n)
        if method != "POST":
            message = f"The method {method!r} is not supported: only POST is."
            return _problem("invalid_method", message, n, "method")
        url = data.get("url")
        if url is None:
            return _missing("url", n)
        if url != endpoint:
            message = f"The url {url!r} does not match the batch's endpoint {endpoint!r}."
            return _problem("url_mismatch", message, n, "url")
        body = data.get("body")
        if not isinstance(body, dict):
            return _missing("body", n)
        if not isinstance(body.get("model"), str) or not body["model"]:
            return _missing("body.model", n)
        return None

    def classify(self, paths: Sequence[Path], job: JobRow) -> Iterator[Line]:
        """Judge each request as its endpoint would (the file itself passed :meth:`scan`)."""
        p = job.params
        for index, raw in enumerate(iter_raw_lines(paths)):
            try:
                data = json.loads(raw)
            except ValueError:
                data = None
            if not isinstance(data, dict) or not isinstance(data.get("body"), dict):
                # Unreachable once scan passed, unless the stored input changed.
                error = LineError(status_code=400, message="Invalid request line.")
                yield Line(index=index, custom_id=None, body=None, error=error)
                continue
            custom_id = str(data.get("custom_id") or index)
            body: dict[str, Any] = data["body"]
            problem = check_body(job.endpoint, body)
            if problem is None and fails_by_chance(p.seed, custom_id, p.failure_fraction):
                problem = SIMULATED_FAILURE
            yield Line(index=index, custom_id=custom_id, body=body, error=problem)

    def verdict(self, *, count: int, invalid: int, problems: Counter[str]) -> list[dict[str, Any]]:
        """Never unusable here: a batch whose every request fails still completes."""
        return []

    def token_limit_error(
        self, *, workspace: str, model: str, tokens: int, enqueued: int, limit: int
    ) -> dict[str, Any]:
        """The observed ``token_limit_exceeded`` entry (openai-python#2084)."""
        message = (
            f"Enqueued token limit reached for {model} in organization {organization(workspace)}. "
            f"Limit: {limit:,} enqueued tokens. Please try again once some in_progress batches "
            "have been completed."
        )
        return _problem("token_limit_exceeded", message, None)


def organization(workspace: str) -> str:
    """The organisation id a workspace is shown as (``ws-<hex>`` → ``org-<hex>``)."""
    return "org-" + workspace.removeprefix("ws-")


def _bad(message: str, param: str, code: str = "invalid_value") -> LineError:
    return LineError(status_code=400, message=message, code=code, param=param)


def check_body(endpoint: str, body: dict[str, Any]) -> LineError | None:
    """What the endpoint would refuse in a request body (HTTP 400), or ``None``."""
    field = PROMPT_FIELD.get(endpoint)
    if field is None:
        return None
    value = body.get(field)
    if value is None:
        return _bad(f"Missing required parameter: '{field}'.", field, "missing_required_parameter")
    if endpoint == "/v1/chat/completions":
        if not isinstance(value, list) or not value:
            return _bad(
                f"Invalid '{field}': expected a non-empty array of messages.",
                field,
                "empty_array" if isinstance(value, list) else "invalid_type",
            )
    elif not isinstance(value, str | list) or (isinstance(value, list) and not value):
        return _bad(f"Invalid '{field}': expected a string or a non-empty array.", field)
    for name, low in (("max_output_tokens", 16), ("max_tokens", 1), ("max_completion_tokens", 1)):
        limit = body.get(name)
        if isinstance(limit, int) and not isinstance(limit, bool) and limit < low:
            return _bad(
                f"Invalid '{name}': integer below minimum value. Expected a value >= {low}, "
                f"but got {limit} instead.",
                name,
                "integer_below_min_value",
            )
    return None
