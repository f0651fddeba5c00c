"""The Anthropic dialect of the emulator: the Message Batches API as ``anthropic-batches.md``
describes it.

::

    routes.py      the route table and its handlers (request → core services → JSON)
    validation.py  create body, list queries and the version header, with Anthropic's 400s
    wire.py        batch objects, statuses and counts, errors, result lines
    synthetic.py   answers in the Messages API's shape
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from orchestrator.emulator.anthropic import wire
from orchestrator.emulator.anthropic.routes import AnthropicRoutes
from orchestrator.emulator.anthropic.synthetic import AnthropicSynth
from orchestrator.emulator.dialect import Dialect, Route, Services
from orchestrator.emulator.errors import ApiError, Refusal, RequestInvalid
from orchestrator.emulator.faults import rate_limit_headers
from orchestrator.emulator.results import ResultFormat
from orchestrator.emulator.rules import BodyRules, InputRules
from orchestrator.emulator.settings import EmulatorSettings
from orchestrator.emulator.synthetic import Synth


class AnthropicRules(BodyRules):
    """The core's ``{custom_id, body}`` lines (the create wrote them from ``params``); a batch
    is never refused as a whole for its lines: each bad request ends errored."""

    def verdict(self, *, count: int, invalid: int, problems: Counter[str]) -> list[dict[str, Any]]:
        return []


class AnthropicDialect(Dialect):
    """Anthropic's wire: ``x-api-key`` or ``Authorization: Bearer`` keys (SDK 0.x and 2.x),
    ``anthropic-version`` required, ``msgbatch_…`` ids, ``{"type": "error", "error": {…}}``."""

    name = "anthropic"

    def __init__(self) -> None:
        self._results = wire.AnthropicResults()
        self._rules = AnthropicRules()

    @property
    def results(self) -> ResultFormat:
        return self._results

    @property
    def rules(self) -> InputRules:
        return self._rules

    def synth(self, settings: EmulatorSettings) -> Synth | None:
        return AnthropicSynth(
            seed=settings.seed,
            embedding_dimensions=settings.embedding_dimensions,
            completion_tokens=settings.completion_tokens,
        )

    def new_job_id(self) -> str:
        return wire.new_batch_id()

    def routes(self, services: Services) -> Sequence[Route]:
        return AnthropicRoutes(services).table()

    def api_key(self, request: Request) -> str | None:
        key = request.headers.get("x-api-key", "").strip()
        return key or super().api_key(request)

    def unauthorized(self) -> Response:
        return wire.error_json(401, "invalid x-api-key")

    def not_found(self) -> Response:
        return wire.error_json(404, "Not found")

    def method_not_allowed(self, allowed: Sequence[str]) -> Response:
        response = wire.error_json(405, f"Method not allowed; allowed: {', '.join(allowed)}")
        response.headers["Allow"] = ", ".join(allowed)
        return response

    def error(self, error: ApiError) -> Response:
        return wire.error_response(error)

    def invalid(self, error: RequestInvalid) -> Response:
        return wire.invalid_response(error)

    def refusal(self, refusal: Refusal) -> ApiError:
        return wire.refusal_error(refusal)

    def rate_limited(self, retry_after: float) -> Response:
        response = wire.error_json(429, "Number of request tokens has exceeded your rate limit.")
        for name, value in rate_limit_headers(retry_after).items():
            response.headers[name] = value
        return response

    def server_error(self, status: int) -> Response:
        if status == 529:
            return wire.error_json(529, "Overloaded")
        return wire.error_json(status, "Internal server error")


__all__ = ["AnthropicDialect"]
