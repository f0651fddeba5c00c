"""The argument parser of every subcommand, with the environment variables in ``--help``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import NoReturn

from orchestrator import __version__
from orchestrator.model import JobState

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
"""Exit codes (design.md §9): success, anything else, usage or configuration error."""

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

ENVIRONMENT = """\
environment:
  ORCH_CONFIG        the config file, instead of --config
  ORCH_LEDGER_URL    replaces ledger.url (the place for a PostgreSQL URL with a password)
  ORCH_RESULTS_DIR   replaces results.dir
  ORCH_JOBS_DIR      replaces intake.jobs_dir (empty: no jobs folder)
  ORCH_HTTP_LISTEN   replaces http.listen, HOST:PORT (empty: no HTTP endpoint)
  ORCH_LOG_LEVEL     DEBUG, INFO (default), WARNING or ERROR, instead of --log-level
  NO_COLOR           any value: no colour, even on a terminal
  Relative paths in ORCH_* variables resolve against the current directory; API keys come
  from the variable a workspace names in api_key_env (or from its api_key_file)."""

EXIT_CODES = """\
exit codes: 0 success, 2 usage or configuration error (the message names the file and key),
1 anything else. Errors go to stderr in one line. Results go to stdout, logs to stderr; `run`
and `emulate` log to stdout (JSON lines), or to stderr under `run`'s live view."""


