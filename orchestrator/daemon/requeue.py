"""Back to the queue: a running job whose remote job failed for capacity before processing.

OpenAI fails a batch at validation with ``token_limit_exceeded`` when the organisation's
enqueued prompt tokens for the model would pass its limit (``shared/api/openai-batch.md`` §7).
Nothing ran, so the job is not failed: it returns to ``queued`` with the capacity refusals'
backoff (``step_retries`` + ``not_before``), its uploaded file kept for the next create, and an
event that says why. What the refusal teaches about the token estimate is recorded as a
:class:`TokenLimitObservation` in that event and handed to :func:`learn_token_scale`, which
scales the workspace's token estimates from then on (``orchestrator/budget.py``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import attrs
import structlog

from orchestrator.daemon.context import Runtime, WorkspaceRuntime, backoff
from orchestrator.model import Job, JobState, pending
from orchestrator.providers.base import RemoteJob

log = structlog.get_logger(__name__)

_LIMIT = re.compile(r"Limit:\s*([\d,]+)\s*enqueued tokens", re.IGNORECASE)


@attrs.frozen(kw_only=True)
class TokenLimitObservation:
    """One enqueued-token refusal, with the local estimates it can be compared with."""

    workspace: str
    model: str
    remote_id: str
    limit: int | None
    """The limit the provider's message names (``Limit: 2,000,000 enqueued tokens``)."""
    job_prompt_tokens: int
    """The refused job's prompt tokens as estimated at intake."""
    in_flight_prompt_tokens: int
    """Estimated prompt tokens of the workspace's running jobs on that model, this one
    included: what the provider counted as enqueued, by our estimate, when it refused."""

    def describe(self) -> str:
        """The observation as the job's event states it."""
        limit = f"{self.limit:,}" if self.limit is not None else "not stated"
        return (
            f"enqueued-token limit for {self.model}: {limit}; estimated prompt tokens: "
            f"this job {self.job_prompt_tokens:,}, running on this model "
            f"{self.in_flight_prompt_tokens:,} (this job included)"
        )


def parse_limit(messages: Iterable[str]) -> int | None:
    """The token limit a refusal message names, if one does."""
    for message in messages:
        match = _LIMIT.search(message)
        if match:
            return int(match.group(1).replace(",", ""))
    return None


def observe(
    workspace: str, job: Job, remote: RemoteJob, running: Iterable[Job]
) -> TokenLimitObservation:
    """What the refusal of ``job`` (as ``remote``) says, next to ``running`` (the cycle's jobs)."""
    in_flight = sum(j.prompt_tokens for j in running if j.model == job.model)
    return TokenLimitObservation(
        workspace=workspace,
        model=job.model,
        remote_id=remote.id,
        limit=parse_limit(remote.errors),
        job_prompt_tokens=job.prompt_tokens,
        in_flight_prompt_tokens=max(in_flight, job.prompt_tokens),
    )


def learn_token_scale(workspace: WorkspaceRuntime, observation: TokenLimitObservation) -> None:
    """Teach the workspace's token budget what the refusal says about our estimates.

    The provider counted more than our estimates add up to (or it would not have refused):
    :meth:`WorkspaceRuntime.token_limit_refused` scales every estimate from the next admission
    pass on (see :func:`orchestrator.budget.learn_token_scale`).
    """
    scale = workspace.token_limit_refused(
        provider_limit=observation.limit,
        estimated_in_flight=observation.in_flight_prompt_tokens,
    )
    log.info(
        "poll.token_limit_observed",
        **attrs.asdict(observation),
        scale=scale.factor,
        refusals=scale.refusals,
    )


async def requeue(
    runtime: Runtime, workspace: WorkspaceRuntime, job: Job, remote: RemoteJob, running: list[Job]
) -> Job:
    """Move ``job`` (running) back to ``queued`` after ``remote`` failed for capacity.

    Its remote fields are cleared (the failed batch's id stays in the event), its uploaded
    files kept, ``step_retries`` counted and ``not_before`` set by :func:`backoff`. The budget
    the job held is released and admission woken.

    Raises:
        StaleTransition: the job left ``running`` meanwhile (nothing was changed).
    """
    observation = observe(workspace.name, job, remote, running)
    learn_token_scale(workspace, observation)
    attempts = job.step_retries + 1
    delay = backoff(attempts)
    reason = "; ".join(remote.errors) or ", ".join(remote.error_codes)
    moved = await runtime.ledger.transition(
        job.id,
        JobState.RUNNING,
        JobState.QUEUED,
        detail=(
            f"remote {remote.id} {remote.status} before processing anything: {reason}; "
            f"back to the queue, next try in {delay:g}s (attempt {attempts}); "
            f"{observation.describe()}"
        ),
        remote_id=None,
        remote_status=None,
        output_file_id=None,
        error_file_id=None,
        total=0,
        completed=0,
        succeeded=0,
        failed=0,
        submitted_at=None,
        error=f"the provider refused the batch for capacity, will retry: {reason}",
        step_retries=attempts,
        not_before=runtime.clock.now() + delay,
    )
    workspace.released += pending(job)
    log.warning(
        "poll.job_requeued",
        job=job.name,
        job_id=job.id,
        remote_id=remote.id,
        remote_status=remote.status,
        step_retries=attempts,
        retry_in=delay,
        reason=reason,
    )
    runtime.activity.wake()
    workspace.admission.wake()
    if job.parent_id is not None:
        workspace.collect.wake()  # the parts keeper follows its parent's parts
    return moved
