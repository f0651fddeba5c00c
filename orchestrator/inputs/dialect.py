"""The seam where a provider's batch dialect contributes its input line rules. Pure.

Every dialect's line is a JSON object with a non-empty, unique ``custom_id``; the scanner
checks that itself (it also indexes the ids for the duplicate check). Everything else about a
line (``body`` for Mistral; ``method``/``url``/``body`` for OpenAI; ``params`` for Anthropic),
the endpoints and the per-batch limits belong to the dialect: one :class:`LineRules` value in a
module of its own (:mod:`orchestrator.inputs.mistral`), registered in
:data:`orchestrator.inputs.DIALECTS`.

A line check is on the hot path (it runs once per request line, millions per job): the rules
build it once per job for the job's endpoint and model (:attr:`LineRules.line_check`), and it
returns an empty tuple, allocating nothing, for a good line.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Final

import attrs

LineCheck = Callable[[Mapping[str, object]], Sequence[str]]
"""Checks one parsed line (a JSON object) and returns its problems, e.g.
``("missing (body)",)``: what is wrong, then the field in parentheses. The scanner prefixes
each with ``file:line: ``. Empty for a good line."""


@attrs.frozen(kw_only=True)
class LineRules:
    """What one provider dialect accepts in a batch input file."""

    name: str
    """The dialect's name, as in a workspace's ``provider`` (``"mistral"``)."""
    endpoints: tuple[str, ...]
    """The batch endpoints the provider accepts, in the order error messages list them."""
    max_requests: int = attrs.field(validator=attrs.validators.gt(0))
    """Most requests one batch may hold."""
    max_bytes: int = attrs.field(validator=attrs.validators.gt(0))
    """Largest input file one batch may upload, in bytes."""
    line_check: Callable[[str, str | None], LineCheck]
    """Given a job's endpoint (one of :attr:`endpoints`) and model (None: not known, e.g. a
    file checked on its own), the check for each of its lines."""


MISSING: Final = object()
"""What ``request.get(key, MISSING)`` returns for an absent key (``None`` is a JSON value)."""

_SHOWN = 60  # characters of a value quoted in a message


def shown(value: object) -> str:
    """A short, safe rendering of a JSON value for a message."""
    if isinstance(value, str):
        text = value if len(value) <= _SHOWN else value[:_SHOWN] + "…"
        return repr(text)
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int | float):
        return shown(str(value)) if len(str(value)) > _SHOWN else str(value)
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__


def body_problem(body: dict[str, object], keys: tuple[str, ...], endpoint: str) -> str | None:
    """What is wrong with ``body`` for ``endpoint``, which needs one of ``keys``, or None.

    ``messages`` must be a non-empty list of objects; any other key must not be empty.
    """
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
