"""The job model: states, outcomes, the transition table and frozen job values.

Pure: no I/O, no clock reads, no logging. The ledger persists these values; the daemon loops
decide with them. :data:`TRANSITIONS` is the only place that says which moves are legal.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import TypedDict

import attrs

from orchestrator.errors import IllegalTransition
from orchestrator.usage import Usage


class JobState(StrEnum):
    """Where a job is in its life; the lowercase values are what the ledger stores."""

    QUEUED = "queued"
    """Validated and waiting for room in the workspace's pending budget."""
    ADMITTED = "admitted"
    """Budget reserved; inputs are being uploaded (file ids recorded as they arrive)."""
    SUBMITTING = "submitting"
    """Intent recorded: a create call may be in flight; recovery must reconcile, not re-create."""
    RUNNING = "running"
    """The provider has the job; it is polled."""
    COLLECTING = "collecting"
    """The remote job is terminal; output and error files are being downloaded."""
    DONE = "done"
    """Finished, with an :class:`Outcome`."""
    REJECTED = "rejected"
    """Refused before anything ran (invalid input, never fits, provider refused the create)."""


class Outcome(StrEnum):
    """How a ``done`` job ended."""

    SUCCEEDED = "succeeded"
    PARTIAL = "partial"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


class RemotePhase(StrEnum):
    """A provider-neutral reading of a remote job's raw status.

    Providers map their raw status onto this; the raw status is stored beside it, never
    translated away.
    """

    VALIDATING = "validating"
    RUNNING = "running"
    CANCELLING = "cancelling"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        """True once the remote job will never change again."""
        return self in _TERMINAL_PHASES


_TERMINAL_PHASES = frozenset(
    {RemotePhase.SUCCEEDED, RemotePhase.FAILED, RemotePhase.EXPIRED, RemotePhase.CANCELLED}
)

IN_FLIGHT_STATES = frozenset({JobState.ADMITTED, JobState.SUBMITTING, JobState.RUNNING})
"""States whose job holds part of the workspace's pending budget."""

FINAL_STATES = frozenset({JobState.DONE, JobState.REJECTED})
"""States a job never leaves."""

TRANSITIONS: Mapping[JobState, frozenset[JobState]] = {
    # queued -> done is a local cancel; -> rejected is invalid input or a job that never fits.
    JobState.QUEUED: frozenset({JobState.ADMITTED, JobState.REJECTED, JobState.DONE}),
    # admitted -> queued gives the budget back (capacity refused, cancel before upload ends).
    JobState.ADMITTED: frozenset(
        {JobState.SUBMITTING, JobState.QUEUED, JobState.REJECTED, JobState.DONE}
    ),
    # submitting -> queued only when the provider definitely created nothing.
    JobState.SUBMITTING: frozenset({JobState.RUNNING, JobState.QUEUED, JobState.REJECTED}),
    # running -> queued only for a remote job that failed before processing anything, for a
    # reason that passes (see requeues_after): OpenAI fails a batch whose prompt tokens would
    # exceed the organisation's enqueued-token limit at validation. Nothing ran, nothing is
    # to collect, and the same job fits once other batches finish: it waits in the queue
    # with backoff instead of ending failed (design §3: never failed for capacity).
    JobState.RUNNING: frozenset({JobState.COLLECTING, JobState.QUEUED}),
    JobState.COLLECTING: frozenset({JobState.DONE}),
    JobState.DONE: frozenset(),
    JobState.REJECTED: frozenset(),
}


PARENT_TRANSITIONS: Mapping[JobState, frozenset[JobState]] = {
    # A split job's parent has no remote job: it follows its parts. queued -> running when its
    # first part leaves queued; -> done only for a cancel once every part is final.
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.DONE}),
    # running -> collecting once every part is final (done or rejected): the merge follows.
    JobState.RUNNING: frozenset({JobState.COLLECTING, JobState.DONE}),
    JobState.COLLECTING: frozenset({JobState.DONE}),
    JobState.ADMITTED: frozenset(),
    JobState.SUBMITTING: frozenset(),
    JobState.DONE: frozenset(),
    JobState.REJECTED: frozenset(),
}
"""The moves of a split job's parent (``part_count > 0``); :data:`TRANSITIONS` is for the rest."""


