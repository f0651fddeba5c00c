"""The commands that read or write the ledger: status, show, results, budget, cancel, submit."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import attrs
import structlog

from orchestrator.cli._ledger import CliError, find_job, open_ledger, wake_daemon
from orchestrator.cli._parser import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from orchestrator.cli._render import (
    Output,
    budget_plain,
    budget_rich,
    results_lines,
    show_plain,
    show_rich,
    status_plain,
    status_rich,
)
from orchestrator.cli._rows import budgets, results_detail, show_detail, status_row
from orchestrator.cli._webhooks import delivery_row, show_section
from orchestrator.clock import Clock
from orchestrator.config import Config, InputOrigin, job_from_flags, load_jobs_dir
from orchestrator.daemon.intake import admit_spec, conflict_message
from orchestrator.errors import DefinitionConflict, InputError
from orchestrator.inputs import rules_for
from orchestrator.model import FINAL_STATES, JobSpec, JobState

log = structlog.get_logger(__name__)


def _json_out(out: Output, value: Any) -> None:
    out.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


async def status(args: argparse.Namespace, config: Config, clock: Clock, out: Output) -> int:
    """``status``: one row per job (``--json``: the §9 objects)."""
    async with open_ledger(config, clock) as ledger:
        states = [JobState(s) for s in args.state] if args.state else None
        jobs = await ledger.list_jobs(states=states, workspace=args.workspace)
    if not args.parts:
        jobs = [job for job in jobs if job.parent_id is None]
    now = clock.now()
    if args.json:
        _json_out(out, [status_row(job, now=now, parent_field=args.parts) for job in jobs])
    elif not jobs:
        filtered = " matching the filters" if (args.state or args.workspace) else ""
        out.line(f"no jobs{filtered} in the ledger {ledger.url}")
    elif out.rich:
        out.show(status_rich(jobs, now=now))
    else:
        out.write(status_plain(jobs, now=now))
    return EXIT_OK


async def show(args: argparse.Namespace, config: Config, clock: Clock, out: Output) -> int:
    """``show NAME``: the definition, remote ids, counts, files and the full history."""
    async with open_ledger(config, clock) as ledger:
        job = await find_job(ledger, args.name, config)
        files = await ledger.files(job.id)
        events = await ledger.events(job.id)
        parts = await ledger.parts(job.id) if job.is_parent else []
        deliveries = await ledger.deliveries(job_id=job.id)
    now = clock.now()
    if args.json:
        detail = show_detail(job, files, events, now=now, parts=parts)
        configured = [endpoint.endpoint for endpoint in config.endpoints]
        detail["deliveries"] = [delivery_row(d, configured) for d in deliveries]
        _json_out(out, detail)
        return EXIT_OK
    if out.rich:
        out.show(show_rich(job, files, events, now=now, parts=parts))
    else:
        out.write(show_plain(job, files, events, now=now, parts=parts))
    show_section(out, deliveries, config)
    return EXIT_OK


async def results(args: argparse.Namespace, config: Config, clock: Clock, out: Output) -> int:
    """``results NAME``: the result folder and files with their counts.

    Exit 1 when a file the ledger recorded is no longer on disk.
    """
    async with open_ledger(config, clock) as ledger:
        job = await find_job(ledger, args.name, config)
        files = await ledger.files(job.id)
    detail = results_detail(job, files, config.results.dir)
    if args.json:
        _json_out(out, detail)
    else:
        for index, line in enumerate(results_lines(detail)):
            out.line(line, style="bold" if index == 0 else None)
    missing = [f["path"] for f in detail["files"] if not f["exists"]]
    if missing:
        raise CliError(
            f"result files recorded in the ledger are missing on disk: {', '.join(missing)}"
        )
    return EXIT_OK


async def budget(args: argparse.Namespace, config: Config, clock: Clock, out: Output) -> int:
    """``budget``: per workspace, the budget and what the ledger's jobs hold of it."""
    async with open_ledger(config, clock) as ledger:
        jobs = await ledger.list_jobs()
    rows = budgets(config.workspaces, jobs)
    if args.json:
        _json_out(out, [row.as_json() for row in rows])
    elif out.rich:
        out.show(budget_rich(rows))
    else:
        out.write(budget_plain(rows))
    return EXIT_OK


