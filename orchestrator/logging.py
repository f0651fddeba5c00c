"""The one structlog configuration, and the redaction of secrets.

JSON lines on stdout when it is not a terminal (what a container log collector wants), console
rendering on a terminal. Secrets are redacted twice: by key name (``api_key``, ``authorization``
...) and by exact value, because a key can also hide inside an exception's text.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO

import structlog

REDACTED = "[REDACTED]"
_SECRET_KEYS = frozenset(
    {"api_key", "apikey", "authorization", "x-api-key", "api-key", "token", "password", "secret"}
)


class SecretRedactor:
    """A structlog processor that hides secrets by key name and by value."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = set()
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        """Also redact these exact values (ignores short strings that would mangle logs)."""
        self._secrets.update(s for s in secrets if s and len(s) >= 8)

    def scrub(self, text: str) -> str:
        """``text`` with every known secret value replaced."""
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text

    def _clean(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, dict):
            return {
                k: REDACTED if str(k).lower() in _SECRET_KEYS else self._clean(v)
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return type(value)(self._clean(v) for v in value)
        return value

    def __call__(
        self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key in list(event_dict):
            if key.lower() in _SECRET_KEYS:
                event_dict[key] = REDACTED
            else:
                event_dict[key] = self._clean(event_dict[key])
        return event_dict


redactor = SecretRedactor()
"""The process-wide redactor; the daemon registers every API key it loads."""


def configure_logging(
    *, level: str = "INFO", json: bool | None = None, stream: TextIO | None = None
) -> None:
    """Configure structlog (and the stdlib loggers of libraries) once, from the CLI."""
    stream = stream or sys.stderr
    if json is None:
        json = not stream.isatty()
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            # Tracebacks become text before redaction, so a key inside one is scrubbed too.
            structlog.processors.format_exc_info,
            redactor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    # httpx logs whole URLs at INFO; keep library chatter out of the operator's log.
    for name in ("httpx", "httpcore", "uvicorn.access", "aiosqlite", "sqlalchemy", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
