"""The OpenAI dialect of the emulator: Files + Batch API as ``openai-batch.md`` describes.

::

    routes.py      the route table and its handlers (request → core services → JSON)
    validation.py  create body, upload form and list queries, with OpenAI's 400s
    wire.py        file and batch objects, statuses, errors, result lines and files
    lines.py       input-line rules (file checks at create, per-request checks), token estimate
    synthetic.py   answers per endpoint in OpenAI's shapes
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.responses import Response

from orchestrator.emulator.dialect import Dialect, Route, Services, json_response
from orchestrator.emulator.errors import ApiError, Refusal, RequestInvalid
from orchestrator.emulator.faults import rate_limit_headers
from orchestrator.emulator.openai import wire
from orchestrator.emulator.openai.lines import OpenAIRules
from orchestrator.emulator.openai.routes import OpenAIRoutes
from orchestrator.emulator.openai.synthetic import OpenAISynth
from orchestrator.emulator.results import ResultFormat
from orchestrator.emulator.rules import InputRules
from orchestrator.emulator.settings import EmulatorSettings
from orchestrator.emulator.synthetic import Synth


class OpenAIDialect(Dialect):
    """OpenAI's wire: bearer keys (``OpenAI-Organization``/``OpenAI-Project`` accepted and
    ignored: a key is its organisation), ``file-…``/``batch_…`` ids, ``{"error": {…}}``."""

    name = "openai"
    finalizing = True

    def __init__(self) -> None:
        self._results = wire.OpenAIResults()
        self._rules = OpenAIRules()

    @property
    def results(self) -> ResultFormat:
        return self._results

    @property
    def rules(self) -> InputRules:
        return self._rules

    def synth(self, settings: EmulatorSettings) -> Synth | None:
        return OpenAISynth(
            seed=settings.seed,
            embedding_dimensions=settings.embedding_dimensions,
            completion_tokens=settings.completion_tokens,
        )

    def new_job_id(self) -> str:
        return wire.new_batch_id()

    def routes(self, services: Services) -> Sequence[Route]:
        return OpenAIRoutes(services).table()

    def unauthorized(self) -> Response:
        return wire.unauthorized_response()

    def not_found(self) -> Response:
        return json_response(wire.error_object("Invalid URL: no such route."), 404)

    def method_not_allowed(self, allowed: Sequence[str]) -> Response:
        body = wire.error_object(f"Method not allowed here; allowed: {', '.join(allowed)}.")
        return json_response(body, 405, {"Allow": ", ".join(allowed)})

    def error(self, error: ApiError) -> Response:
        return wire.error_response(error)

    def invalid(self, error: RequestInvalid) -> Response:
        return wire.invalid_response(error)

    def refusal(self, refusal: Refusal) -> ApiError:
        return wire.refusal_error(refusal)

    def rate_limited(self, retry_after: float) -> Response:
        return json_response(
            wire.rate_limit_body(retry_after), 429, rate_limit_headers(retry_after)
        )

    def server_error(self, status: int) -> Response:
        return json_response(wire.server_error_body(), status)


__all__ = ["OpenAIDialect"]
