"""``rerun NAME [--as NEW]``: record a finished job's definition again, under a new name.

A job name is taken for good once the job got past intake, so running the same work again is
a new job: ``NAME.2``, ``NAME.3``, ... by default. Only the same definition is rerun: inputs
whose contents changed since are a new job the operator defines, not a rerun.
"""

from __future__ import annotations

import argparse
import functools
import json

import anyio
import attrs

from orchestrator.cli._commands import refuse_config_clash, report_wake
from orchestrator.cli._ledger import CliError, find_job, open_ledger
from orchestrator.cli._parser import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from orchestrator.cli._render import Output
from orchestrator.clock import Clock
from orchestrator.config import Config, load_jobs_dir
from orchestrator.daemon.intake import admit_spec, missing_input_error
from orchestrator.errors import DefinitionConflict, InputError, JobNotFound
from orchestrator.inputs import InputLimits, definition_hash, rules_for, validate_inputs
from orchestrator.ledger import SqlLedger
from orchestrator.model import (
    FINAL_STATES,
    JOB_NAME_RULE,
    Job,
    JobSpec,
    JobState,
    Outcome,
    is_safe_job_name,
)
from orchestrator.rows import status_row

RERUN_WITHOUT_FORCE = frozenset({Outcome.FAILED, Outcome.EXPIRED, Outcome.CANCELLED})
"""Outcomes a job is rerun from as a matter of course; any other final job needs ``--force``."""


async def rerun(args: argparse.Namespace, config: Config, clock: Clock, out: Output) -> int:
    """``rerun NAME [--as NEW] [--force]``: queue the job's definition again as a new job."""
    async with open_ledger(config, clock) as ledger:
        try:
            original = await find_job(ledger, args.name, config)
        except CliError as exc:
            raise CliError(f"rerun: {exc}", code=EXIT_USAGE) from None
        _refuse_unless_rerunnable(original, force=args.force)
        name = args.as_name or await _next_free_name(ledger, original.name)
        await _refuse_taken(ledger, name, flag="--as" if args.as_name else None)
        spec = _rerun_spec(original, name, config)
        refuse_config_clash(
            spec, config, command="orchestrator rerun: --as", advice="rerun under another name"
        )
        workspace = config.workspaces[spec.workspace]
        split, provider = workspace.part_size(spec), workspace.provider
        if original.state is JobState.DONE:
            await _refuse_changed_inputs(original, spec, split, provider=provider)
        try:
            job, _ = await admit_spec(
                ledger,
                spec,
                rules=rules_for(provider),
                record_rejection=False,
                split=split,
                results=config.results.dir,
                token_budget=workspace.token_budget_for(spec.model),
            )
        except InputError as exc:
            raise CliError(f"rerun: {exc.summary}", code=EXIT_USAGE) from None
        except DefinitionConflict:  # the name was taken between our check and the insert
            raise CliError(
                f"rerun: job name {name!r} was just taken by another job: run again", code=1
            ) from None
        except OSError as exc:
            raise CliError(f"rerun: {exc}", code=EXIT_FAILURE) from None
        await ledger.note(original.id, f"rerun as {job.name}")
        await ledger.note(job.id, f"rerun of {original.name}")
    if args.json:
        row = {**status_row(job, now=clock.now()), "created": True, "rerun_of": original.name}
        out.write(json.dumps(row, indent=2, ensure_ascii=False) + "\n")
    else:
        ended = (
            f"{original.state.value}, {original.outcome.value}" if original.outcome else "rejected"
        )
        out.line(
            f"queued job {job.name!r}, a rerun of {original.name!r} ({ended}): "
            f"{job.request_count:,} requests for workspace {job.workspace!r} (ledger id {job.id})"
        )
        report_wake(config, out)
    return EXIT_OK


