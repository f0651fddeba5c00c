"""Secrets never reach the log, by key name or by value."""

from __future__ import annotations

import io
import json

import structlog

from orchestrator.logging import REDACTED, SecretRedactor, configure_logging, redactor

SENTINEL = "sk-sentinel-0123456789abcdef"


def test_redacts_secret_keys_and_values() -> None:
    """Key names like authorization are hidden, and a known key inside any text too."""
    scrub = SecretRedactor([SENTINEL])
    event = scrub(
        None,
        "info",
        {
            "event": "x",
            "authorization": "Bearer abc",
            "error": f"boom with {SENTINEL} inside",
            "headers": {"api-key": "zzz", "accept": "json"},
            "args": [f"k={SENTINEL}"],
        },
    )
    assert event["authorization"] == REDACTED
    assert SENTINEL not in json.dumps(event)
    assert event["headers"] == {"api-key": REDACTED, "accept": "json"}


def test_configured_logger_scrubs_exceptions() -> None:
    """A traceback that quotes the key is rendered after redaction, in JSON."""
    stream = io.StringIO()
    redactor.add([SENTINEL])
    configure_logging(level="DEBUG", json=True, stream=stream)
    log = structlog.get_logger("test")
    try:
        raise RuntimeError(f"request failed: Authorization: Bearer {SENTINEL}")
    except RuntimeError:
        log.exception("provider.failed", api_key=SENTINEL)
    structlog.reset_defaults()
    out = stream.getvalue()
    assert "provider.failed" in out
    assert SENTINEL not in out
    line = json.loads(out.splitlines()[-1])
    assert line["api_key"] == REDACTED
    assert "RuntimeError" in line["exception"]
