"""The command line: ``orchestrator COMMAND``, one of run, submit, status, show, results,
budget, usage, cancel, rerun, webhooks, check-config, migrate, ledger copy and emulate (``main``
is the ``orchestrator`` script).

Exit codes (design.md §9): 0 success, 2 usage or configuration error (the message names the
file and key), 1 anything else. Errors go to stderr in one readable line, never a traceback
(``--log-level DEBUG`` adds the traceback of an unexpected error). Results go to stdout and
the commands' logs to stderr. ``run`` and ``emulate`` are services: their logs are JSON lines on
stdout (console lines on a terminal), except under ``run``'s live view, which takes stdout and
sends the logs to stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

import anyio

from orchestrator.cli._ledger import CliError
from orchestrator.cli._parser import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, build_parser, log_level
from orchestrator.cli._render import Output
from orchestrator.cli._stderr import STDERR as STDERR
from orchestrator.clock import Clock, SystemClock
from orchestrator.config import Config, load_config
from orchestrator.errors import ConfigError, OrchestratorError
from orchestrator.logging import configure_logging
from orchestrator.rows import status_row

__all__ = ["EXIT_FAILURE", "EXIT_OK", "EXIT_USAGE", "build_parser", "main", "status_row"]


def main(
    argv: Sequence[str] | None = None,
    *,
    clock: Clock | None = None,
    stdout: Output | None = None,
) -> int:
    """Run one command; return its exit code.

    Args:
        argv: The arguments (default: ``sys.argv[1:]``).
        clock: The clock (default: the system clock); tests pass a fake one.
        stdout: Where results go (default: ``sys.stdout``).

    Returns:
        0 on success, 2 for a usage or configuration error, 1 for anything else.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error already printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        level = log_level(args, os.environ)
    except ValueError as exc:
        sys.stderr.write(f"orchestrator: {exc}\n")
        return EXIT_USAGE
    args.resolved_log_level = level
    # stdout carries the results of the commands (tables, JSON): their logs go to stderr. The
    # daemon and the emulator are services whose stdout is free: logs go there as JSON lines
    # (what a container runtime collects), except under the live view (see _live).
    service = args.command in ("run", "emulate")
    explicit = args.log_level is not None or bool(os.environ.get("ORCH_LOG_LEVEL", "").strip())
    if not service and not explicit:
        level = "WARNING"  # a command prints its own result; INFO lines would repeat it
    configure_logging(level=level, stream=None if service else STDERR)
    try:
        if args.command == "emulate":
            from orchestrator.emulator import server

            return server.run(args)
        if args.command == "ledger":
            from orchestrator.cli._copy import ledger_copy

            copied: int = anyio.run(ledger_copy, args, clock or SystemClock(), stdout or Output())
            return copied
        config = load_config(Path(args.config))
        code: int = anyio.run(_dispatch, args, config, clock or SystemClock(), stdout or Output())
        return code
    except ConfigError as exc:
        sys.stderr.write(f"orchestrator: config error: {exc}\n")
        return EXIT_USAGE
    except CliError as exc:
        sys.stderr.write(f"orchestrator: {exc}\n")
        return exc.code
    except OrchestratorError as exc:
        sys.stderr.write(f"orchestrator: {_one_line(exc)}\n")
        return EXIT_FAILURE
    except KeyboardInterrupt:
        sys.stderr.write("orchestrator: interrupted\n")
        return EXIT_FAILURE
    except BrokenPipeError:
        # `orchestrator status | head`: the reader left; say nothing more.
        _silence_stdout()
        return EXIT_FAILURE
    except Exception as exc:
        if level == "DEBUG":
            traceback.print_exc(file=sys.stderr)
        sys.stderr.write(
            f"orchestrator: unexpected error: {type(exc).__name__}: {_one_line(exc)} "
            "(a bug: please report it; --log-level DEBUG shows the traceback)\n"
        )
        return EXIT_FAILURE


def _one_line(exc: BaseException) -> str:
    """The first line of an error, with a count of the lines left out."""
    lines = str(exc).strip().splitlines() or [type(exc).__name__]
    more = f" (+{len(lines) - 1} more lines)" if len(lines) > 1 else ""
    return lines[0] + more


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


async def _dispatch(args: argparse.Namespace, config: Config, clock: Clock, out: Output) -> int:
    from orchestrator.cli import _check, _commands, _rerun, _webhooks

    command = args.command
    if command == "run":
        from orchestrator.cli import _live
        from orchestrator.daemon import Daemon

        return await _live.run(args, Daemon(config, clock=clock), clock, out)
    if command == "migrate":
        from orchestrator.ledger.engine import display_url
        from orchestrator.ledger.migrate import upgrade

        await upgrade(config.ledger.url)
        out.line(f"ledger {display_url(config.ledger.url)} is at the schema head")
        return EXIT_OK
    if command == "check-config":
        return await _check.check_config(args, config, clock, out)
    handlers = {
        "status": _commands.status,
        "show": _commands.show,
        "results": _commands.results,
        "budget": _commands.budget,
        "usage": _commands.usage,
        "cancel": _commands.cancel,
        "submit": _commands.submit,
        "rerun": _rerun.rerun,
        "webhooks": _webhooks.webhooks,
    }
    return await handlers[command](args, config, clock, out)
