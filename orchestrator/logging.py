"""The one structlog configuration, and the redaction of secrets.

Every line goes to **stdout**: JSON lines when stdout is not a terminal (what a container log
collector wants), console rendering on a terminal. The orchestrator's own events
(``component.event`` names with key/value fields) and the records of libraries that log through
the standard library (uvicorn, alembic, httpx at WARNING and above) share one handler, one
timestamp format and one renderer, so a log collector sees one uniform stream.

Secrets are redacted twice: by key name (``api_key``, ``authorization`` ...) and by exact
value, because a key can also hide inside an exception's text or a library's message.
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
QUIET_LIBRARIES = (
    "httpx",
    "httpcore",
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "aiosqlite",
    "asyncio",
    "sqlalchemy",
    "alembic",
)
"""Libraries kept at WARNING: httpx logs whole URLs at INFO, uvicorn its banner, alembic each
step (the orchestrator logs its own ``component.event`` lines for all of these)."""


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


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that, unless given a stream, writes to whatever ``sys.stdout`` is now.

    Resolving stdout at each record (not once at configuration) keeps logging correct when
    stdout is swapped after configuration (test capture, a supervisor re-opening it).
    """

    def __init__(self, stream: TextIO | None) -> None:
        super().__init__(stream or sys.stdout)
        self._follow_stdout = stream is None

    def emit(self, record: logging.LogRecord) -> None:
        if self._follow_stdout:
            # Not setStream(): it flushes the previous stream, which may be closed by now.
            self.stream = sys.stdout
        super().emit(record)


def _renderer(json: bool, colors: bool) -> Any:
    if json:
        return structlog.processors.JSONRenderer()
    # Exceptions arrive already formatted (and scrubbed) as text: a "pretty" formatter would
    # warn and render the unscrubbed traceback.
    return structlog.dev.ConsoleRenderer(
        colors=colors, exception_formatter=structlog.dev.plain_traceback
    )


def configure_logging(
    *, level: str = "INFO", json: bool | None = None, stream: TextIO | None = None
) -> None:
    """Configure structlog and the standard library's loggers once, from the CLI.

    Calling it again replaces the previous configuration (no duplicated lines).

    Args:
        level: the lowest level logged: ``DEBUG``, ``INFO``, ``WARNING`` or ``ERROR``
            (anything else means ``INFO``). Libraries in :data:`QUIET_LIBRARIES` stay at
            WARNING whatever this is.
        json: JSON lines (True) or console rendering (False); None picks JSON unless the
            stream is a terminal.
        stream: where lines go; None means ``sys.stdout`` (looked up at each line).
    """
    target = stream or sys.stdout
    if json is None:
        json = not _isatty(target)
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            # Tracebacks become text before redaction, so a key inside one is scrubbed too.
            structlog.processors.format_exc_info,
            redactor,
            _renderer(json, colors=_isatty(target)),
        ],
    )
    handler = _Handler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    for name in QUIET_LIBRARIES:
        library = logging.getLogger(name)
        library.setLevel(max(numeric, logging.WARNING))
        # A library's own logging set-up (uvicorn's default dictConfig gives "uvicorn" a
        # handler and propagate=False) would bypass this format and the redaction.
        library.handlers.clear()
        library.propagate = True


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or file-like stream without a terminal
        return False