async def cancel(args: argparse.Namespace, config: Config, clock: Clock, out: Output) -> int:
    """``cancel NAME``: flag the job; the daemon cancels it (locally or remotely)."""
    async with open_ledger(config, clock) as ledger:
        before = await find_job(ledger, args.name, config)
        job = await ledger.request_cancel(args.name)
    if job.state in FINAL_STATES:
        outcome = f", {job.outcome.value}" if job.outcome else ""
        out.line(f"job {job.name!r} is already {job.state.value}{outcome}: nothing to cancel")
        return EXIT_OK
    if before.cancel_requested:
        out.line(f"cancel of {job.name!r} was already requested (state {job.state.value})")
    elif job.state in (JobState.QUEUED, JobState.ADMITTED):
        out.line(
            f"cancel requested for {job.name!r} ({job.state.value}): nothing was sent to the "
            "provider; the daemon marks it done, cancelled"
        )
    else:
        remote = f" {job.remote_id}" if job.remote_id else ""
        out.line(
            f"cancel requested for {job.name!r} ({job.state.value}): the daemon cancels remote "
            f"job{remote}, then downloads any partial results"
        )
    report_wake(config, out)
    return EXIT_OK


def report_wake(config: Config, out: Output) -> None:
    pid = wake_daemon(config)
    if pid is not None:
        out.line(f"the daemon (pid {pid}) was woken to act now")
    else:
        out.line(
            "a running daemon acts on it within one intake cycle "
            f"({config.intake.rescan_interval:g} s); if none runs, `orchestrator run` will"
        )


async def submit(args: argparse.Namespace, config: Config, clock: Clock, out: Output) -> int:
    """``submit``: validate a job's inputs and add it to the ledger; nothing is sent yet.

    An invalid input is reported (every bad line, capped) and nothing is recorded, so the
    same name can be submitted again once the file is fixed.
    """
    spec = job_from_flags(
        name=args.name,
        workspace=args.workspace,
        inputs=args.inputs,
        model=args.model,
        endpoint=args.endpoint,
        metadata=args.metadata,
        timeout_hours=args.timeout_hours,
        priority=args.priority,
        base=Path.cwd(),
        providers={name: ws.provider for name, ws in config.workspaces.items()},
    )
    refuse_config_clash(
        spec, config, command="orchestrator submit: --name", advice="submit under another name"
    )
    origins = tuple(InputOrigin(file="orchestrator submit", key="--input") for _ in spec.inputs)
    async with open_ledger(config, clock) as ledger:
        try:
            job, created = await admit_spec(
                ledger,
                spec,
                rules=rules_for(config.workspaces[spec.workspace].provider),
                origins=origins,
                record_rejection=False,
                split=config.workspaces[spec.workspace].part_size(spec),
                results=config.results.dir,
                token_budget=config.workspaces[spec.workspace].token_budget_for(spec.model),
            )
        except InputError as exc:
            sys.stderr.write("\n".join(f"  {p}" for p in exc.problems) + "\n")
            raise CliError(f"submit: {exc.summary}", code=EXIT_USAGE) from None
        except DefinitionConflict as exc:
            existing = await ledger.get_by_name(spec.name)
            raise CliError(conflict_message(exc, existing), code=EXIT_FAILURE) from None
        except OSError as exc:
            raise CliError(f"submit: {exc}", code=EXIT_FAILURE) from None
    if args.json:
        _json_out(out, {**status_row(job, now=clock.now()), "created": created})
    elif created:
        out.line(
            f"queued job {job.name!r}: {job.request_count:,} requests for workspace "
            f"{job.workspace!r} (ledger id {job.id})"
        )
    else:
        out.line(
            f"job {job.name!r} is already in the ledger with this definition "
            f"({job.state.value}): nothing to do"
        )
    if created and not args.json:
        report_wake(config, out)
    elif created:
        wake_daemon(config)
    return EXIT_OK


def refuse_config_clash(spec: JobSpec, config: Config, *, command: str, advice: str) -> None:
    """Refuse a name the config defines differently: intake would report a conflict forever.

    The message starts with ``command`` (the command and flag that gave the name) and says
    ``advice``.
    """
    scan = load_jobs_dir(config)
    defined = {s.name: s for s in (*config.jobs, *scan.jobs)}
    other = defined.get(spec.name)
    if other is None or attrs.evolve(other, priority=0) == attrs.evolve(spec, priority=0):
        return
    origins = scan.input_origins.get(spec.name)
    where = config.job_origins.get(spec.name) or (origins[0].file if origins else None)
    raise CliError(
        f"{command}: job name {spec.name!r} is defined in {where} with another definition: "
        f"{advice} (or edit the config instead)",
        code=EXIT_USAGE,
    )
