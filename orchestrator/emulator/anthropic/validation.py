"""Checks of Anthropic's create body and list queries, with its 400s.

Which params faults the real API answers at create and which it reports as errored results
is not documented (``anthropic-batches.md`` §3, §8.3). This emulator answers 400 at create for
the envelope (``requests`` 1..100,000 items of only ``custom_id`` and ``params``, custom_ids
``^[a-zA-Z0-9_-]{1,64}$`` and unique) and for the fields a batch always needs (``model``,
``max_tokens`` >= 1, ``messages``, no ``stream: true``), the way third-party tests expect, with
pydantic-style paths (``requests.0.params.max_tokens``); the requests that then fail by chance
(``failure_fraction``) end as errored results.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import attrs

from orchestrator.emulator.errors import ApiError

MAX_REQUESTS = 100_000
MAX_BODY_BYTES = 256 * 1000 * 1000
CUSTOM_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")
NOT_IN_BATCHES = ("speed", "store", "previous_thread_event_id", "cache_hint", "context_hint")
VERSIONS = ("2023-01-01", "2023-06-01", "2026-10-21")


def bad(message: str) -> ApiError:
    return ApiError(400, message, code="")


def parse_requests(raw: bytes) -> list[dict[str, Any]]:
    """The create body's requests as ``{custom_id, body}`` items for the core.

    Raises:
        ApiError: 400 naming the first fault.
    """
    try:
        data = json.loads(raw)
    except ValueError:
        raise bad("The request body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise bad("The request body must be a JSON object.")
    extra = sorted(set(data) - {"requests"})
    if extra:
        raise bad(f"{extra[0]}: Extra inputs are not permitted")
    requests = data.get("requests")
    if not isinstance(requests, list):
        raise bad("requests: Field required" if requests is None else "requests: must be a list")
    if not 1 <= len(requests) <= MAX_REQUESTS:
        raise bad(f"requests: must hold 1 to {MAX_REQUESTS:,} items, got {len(requests):,}")
    seen: set[str] = set()
    items = []
    for index, item in enumerate(requests):
        where = f"requests.{index}"
        if not isinstance(item, dict):
            raise bad(f"{where}: Input should be an object")
        extra = sorted(set(item) - {"custom_id", "params"})
        if extra:
            raise bad(f"{where}.{extra[0]}: Extra inputs are not permitted")
        custom_id = item.get("custom_id")
        if not isinstance(custom_id, str) or not CUSTOM_ID.fullmatch(custom_id):
            raise bad(f"{where}.custom_id: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'")
        if custom_id in seen:
            raise bad(f"{where}.custom_id: custom_id must be unique within the batch")
        seen.add(custom_id)
        params = item.get("params")
        if not isinstance(params, dict):
            raise bad(f"{where}.params: Field required")
        _check_params(params, f"{where}.params")
        items.append({"custom_id": custom_id, "body": params})
    return items


def _check_params(params: Mapping[str, Any], where: str) -> None:
    model = params.get("model")
    if not isinstance(model, str) or not model:
        raise bad(f"{where}.model: Field required")
    max_tokens = params.get("max_tokens")
    if max_tokens is None:
        raise bad(f"{where}.max_tokens: Field required")
    if type(max_tokens) is not int or max_tokens < 1:
        raise bad(f"{where}.max_tokens: Input should be greater than or equal to 1")
    messages = params.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad(f"{where}.messages: Field required")
    if any(not isinstance(m, dict) for m in messages):
        raise bad(f"{where}.messages: each message must be an object")
    if params.get("stream") is True:
        raise bad(f"{where}.stream: streaming is not supported in a message batch")
    for key in NOT_IN_BATCHES:
        if key in params:
            raise bad(f"{where}.{key}: is not supported in a message batch")


@attrs.frozen(kw_only=True)
class Page:
    limit: int
    after_id: str | None
    before_id: str | None


def parse_list_query(query: Mapping[str, str]) -> Page:
    """``limit`` (1..1000, default 20), ``after_id`` or ``before_id``.

    Raises:
        ApiError: 400 for a bad limit, or both cursors at once (a choice: undocumented).
    """
    raw = query.get("limit", "20")
    try:
        limit = int(raw)
    except ValueError:
        raise bad(f"limit: Input should be a valid integer, got {raw[:40]!r}") from None
    if not 1 <= limit <= 1000:
        raise bad("limit: Input should be between 1 and 1000")
    after, before = query.get("after_id"), query.get("before_id")
    if after is not None and before is not None:
        raise bad("after_id and before_id cannot be given together")
    return Page(limit=limit, after_id=after, before_id=before)


def check_version(headers: Mapping[str, str]) -> None:
    """Refuse a request without a known ``anthropic-version``.

    Raises:
        ApiError: 400 ``invalid_request_error``.
    """
    version = headers.get("anthropic-version")
    if version is None:
        raise bad("anthropic-version: header is required")
    if version not in VERSIONS:
        raise bad(f"anthropic-version: unknown version {version[:40]!r}")