def check_transition(source: JobState, target: JobState, *, parent: bool = False) -> None:
    """Raise :class:`IllegalTransition` unless ``source -> target`` is in the table.

    ``parent`` selects :data:`PARENT_TRANSITIONS` (a split job's parent) over
    :data:`TRANSITIONS`.
    """
    table = PARENT_TRANSITIONS if parent else TRANSITIONS
    if target not in table[source]:
        raise IllegalTransition(source.value, target.value)


def outcome_for(phase: RemotePhase, *, succeeded: int, failed: int) -> Outcome:
    """The outcome of a job whose remote job ended in ``phase`` with these counts.

    A remote job that completed with every line failed is ``failed``, whatever the provider
    calls it: OpenAI ends such a batch ``completed`` with no output file, Mistral ``FAILED``.
    """
    if phase is RemotePhase.SUCCEEDED:
        if failed > 0:
            return Outcome.FAILED if succeeded == 0 else Outcome.PARTIAL
        return Outcome.SUCCEEDED
    if phase is RemotePhase.EXPIRED:
        return Outcome.EXPIRED
    if phase is RemotePhase.CANCELLED:
        return Outcome.CANCELLED
    if phase is RemotePhase.FAILED:
        return Outcome.FAILED
    raise ValueError(f"{phase} is not terminal")


TOKEN_LIMIT_CODE = "token_limit_exceeded"  # noqa: S105 (an error code, not a secret)
"""OpenAI's error code for a batch refused at validation because the organisation's enqueued
prompt tokens for its model would exceed the limit (``shared/api/openai-batch.md`` §7)."""

REQUEUE_CODES = frozenset({TOKEN_LIMIT_CODE})
"""Error codes of a remote job that failed for capacity, not for its content."""


def requeues_after(phase: RemotePhase, *, error_codes: Sequence[str], completed: int) -> bool:
    """Whether a remote job that ended so goes back to ``queued`` instead of being collected.

    Only a failed remote job that processed no request and names a capacity code
    (:data:`REQUEUE_CODES`): resubmitting it later is the same as submitting it the first
    time. Anything that ran, or failed for its content, is collected as it is.
    """
    return (
        phase is RemotePhase.FAILED
        and completed == 0
        and any(code in REQUEUE_CODES for code in error_codes)
    )


@attrs.frozen(kw_only=True)
class JobSpec:
    """A job as the operator defined it (config, jobs_dir or ``submit``)."""

    name: str
    workspace: str
    model: str
    endpoint: str
    inputs: tuple[str, ...]
    """Absolute paths of the JSONL input files."""
    metadata: Mapping[str, str] = attrs.field(factory=dict)
    timeout_hours: int = 24
    priority: int = 0
    split_requests: int | None = None
    """Largest part, in requests, as written in the job's table: None inherits the
    workspace's ``split_requests``, 0 disables splitting for this job."""


@attrs.frozen(kw_only=True)
class Job:
    """A job as the ledger holds it now (a snapshot; the ledger is the truth)."""

    id: int
    name: str
    workspace: str
    model: str
    endpoint: str
    inputs: tuple[str, ...]
    metadata: Mapping[str, str]
    timeout_hours: int
    priority: int
    definition_hash: str
    client_token: str
    """Sent in the remote job's metadata under :data:`CLIENT_TOKEN_KEY`; recovery lists by it."""
    request_count: int
    """Requests in the inputs, counted locally at intake."""
    state: JobState
    outcome: Outcome | None = None
    remote_id: str | None = None
    remote_status: str | None = None
    """The provider's raw status from the latest poll, e.g. ``RUNNING``."""
    input_file_ids: tuple[str, ...] = ()
    """Uploaded file ids, in input order, recorded as each upload completes."""
    output_file_id: str | None = None
    error_file_id: str | None = None
    total: int = 0
    """The provider's ``total_requests`` (0 until it finished validating)."""
    completed: int = 0
    succeeded: int = 0
    failed: int = 0
    error: str | None = None
    cancel_requested: bool = False
    attempts: int = 0
    """Create attempts refused for capacity or transient faults (drives backoff)."""
    not_before: float | None = None
    """Epoch seconds before which the job must not be retried (backoff)."""
    created_at: float = 0.0
    updated_at: float = 0.0
    submitted_at: float | None = None
    finished_at: float | None = None
    parent_id: int | None = None
    """For a part of a split job: the id of its parent."""
    part_count: int = 0
    """For the parent of a split job: how many parts it has (0 for every other job)."""
    claimed_by: str | None = None
    """The replica that holds the job's lease (design §8); None when nobody does."""
    lease_until: float | None = None
    """When that lease ends unless renewed (epoch seconds)."""
    prompt_tokens: int = 0
    """Prompt tokens of the inputs, estimated at intake (what a token budget counts)."""
    input_file_sha256s: tuple[str, ...] = ()
    """The sha256 of each uploaded file's bytes, aligned with :attr:`input_file_ids`."""
    max_output_tokens: int = 0
    """Σ of the output caps (``max_tokens``...) its requests set, counted at intake."""
    uncapped_requests: int | None = None
    """Its requests that set no output cap (None: recorded before caps were counted; then
    every request counts as uncapped)."""
    usage: Usage | None = None
    """Tokens its own result files reported, once they are in (None before). A job with
    children adds theirs: :func:`orchestrator.usage.rolled_up`."""

    @property
    def is_parent(self) -> bool:
        """Whether this is a split job's parent (it has parts, and no remote job of its own)."""
        return self.part_count > 0


