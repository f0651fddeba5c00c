"""Checking request fields one by one, collecting every problem, in pydantic's words.

The wire-neutral half of request validation: a :class:`Checker` per request records each bad
field as a :class:`~orchestrator.emulator.errors.FieldError` and raises them together. Which
fields a route has, and how the error list is rendered, is the wire's business.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from orchestrator.emulator.errors import FieldError, RequestInvalid

_TRUE = {"true", "1", "yes", "on", "t", "y"}
_FALSE = {"false", "0", "no", "off", "f", "n"}


def _expected(options: Sequence[str]) -> str:
    quoted = [f"'{o}'" for o in options]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]


class Checker:
    """Collects field errors; :meth:`raise_if_any` turns them into one 422."""

    def __init__(self) -> None:
        self.errors: list[FieldError] = []

    def fail(self, kind: str, loc: tuple[str | int, ...], msg: str, value: Any, **ctx: Any) -> None:
        """Record one problem."""
        self.errors.append(FieldError(type=kind, loc=loc, msg=msg, input=value, ctx=ctx or None))

    def raise_if_any(self) -> None:
        """Raise the 422 if anything was recorded.

        Raises:
            RequestInvalid: with every recorded problem.
        """
        if self.errors:
            raise RequestInvalid(self.errors)

    def enum(self, value: Any, options: Sequence[str], loc: tuple[str | int, ...]) -> str | None:
        """``value`` if it is one of ``options``."""
        if isinstance(value, str) and value in options:
            return value
        self.fail(
            "enum",
            loc,
            f"Input should be {_expected(options)}",
            value,
            expected=_expected(options),
        )
        return None

    def integer(
        self,
        value: Any,
        loc: tuple[str | int, ...],
        *,
        ge: int | None = None,
        le: int | None = None,
    ) -> int | None:
        """An integer from JSON or a query string, within ``[ge, le]``."""
        number: int
        if isinstance(value, bool):
            self.fail("int_type", loc, "Input should be a valid integer", value)
            return None
        if isinstance(value, int):
            number = value
        elif isinstance(value, float) and value.is_integer():
            number = int(value)
        elif isinstance(value, str):
            try:
                number = int(value.strip())
            except ValueError:
                self.fail(
                    "int_parsing",
                    loc,
                    "Input should be a valid integer, unable to parse string as an integer",
                    value,
                )
                return None
        else:
            self.fail("int_type", loc, "Input should be a valid integer", value)
            return None
        if ge is not None and number < ge:
            self.fail(
                "greater_than_equal", loc, f"Input should be greater than or equal to {ge}",
                value, ge=ge,
            )  # fmt: skip
            return None
        if le is not None and number > le:
            self.fail(
                "less_than_equal", loc, f"Input should be less than or equal to {le}", value, le=le
            )
            return None
        return number

    def boolean(self, value: str, loc: tuple[str | int, ...]) -> bool | None:
        """A boolean from a query string (pydantic's accepted spellings)."""
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        self.fail(
            "bool_parsing", loc, "Input should be a valid boolean, unable to interpret input", value
        )
        return None

    def string(
        self,
        value: Any,
        loc: tuple[str | int, ...],
        *,
        min_length: int | None = None,
        max_length: int | None = None,
    ) -> str | None:
        """A string within length bounds."""
        if not isinstance(value, str):
            self.fail("string_type", loc, "Input should be a valid string", value)
            return None
        if min_length is not None and len(value) < min_length:
            unit = "character" if min_length == 1 else "characters"
            self.fail(
                "string_too_short", loc, f"String should have at least {min_length} {unit}",
                value, min_length=min_length,
            )  # fmt: skip
            return None
        if max_length is not None and len(value) > max_length:
            self.fail(
                "string_too_long", loc, f"String should have at most {max_length} characters",
                value, max_length=max_length,
            )  # fmt: skip
            return None
        return value

    def uuid(self, value: Any, loc: tuple[str | int, ...]) -> str | None:
        """A UUID, returned in canonical lowercase form."""
        if isinstance(value, str):
            try:
                return str(uuid.UUID(value))
            except ValueError:
                pass
        self.fail(
            "uuid_parsing",
            loc,
            "Input should be a valid UUID, unable to parse string as a UUID",
            value,
        )
        return None

    def timestamp(self, value: str, loc: tuple[str | int, ...]) -> float | None:
        """Epoch seconds from an ISO 8601 datetime (UTC if naive) or a number."""
        try:
            return float(value)
        except ValueError:
            pass
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            self.fail(
                "datetime_from_date_parsing",
                loc,
                "Input should be a valid datetime or date, e.g. 2025-01-02T03:04:05Z",
                value,
            )
            return None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.timestamp()
