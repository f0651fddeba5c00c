"""``orchestrator check-config``: everything the daemon would check, with nothing sent.

The config is already loaded (a bad key fails before this runs). Then: each workspace's API
key source, the jobs folder, every job's inputs (exists, valid JSONL for its endpoint, within the
provider's limits), each job against the ledger (new, already there, or a changed definition),
and per workspace what would be submitted and whether it fits the pending budget. Exit 2 when
anything is wrong; warnings (a jobs folder not created yet, no ledger yet) do not fail.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys

import anyio
import attrs

from orchestrator.cli._ledger import CliError, ledger_missing, open_ledger
from orchestrator.cli._parser import EXIT_OK, EXIT_USAGE
from orchestrator.cli._render import Output
from orchestrator.clock import Clock
from orchestrator.config import Config, InputOrigin, WebhookConfig, load_jobs_dir, missing_inputs
from orchestrator.costs import Estimated, check_estimates
from orchestrator.daemon.intake import raw_definition_hash
from orchestrator.errors import ConfigError, InputError, LedgerError
from orchestrator.inputs import InputLimits, definition_hash, rules_for, validate_inputs
from orchestrator.ledger.engine import display_url
from orchestrator.model import IN_FLIGHT_STATES, Job, JobSpec, JobState, pending, redefinable
from orchestrator.service.access import is_loopback

SUPPORTED_PROVIDERS = ("mistral", "openai", "anthropic")
"""Providers the daemon can drive (every one the config knows)."""


@attrs.define
class _Report:
    out: Output
    errors: int = 0
    warnings: int = 0

    def ok(self, text: str) -> None:
        self.out.line(text)

    def error(self, text: str, details: tuple[str, ...] = ()) -> None:
        self.errors += 1
        self.out.line(text, style="bold red")
        for detail in details:
            self.out.line(f"      {detail}", style="red")

    def warn(self, text: str) -> None:
        self.warnings += 1
        self.out.line(text, style="yellow")


async def check_config(args: argparse.Namespace, config: Config, clock: Clock, out: Output) -> int:
    """Validate the config and every input, compare with the ledger; exit 2 on any error."""
    report = _Report(out)
    scan = load_jobs_dir(config)
    definitions = [(s, config.input_origins.get(s.name, ())) for s in config.jobs]
    definitions += [(s, scan.input_origins.get(s.name, ())) for s in scan.jobs]
    report.ok(
        f"config {config.path}: {len(config.workspaces)} workspace(s), {len(config.jobs)} "
        f"job(s) in the file"
        + (f", {len(scan.jobs)} in {config.intake.jobs_dir}" if scan.files else "")
    )
    for error in scan.errors:
        if error.key == "intake.jobs_dir" and "does not exist" in str(error):
            report.warn(f"warning: {error} (no jobs are read from it until it exists)")
        else:
            report.error(f"error: {error}")
    _check_workspaces(config, report)
    _check_endpoints(config, report)
    _check_http(config, report)
    recorded = await _ledger_jobs(config, clock, report)

    report.ok("")
    report.ok("jobs:" if definitions else "jobs: none defined (add [[jobs]] or files in jobs_dir)")
    width = max((len(spec.name) for spec, _ in definitions), default=0)
    ws_width = max((len(spec.workspace) for spec, _ in definitions), default=0)
    new: dict[str, list[int]] = {name: [] for name in config.workspaces}
    estimated: dict[str, Estimated] = {}
    for spec, origins in definitions:
        requests = await _check_job(
            spec, origins, recorded.get(spec.name), config, report, (width, ws_width), estimated
        )
        if requests is not None:
            new.setdefault(spec.workspace, []).append(requests)
    costs = check_estimates(config, estimated)
    if costs:
        report.ok("")
        report.ok("cost (estimated: prompt tokens as input, max_tokens a request as output):")
        for text in costs:
            report.ok(f"  {text}")

    report.ok("")
    report.ok("budget (what `orchestrator run` would submit now):")
    in_ledger = list(recorded.values())
    for name, ws in config.workspaces.items():
        demand = new.get(name, [])
        flying = sum(
            pending(j) for j in in_ledger if j.workspace == name and j.state in IN_FLIGHT_STATES
        )
        queued = sum(  # a split job's parent is queued beside its parts: count the parts
            j.request_count
            for j in in_ledger
            if j.workspace == name and j.state is JobState.QUEUED and not j.is_parent
        )
        held = f"{flying:,} in flight and {queued:,} queued in the ledger"
        total = flying + queued + sum(demand)
        if not demand:
            report.ok(f"  {name}: nothing new; {held}; budget {ws.pending_budget:,}")
            continue
        if total <= ws.pending_budget:
            verdict = "fits at once"
        else:
            verdict = "more than the budget at once: jobs wait in the queue and run as room frees"
        report.ok(
            f"  {name}: {sum(demand):,} new requests in {len(demand)} job(s); {held}; budget "
            f"{ws.pending_budget:,}: {verdict}"
        )
    report.ok("")
    if report.errors:
        noun = "error" if report.errors == 1 else "errors"
        report.out.line(f"{report.errors} {noun}: nothing was sent", style="bold red")
        sys.stderr.write(
            f"orchestrator: check-config: {report.errors} {noun} in {config.path} (listed above)\n"
        )
        return EXIT_USAGE
    report.out.line("config ok: nothing was sent", style="bold green")
    return EXIT_OK


def _check_http(config: Config, report: _Report) -> None:
    """The dashboard and API of ``[http] listen``: who may read and write (nothing if off)."""
    http, address = config.http, config.http.address()
    if address is None:
        return
    token = http.token(os.environ)
    open_reads = is_loopback(address[0]) or http.allow_anonymous_reads
    writes = f"writes need the token from ${http.token_env}" if token else "writes answer 403"
    reads = "reads open" if open_reads else "reads need the token"
    report.ok(f"http {http.listen}: health, metrics, dashboard and API; {reads}, {writes}")
    if http.token_env is not None and token is None:
        report.warn(
            f"warning: {config.path}: http.token_env: ${http.token_env} is not set: every "
            "write (submit, cancel) answers 403 until it is"
        )
    if not open_reads and token is None:
        report.warn(
            f"warning: {config.path}: http.listen: {http.listen} is not a loopback address and "
            "no token is configured: the dashboard and /api reads answer 403 (set "
            "http.token_env, or http.allow_anonymous_reads = true)"
        )


def _check_workspaces(config: Config, report: _Report) -> None:
    for name, ws in config.workspaces.items():
        where = f"workspace {name} ({ws.provider}"
        if ws.provider not in SUPPORTED_PROVIDERS:
            report.error(
                f"error: {config.path}: workspaces.{name}.provider: provider {ws.provider!r} is "
                f"not supported by the daemon yet (supported: {', '.join(SUPPORTED_PROVIDERS)})"
            )
            continue
        if ws.embedded:
            report.ok(f"{where}, the embedded emulator): no API key needed")
        else:
            source = f"${ws.api_key_env}" if ws.api_key_env else str(ws.api_key_file)
            try:
                ws.api_key(os.environ)
            except ConfigError as exc:
                report.error(f"error: {exc}")
            else:
                report.ok(f"{where} at {ws.base_url}): API key from {source}: present")
        if ws.count_external:
            report.ok(f"  {name}: count_external = true (external jobs are counted while running)")
        report.ok(
            f"  {name}: max_attempts = {ws.max_attempts}"
            + (
                f" (lines that failed transiently or never ran are resubmitted, first after "
                f"{ws.retry_delay:g}s, doubling)"
                if ws.max_attempts > 1
                else " (failed lines are never resubmitted)"
            )
        )
        if ws.split_requests is not None:
            report.ok(
                f"  {name}: split_requests = {ws.split_requests:,} (larger jobs run as parts of at "
                "most that many requests)"
            )


def _check_endpoints(config: Config, report: _Report) -> None:
    """Each ``[[webhooks]]`` secret and ``[[hooks]]`` program, as the daemon checks them."""
    for endpoint in config.endpoints:
        events = ", ".join(sorted(endpoint.events))
        try:
            if isinstance(endpoint, WebhookConfig):
                endpoint.secret(os.environ)
                source = f"secret from ${endpoint.secret_env}: present"
            else:
                endpoint.check_program()
                source = "program found"
        except ConfigError as exc:
            report.error(f"error: {exc}")
        else:
            report.ok(f"{endpoint.key} {endpoint.endpoint} ({events}): {source}")


async def _ledger_jobs(config: Config, clock: Clock, report: _Report) -> dict[str, Job]:
    """The ledger's jobs by name; empty (with a warning) when there is no ledger to read."""
    shown = display_url(config.ledger.url)
    missing = ledger_missing(config)
    if missing is not None:
        report.warn(
            f"ledger {shown}: not created yet (`orchestrator migrate --config {config.path}` or "
            "`run --migrate`): every job is new"
        )
        return {}
    try:
        async with open_ledger(config, clock) as ledger:
            jobs = await ledger.list_jobs()
    except (CliError, LedgerError, ConfigError, OSError) as exc:
        report.warn(f"ledger {shown}: cannot read it ({exc}): jobs are not compared with it")
        return {}
    report.ok(f"ledger {shown}: {len(jobs)} job(s)")
    return {job.name: job for job in jobs}


