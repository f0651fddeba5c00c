"""OpenAI's request bodies, forms and queries: which fields, which values, which defaults.

OpenAI answers every malformed request with HTTP 400 and one error object naming the first
problem (``param``) and a ``code`` such as ``missing_required_parameter`` or ``invalid_value``;
the checks here raise :class:`~orchestrator.emulator.errors.ApiError` in that shape.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import attrs

from orchestrator.emulator.errors import ApiError
from orchestrator.emulator.openai.lines import ENDPOINTS, SUPPORTED

UPLOAD_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
FILE_TTL_RANGE = (3600, 2_592_000)
"""``expires_after[seconds]`` and ``output_expires_after.seconds`` bounds."""
MAX_METADATA = 16
_CREATE_KEYS = {
    "input_file_id",
    "endpoint",
    "completion_window",
    "metadata",
    "output_expires_after",
}


def bad(message: str, param: str | None, code: str | None = "invalid_value") -> ApiError:
    """A 400 ``invalid_request_error``."""
    return ApiError(400, message, code=code or "", param=param)


def missing(param: str) -> ApiError:
    """The 400 for a required parameter left out."""
    return bad(f"Missing required parameter: '{param}'.", param, "missing_required_parameter")


def _choice(value: Any, options: tuple[str, ...], param: str) -> str:
    if isinstance(value, str) and value in options:
        return value
    supported = ", ".join(f"'{o}'" for o in options)
    raise bad(f"Invalid value: {value!r}. Supported values are: {supported}.", param)


def integer(value: Any, param: str, low: int, high: int) -> int:
    """An integer (JSON number or decimal text) within ``[low, high]``."""
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str):
        try:
            number = int(value.strip())
        except ValueError:
            number = None
    if number is None:
        raise bad(f"Invalid type for '{param}': expected an integer.", param, "invalid_type")
    if number < low:
        raise bad(
            f"Invalid '{param}': integer below minimum value. Expected a value >= {low}, but "
            f"got {number} instead.",
            param,
            "integer_below_min_value",
        )
    if number > high:
        raise bad(
            f"Invalid '{param}': integer above maximum value. Expected a value <= {high}, but "
            f"got {number} instead.",
            param,
            "integer_above_max_value",
        )
    return number


@attrs.frozen(kw_only=True)
class CreateBatch:
    """A checked ``POST /v1/batches`` body."""

    input_file_id: str
    endpoint: str
    metadata: dict[str, str] | None
    output_expires_after: int | None


def parse_create(raw: bytes) -> CreateBatch:
    """Parse and check a create body.

    Raises:
        ApiError: a 400 naming the first problem.
    """
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise bad(
            "We could not parse the JSON body of your request. (HINT: This likely means you "
            "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload.)",
            None,
            None,
        )
    for key in data:
        if key not in _CREATE_KEYS:
            raise bad(f"Unrecognized request argument supplied: {key}", None, None)
    for key in ("input_file_id", "endpoint", "completion_window"):
        if data.get(key) is None:
            raise missing(key)
    if not isinstance(data["input_file_id"], str) or not data["input_file_id"]:
        raise bad("Invalid type for 'input_file_id': expected a string.", "input_file_id")
    endpoint = _choice(data["endpoint"], ENDPOINTS, "endpoint")
    if endpoint not in SUPPORTED:
        raise bad(
            f"The emulator has no synthetic answers for {endpoint}; it supports "
            f"{', '.join(SUPPORTED)}.",
            "endpoint",
            "unsupported_value",
        )
    _choice(data["completion_window"], ("24h",), "completion_window")
    return CreateBatch(
        input_file_id=data["input_file_id"],
        endpoint=endpoint,
        metadata=_metadata(data.get("metadata")),
        output_expires_after=_expires_after(data.get("output_expires_after")),
    )


def _metadata(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise bad("Invalid type for 'metadata': expected an object.", "metadata", "invalid_type")
    if len(value) > MAX_METADATA:
        raise bad(
            f"Invalid 'metadata': too many properties. Expected an object with at most "
            f"{MAX_METADATA} properties, but got an object with {len(value)} properties instead.",
            "metadata",
            "object_above_max_properties",
        )
    for key, item in value.items():
        if len(key) > 64:
            raise bad(
                f"Invalid 'metadata': the key {key[:16]!r}… is longer than 64 characters.",
                "metadata",
                "string_above_max_length",
            )
        if not isinstance(item, str):
            raise bad(
                f"Invalid type for 'metadata.{key}': expected a string.",
                f"metadata.{key}",
                "invalid_type",
            )
        if len(item) > 512:
            raise bad(
                f"Invalid 'metadata.{key}': string too long. Expected a string with maximum "
                f"length 512, but got a string with length {len(item)} instead.",
                f"metadata.{key}",
                "string_above_max_length",
            )
    return dict(value)


def _expires_after(value: Any) -> int | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise bad(
            "Invalid type for 'output_expires_after': expected an object.",
            "output_expires_after",
            "invalid_type",
        )
    if value.get("anchor") is None:
        raise missing("output_expires_after.anchor")
    _choice(value["anchor"], ("created_at",), "output_expires_after.anchor")
    if value.get("seconds") is None:
        raise missing("output_expires_after.seconds")
    return integer(value["seconds"], "output_expires_after.seconds", *FILE_TTL_RANGE)


def file_expiry(fields: Mapping[str, str]) -> int | None:
    """The ``expires_after[seconds]`` of an upload form (``None``: not given).

    Raises:
        ApiError: an anchor other than ``created_at``, or seconds out of range.
    """
    anchor = fields.get("expires_after[anchor]")
    seconds = fields.get("expires_after[seconds]")
    if anchor is None and seconds is None:
        return None
    if anchor is None:
        raise missing("expires_after.anchor")
    _choice(anchor, ("created_at",), "expires_after.anchor")
    if seconds is None:
        raise missing("expires_after.seconds")
    return integer(seconds, "expires_after.seconds", *FILE_TTL_RANGE)


def upload_purpose(fields: Mapping[str, str]) -> str:
    """The checked ``purpose`` of an upload form.

    Raises:
        ApiError: missing or not an upload purpose.
    """
    purpose = fields.get("purpose")
    if not purpose:
        raise missing("purpose")
    return _choice(purpose, UPLOAD_PURPOSES, "purpose")


@attrs.frozen(kw_only=True)
class Page:
    """A checked cursor query: ``limit``, ``after`` and (files) ``order`` and ``purpose``."""

    limit: int
    after: str | None
    descending: bool = True
    purpose: str | None = None


def parse_batches_query(query: Mapping[str, str]) -> Page:
    """``GET /v1/batches``: ``after``, ``limit`` 1-100 (default 20); nothing else filters."""
    limit = integer(query.get("limit", "20"), "limit", 1, 100)
    return Page(limit=limit, after=query.get("after") or None)


def parse_files_query(query: Mapping[str, str]) -> Page:
    """``GET /v1/files``: ``purpose``, ``limit`` 1-10,000 (default 10,000), ``order``, ``after``."""
    limit = integer(query.get("limit", "10000"), "limit", 1, 10_000)
    order = _choice(query.get("order", "desc"), ("asc", "desc"), "order")
    return Page(
        limit=limit,
        after=query.get("after") or None,
        descending=order == "desc",
        purpose=query.get("purpose") or None,
    )
