"""Reading the JSON a provider answers with: typed fields, or a clear error naming the field.

Every dialect decodes its job and file objects with these, so a field of the wrong type fails
the same way whatever the vendor: a ``PermanentProviderError`` that names the field and the
value, never a ``KeyError`` or a silently defaulted status.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from orchestrator.providers._transport.errors import malformed


def expect_object(data: object, what: str, *, provider: str, operation: str) -> Mapping[str, Any]:
    """``data`` if it is a JSON object.

    Raises:
        PermanentProviderError: it is not.
    """
    if not isinstance(data, Mapping):
        raise malformed(
            provider, operation, f"{what} should be an object, got {type(data).__name__}"
        )
    return data


def int_field(
    data: Mapping[str, Any],
    key: str,
    *,
    provider: str,
    operation: str,
    default: int | None = None,
) -> int:
    """An integer field (a string of digits is accepted, a boolean is not).

    Raises:
        PermanentProviderError: the field is missing (without ``default``) or not an integer.
    """
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, str) and value.isdigit():
            return int(value)
        raise malformed(provider, operation, f"field {key!r} should be an integer, got {value!r}")
    return value


def non_negative_int(value: object) -> int | None:
    """``value`` if it is an integer >= 0 (not a boolean), else ``None``."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def optional_str(value: object) -> str | None:
    """``value`` as a string; ``None`` for null or empty (an absent file id, say)."""
    return str(value) if value not in (None, "") else None


def string_map(value: Mapping[Any, Any]) -> dict[str, str]:
    """A metadata object with every key and value as a string."""
    return {str(k): v if isinstance(v, str) else str(v) for k, v in value.items()}


def path_id(value: str, what: str) -> str:
    """An id quoted for use as one URL path segment.

    Raises:
        ValueError: the id is empty (a caller's bug, not the provider's answer).
    """
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} must be a non-empty string, got {value!r}")
    return quote(value, safe="")


__all__ = [
    "expect_object",
    "int_field",
    "non_negative_int",
    "optional_str",
    "path_id",
    "string_map",
]
