"""The seam between the simulation and a vendor's wire: what a dialect must provide.

The core (jobs, files, store, faults, the ASGI dispatcher in :mod:`.app`) knows no vendor. A
dialect, such as :class:`orchestrator.emulator.mistral.MistralDialect`, supplies its routes
(each named from :data:`~orchestrator.emulator.settings.ROUTES`, which fault settings and
counters use), how a request carries its key, the ids it hands out, how results are spelled
(:class:`~orchestrator.emulator.results.ResultFormat`), and every response body the core needs:
errors, refusals, 401, 404, 405 and the injected 429 and 5xx. A new dialect is a subclass of
:class:`Dialect` plus one entry in :data:`orchestrator.emulator.emulator.DIALECTS`.
"""

from __future__ import annotations

import abc
import json
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, ClassVar

import attrs
from starlette.requests import Request
from starlette.responses import Response

from orchestrator.clock import Clock
from orchestrator.emulator.content import FileBody
from orchestrator.emulator.errors import ApiError, Refusal, RequestInvalid
from orchestrator.emulator.files import Files
from orchestrator.emulator.jobs import Jobs
from orchestrator.emulator.results import ResultFormat
from orchestrator.emulator.rules import BodyRules, InputRules
from orchestrator.emulator.settings import EmulatorSettings
from orchestrator.emulator.store import Store
from orchestrator.emulator.synthetic import Synth

JSON_TYPE = "application/json"


def json_response(
    data: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """A compact JSON response with an exact ``Content-Length``."""
    body = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
    return Response(body, status_code=status, media_type=JSON_TYPE, headers=dict(headers or {}))


@attrs.frozen(kw_only=True)
class Services:
    """The simulation a dialect's handlers drive."""

    files: Files
    jobs: Jobs
    store: Store
    settings: EmulatorSettings
    clock: Clock


@attrs.frozen(kw_only=True)
class Call:
    """One routed request: the request, its workspace and the path parameters."""

    request: Request
    workspace: str
    params: dict[str, str]


Handler = Callable[[Call], Awaitable[Response | FileBody]]


@attrs.frozen(kw_only=True)
class Route:
    """A path pattern, its methods, its name and whether it needs the key and gets faults."""

    name: str
    methods: frozenset[str]
    pattern: re.Pattern[str]
    handler: Handler
    auth: bool = True
    faults: bool = True


def route(
    name: str,
    methods: str,
    path: str,
    handler: Handler,
    *,
    auth: bool = True,
    faults: bool = True,
) -> Route:
    """A :class:`Route` for ``path`` (a regex; a trailing slash is accepted) and ``methods``."""
    return Route(
        name=name,
        methods=frozenset(methods.split()),
        pattern=re.compile(f"^{path}/?$"),
        handler=handler,
        auth=auth,
        faults=faults,
    )


class Dialect(abc.ABC):
    """One vendor's wire over the shared simulation (see the module docstring)."""

    name: ClassVar[str]
    """The ``--dialect`` value, e.g. ``mistral``."""

    finalizing: ClassVar[bool] = False
    """Whether jobs pass through the core's FINALIZING state (``settings.finalizing_seconds``)."""

    @property
    def rules(self) -> InputRules:
        """How the input lines are judged (default: ``{custom_id?, body}`` lines, Mistral's)."""
        return BodyRules()

    def synth(self, settings: EmulatorSettings) -> Synth | None:
        """The synthetic bodies (``None``: the core's :class:`Synth`, Mistral's shapes)."""
        return None

    @property
    @abc.abstractmethod
    def results(self) -> ResultFormat:
        """How this wire's result lines and result files look."""

    @abc.abstractmethod
    def new_job_id(self) -> str:
        """A fresh job id in this vendor's spelling."""

    @abc.abstractmethod
    def routes(self, services: Services) -> Sequence[Route]:
        """The vendor's routes, bound to ``services``."""

    def api_key(self, request: Request) -> str | None:
        """The key a request carries (``None``: none, or malformed).

        ``Authorization: Bearer <key>`` (Mistral and OpenAI); a dialect that authenticates
        otherwise (Anthropic's ``x-api-key``) overrides this.
        """
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            return None
        return key

    @abc.abstractmethod
    def unauthorized(self) -> Response:
        """The answer to a request without an accepted key."""

    @abc.abstractmethod
    def not_found(self) -> Response:
        """The answer to a path no route matches."""

    @abc.abstractmethod
    def method_not_allowed(self, allowed: Sequence[str]) -> Response:
        """The answer to a known path with another method (it carries ``Allow``)."""

    @abc.abstractmethod
    def error(self, error: ApiError) -> Response:
        """The answer to an :class:`ApiError`."""

    @abc.abstractmethod
    def invalid(self, error: RequestInvalid) -> Response:
        """The answer to a malformed request."""

    @abc.abstractmethod
    def refusal(self, refusal: Refusal) -> ApiError:
        """The vendor's wording of a simulation refusal."""

    @abc.abstractmethod
    def rate_limited(self, retry_after: float) -> Response:
        """An injected 429 telling the client to wait ``retry_after`` seconds."""

    @abc.abstractmethod
    def server_error(self, status: int) -> Response:
        """An injected 5xx."""
