"""The API's answers: JSON bodies scrubbed of secrets, and its one error type."""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import Response

from orchestrator.logging import redactor

SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class ApiError(Exception):
    """A request the API refuses: answered with ``status`` and a JSON error."""

    def __init__(self, status: int, message: str, problems: tuple[str, ...] = ()) -> None:
        self.status = status
        self.message = message
        self.problems = problems
        super().__init__(message)


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON answer, scrubbed of every secret the process knows (API keys, the ledger's
    password, the API token): defence in depth for text that came from elsewhere, such as a
    provider's error message."""
    body = redactor.scrub(json.dumps(data, ensure_ascii=False))
    return Response(
        body.encode(),
        status_code=status,
        media_type="application/json",
        headers={**SECURITY_HEADERS, **(headers or {})},
    )


def error_response(status: int, message: str, problems: tuple[str, ...] = ()) -> Response:
    """The API's JSON error: ``{"error": ..., "problems": [...]}``."""
    body: dict[str, Any] = {"error": message}
    if problems:
        body["problems"] = list(problems)
    return json_response(body, status)
