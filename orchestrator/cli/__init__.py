"""The command line: ``orchestrator run|status|show|cancel|migrate|check-config|emulate``.

Exit codes: 0 success, 2 usage or configuration error (the message names the file and key),
1 anything else. Errors go to stderr in one readable line, never a traceback.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import anyio

from orchestrator import __version__
from orchestrator.config import Config, load_config
from orchestrator.errors import ConfigError, OrchestratorError
from orchestrator.logging import configure_logging
from orchestrator.model import Job, pending

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """argparse that exits with 2 and one line on stderr, like every other usage error."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        sys.stderr.write(f"orchestrator: error: {message}\n")
        raise SystemExit(EXIT_USAGE)


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=os.environ.get("ORCH_CONFIG"),
        required="ORCH_CONFIG" not in os.environ,
        help="the TOML config file (default: $ORCH_CONFIG)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = _Parser(
        prog="orchestrator",
        description="Drive LLM Batch APIs from config files: budgeted, crash-safe, cheap to poll.",
        epilog="Environment: ORCH_CONFIG (--config), ORCH_LEDGER_URL, ORCH_RESULTS_DIR, "
        "ORCH_JOBS_DIR, ORCH_HTTP_LISTEN override the config file; ORCH_LOG_LEVEL (INFO).",
    )
    parser.add_argument("--version", action="version", version=f"orchestrator {__version__}")
    parser.add_argument(
        "--log-level",
        default=os.environ.get("ORCH_LOG_LEVEL", "INFO"),
        help="DEBUG, INFO, WARNING or ERROR (default: $ORCH_LOG_LEVEL or INFO)",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="run the daemon")
    _add_config(run)
    run.add_argument(
        "--exit-when-idle",
        action="store_true",
        help="return once every known job is done or rejected",
    )
    run.add_argument("--migrate", action="store_true", help="upgrade the ledger schema first")

    status = sub.add_parser("status", help="one row per job")
    _add_config(status)
    status.add_argument("--json", action="store_true", help="print a JSON array")

    show = sub.add_parser("show", help="one job in full, with its event history")
    _add_config(show)
    show.add_argument("name")

    cancel = sub.add_parser("cancel", help="cancel a job (queued: locally; running: remotely)")
    _add_config(cancel)
    cancel.add_argument("name")

    migrate = sub.add_parser("migrate", help="upgrade the ledger schema to the head")
    _add_config(migrate)

    check = sub.add_parser("check-config", help="validate the config and every input")
    _add_config(check)

    from orchestrator.emulator import server

    emulate = sub.add_parser("emulate", help="serve the Mistral API emulator")
    server.add_arguments(emulate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(level=args.log_level)
    try:
        if args.command == "emulate":
            from orchestrator.emulator import server

            return server.run(args)
        config = load_config(Path(args.config))
        code: int = anyio.run(_dispatch, args, config)
        return code
    except ConfigError as exc:
        sys.stderr.write(f"orchestrator: config error: {exc}\n")
        return EXIT_USAGE
    except OrchestratorError as exc:
        sys.stderr.write(f"orchestrator: {exc}\n")
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_FAILURE


async def _dispatch(args: argparse.Namespace, config: Config) -> int:
    from orchestrator.ledger import SqlLedger
    from orchestrator.ledger.migrate import upgrade

    if args.command == "run":
        from orchestrator.daemon import Daemon

        await Daemon(config).run(exit_when_idle=args.exit_when_idle, migrate=args.migrate)
        return EXIT_OK
    if args.command == "migrate":
        await upgrade(config.ledger.url)
        sys.stdout.write(f"ledger {config.ledger.url} is at the schema head\n")
        return EXIT_OK
    if args.command == "check-config":
        return await _check_config(config)
    from orchestrator.clock import SystemClock

    ledger = await SqlLedger.connect(config.ledger.url, clock=SystemClock())
    try:
        if args.command == "status":
            jobs = await ledger.list_jobs()
            if args.json:
                sys.stdout.write(json.dumps([status_row(j) for j in jobs], indent=2) + "\n")
            else:
                sys.stdout.write(status_table(jobs))
            return EXIT_OK
        if args.command == "show":
            job = await ledger.get_by_name(args.name)
            detail = {
                **status_row(job),
                "workspace": job.workspace,
                "model": job.model,
                "endpoint": job.endpoint,
                "inputs": list(job.inputs),
                "metadata": dict(job.metadata),
                "requests": job.request_count,
                "input_file_ids": list(job.input_file_ids),
                "output_file_id": job.output_file_id,
                "error_file_id": job.error_file_id,
                "files": [
                    {
                        "kind": f.kind,
                        "path": f.path,
                        "bytes": f.bytes,
                        "sha256": f.sha256,
                        "lines": f.lines,
                    }
                    for f in await ledger.files(job.id)
                ],
                "events": [
                    {
                        "at": e.at,
                        "from": e.from_state,
                        "to": e.to_state,
                        "remote_status": e.remote_status,
                        "detail": e.detail,
                    }
                    for e in await ledger.events(job.id)
                ],
            }
            sys.stdout.write(json.dumps(detail, indent=2, default=str) + "\n")
            return EXIT_OK
        if args.command == "cancel":
            job = await ledger.request_cancel(args.name)
            sys.stdout.write(
                f"cancel requested for {job.name} (state {job.state.value}); "
                "the running daemon carries it out\n"
            )
            return EXIT_OK
    finally:
        await ledger.close()
    raise AssertionError(f"unhandled command {args.command}")


async def _check_config(config: Config) -> int:
    from orchestrator.errors import InputError
    from orchestrator.inputs import validate_inputs

    ok = True
    demand: dict[str, int] = {}
    for spec in config.jobs:
        try:
            summaries = await anyio.to_thread.run_sync(
                functools.partial(validate_inputs, spec.inputs, endpoint=spec.endpoint)
            )
        except InputError as exc:
            ok = False
            sys.stdout.write(f"{spec.name}: INVALID\n{exc}\n")
            continue
        requests = sum(s.requests for s in summaries)
        demand[spec.workspace] = demand.get(spec.workspace, 0) + requests
        sys.stdout.write(f"{spec.name}: ok, {requests:,} requests -> {spec.workspace}\n")
    for name, ws in config.workspaces.items():
        need = demand.get(name, 0)
        verdict = "fits" if need <= ws.pending_budget else "queues (more than the budget at once)"
        sys.stdout.write(
            f"workspace {name}: {need:,} requests, budget {ws.pending_budget:,}: {verdict}\n"
        )
    return EXIT_OK if ok else EXIT_USAGE


def status_row(job: Job) -> dict[str, Any]:
    """The ``status --json`` object of one job (design.md §9)."""
    return {
        "name": job.name,
        "state": job.state.value,
        "outcome": job.outcome.value if job.outcome else None,
        "remote_id": job.remote_id,
        "remote_status": job.remote_status,
        "total": job.total or job.request_count,
        "completed": job.completed,
        "succeeded": job.succeeded,
        "failed": job.failed,
        "pending": pending(job),
        "error": job.error,
    }


def status_table(jobs: Sequence[Job]) -> str:
    """A plain table, one row per job."""
    header = ("NAME", "STATE", "OUTCOME", "REMOTE", "PROGRESS", "FAILED", "PENDING")
    rows = [header]
    for job in jobs:
        total = job.total or job.request_count
        pct = f"{100 * job.completed / total:.0f}%" if total else "-"
        rows.append(
            (
                job.name,
                job.state.value,
                job.outcome.value if job.outcome else "-",
                job.remote_status or "-",
                f"{job.completed}/{total} {pct}",
                str(job.failed),
                str(pending(job)),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    errors = [f"  {job.name}: {job.error}" for job in jobs if job.error]
    if errors:
        lines += ["", "errors:", *errors]
    return "\n".join(lines) + "\n"
