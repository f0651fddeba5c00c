"""What the daemon's log looks like: JSON lines on stdout (console on a TTY), one format for all."""

from __future__ import annotations

import io
import json
import logging
import sys

import pytest
import structlog

from orchestrator.logging import REDACTED, configure_logging, redactor

pytestmark = pytest.mark.usefixtures("restore_logging")

SENTINEL = "sk-log-output-4f1e2d3c5b6a"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_json_lines_on_stdout_when_it_is_not_a_terminal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """By default every event is one JSON object on stdout, with level, time and logger."""
    configure_logging()
    structlog.get_logger("orchestrator.daemon.poll").info("poll.job_ended", job="a", job_id=3)
    captured = capsys.readouterr()
    assert captured.err == ""
    [line] = _lines(captured.out)
    assert line["event"] == "poll.job_ended"
    assert line["job"] == "a"
    assert line["job_id"] == 3
    assert line["level"] == "info"
    assert line["logger"] == "orchestrator.daemon.poll"
    assert str(line["timestamp"]).endswith("Z")


def test_console_rendering_on_a_terminal() -> None:
    """On a terminal the same event is one readable line, not JSON."""
    terminal = _Terminal()
    configure_logging(stream=terminal)
    structlog.get_logger("orchestrator.daemon.submit").info("submit.admitted", job="cheese")
    out = terminal.getvalue()
    assert "submit.admitted" in out
    assert "cheese" in out
    with pytest.raises(json.JSONDecodeError):
        json.loads(out)


def test_library_records_share_the_format_and_the_redaction() -> None:
    """A standard-library record (uvicorn, alembic ...) becomes a JSON line, scrubbed."""
    stream = io.StringIO()
    redactor.add([SENTINEL])
    configure_logging(stream=stream)
    logging.getLogger("uvicorn.error").warning("client sent Authorization: Bearer %s", SENTINEL)
    try:
        raise RuntimeError(f"token {SENTINEL} refused")
    except RuntimeError:
        logging.getLogger("alembic.runtime").exception("migration failed")
    out = stream.getvalue()
    assert SENTINEL not in out
    first, second = _lines(out)
    assert first == {
        "event": f"client sent Authorization: Bearer {REDACTED}",
        "level": "warning",
        "logger": "uvicorn.error",
        "timestamp": first["timestamp"],
    }
    assert second["level"] == "error"
    assert "RuntimeError: token [REDACTED] refused" in str(second["exception"])


def test_chatty_libraries_stay_at_warning_even_at_debug() -> None:
    """httpx would log whole URLs at INFO: it stays quiet while our DEBUG lines show."""
    stream = io.StringIO()
    configure_logging(level="DEBUG", stream=stream)
    logging.getLogger("httpx").info("HTTP Request: GET https://api.example/v1?key=x")
    structlog.get_logger("orchestrator.providers").debug("provider.call", status=200)
    [line] = _lines(stream.getvalue())
    assert line["event"] == "provider.call"


def test_levels_filter_and_unknown_levels_mean_info() -> None:
    """WARNING hides info lines; a level name that does not exist falls back to INFO."""
    stream = io.StringIO()
    configure_logging(level="WARNING", stream=stream)
    log = structlog.get_logger("orchestrator.test")
    log.info("test.hidden")
    log.warning("test.shown")
    assert [line["event"] for line in _lines(stream.getvalue())] == ["test.shown"]
    stream = io.StringIO()
    configure_logging(level="chatty", stream=stream)
    log.debug("test.hidden")
    log.info("test.shown")
    assert [line["event"] for line in _lines(stream.getvalue())] == ["test.shown"]


def test_reconfiguring_replaces_instead_of_duplicating() -> None:
    """Calling configure_logging twice still writes each line once, to the new stream."""
    first, second = io.StringIO(), io.StringIO()
    configure_logging(stream=first)
    configure_logging(stream=second)
    structlog.get_logger("orchestrator.test").info("test.once")
    logging.getLogger("uvicorn.error").warning("once too")
    assert first.getvalue() == ""
    assert [line["event"] for line in _lines(second.getvalue())] == ["test.once", "once too"]


def test_bound_context_is_on_every_line() -> None:
    """Ids bound with contextvars (what the loops do per job) appear on each line."""
    stream = io.StringIO()
    configure_logging(stream=stream)
    with structlog.contextvars.bound_contextvars(job="cheese", job_id=7, remote_id="r-1"):
        structlog.get_logger("orchestrator.providers.mistral").info("provider.uploaded")
    structlog.get_logger("orchestrator.test").info("test.after")
    inside, after = _lines(stream.getvalue())
    assert (inside["job"], inside["job_id"], inside["remote_id"]) == ("cheese", 7, "r-1")
    assert "job" not in after


def test_stdout_is_looked_up_at_each_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an explicit stream, lines follow sys.stdout even when it is replaced later."""
    configure_logging()
    replaced = io.StringIO()
    monkeypatch.setattr(sys, "stdout", replaced)
    structlog.get_logger("orchestrator.test").info("test.followed")
    assert _lines(replaced.getvalue())[0]["event"] == "test.followed"


def test_a_library_that_configured_itself_is_brought_into_line() -> None:
    """uvicorn's own set-up (a handler, propagate off) is undone: its records come to us."""
    uvicorn = logging.getLogger("uvicorn")
    uvicorn.addHandler(logging.StreamHandler(io.StringIO()))
    uvicorn.propagate = False
    stream = io.StringIO()
    configure_logging(stream=stream)
    logging.getLogger("uvicorn.error").warning("port taken")
    assert _lines(stream.getvalue())[0]["event"] == "port taken"
    assert uvicorn.handlers == []
