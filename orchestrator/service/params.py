"""The query parameters of ``GET /api/jobs``, read strictly: a bad value is a 400 naming it."""

from __future__ import annotations

from starlette.requests import Request

from orchestrator.model import JobState
from orchestrator.service.responses import ApiError

MAX_PAGE = 1000
"""Most jobs one page of ``GET /api/jobs`` holds."""
DEFAULT_PAGE = 500


def states(request: Request) -> list[JobState] | None:
    """``?state=``: repeated or comma-separated states (None: every state)."""
    given = [s for value in request.query_params.getlist("state") for s in value.split(",") if s]
    if not given:
        return None
    known = {state.value: state for state in JobState}
    unknown = [s for s in given if s not in known]
    if unknown:
        raise ApiError(
            400, f"state: unknown state {unknown[0]!r}; use one of {', '.join(sorted(known))}"
        )
    return [known[s] for s in given]


def flag(request: Request, name: str) -> bool:
    """A boolean parameter: true/false or 1/0 (absent: false)."""
    value = request.query_params.get(name, "false").lower()
    if value not in ("true", "false", "1", "0"):
        raise ApiError(400, f"{name}: expected true or false, got {value!r}")
    return value in ("true", "1")


def limit(request: Request) -> int:
    """``?limit=``: jobs per page, 1 to :data:`MAX_PAGE`."""
    text = request.query_params.get("limit", str(DEFAULT_PAGE))
    if not text.isdigit() or not 1 <= int(text) <= MAX_PAGE:
        raise ApiError(400, f"limit: expected a whole number from 1 to {MAX_PAGE}, got {text!r}")
    return int(text)


def cursor(request: Request) -> tuple[int, int] | None:
    """``?cursor=``: where the previous page ended, as the ``Link`` header gave it."""
    text = request.query_params.get("cursor")
    if text is None:
        return None
    priority, sep, job_id = text.partition(":")
    try:
        if not sep:
            raise ValueError(text)
        return int(priority), int(job_id)
    except ValueError:
        raise ApiError(
            400, "cursor: not a cursor of this API; take it from the Link header"
        ) from None
