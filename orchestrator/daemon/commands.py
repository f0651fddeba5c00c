"""The writes of ``orchestrator submit`` and ``cancel``, shared by the CLI and the JSON API.

:class:`DaemonCommands` is the :class:`~orchestrator.service.commands.JobCommands` a running
daemon hands its HTTP service: the same intake (:func:`~orchestrator.daemon.intake.admit_spec`
with ``record_rejection=False``), the same refusal of a name the config defines otherwise, the
same cancel flag. Instead of a SIGHUP it wakes its own loops directly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import attrs

from orchestrator.config import Config, InputOrigin, load_jobs_dir
from orchestrator.daemon.intake import admit_spec, conflict_message
from orchestrator.errors import DefinitionConflict, InputError
from orchestrator.inputs import rules_for
from orchestrator.ledger import SqlLedger
from orchestrator.model import FINAL_STATES, Job, JobSpec, JobState
from orchestrator.service.commands import Cancelled, CommandRefused


def config_clash(spec: JobSpec, config: Config) -> str | None:
    """Where the config defines ``spec.name`` with another definition, or None.

    Intake would report such a job as a conflict on every scan, so ``submit`` refuses it.
    """
    scan = load_jobs_dir(config)
    defined = {s.name: s for s in (*config.jobs, *scan.jobs)}
    other = defined.get(spec.name)
    if other is None or attrs.evolve(other, priority=0) == attrs.evolve(spec, priority=0):
        return None
    origins = scan.input_origins.get(spec.name)
    return str(config.job_origins.get(spec.name) or (origins[0].file if origins else None))


def cancel_message(before: Job, job: Job) -> str:
    """What a cancel request does to ``job`` (as it was ``before`` the request)."""
    if job.state in FINAL_STATES:
        outcome = f", {job.outcome.value}" if job.outcome else ""
        return f"job {job.name!r} is already {job.state.value}{outcome}: nothing to cancel"
    if before.cancel_requested:
        return f"cancel of {job.name!r} was already requested (state {job.state.value})"
    if job.state in (JobState.QUEUED, JobState.ADMITTED):
        return (
            f"cancel requested for {job.name!r} ({job.state.value}): nothing was sent to the "
            "provider; the daemon marks it done, cancelled"
        )
    remote = f" {job.remote_id}" if job.remote_id else ""
    return (
        f"cancel requested for {job.name!r} ({job.state.value}): the daemon cancels remote "
        f"job{remote}, then downloads any partial results"
    )


@attrs.define(kw_only=True)
class DaemonCommands:
    """Submit and cancel inside a running daemon (a :class:`JobCommands`)."""

    config: Config
    ledger: SqlLedger
    on_new_job: Callable[[Job], None]
    """Wakes the admission loop of the job's workspace."""
    on_cancel: Callable[[Job], None]
    """Wakes the loops that carry a cancel request out."""

    async def submit(self, spec: JobSpec, origins: Sequence[InputOrigin]) -> tuple[Job, bool]:
        where = config_clash(spec, self.config)
        if where is not None:
            raise CommandRefused(
                409,
                f"job name {spec.name!r} is defined in {where} with another definition: "
                "submit under another name (or edit the config instead)",
            )
        workspace = self.config.workspaces[spec.workspace]
        # One writer of part files at a time: intake scans hold the same lock.
        async with self.ledger.scan_lock():
            try:
                job, created = await admit_spec(
                    self.ledger,
                    spec,
                    rules=rules_for(workspace.provider),
                    origins=origins,
                    record_rejection=False,
                    split=workspace.part_size(spec),
                    results=self.config.results.dir,
                    token_budget=workspace.token_budget_for(spec.model),
                )
            except InputError as exc:
                raise CommandRefused(422, exc.summary, exc.problems) from None
            except DefinitionConflict as exc:
                existing = await self.ledger.get_by_name(spec.name)
                raise CommandRefused(409, conflict_message(exc, existing)) from None
            except OSError as exc:
                raise CommandRefused(500, f"cannot record the job: {exc}") from None
        if created:
            self.on_new_job(job)
        return job, created

    async def cancel(self, name: str) -> Cancelled:
        before = await self.ledger.get_by_name(name)
        job = await self.ledger.request_cancel(name)
        if job.state not in FINAL_STATES:
            self.on_cancel(job)
        return Cancelled(
            job=job,
            already_requested=before.cancel_requested,
            message=cancel_message(before, job),
        )