async def _check_job(
    spec: JobSpec,
    origins: tuple[InputOrigin, ...],
    existing: Job | None,
    config: Config,
    report: _Report,
    widths: tuple[int, int],
    estimated: dict[str, Estimated],
) -> int | None:
    """Check one job; return its request count when it would be submitted now.

    A job whose inputs are valid is added to ``estimated`` (for its cost estimate).
    """
    head = f"  {spec.name.ljust(widths[0])}  {spec.workspace.ljust(widths[1])}"
    missing = missing_inputs(spec, origins)
    if missing:
        report.error(f"{head}  ERROR: {missing[0]}", tuple(str(m) for m in missing[1:]))
        return None
    workspace = config.workspaces[spec.workspace]
    split = workspace.part_size(spec)
    rules = rules_for(workspace.provider)
    limits = InputLimits.of(rules)
    part_bytes = limits.max_file_bytes
    if split is not None:
        split = min(split, limits.max_requests)
        # the provider's per-batch limits apply per part
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
        digest = await anyio.to_thread.run_sync(functools.partial(raw_definition_hash, spec))
        known = (
            ""
            if existing is None or existing.definition_hash != digest
            else " (already rejected in the ledger)"
        )
        report.error(f"{head}  INVALID{known}: {exc.summary}", exc.problems)
        return None
    requests = sum(s.requests for s in summaries)
    tokens = sum(s.prompt_tokens for s in summaries)
    largest = max(s.max_request_tokens for s in summaries)
    budget = workspace.pending_budget
    token_budget = workspace.token_budget_for(spec.model)
    line = f"{head}  {requests:>9,} requests  {spec.endpoint}  {spec.model}"
    estimate = f"~{tokens:,} prompt tokens (estimated)"
    by_size = any(s.bytes > part_bytes for s in summaries) or (
        token_budget is not None and tokens > token_budget
    )
    splits = split is not None and (requests > split or by_size)
    estimated[spec.name] = Estimated(
        workspace=spec.workspace,
        model=spec.model,
        requests=requests,
        tokens=tokens,
        split=splits,
        max_output_tokens=sum(s.max_output_tokens for s in summaries),
        uncapped_requests=sum(s.uncapped_requests for s in summaries),
    )
    digest = definition_hash(spec, summaries, split_requests=split if splits else None)
    # As intake decides: a job recorded whole before splitting was switched on stays whole.
    same = {digest, definition_hash(spec, summaries)} if splits else {digest}
    new = "new"
    if existing is not None and existing.definition_hash not in same and redefinable(existing):
        existing, new = None, "replaces the rejected job of this name"
    if existing is not None:
        if existing.definition_hash not in same:
            report.error(
                f"{line}: ERROR: job {spec.name!r} is already in the ledger "
                f"({existing.state.value}) with a different definition: the daemon leaves that "
                "job untouched and refuses this one; give it another name"
            )
            return None
        outcome = f", {existing.outcome.value}" if existing.outcome else ""
        report.ok(
            f"{line}: already in the ledger ({existing.state.value}{outcome}): nothing to send"
        )
        return None
    if token_budget is not None and (largest if splits else tokens) > token_budget:
        what = "its largest request is estimated" if splits else "the job is estimated"
        report.error(
            f"{line}: ERROR: can never fit the token budget of {spec.model} in workspace "
            f"{spec.workspace!r} ({token_budget:,} prompt tokens; {what} at "
            f"{largest if splits else tokens:,}): the daemon would "
            "reject it; "
            + (
                "raise token_budget"
                if splits
                else "split it (split_requests) or raise token_budget"
            )
        )
        return None
    if splits:
        assert split is not None
        count = -(-requests // split)
        within = f"{split:,} requests"
        if by_size:
            within += f", {part_bytes:,} bytes"
            if token_budget is not None:
                within += f" and {token_budget:,} prompt tokens"
            report.ok(f"{line}: {new}, would be split into parts of at most {within}; {estimate}")
        else:
            report.ok(
                f"{line}: {new}, would be split into {count:,} parts of at most {within}; "
                f"{estimate}"
            )
        return requests
    if requests > budget:
        report.error(
            f"{line}: ERROR: more than the whole budget of workspace {spec.workspace!r} "
            f"({budget:,} pending requests): the daemon would reject it; split the input"
        )
        return None
    fits = "" if token_budget is None else f", within the token budget of {token_budget:,}"
    report.ok(f"{line}: {new}, would be queued; {estimate}{fits}")
    return requests