def _refuse_unless_rerunnable(job: Job, *, force: bool) -> None:
    """Refuse a part, a job that is not final, or (without ``force``) one that did not fail."""
    if job.parent_id is not None:
        parent = job.name.rpartition("/")[0]
        raise CliError(
            f"rerun: job {job.name!r} is a part of {parent!r}: rerun the whole job "
            f"(`orchestrator rerun {parent}`)",
            code=EXIT_USAGE,
        )
    if job.state not in FINAL_STATES:
        raise CliError(
            f"rerun: job {job.name!r} is {job.state.value}: only a final job can be rerun "
            f"(wait for it to end, or `orchestrator cancel {job.name}` first)",
            code=EXIT_USAGE,
        )
    if force or job.outcome in RERUN_WITHOUT_FORCE:
        return
    ended = f"ended {job.outcome.value}" if job.outcome else "was rejected"
    hint = (
        "fix its definition under the same name instead: intake replaces a rejected job"
        if job.state is JobState.REJECTED
        else "nothing failed"
    )
    raise CliError(
        f"rerun: job {job.name!r} {ended}; {hint} (--force runs it again anyway)",
        code=EXIT_USAGE,
    )


async def _next_free_name(ledger: SqlLedger, name: str) -> str:
    """``NAME.2``, ``NAME.3``, ...: the first that no job holds."""
    number = 2
    while True:
        candidate = f"{name}.{number}"
        try:
            await ledger.get_by_name(candidate)
        except JobNotFound:
            return candidate
        number += 1


async def _refuse_taken(ledger: SqlLedger, name: str, *, flag: str | None) -> None:
    """Refuse an unsafe name, or one a job already holds."""
    where = f"rerun: {flag}: " if flag else "rerun: "
    if not is_safe_job_name(name):
        raise CliError(
            f"{where}job name {name!r} is not a safe name: it becomes a directory name, so it "
            f"must be {JOB_NAME_RULE}" + ("" if flag else " (choose one with --as)"),
            code=EXIT_USAGE,
        )
    try:
        taken = await ledger.get_by_name(name)
    except JobNotFound:
        return
    raise CliError(
        f"{where}job name {name!r} is already in the ledger ({taken.state.value}): "
        "choose another with --as",
        code=EXIT_USAGE,
    )


def _rerun_spec(job: Job, name: str, config: Config) -> JobSpec:
    """The recorded job's definition under ``name``; its part size from the config, if defined."""
    workspace = config.workspaces.get(job.workspace)
    if workspace is None:
        raise CliError(
            f"rerun: job {job.name!r} ran in workspace {job.workspace!r}, which the config "
            f"{config.path} no longer defines: add it back to rerun the job",
            code=EXIT_USAGE,
        )
    defined = {s.name: s for s in (*config.jobs, *load_jobs_dir(config).jobs)}
    own = defined.get(job.name)
    return JobSpec(
        name=name,
        workspace=job.workspace,
        model=job.model,
        endpoint=job.endpoint,
        inputs=job.inputs,
        metadata=dict(job.metadata),
        timeout_hours=job.timeout_hours,
        priority=job.priority,
        split_requests=own.split_requests if own is not None else None,
    )


async def _refuse_changed_inputs(
    job: Job, spec: JobSpec, split: int | None, *, provider: str
) -> None:
    """Refuse a rerun whose inputs are missing or no longer what the job ran on."""
    missing = missing_input_error(spec)
    if missing is not None:
        raise CliError(f"rerun: job {job.name!r}: {missing.problems[0]}", code=EXIT_USAGE)
    rules = rules_for(provider)
    limits = InputLimits.of(rules)
    if split is not None:  # the provider's per-batch limits apply to each part
        limits = attrs.evolve(limits, max_requests=2**31 - 1, max_file_bytes=1 << 50)
    try:
        summaries = await anyio.to_thread.run_sync(
            functools.partial(
                validate_inputs,
                spec.inputs,
                endpoint=spec.endpoint,
                limits=limits,
                rules=rules,
                model=spec.model,
            )
        )
    except InputError as exc:
        raise CliError(
            f"rerun: job {job.name!r}: its inputs are no longer valid: {exc.summary}",
            code=EXIT_USAGE,
        ) from None
    digests = {definition_hash(spec, summaries)}
    if split is not None:  # split by requests, bytes or tokens: either way the part size counts
        digests.add(definition_hash(spec, summaries, split_requests=split))
    if job.definition_hash not in digests:
        raise CliError(
            f"rerun: job {job.name!r}: its inputs are not what it ran on (input contents or "
            "split_requests changed since): that is a new job, so define it under a new name",
            code=EXIT_USAGE,
        )