JOB_NAME_RULE = "1-128 characters of letters, digits, '.', '_' or '-', and not '.' or '..'"
"""What a job name may be: it becomes a directory name under the results folder."""

_JOB_NAME = re.compile(r"[A-Za-z0-9._-]{1,128}")


def is_safe_job_name(name: str) -> bool:
    """Whether ``name`` follows :data:`JOB_NAME_RULE`."""
    return _JOB_NAME.fullmatch(name) is not None and name not in (".", "..")


def redefinable(job: Job) -> bool:
    """Whether a new definition under ``job``'s name replaces it instead of conflicting.

    Only a job rejected before anything ran: nothing of it lives at the provider, so the
    operator fixes its input (or model, endpoint...) and keeps the name. A part of a split job
    is defined by its parent, never on its own. Every other state keeps its definition.
    """
    return job.state is JobState.REJECTED and job.parent_id is None


CLIENT_TOKEN_KEY = "orchestrator_job_id"  # noqa: S105 (a metadata key, not a secret)
"""Metadata key that carries a job's client token to the remote job (crash recovery)."""


def new_client_token() -> str:
    """A fresh client token: unique across ledgers, so recovery never adopts a stranger's job."""
    return f"orch-{uuid.uuid4().hex}"


def duplicate_remote_jobs(
    listed: Mapping[str, str], owners: Mapping[str, Job]
) -> list[tuple[str, Job]]:
    """The remote jobs that duplicate one of ours, each with the job it duplicates.

    Args:
        listed: Unfinished remote jobs of the workspace that carry a client token and are not
            recorded as any job's remote id: ``{remote id: client token}``.
        owners: Our jobs by client token (tokens this ledger never issued are absent: those
            remote jobs belong to someone else and are never touched).

    A remote job is a duplicate when its token belongs to a job of ours that has recorded
    another remote id: a create that landed although the daemon saw it fail, after recovery had
    adopted or created another one. A job without a remote id yet (submitting) is left to
    recovery, which is still choosing the remote job to adopt.
    """
    found = []
    for remote_id, token in sorted(listed.items()):
        owner = owners.get(token)
        if owner is not None and owner.remote_id not in (None, remote_id):
            found.append((remote_id, owner))
    return found


def pending(job: Job) -> int:
    """Requests ``job`` holds against its workspace's pending budget right now.

    Admitted or submitting: the local count. Running: ``total - completed`` from the latest
    poll, or the local count while the provider still reports ``total = 0``. Otherwise 0,
    and always 0 for a split job's parent (its parts hold the budget).
    """
    if job.is_parent:
        return 0
    if job.state in (JobState.ADMITTED, JobState.SUBMITTING):
        return job.request_count
    if job.state is JobState.RUNNING:
        if job.total <= 0:
            return job.request_count
        return max(0, job.total - job.completed)
    return 0


