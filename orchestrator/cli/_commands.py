"""The commands that read or write the ledger: status, show, results, budget, cancel, submit."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import attrs
import structlog

from orchestrator.cli._budget import budget_plain, budget_rich
from orchestrator.cli._ledger import CliError, find_job, open_ledger, wake_daemon
from orchestrator.cli._parser import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from orchestrator.cli._render import (
    Output,
    plain_table,
    results_lines,
    show_plain,
    show_rich,
    status_plain,
    status_rich,
)
from orchestrator.cli._webhooks import delivery_row, show_section
from orchestrator.clock import Clock
from orchestrator.config import Config, InputOrigin, job_from_flags
from orchestrator.costs import job_costs, spend_rows, usage_table
from orchestrator.daemon.commands import cancel_message, config_clash
from orchestrator.daemon.intake import admit_spec, conflict_message
from orchestrator.daemon.layout import result_dir
from orchestrator.errors import DefinitionConflict, InputError
from orchestrator.inputs import rules_for
from orchestrator.model import FINAL_STATES, Job, JobSpec, JobState
from orchestrator.pricing import month_bounds
from orchestrator.rows import (
    budgets,
    results_detail,
    show_detail,
    status_row,
    with_attempt_limit,
)

log = structlog.get_logger(__name__)


def _json_out(out: Output, value: Any) -> None:
    out.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


async def status(args: argparse.Namespace, config: Config, clock: Clock, out: Output) -> int:
    """``status``: one row per job (``--json``: the §9 objects)."""
    async with open_ledger(config, clock) as ledger:
        states = [JobState(s) for s in args.state] if args.state else None
        every = await ledger.list_jobs()
    wanted = set(states or JobState)
    jobs = [job for job in every if job.state in wanted and args.workspace in (None, job.workspace)]
    attempts: dict[int, list[Job]] = {}
    for job in every:
        if job.retry_of is not None:
            attempts.setdefault(job.retry_of, []).append(job)
    jobs = [with_attempt_limit(job, config) for job in jobs]
    if not args.parts:  # parts and attempts are listed with --parts
        jobs = [job for job in jobs if job.parent_id is None and job.retry_of is None]
    now = clock.now()
    # Usage and cost sum over every job's children, and a spend wait reads the whole
    # workspace: computed over the whole ledger, whatever the filters show.
    costs = job_costs(config, every, now)
    if args.json:
        rows = [
            status_row(job, now=now, parent_field=args.parts, attempts=attempts.get(job.id, ()))
            | costs[job.id].as_json()
            for job in jobs
        ]
        _json_out(out, rows)
    elif not jobs:
        filtered = " matching the filters" if (args.state or args.workspace) else ""
        out.line(f"no jobs{filtered} in the ledger {ledger.url}")
    else:
        # TOKENS and COST columns once there is anything to show in them.
        known = config.pricing.models or any(costs[job.id].usage for job in jobs)
        shown = (costs, config.pricing) if known else None
        if out.rich:
            out.show(status_rich(jobs, now=now, costs=shown))
        else:
            out.write(status_plain(jobs, now=now, costs=shown))
    return EXIT_OK


async def show(args: argparse.Namespace, config: Config, clock: Clock, out: Output) -> int:
    """``show NAME``: the definition, remote ids, counts, files and the full history."""
    async with open_ledger(config, clock) as ledger:
        job = await find_job(ledger, args.name, config)
        files = await ledger.files(job.id)
        events = await ledger.events(job.id)
        parts = await ledger.parts(job.id) if job.is_parent else []
        attempts = await ledger.attempts_of(job.id)
        # Its children (of any kind) are in its workspace, and so is what its spend reads.
        neighbours = await ledger.list_jobs(workspace=job.workspace)
        deliveries = await ledger.deliveries(job_id=job.id)
    job = with_attempt_limit(job, config)
    now = clock.now()
    costs = job_costs(config, neighbours, now)
    if args.json:
        detail = show_detail(job, files, events, now=now, parts=parts, attempts=attempts)
        detail.update(costs[job.id].as_json())
        for row, part in zip(detail["parts"], parts, strict=True):
            row.update(costs[part.id].as_json())
        configured = [endpoint.endpoint for endpoint in config.endpoints]
        detail["deliveries"] = [delivery_row(d, configured) for d in deliveries]
        _json_out(out, detail)
        return EXIT_OK
    if out.rich:
        out.show(
            show_rich(
                job, files, events, now=now, parts=parts, costs=(costs, config.pricing),
                attempts=attempts,
            )
        )  # fmt: skip
    else:
        out.write(
            show_plain(
                job, files, events, now=now, parts=parts, costs=(costs, config.pricing),
                attempts=attempts,
            )
        )  # fmt: skip
    show_section(out, deliveries, config)
    return EXIT_OK


async def results(args: argparse.Namespace, config: Config, clock: Clock, out: Output) -> int:
    """``results NAME``: the result folder and files with their counts.

    Exit 1 when a file the ledger recorded is no longer on disk.
    """
    async with open_ledger(config, clock) as ledger:
        job = await find_job(ledger, args.name, config)
        files = await ledger.files(job.id)
    detail = results_detail(job, files, result_dir(config.results.dir, job))
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
    spends = spend_rows(config, jobs, clock.now())
    if args.json:
        _json_out(
            out,
            [
                # ``spend`` only for a workspace with a spend limit.
                row.as_json()
                | ({"spend": spends[row.name].as_json()} if row.name in spends else {})
                for row in rows
            ],
        )
        return EXIT_OK
    notes = [spends[row.name].note(config.pricing) for row in rows if row.name in spends]
    if out.rich:
        out.show(budget_rich(rows))
        for note in notes:
            out.line(note)
    else:
        out.write(budget_plain(rows) + "".join(f"{note}\n" for note in notes))
    return EXIT_OK


async def usage(args: argparse.Namespace, config: Config, clock: Clock, out: Output) -> int:
    """``usage``: tokens and cost by workspace x model x month (``--month YYYY-MM``)."""
    try:
        month_bounds(args.month) if args.month else None
    except ValueError as exc:
        raise CliError(f"--month: {exc}", code=EXIT_USAGE) from None
    async with open_ledger(config, clock) as ledger:
        jobs = await ledger.list_jobs(workspace=args.workspace)
    rows = usage_table(config, jobs, month=args.month)
    if args.json:
        _json_out(out, rows)
        return EXIT_OK
    if not rows:
        when = f" in {args.month}" if args.month else ""
        out.line(f"no usage recorded{when}: no job has finished with results yet")
        return EXIT_OK
    currency = f" ({config.pricing.currency})" if config.pricing.currency else ""
    out.write(
        plain_table(
            (
                "WORKSPACE",
                "MODEL",
                "MONTH",
                "JOBS",
                "PROMPT",
                "COMPLETION",
                "TOTAL",
                "COST" + currency,
            ),
            (
                [
                    row["workspace"],
                    row["model"],
                    row["month"],
                    f"{row['jobs']:,}",
                    f"{row['prompt_tokens']:,}",
                    f"{row['completion_tokens']:,}",
                    f"{row['total_tokens']:,}",
                    attrs.evolve(config.pricing, currency=None).label(row["cost"]),
                ]
                for row in rows
            ),
            right=(3, 4, 5, 6, 7),
        )
    )
    if any(row["cost"] is None for row in rows):
        out.line('cost "-": the model has no price in [pricing.models] (cost unknown, not 0)')
    return EXIT_OK


async def cancel(args: argparse.Namespace, config: Config, clock: Clock, out: Output) -> int:
    """``cancel NAME``: flag the job; the daemon cancels it (locally or remotely)."""
    async with open_ledger(config, clock) as ledger:
        before = await find_job(ledger, args.name, config)
        job = await ledger.request_cancel(args.name)
    out.line(cancel_message(before, job))
    if job.state in FINAL_STATES:
        return EXIT_OK
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
    where = config_clash(spec, config)
    if where is None:
        return
    raise CliError(
        f"{command}: job name {spec.name!r} is defined in {where} with another definition: "
        f"{advice} (or edit the config instead)",
        code=EXIT_USAGE,
    )
