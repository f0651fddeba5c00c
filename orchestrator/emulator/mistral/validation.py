"""Mistral's request bodies and query strings: which fields, which values, which defaults.

Mistral's API is FastAPI/pydantic: a malformed request gets ``422 {"detail": [...]}`` whose
entries carry pydantic's ``type``, ``loc``, ``msg`` and ``input``. The field checks themselves
are the core's :class:`~orchestrator.emulator.checks.Checker`; this module knows Mistral's
create body, its list queries (the SDK's encoding) and its enumerations.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import attrs

from orchestrator.emulator.checks import Checker
from orchestrator.emulator.lines import ENDPOINTS
from orchestrator.emulator.mistral.wire import STATUSES, state_of
from orchestrator.emulator.rows import JobSpec
from orchestrator.emulator.simulation import State

PURPOSES = ("fine-tune", "batch", "ocr", "audio", "agentic_safety")
VISIBILITIES = ("workspace", "user")
SAMPLE_TYPES = ("pretrain", "instruct", "batch_request", "batch_result", "batch_error")
SOURCES = ("upload", "repository", "mistral")
ORDERS = ("created", "-created")
MAX_PAGE_SIZE = 1000

_JOBS_QUERY_KEYS = {
    "page",
    "page_size",
    "model",
    "agent_id",
    "metadata",
    "created_after",
    "created_by_me",
    "status",
    "order_by",
}


def path_id(value: str, name: str) -> str:
    """A path id (``job_id``/``file_id``) as a canonical UUID.

    Raises:
        RequestInvalid: the value is not a UUID.
    """
    check = Checker()
    result = check.uuid(value, ("path", name))
    check.raise_if_any()
    assert result is not None
    return result


def parse_create(raw: bytes, *, max_inline: int) -> JobSpec:
    """Parse and check a create body.

    Raises:
        RequestInvalid: malformed JSON, a missing or invalid field, or an unknown field.
    """
    check = Checker()
    try:
        data = json.loads(raw)
    except ValueError as exc:
        pos = getattr(exc, "pos", 0)
        check.fail(
            "json_invalid", ("body", pos), "JSON decode error", {}, error=str(exc).split(":")[0]
        )
        check.raise_if_any()
    if not isinstance(data, dict):
        check.fail(
            "model_attributes_type",
            ("body",),
            "Input should be a valid dictionary or object to extract fields from",
            data,
        )
        check.raise_if_any()
    known = {
        "endpoint",
        "input_files",
        "requests",
        "model",
        "agent_id",
        "metadata",
        "timeout_hours",
    }
    for key in data:
        if key not in known:
            check.fail(
                "extra_forbidden", ("body", key), "Extra inputs are not permitted", data[key]
            )
    endpoint = None
    if "endpoint" not in data:
        check.fail("missing", ("body", "endpoint"), "Field required", data)
    else:
        endpoint = check.enum(data["endpoint"], ENDPOINTS, ("body", "endpoint"))
    input_files: list[str] = []
    raw_files = data.get("input_files")
    if raw_files is not None:
        if not isinstance(raw_files, list):
            check.fail(
                "list_type", ("body", "input_files"), "Input should be a valid list", raw_files
            )
        else:
            for i, item in enumerate(raw_files):
                parsed = check.uuid(item, ("body", "input_files", i))
                if parsed is not None:
                    input_files.append(parsed)
    requests = _parse_inline(check, data.get("requests"), max_inline)
    model = agent_id = None
    for name in ("model", "agent_id"):
        if data.get(name) is not None:
            value = check.string(data[name], ("body", name))
            if name == "model":
                model = value
            else:
                agent_id = value
    metadata = _parse_metadata(check, data.get("metadata"))
    timeout = check.integer(data.get("timeout_hours", 24), ("body", "timeout_hours"), ge=1, le=168)
    check.raise_if_any()
    assert endpoint is not None and timeout is not None
    return JobSpec(
        endpoint=endpoint,
        input_files=input_files,
        inline=requests,
        model=model,
        agent_id=agent_id,
        metadata=metadata,
        timeout_hours=timeout,
    )


def _parse_inline(check: Checker, value: Any, max_inline: int) -> list[dict[str, Any]] | None:
    if value is None:
        return None
    loc: tuple[str | int, ...] = ("body", "requests")
    if not isinstance(value, list):
        check.fail("list_type", loc, "Input should be a valid list", value)
        return None
    if len(value) > max_inline:
        check.fail(
            "too_long",
            loc,
            f"List should have at most {max_inline} items after validation, not {len(value)}",
            f"<{len(value)} requests>",
            field_type="List",
            max_length=max_inline,
            actual_length=len(value),
        )
        return None
    result: list[dict[str, Any]] = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            check.fail(
                "model_attributes_type", (*loc, i),
                "Input should be a valid dictionary or object to extract fields from", item,
            )  # fmt: skip
            continue
        custom_id = item.get("custom_id")
        if custom_id is not None:
            check.string(custom_id, (*loc, i, "custom_id"))
        if "body" not in item:
            check.fail("missing", (*loc, i, "body"), "Field required", item)
        elif not isinstance(item["body"], dict):
            check.fail(
                "dict_type", (*loc, i, "body"), "Input should be a valid dictionary", item["body"]
            )
        result.append(item)
    return result


def _parse_metadata(check: Checker, value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    loc: tuple[str | int, ...] = ("body", "metadata")
    if not isinstance(value, dict):
        check.fail("dict_type", loc, "Input should be a valid dictionary", value)
        return None
    for key, item in value.items():
        check.string(key, (*loc, key, "[key]"), min_length=1, max_length=32)
        check.string(item, (*loc, key), min_length=1, max_length=512)
    return dict(value)


@attrs.frozen(kw_only=True)
class JobsQuery:
    """A checked ``GET /v1/batch/jobs`` query."""

    page: int = 0
    page_size: int = 100
    model: str | None = None
    agent_id: str | None = None
    metadata: dict[str, str] = attrs.field(factory=dict)
    created_after: float | None = None
    states: tuple[State, ...] = ()
    """The core states the repeated ``status`` filter names (empty: no filter)."""
    descending: bool = True


def parse_jobs_query(items: Sequence[tuple[str, str]]) -> JobsQuery:
    """Parse the list query, SDK encoding: repeated ``status``, metadata as unknown keys.

    Raises:
        RequestInvalid: a parameter of the wrong type or out of range.
    """
    check = Checker()
    single: dict[str, str] = {}
    statuses: list[State] = []
    metadata: dict[str, str] = {}
    for key, value in items:
        if key == "status":
            for part in value.split(","):
                parsed = check.enum(part.strip(), STATUSES, ("query", "status", len(statuses)))
                if parsed is not None:
                    statuses.append(state_of(parsed))
        elif key in _JOBS_QUERY_KEYS:
            single[key] = value
        else:
            # The SDK explodes metadata={"k": "v"} into a top-level k=v.
            metadata[key] = value
    if "metadata" in single:
        try:
            extra = json.loads(single["metadata"])
        except ValueError:
            extra = None
        if not isinstance(extra, dict):
            check.fail(
                "dict_type", ("query", "metadata"), "Input should be a valid dictionary",
                single["metadata"],
            )  # fmt: skip
        else:
            metadata.update({str(k): str(v) for k, v in extra.items()})
    page = check.integer(single.get("page", "0"), ("query", "page"), ge=0)
    page_size = check.integer(
        single.get("page_size", "100"), ("query", "page_size"), ge=1, le=MAX_PAGE_SIZE
    )
    created_after = None
    if single.get("created_after"):
        created_after = check.timestamp(single["created_after"], ("query", "created_after"))
    if "created_by_me" in single:
        # Every job in a workspace is its key's own, so the filter changes nothing.
        check.boolean(single["created_by_me"], ("query", "created_by_me"))
    order = check.enum(single.get("order_by", "-created"), ORDERS, ("query", "order_by"))
    check.raise_if_any()
    assert page is not None and page_size is not None
    return JobsQuery(
        page=page,
        page_size=page_size,
        model=single.get("model") or None,
        agent_id=single.get("agent_id") or None,
        metadata=metadata,
        created_after=created_after,
        states=tuple(statuses),
        descending=order != "created",
    )


@attrs.frozen(kw_only=True)
class FilesQuery:
    """A checked ``GET /v1/files`` query."""

    page: int = 0
    page_size: int = 100
    include_total: bool = True
    sample_types: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    search: str | None = None
    purpose: str | None = None
    mimetypes: tuple[str, ...] = ()


def parse_files_query(items: Sequence[tuple[str, str]]) -> FilesQuery:
    """Parse the files list query (repeated ``sample_type``, ``source``, ``mimetypes``).

    Raises:
        RequestInvalid: a parameter of the wrong type or out of range.
    """
    check = Checker()
    lists: dict[str, list[str]] = {"sample_type": [], "source": [], "mimetypes": []}
    single: dict[str, str] = {}
    for key, value in items:
        if key in lists:
            lists[key].append(value)
        else:
            single[key] = value
    for i, value in enumerate(lists["sample_type"]):
        check.enum(value, SAMPLE_TYPES, ("query", "sample_type", i))
    for i, value in enumerate(lists["source"]):
        check.enum(value, SOURCES, ("query", "source", i))
    page = check.integer(single.get("page", "0"), ("query", "page"), ge=0)
    page_size = check.integer(
        single.get("page_size", "100"), ("query", "page_size"), ge=1, le=MAX_PAGE_SIZE
    )
    include_total = True
    if "include_total" in single:
        include_total = bool(check.boolean(single["include_total"], ("query", "include_total")))
    purpose = None
    if single.get("purpose"):
        purpose = check.enum(single["purpose"], PURPOSES, ("query", "purpose"))
    check.raise_if_any()
    assert page is not None and page_size is not None
    return FilesQuery(
        page=page,
        page_size=page_size,
        include_total=include_total,
        sample_types=tuple(lists["sample_type"]),
        sources=tuple(lists["source"]),
        search=single.get("search") or None,
        purpose=purpose,
        mimetypes=tuple(lists["mimetypes"]),
    )
