"""The Mistral dialect of the emulator: Files + Batch API as ``batch-apis.md`` M0-M9 describe.

::

    routes.py      the route table and its handlers (request → core services → JSON)
    validation.py  the create body and the list queries, with FastAPI's 422 details
    wire.py        JSON shapes of files, jobs, errors, result lines; statuses; refusal wording
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from starlette.responses import Response

from orchestrator.emulator.dialect import Dialect, Route, Services, json_response
from orchestrator.emulator.errors import ApiError, Refusal, RequestInvalid
from orchestrator.emulator.faults import rate_limit_headers
from orchestrator.emulator.mistral import wire
from orchestrator.emulator.mistral.routes import MistralRoutes
from orchestrator.emulator.results import ResultFormat


class MistralDialect(Dialect):
    """Mistral's wire: bearer keys, UUID ids, FastAPI-shaped errors."""

    name = "mistral"

    def __init__(self) -> None:
        self._results = wire.MistralResults()

    @property
    def results(self) -> ResultFormat:
        return self._results

    def new_job_id(self) -> str:
        return str(uuid.uuid4())

    def routes(self, services: Services) -> Sequence[Route]:
        return MistralRoutes(services).table()

    def unauthorized(self) -> Response:
        return wire.unauthorized_response()

    def not_found(self) -> Response:
        return json_response({"detail": "Not Found"}, 404)

    def method_not_allowed(self, allowed: Sequence[str]) -> Response:
        return json_response({"detail": "Method Not Allowed"}, 405, {"Allow": ", ".join(allowed)})

    def error(self, error: ApiError) -> Response:
        return wire.error_response(error)

    def invalid(self, error: RequestInvalid) -> Response:
        return wire.invalid_response(error)

    def refusal(self, refusal: Refusal) -> ApiError:
        return wire.refusal_error(refusal)

    def rate_limited(self, retry_after: float) -> Response:
        return json_response(wire.rate_limit_body(), 429, rate_limit_headers(retry_after))

    def server_error(self, status: int) -> Response:
        return json_response(wire.server_error_body(status), status)


__all__ = ["MistralDialect"]