class JobChanges(TypedDict, total=False):
    """The fields a transition or update may change, besides ``state``."""

    outcome: Outcome | None
    remote_id: str | None
    remote_status: str | None
    input_file_ids: tuple[str, ...]
    input_file_sha256s: tuple[str, ...]
    output_file_id: str | None
    error_file_id: str | None
    total: int
    completed: int
    succeeded: int
    failed: int
    error: str | None
    cancel_requested: bool
    attempts: int
    not_before: float | None
    submitted_at: float | None
    finished_at: float | None
    usage: Usage | None
    """Set once the job's own results are in (the sum over its result files)."""


PART_SEPARATOR = "/part-"
"""Joins a parent's name and a part's number: ``survey/part-0001`` ('/' is not allowed in a
job name the operator writes, so a part's name never collides with a job's)."""


def part_name(parent: str, number: int) -> str:
    """The name of part ``number`` (1-based) of the job named ``parent``."""
    return f"{parent}{PART_SEPARATOR}{number:04d}"


def split_part_name(name: str) -> tuple[str, int] | None:
    """``(parent name, part number)`` of a part's name, or None for any other name."""
    parent, sep, number = name.rpartition(PART_SEPARATOR)
    if not sep or not parent or not number.isdigit():
        return None
    return parent, int(number)


@attrs.frozen(kw_only=True)
class ParentAggregate:
    """What a split job's parts say about their parent (see :func:`parent_aggregate`)."""

    state: JobState
    """``queued`` while every part is queued, ``collecting`` once every part is final,
    ``running`` in between."""
    outcome: Outcome | None
    """Set once every part is final."""
    total: int
    completed: int
    succeeded: int
    failed: int
    remote_status: str
    """A short summary of the parts' states, e.g. ``parts: 2 running, 5 done, 3 queued``."""


STATE_ORDER = (
    JobState.COLLECTING,
    JobState.RUNNING,
    JobState.SUBMITTING,
    JobState.ADMITTED,
    JobState.QUEUED,
    JobState.DONE,
    JobState.REJECTED,
)
"""States, the ones that move first: a parent's summary and the live view list them so."""
REMOTE_STATUS_WIDTH = 64
"""Width of the ledger's ``remote_status`` column; a parent's summary is cut to fit."""


def parent_aggregate(parts: Sequence[Job]) -> ParentAggregate:
    """The parent's state, outcome, counts and status summary, from its parts. Pure.

    Counts are the parts' sums. Outcome, once every part is final: every part succeeded ->
    succeeded; any cancelled -> cancelled; else any expired -> expired; every part failed
    (a rejected part counts as failed) -> failed; otherwise partial.

    Raises:
        ValueError: ``parts`` is empty.
    """
    if not parts:
        raise ValueError("a split job has at least one part")
    by_state: dict[JobState, int] = {}
    for part in parts:
        by_state[part.state] = by_state.get(part.state, 0) + 1
    final = all(part.state in FINAL_STATES for part in parts)
    if final:
        state = JobState.COLLECTING
    elif by_state.get(JobState.QUEUED, 0) == len(parts):
        state = JobState.QUEUED
    else:
        state = JobState.RUNNING
    outcome = None
    if final:
        outcomes = [
            Outcome.FAILED if part.state is JobState.REJECTED else part.outcome for part in parts
        ]
        if all(o is Outcome.SUCCEEDED for o in outcomes):
            outcome = Outcome.SUCCEEDED
        elif Outcome.CANCELLED in outcomes:
            outcome = Outcome.CANCELLED
        elif Outcome.EXPIRED in outcomes:
            outcome = Outcome.EXPIRED
        elif all(o is Outcome.FAILED for o in outcomes):
            outcome = Outcome.FAILED
        else:
            outcome = Outcome.PARTIAL
    summary = "parts: " + ", ".join(
        f"{by_state[s]} {s.value}" for s in STATE_ORDER if by_state.get(s)
    )
    if len(summary) > REMOTE_STATUS_WIDTH:
        summary = summary[: REMOTE_STATUS_WIDTH - 3] + "..."
    return ParentAggregate(
        state=state,
        outcome=outcome,
        total=sum(part.total for part in parts),
        completed=sum(part.completed for part in parts),
        succeeded=sum(part.succeeded for part in parts),
        failed=sum(part.failed for part in parts),
        remote_status=summary,
    )