class _Parser(argparse.ArgumentParser):
    """argparse that exits with 2 and a one-line error on stderr, like every usage error."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        if "--config" in message and "required" in message:
            message += " (or set ORCH_CONFIG)"
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(EXIT_USAGE)


def _log_level(text: str) -> str:
    level = text.strip().upper()
    if level not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(LOG_LEVELS)}, got {text!r}")
    return level


def _add_common(parser: argparse.ArgumentParser, *, config: bool = True) -> None:
    """``--config`` (default ``$ORCH_CONFIG``) and ``--log-level`` after the subcommand too."""
    if config:
        env = os.environ.get("ORCH_CONFIG") or None
        parser.add_argument(
            "--config",
            "-c",
            type=Path,
            metavar="FILE",
            default=env,
            required=env is None,
            help="the TOML config file [env ORCH_CONFIG]",
        )
    parser.add_argument(
        "--log-level",
        type=_log_level,
        default=argparse.SUPPRESS,
        help="DEBUG, INFO, WARNING or ERROR [env ORCH_LOG_LEVEL; default INFO]",
    )


def _job_name(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", help="the job's name (see `status`)")


def _json(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--json", action="store_true", help=f"print {what} as JSON")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand.

    Defaults that come from the environment (``ORCH_CONFIG``, ``ORCH_LOG_LEVEL``) are read
    when the parser is built.
    """
    parser = _Parser(
        prog="orchestrator",
        description="Drive LLM Batch APIs from config files: budgeted, crash-safe, cheap to poll.",
        epilog=f"{ENVIRONMENT}\n\n{EXIT_CODES}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"orchestrator {__version__}")
    parser.add_argument(
        "--log-level",
        type=_log_level,
        default=None,
        help="DEBUG, INFO, WARNING or ERROR [env ORCH_LOG_LEVEL; default INFO]",
    )
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )

    def command(name: str, summary: str, description: str | None = None) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            help=summary,
            description=description or summary,
            epilog=ENVIRONMENT,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    run = command(
        "run",
        "run the daemon",
        "Run the daemon: intake, admission within each workspace's budget, submission, polling "
        "and collection. On a terminal, stdout shows a live view of jobs and budget and the "
        "logs go to stderr (warnings and errors only, unless --log-level says otherwise); "
        "otherwise (or with --no-live) the logs go to stdout, as JSON lines when it is not a "
        "terminal. SIGHUP rescans the job definitions; SIGTERM or SIGINT stop it cleanly.",
    )
    _add_common(run)
    run.add_argument(
        "--exit-when-idle",
        action="store_true",
        help="return (exit 0) once every known job is done or rejected",
    )
    run.add_argument("--migrate", action="store_true", help="upgrade the ledger schema first")
    run.add_argument("--no-live", action="store_true", help="no live view on a terminal: logs only")

    submit = command(
        "submit",
        "validate a job and add it to the ledger",
        "Validate a job's input files and add the job to the ledger, without editing the config. "
        "A running daemon picks it up within one intake cycle (a local daemon at once: it is "
        "sent SIGHUP). Submitting the same definition again is a no-op; another definition "
        "under an existing name is an error and the existing job is untouched.",
    )
    _add_common(submit)
    submit.add_argument("--name", required=True, help="unique job name: [A-Za-z0-9._-]{1,128}")
    submit.add_argument(
        "--input",
        "-i",
        dest="inputs",
        action="append",
        required=True,
        metavar="FILE",
        help="a JSONL input file (repeatable; custom_id unique over all of them)",
    )
    submit.add_argument("--model", required=True, help="model of every request")
    submit.add_argument(
        "--endpoint", required=True, help="batch endpoint, e.g. /v1/chat/completions"
    )
    submit.add_argument(
        "--workspace", help="workspace that runs it (default: the only one in the config)"
    )
    submit.add_argument(
        "--metadata",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a label sent with the batch job (repeatable)",
    )
    submit.add_argument(
        "--timeout-hours", type=int, default=24, metavar="H", help="1 to 168 (default 24)"
    )
    submit.add_argument(
        "--priority", type=int, default=0, help="higher first, FIFO within (default 0)"
    )
    _json(submit, "the job")

    status = command("status", "one row per job", "One row per job, read from the ledger.")
    _add_common(status)
    _json(status, "a JSON array of jobs")
    status.add_argument(
        "--state",
        action="append",
        choices=[state.value for state in JobState],
        help="only jobs in this state (repeatable)",
    )
    status.add_argument("--workspace", help="only the jobs of this workspace")
    status.add_argument(
        "--parts",
        action="store_true",
        help="also list the parts of split jobs (each row then has a `parent` field)",
    )

    show = command("show", "one job in full, with its event history")
    _add_common(show)
    _job_name(show)
    _json(show, "the job")

    cancel = command(
        "cancel",
        "cancel a job",
        "Cancel a job: a queued job is cancelled locally, a running one remotely and then "
        "collected (partial results are downloaded). The daemon carries it out; removing a job "
        "from the config never cancels it.",
    )
    _add_common(cancel)
    _job_name(cancel)

    rerun = command(
        "rerun",
        "run a finished job's definition again, as a new job",
        "Record a new job with the definition of a job that ended failed, expired or cancelled "
        "(any final job with --force), named NAME.2, NAME.3, ... unless --as names it. Its "
        "inputs must still be what the job ran on. Both jobs' histories note the link.",
    )
    _add_common(rerun)
    _job_name(rerun)
    rerun.add_argument(
        "--as", dest="as_name", metavar="NEW_NAME", help="the new job's name (default NAME.N)"
    )
    rerun.add_argument(
        "--force",
        action="store_true",
        help="also rerun a job that succeeded (or partly) or was rejected",
    )
    _json(rerun, "the new job")

    webhooks = command(
        "webhooks",
        "pending and dead webhook and hook deliveries; redeliver one",
        "List the deliveries of events ([[webhooks]] and [[hooks]]) that are pending (waiting "
        "for their next attempt) or dead (given up after max_age, with the last error), or make "
        "one due again with --redeliver: the same webhook-id and body, a fresh max_age.",
    )
    _add_common(webhooks)
    webhooks.add_argument(
        "--redeliver",
        metavar="ID",
        help="deliver again: a delivery id (see the list), or a webhook-id (every endpoint)",
    )
    webhooks.add_argument("--all", action="store_true", help="also list delivered ones")
    _json(webhooks, "the deliveries")

    results = command("results", "where a job's results are, with their counts")
    _add_common(results)
    _job_name(results)
    _json(results, "the result files")

    budget = command(
        "budget",
        "per workspace: budget, in flight, queued demand, external",
        "Per workspace: the pending-request budget, what the ledger's in-flight jobs hold, the "
        "queued demand, and external jobs (counted only by a running daemon).",
    )
    _add_common(budget)
    _json(budget, "the workspaces")

    usage = command(
        "usage",
        "tokens and cost by workspace, model and month",
        "Tokens the results reported and what they cost, by workspace, model and calendar "
        "month (UTC, the month a job finished), from the ledger and [pricing].",
    )
    _add_common(usage)
    _json(usage, "the rows")
    usage.add_argument("--month", metavar="YYYY-MM", help="only this month (UTC), e.g. 2026-12")
    usage.add_argument("--workspace", metavar="NAME", help="only this workspace")

    check = command(
        "check-config",
        "validate the config and every input; send nothing",
        "Validate the config, the jobs folder and every input file, compare with the ledger, "
        "and print what would be submitted per workspace and whether it fits the budget. "
        "Sends nothing. Exit 2 on any error.",
    )
    _add_common(check)

    migrate = command("migrate", "create or upgrade the ledger schema to the head")
    _add_common(migrate)

    ledger = command(
        "ledger",
        "ledger maintenance: copy",
        "Ledger maintenance that needs no config file: `ledger copy` moves a whole ledger "
        "between SQLite and PostgreSQL.",
    )
    ledger_sub = ledger.add_subparsers(
        dest="ledger_command", required=True, metavar="ACTION", parser_class=_Parser
    )
    copy = ledger_sub.add_parser(
        "copy",
        help="copy every job, event and file record into an empty ledger",
        description="Copy every job, event, result file record and split/part link of the "
        "ledger at --from into the ledger at --to (SQLite to PostgreSQL or back), ids, "
        "timestamps and event order unchanged, leases cleared. The target is migrated to "
        "the schema head first and must hold no rows; the source must be at the head and "
        "held by no daemon (stop it first). One transaction on the target: a failure leaves "
        "it empty. Exit 2, with nothing changed, when the copy is refused.",
        epilog="URLs: sqlite:///relative/ledger.db, sqlite:////absolute/ledger.db, "
        "postgresql://user@host:5432/db (a password is better kept in ~/.pgpass or "
        "PGPASSWORD than on a command line).",
    )
    copy.add_argument(
        "--from", dest="source", required=True, metavar="URL", help="the ledger to copy"
    )
    copy.add_argument(
        "--to", dest="target", required=True, metavar="URL", help="the empty ledger to fill"
    )
    _add_common(copy, config=False)

    from orchestrator.emulator import server

    emulate = sub.add_parser(
        "emulate",
        help="serve the Batch API emulator (Mistral or OpenAI)",
        description="Serve the Mistral or OpenAI Files + Batch API emulator over HTTP.",
    )
    _add_common(emulate, config=False)
    server.add_arguments(emulate)
    return parser


def log_level(args: argparse.Namespace, environ: dict[str, str] | os._Environ[str]) -> str:
    """The log level from the flags, else ``ORCH_LOG_LEVEL``, else INFO.

    Raises:
        ValueError: ``ORCH_LOG_LEVEL`` is not a level (the message says so).
    """
    if args.log_level:
        return str(args.log_level)
    value = environ.get("ORCH_LOG_LEVEL", "").strip()
    if not value:
        return "INFO"
    try:
        return _log_level(value)
    except argparse.ArgumentTypeError as exc:
        raise ValueError(f"environment: ORCH_LOG_LEVEL: {exc}") from None
