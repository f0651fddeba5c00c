"""The API's route definitions and the OpenAPI 3.1 document made from them.

Each :class:`ApiRoute` is both a Starlette route (:mod:`orchestrator.service.api` builds the
application from the list) and an operation of ``/api/openapi.json`` (:func:`document`), so
the document cannot describe a route that does not exist, or miss one that does.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import attrs
from starlette.requests import Request
from starlette.responses import Response

from orchestrator.model import JobState
from orchestrator.service.access import Need

Handler = Callable[[Request], Awaitable[Response]]

ERROR = {"$ref": "#/components/schemas/Error"}


def _json(schema: Mapping[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def error(description: str) -> dict[str, Any]:
    """A response whose body is the API's JSON error."""
    return _json(ERROR, description)


@attrs.frozen(kw_only=True)
class ApiRoute:
    """One operation of the API: its path, method, handler and what it documents."""

    method: str
    path: str
    """A Starlette path (``{name:path}`` allowed; the document writes ``{name}``)."""
    handler: Handler
    operation_id: str
    summary: str
    need: Need
    parameters: Sequence[Mapping[str, Any]] = ()
    request_body: Mapping[str, Any] | None = None
    responses: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)

    @property
    def openapi_path(self) -> str:
        """The path as OpenAPI writes it (``{name:path}`` -> ``{name}``)."""
        return re.sub(r"\{(\w+):\w+\}", r"{\1}", self.path)

    def operation(self) -> dict[str, Any]:
        """This route's OpenAPI operation object."""
        responses = dict(self.responses)
        if self.need != "open":
            responses.setdefault("401", error("A token is needed and was missing or wrong"))
            responses.setdefault("403", error("No API token is configured"))
        operation: dict[str, Any] = {
            "operationId": self.operation_id,
            "summary": self.summary,
            "responses": responses,
        }
        if self.parameters:
            operation["parameters"] = list(self.parameters)
        if self.request_body is not None:
            operation["requestBody"] = dict(self.request_body)
        if self.need == "write":
            operation["security"] = [{"bearer": []}]
        elif self.need == "read":
            operation["security"] = [{}, {"bearer": []}]
        return operation


def name_parameter() -> dict[str, Any]:
    """The ``{name}`` path parameter (a job name; a part's name holds one ``/``)."""
    return {
        "name": "name",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "minLength": 1, "maxLength": 160},
        "description": "The job's name (a part: parent/part-NNNN).",
    }


_NULLABLE_STRING = {"type": ["string", "null"]}
_NULLABLE_INT = {"type": ["integer", "null"]}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {"type": "string"},
            "problems": {"type": "array", "items": {"type": "string"}},
        },
    },
    "JobRow": {
        "type": "object",
        "description": "One row of `orchestrator status --json` (more fields may be added).",
        "required": [
            "name",
            "state",
            "outcome",
            "remote_id",
            "remote_status",
            "total",
            "succeeded",
            "failed",
            "pending",
            "error",
        ],
        "properties": {
            "name": {"type": "string"},
            "state": {"type": "string", "enum": [s.value for s in JobState]},
            "outcome": _NULLABLE_STRING,
            "remote_id": _NULLABLE_STRING,
            "remote_status": _NULLABLE_STRING,
            "total": {"type": "integer"},
            "completed": {"type": "integer"},
            "succeeded": {"type": "integer"},
            "failed": {"type": "integer"},
            "pending": {"type": "integer"},
            "error": _NULLABLE_STRING,
            "progress": {"type": ["number", "null"]},
            "workspace": {"type": "string"},
            "requests": {"type": "integer"},
            "priority": {"type": "integer"},
            "cancel_requested": {"type": "boolean"},
            "created_at": _NULLABLE_STRING,
            "updated_at": _NULLABLE_STRING,
            "age_seconds": {"type": "number"},
            "part_count": {"type": "integer"},
        },
        "additionalProperties": True,
    },
    "JobDetail": {
        "description": "`orchestrator show --json`, with links to the result files.",
        "allOf": [
            {"$ref": "#/components/schemas/JobRow"},
            {
                "type": "object",
                "required": ["events", "files", "parts", "links"],
                "properties": {
                    "events": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}},
                    "files": {"type": "array", "items": {"type": "object"}},
                    "parts": {"type": "array", "items": {"$ref": "#/components/schemas/JobRow"}},
                    "links": {"type": "object", "additionalProperties": {"type": "string"}},
                },
            },
        ],
    },
    "Event": {
        "type": "object",
        "required": ["at", "from", "to"],
        "properties": {
            "id": {"type": "integer"},
            "job": {"type": "string"},
            "at": _NULLABLE_STRING,
            "from": _NULLABLE_STRING,
            "to": {"type": "string"},
            "remote_status": _NULLABLE_STRING,
            "detail": _NULLABLE_STRING,
        },
    },
    "Dimension": {
        "type": "object",
        "required": ["name", "label", "used", "limit", "unit"],
        "properties": {
            "name": {"type": "string"},
            "label": {"type": "string"},
            "used": {"type": "number"},
            "limit": {"type": ["number", "null"]},
            "unit": {"type": "string"},
        },
    },
    "Workspace": {
        "type": "object",
        "description": "`orchestrator budget --json`, live, with one gauge per budget dimension.",
        "required": ["workspace", "budget", "in_flight", "queued", "queued_jobs", "dimensions"],
        "properties": {
            "workspace": {"type": "string"},
            "provider": _NULLABLE_STRING,
            "budget": _NULLABLE_INT,
            "in_flight": {"type": "integer"},
            "in_flight_jobs": {"type": "integer"},
            "queued": {"type": "integer"},
            "queued_jobs": {"type": "integer"},
            "external": _NULLABLE_INT,
            "dimensions": {"type": "array", "items": {"$ref": "#/components/schemas/Dimension"}},
        },
        "additionalProperties": True,
    },
    "Submitted": {
        "allOf": [
            {"$ref": "#/components/schemas/JobRow"},
            {
                "type": "object",
                "required": ["created"],
                "properties": {"created": {"type": "boolean"}},
            },
        ]
    },
    "CancelResult": {
        "type": "object",
        "required": ["job", "message", "already_requested"],
        "properties": {
            "job": {"$ref": "#/components/schemas/JobRow"},
            "message": {"type": "string"},
            "already_requested": {"type": "boolean"},
        },
    },
}


def document(routes: Sequence[ApiRoute], *, version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``routes``."""
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.openapi_path, {})[route.method.lower()] = route.operation()
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "orchestrator",
            "version": version,
            "description": "The JSON API of a running orchestrator daemon: its jobs, its "
            "workspaces' budgets, a stream of job changes, and submit and cancel.",
        },
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The value of the variable [http] token_env names.",
                }
            },
        },
    }
