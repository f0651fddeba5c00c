"""A provider whose remote side is a model the state-machine test drives and inspects.

It stands in for the HTTP provider (the daemon's loops and the ledger are what is under test):
remote jobs keep a timeline of snapshots, so a list or get can answer as of some seconds ago
(a lagging replica: out-of-order and repeated statuses, jobs not visible yet), and each kind of
call can be told to fail in the ways a real API fails, or to "crash" the daemon (a
BaseException nothing catches, like ``kill -9``) before or after the remote side acted.

It speaks one :class:`Dialect`: Mistral's (upper-case statuses, lists filtered on the server)
or OpenAI's (``validating`` ... ``completed``, every line failed still ``completed`` with no
output file, expired requests in the error file, lists newest first filtered client-side and
stopped at ``created_after``, token-limit refusals as batches failed at validation). The
statuses come from each adapter's own status table, and OpenAI's batches are read by the
adapter's own parser.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import attrs

from orchestrator.clock import Clock
from orchestrator.errors import (
    CapacityRefused,
    ForeignResults,
    PermanentProviderError,
    TransientProviderError,
)
from orchestrator.model import CLIENT_TOKEN_KEY, TOKEN_LIMIT_CODE, RemotePhase
from orchestrator.providers import anthropic, mistral, openai
from orchestrator.providers.base import DownloadedFile, Provider, RemoteJob, UploadedFile


class Crash(BaseException):
    """The daemon process dies here: nothing in the daemon catches a BaseException."""


MODES = ("ok", "transient", "permanent", "crash_before", "crash_after", "lost", "capacity")
"""What the next call of a kind does. ``lost``: the remote side acted, the answer was lost (a
transient error); ``crash_after``: the remote side acted, then the daemon died."""

CREATE_MODES = (*MODES, "token_limit")
"""A create can also be ``token_limit``: the create answers like ``ok``, then the batch fails
at validation for the enqueued-token limit (OpenAI, §5, §7), nothing processed. A dialect that
refuses capacity at the create (Mistral) answers it as ``capacity``."""

TOKEN_LIMIT_MESSAGE = (
    "Enqueued token limit reached for {model} in organization org-x. Limit: 1,000 enqueued "
    "tokens. Please try again once some in_progress batches have been completed."
)
"""OpenAI's wording of the refusal (``shared/api/openai-batch.md`` §7, openai-python#2084)."""


@attrs.frozen(kw_only=True)
class Dialect:
    """The raw statuses and the listing of one Batch API, as the scripted remote side speaks it.

    ``phases`` is the adapter's own status table: every status named here must be in it with
    the phase it stands for, and every status in it must be named here, so the script and the
    adapter cannot drift apart.
    """

    name: str
    phases: Mapping[str, RemotePhase]
    lists_by_status: bool
    """True: ``list_jobs`` filters on the server (active, metadata) in creation order. False:
    newest first, filtered client-side, paging stopped at ``created_after`` (the adapter's
    :meth:`~orchestrator.providers.openai.OpenAIProvider.list_jobs`)."""
    validating: str
    running: str
    finalizing: str | None
    """A status between the last request processed and the end (None: there is none)."""
    succeeded: str
    all_failed: str
    """The end of a job whose every request failed (OpenAI: ``completed``, no output file)."""
    failed: str
    expired: str
    cancelling: str
    cancelled: str
    refuses_at_validation: bool
    """A token-limit refusal is a batch failed at validation (OpenAI), not a refused create."""
    expired_lines_in_error_file: bool
    """An expired job writes each request that never ran to its error file (``batch_expired``,
    not counted as failed: OpenAI's guide, "Batch expiration")."""
    metadata: bool = True
    """Whether a batch carries the orchestrator's token. False (Anthropic): the daemon finds a
    lost create by size and time and confirms it by the results' custom_ids."""
    every_request_in_results: bool = False
    """Every request of an ended batch has a result line, the unprocessed ones as errors
    (Anthropic: ``canceled``, ``expired`` or ``errored``), counted as failed."""

    def __attrs_post_init__(self) -> None:
        expected = {
            self.validating: RemotePhase.VALIDATING,
            self.running: RemotePhase.RUNNING,
            self.succeeded: RemotePhase.SUCCEEDED,
            self.all_failed: RemotePhase.SUCCEEDED
            if self.all_failed == self.succeeded
            else RemotePhase.FAILED,
            self.failed: RemotePhase.FAILED,
            self.expired: RemotePhase.EXPIRED,
            self.cancelling: RemotePhase.CANCELLING,
            self.cancelled: RemotePhase.CANCELLED,
        }
        if self.finalizing is not None:
            expected[self.finalizing] = RemotePhase.RUNNING
        for status, phase in expected.items():
            assert self.phases.get(status) is phase, (self.name, status, self.phases.get(status))
        assert set(expected) == set(self.phases), (self.name, set(self.phases) - set(expected))

    def active(self, status: str) -> bool:
        """Whether a job in ``status`` may still change (the adapter's phase says)."""
        return not self.phases[status].terminal


MISTRAL = Dialect(
    name="mistral",
    phases=mistral.STATUS_PHASES,
    lists_by_status=True,
    validating="QUEUED",
    running="RUNNING",
    finalizing=None,
    succeeded="SUCCESS",
    all_failed="FAILED",
    failed="FAILED",
    expired="TIMEOUT_EXCEEDED",
    cancelling="CANCELLATION_REQUESTED",
    cancelled="CANCELLED",
    refuses_at_validation=False,
    expired_lines_in_error_file=False,
)
OPENAI = Dialect(
    name="openai",
    phases=openai.STATUS_PHASES,
    lists_by_status=False,
    validating="validating",
    running="in_progress",
    finalizing="finalizing",
    succeeded="completed",
    all_failed="completed",
    failed="failed",
    expired="expired",
    cancelling="cancelling",
    cancelled="cancelled",
    refuses_at_validation=True,
    expired_lines_in_error_file=True,
)
ANTHROPIC_LABELS: Mapping[str, RemotePhase] = {
    "queued": RemotePhase.VALIDATING,
    "in_progress": RemotePhase.RUNNING,
    "canceling": RemotePhase.CANCELLING,
    "ended": RemotePhase.SUCCEEDED,
    "ended:all-errored": RemotePhase.FAILED,
    "ended:expired": RemotePhase.EXPIRED,
    "ended:canceled": RemotePhase.CANCELLED,
}
"""The script's labels for Anthropic (one raw ``ended`` stands for four ends, told apart by
the counts): ``queued`` is served as ``in_progress``, every ``ended:…`` as ``ended``, and the
adapter's own reading (:func:`orchestrator.providers.anthropic.parse_job`) must give each
label's phase for the batches the script makes."""
ANTHROPIC = Dialect(
    name="anthropic",
    phases=ANTHROPIC_LABELS,
    lists_by_status=False,
    validating="queued",
    running="in_progress",
    finalizing=None,
    succeeded="ended",
    all_failed="ended:all-errored",
    failed="ended:all-errored",
    expired="ended:expired",
    cancelling="canceling",
    cancelled="ended:canceled",
    refuses_at_validation=False,
    expired_lines_in_error_file=True,
    metadata=False,
    every_request_in_results=True,
)
DIALECTS = {dialect.name: dialect for dialect in (MISTRAL, OPENAI, ANTHROPIC)}


def fails(custom_id: str) -> bool:
    """Whether the remote side fails this request (about one in five, by a hash)."""
    return hashlib.sha256(custom_id.encode()).digest()[0] % 5 == 0


@attrs.define
class Snapshot:
    """A remote job as it stood from ``at`` on."""

    at: float
    status: str
    total: int
    completed: int
    output_file: str | None = None
    error_file: str | None = None
    errors: tuple[str, ...] = ()
    """Job-level errors as the adapter reads them (``code: message``)."""
    codes: tuple[str, ...] = ()
    """Their raw codes (``errors.data[].code``)."""


@attrs.define
class Remote:
    """One remote batch job: its requests and its timeline."""

    id: str
    token: str
    created_at: float
    custom_ids: list[str]
    timeline: list[Snapshot]
    dialect: Dialect
    model: str = ""
    inputs: tuple[str, ...] = ()
    """The file ids it was created from (what the daemon's intent names)."""
    cancel_requested: bool = False
    refused: bool = False
    """Created in ``token_limit`` mode: validation ends in a token-limit failure (OpenAI)."""

    @property
    def now(self) -> Snapshot:
        """The latest snapshot (the truth)."""
        return self.timeline[-1]

    @property
    def active(self) -> bool:
        """Whether it may still change (the truth)."""
        return self.dialect.active(self.now.status)

    @property
    def refusal_happened(self) -> bool:
        """A refused job whose validation has ended in the token-limit failure (the truth)."""
        return self.refused and TOKEN_LIMIT_CODE in self.now.codes

    def as_of(self, when: float) -> Snapshot | None:
        """The snapshot a replica lagging to ``when`` would serve (None: not created yet)."""
        seen = [s for s in self.timeline if s.at <= when]
        return seen[-1] if seen else None

    def processed(self, completed: int) -> tuple[list[str], list[str]]:
        """(succeeded, failed) custom_ids among the first ``completed`` requests."""
        done = self.custom_ids[:completed]
        return [c for c in done if not fails(c)], [c for c in done if fails(c)]

    def result_ids(self, snap: Snapshot) -> tuple[list[str], list[str]]:
        """The custom_ids of the output and the error file a job ended as ``snap`` has:
        the processed requests and, for an expired job of a dialect that writes them, the
        requests that never ran (after the failed ones)."""
        succeeded, failed = self.processed(snap.completed)
        ended = not self.dialect.active(snap.status)
        if (snap.status == self.dialect.expired and self.dialect.expired_lines_in_error_file) or (
            ended and self.dialect.every_request_in_results
        ):
            failed = failed + self.custom_ids[snap.completed :]
        return succeeded, failed

    @property
    def pending(self) -> int:
        """What this job holds against the provider's budget right now."""
        if not self.active:
            return 0
        return len(self.custom_ids) - self.now.completed


class ScriptedProvider(Provider):
    """The remote side of one workspace, in memory, on the test's clock, in ``dialect``."""

    name = "scripted"

    def __init__(self, clock: Clock, dialect: Dialect) -> None:
        self.clock = clock
        self.dialect = dialect
        self.remotes: dict[str, Remote] = {}
        self.files: dict[str, bytes] = {}
        self.modes: dict[str, str] = {}
        """Call kind -> what its next call does (consumed by that call)."""
        self.lag = 0.0
        """Seconds behind the truth that lists and gets answer from."""
        self.max_pending = 0
        self.calls: dict[str, int] = {}
        self.creates: Counter[str] = Counter()
        """Create calls by what they did (``token_limit`` only where the dialect has it)."""
        self._ids = itertools.count(1)

    @property
    def lists_by_status(self) -> bool:  # type: ignore[override]  # the port's ClassVar, per dialect
        """As the dialect lists (see :attr:`Dialect.lists_by_status`)."""
        return self.dialect.lists_by_status

    @property
    def finds_by_metadata(self) -> bool:  # type: ignore[override]  # the port's, per dialect
        """As the dialect's batches carry metadata (see :attr:`Dialect.metadata`)."""
        return self.dialect.metadata

    # The test's side -------------------------------------------------------------------------

    def behave(self) -> None:
        """Every call succeeds, and answers are fresh."""
        self.modes.clear()
        self.lag = 0.0

    def pending(self) -> int:
        """Pending requests over every remote job, now."""
        return sum(remote.pending for remote in self.remotes.values())

    def by_token(self, token: str) -> list[Remote]:
        """Remote jobs created with ``token`` in their metadata."""
        return [r for r in self.remotes.values() if r.token == token]

    def step(self, remote: Remote, *, amount: int, end: str | None) -> None:
        """Move a remote job on: validation ends, ``amount`` requests are processed, or it
        ends (``fail``: failed; ``expire``: expired, keeping what was processed; ``cancel``:
        a requested cancellation completes). A refused job's validation ends in the
        token-limit failure whatever else was drawn (bar a cancellation under way). Where
        the dialect has a finalizing status, an even ``amount`` that processes the last
        request passes through it."""
        d = self.dialect
        snap = remote.now
        if not remote.active:
            return
        total = len(remote.custom_ids)
        if snap.status == d.cancelling:
            if end == "cancel":
                self._finish(remote, d.cancelled, snap.completed)
            return
        if remote.refused and snap.status == d.validating:
            message = TOKEN_LIMIT_MESSAGE.format(model=remote.model)
            self._finish(
                remote,
                d.failed,
                0,
                total=0,
                errors=(f"{TOKEN_LIMIT_CODE}: {message}",),
                codes=(TOKEN_LIMIT_CODE,),
            )
            return
        if end == "expire":
            self._finish(remote, d.expired, snap.completed)
            return
        if end == "fail":
            self._finish(remote, d.failed, snap.completed)
            return
        if snap.status == d.validating:
            self._add(remote, d.running, total, 0)
            return
        if snap.status == d.finalizing:
            self._finish_processed(remote)
            return
        completed = min(total, snap.completed + amount)
        if completed < total:
            self._add(remote, d.running, total, completed)
        elif d.finalizing is not None and amount % 2 == 0:
            self._add(remote, d.finalizing, total, total)
        else:
            self._finish_processed(remote)

    def finish_all(self) -> None:
        """Bring every remote job to its end (the drain at the end of an example)."""
        for remote in self.remotes.values():
            while remote.active:
                end = "cancel" if remote.now.status == self.dialect.cancelling else None
                self.step(remote, amount=len(remote.custom_ids), end=end)

    def _add(self, remote: Remote, status: str, total: int, completed: int) -> None:
        remote.timeline.append(
            Snapshot(at=self.clock.now(), status=status, total=total, completed=completed)
        )

    def _finish_processed(self, remote: Remote) -> None:
        """Every request was processed: the job ends as the dialect ends such a job."""
        total = len(remote.custom_ids)
        succeeded, _ = remote.processed(total)
        status = self.dialect.succeeded if succeeded else self.dialect.all_failed
        self._finish(remote, status, total)

    def _finish(
        self,
        remote: Remote,
        status: str,
        completed: int,
        *,
        total: int | None = None,
        errors: tuple[str, ...] = (),
        codes: tuple[str, ...] = (),
    ) -> None:
        snap = Snapshot(
            at=self.clock.now(),
            status=status,
            total=len(remote.custom_ids) if total is None else total,
            completed=completed,
            errors=errors,
            codes=codes,
        )
        succeeded, failed = remote.result_ids(snap)
        processed = set(remote.custom_ids[:completed])
        for kind, ids in (("output_file", succeeded), ("error_file", failed)):
            if ids:
                file_id = f"file-{next(self._ids)}"
                self.files[file_id] = b"".join(
                    json.dumps(
                        {"custom_id": c, "remote": remote.id}
                        if c in processed
                        else {"custom_id": c, "remote": remote.id, "error": "batch_expired"}
                    ).encode()
                    + b"\n"
                    for c in ids
                )
                setattr(snap, kind, file_id)
        remote.timeline.append(snap)

    def _mode(self, kind: str) -> str:
        self.calls[kind] = self.calls.get(kind, 0) + 1
        return self.modes.pop(kind, "ok")

    def _anthropic_job(self, remote: Remote, snap: Snapshot) -> RemoteJob:
        """The MessageBatch, read by the adapter's own parser (counts frozen until the end)."""
        total = len(remote.custom_ids)
        label = snap.status
        counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        if self.dialect.active(label):
            counts["processing"] = total
        else:
            succeeded, failed = remote.processed(snap.completed)
            rest = total - snap.completed
            counts["succeeded"], counts["errored"] = len(succeeded), len(failed)
            kind = {"ended:expired": "expired", "ended:canceled": "canceled"}.get(label, "errored")
            counts[kind] += rest
        created = datetime.fromtimestamp(remote.created_at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        batch = {
            "id": remote.id,
            "type": "message_batch",
            "processing_status": "ended" if label.startswith("ended") else
            "canceling" if label == "canceling" else "in_progress",
            "request_counts": counts,
            "created_at": created,
            "ended_at": None if self.dialect.active(label) else created,
            "expires_at": created,
            "archived_at": None,
            "cancel_initiated_at": created if remote.cancel_requested else None,
            "results_url": None if self.dialect.active(label) else f"https://x/{remote.id}",
        }  # fmt: skip
        job = anthropic.parse_job(batch)
        return attrs.evolve(job, output_file=snap.output_file, error_file=snap.error_file)

    def _job(self, remote: Remote, snap: Snapshot) -> RemoteJob:
        succeeded, failed = remote.processed(snap.completed)
        if self.dialect is ANTHROPIC:
            return self._anthropic_job(remote, snap)
        if self.dialect is OPENAI:
            # The Batch object, read by the adapter's own parser: its status table, its
            # request_counts (completed = successes) and its errors.data[] reading.
            batch = {
                "id": remote.id,
                "object": "batch",
                "endpoint": "/v1/chat/completions",
                "input_file_id": "file-input",
                "completion_window": "24h",
                "status": snap.status,
                "created_at": int(remote.created_at),
                "request_counts": {
                    "total": snap.total,
                    "completed": len(succeeded),
                    "failed": len(failed),
                },
                "output_file_id": snap.output_file,
                "error_file_id": snap.error_file,
                "metadata": {CLIENT_TOKEN_KEY: remote.token},
                "errors": {
                    "object": "list",
                    "data": [
                        {"code": code, "message": error.removeprefix(f"{code}: "), "line": None}
                        for code, error in zip(snap.codes, snap.errors, strict=True)
                    ],
                }
                if snap.codes
                else None,
            }
            return openai.parse_job(batch)
        return RemoteJob(
            id=remote.id,
            status=snap.status,
            phase=self.dialect.phases[snap.status],
            total=snap.total,
            completed=snap.completed,
            succeeded=len(succeeded),
            failed=len(failed),
            output_file=snap.output_file,
            error_file=snap.error_file,
            metadata={CLIENT_TOKEN_KEY: remote.token},
            created_at=int(remote.created_at),
        )

    # The Provider port -----------------------------------------------------------------------

    def input_groups(self, inputs: Sequence[Path]) -> list[tuple[Path, ...]]:
        if self.dialect.lists_by_status:
            return super().input_groups(inputs)
        return [tuple(Path(path) for path in inputs)] if inputs else []  # OpenAI: one file

    async def upload_input(
        self, paths: Sequence[Path], *, endpoint: str, model: str, filename: str
    ) -> UploadedFile:
        data = b"".join(Path(path).read_bytes() for path in paths)
        file_id = self._upload(data)
        return UploadedFile(id=file_id, bytes=len(data), sha256=hashlib.sha256(data).hexdigest())

    async def upload_file(self, path: Path, *, filename: str | None = None) -> str:
        return self._upload(path.read_bytes())

    def _upload(self, data: bytes) -> str:
        mode = self._mode("upload")
        if mode in ("transient", "lost", "capacity"):
            if mode == "lost":
                self.files[f"file-{next(self._ids)}"] = data  # an orphan upload
            raise TransientProviderError("scripted upload: HTTP 503")
        if mode == "permanent":
            raise PermanentProviderError("scripted upload: HTTP 400: file refused")
        if mode == "crash_before":
            raise Crash("crash before upload")
        file_id = f"file-{next(self._ids)}"
        self.files[file_id] = data
        if mode == "crash_after":
            raise Crash("crash after upload")
        return file_id

    async def create_job(
        self,
        *,
        input_file_ids: Sequence[str],
        model: str,
        endpoint: str,
        metadata: Mapping[str, str],
        timeout_hours: int,
        inputs: Sequence[Path] = (),
    ) -> RemoteJob:
        mode = self._mode("create")
        if mode == "token_limit" and not self.dialect.refuses_at_validation:
            mode = "capacity"  # Mistral refuses at the create: the same rule set, its wire
        self.creates[mode] += 1
        if mode == "transient":
            raise TransientProviderError("scripted create: HTTP 502")
        if mode == "permanent":
            raise PermanentProviderError("scripted create: HTTP 422: bad model")
        if mode == "capacity":
            raise CapacityRefused("scripted create: pending requests limit exceeded")
        if mode == "crash_before":
            raise Crash("crash before create")
        custom_ids = [
            json.loads(line)["custom_id"]
            for file_id in input_file_ids
            for line in self.files[file_id].splitlines()
            if line.strip()
        ]
        remote = Remote(
            id=f"remote-{next(self._ids)}",
            token=metadata[CLIENT_TOKEN_KEY],
            created_at=self.clock.now(),
            custom_ids=custom_ids,
            timeline=[
                Snapshot(at=self.clock.now(), status=self.dialect.validating, total=0, completed=0)
            ],
            dialect=self.dialect,
            model=model,
            inputs=tuple(input_file_ids),
            refused=mode == "token_limit",
        )
        self.remotes[remote.id] = remote
        self.max_pending = max(self.max_pending, self.pending())
        if mode == "lost":
            raise TransientProviderError("scripted create: connection dropped after the create")
        if mode == "crash_after":
            raise Crash("crash after create")
        return self._job(remote, remote.now)

    async def get_job(self, remote_id: str) -> RemoteJob:
        mode = self._mode("get")
        if mode in ("transient", "lost", "capacity"):
            raise TransientProviderError("scripted get: HTTP 500")
        if mode.startswith("crash"):
            raise Crash("crash during get")
        remote = self.remotes.get(remote_id)
        snap = remote.as_of(self.clock.now() - self.lag) if remote else None
        if remote is None or snap is None or mode == "permanent":
            raise PermanentProviderError(f"scripted get: HTTP 404: job {remote_id} not found")
        return self._job(remote, snap)

    async def list_jobs(
        self,
        *,
        active_only: bool = False,
        metadata: Mapping[str, str] | None = None,
        page_size: int = 100,
        created_after: float | None = None,
    ) -> AsyncIterator[RemoteJob]:
        mode = self._mode("list")
        if mode in ("transient", "lost", "capacity", "permanent"):
            raise TransientProviderError("scripted list: HTTP 503")
        if mode.startswith("crash"):
            raise Crash("crash during list")
        when = self.clock.now() - self.lag
        if not self.dialect.lists_by_status:
            async for job in self._list_newest_first(
                when, active_only=active_only, metadata=metadata, created_after=created_after
            ):
                yield job
            return
        for remote in list(self.remotes.values()):
            snap = remote.as_of(when)
            if snap is None or (active_only and not self.dialect.active(snap.status)):
                continue
            if metadata and any(
                {CLIENT_TOKEN_KEY: remote.token}.get(k) != v for k, v in metadata.items()
            ):
                continue
            yield self._job(remote, snap)

    async def _list_newest_first(
        self,
        when: float,
        *,
        active_only: bool,
        metadata: Mapping[str, str] | None,
        created_after: float | None,
    ) -> AsyncIterator[RemoteJob]:
        """OpenAI's list as its adapter reads it: every batch newest first, no server filter;
        the adapter filters each job itself and stops once jobs are older than the horizon
        (``created_after``; for ``active_only``, no older than the completion window plus
        the adapter's slack)."""
        horizon = created_after
        if active_only:
            oldest_active = self.clock.now() - openai.COMPLETION_WINDOWS["24h"]
            oldest_active -= openai.ACTIVE_SLACK
            horizon = oldest_active if horizon is None else max(horizon, oldest_active)
        for remote in reversed(list(self.remotes.values())):
            snap = remote.as_of(when)
            if snap is None:
                continue  # not visible on this replica yet
            job = self._job(remote, snap)
            if horizon is not None and job.created_at < horizon:
                return  # newest first: every later job is older still
            if active_only and job.phase.terminal:
                continue
            if metadata and any(job.metadata.get(k) != v for k, v in metadata.items()):
                continue  # Anthropic's batches have none: a metadata filter matches nothing
            yield job

    async def cancel_job(self, remote_id: str) -> RemoteJob:
        mode = self._mode("cancel")
        if mode in ("transient", "lost", "capacity", "permanent"):
            raise TransientProviderError("scripted cancel: HTTP 503")
        if mode.startswith("crash"):
            raise Crash("crash during cancel")
        remote = self.remotes[remote_id]
        if remote.now.status in (self.dialect.validating, self.dialect.running):
            remote.cancel_requested = True
            self._add(remote, self.dialect.cancelling, remote.now.total, remote.now.completed)
        return self._job(remote, remote.now)

    async def download_file(
        self, file_id: str, dest: Path, *, writer: str | None = None
    ) -> DownloadedFile:
        mode = self._mode("download")
        if mode in ("transient", "lost", "capacity"):
            raise TransientProviderError("scripted download: connection reset")
        if mode == "permanent":
            raise PermanentProviderError(f"scripted download: HTTP 404: file {file_id}")
        data = self.files[file_id]
        part = dest.with_name(f"{dest.name}.{writer}.part" if writer else dest.name + ".part")
        if mode.startswith("crash"):
            part.write_bytes(data[: len(data) // 2])  # died mid-download: a half .part stays
            raise Crash("crash mid-download")
        part.write_bytes(data)
        part.replace(dest)
        return DownloadedFile(
            path=dest,
            bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            lines=data.count(b"\n"),
        )

    def _submitted_ids(self, submitted: Sequence[str]) -> set[str]:
        return {
            json.loads(line)["custom_id"]
            for file_id in submitted
            for line in self.files.get(file_id, b"").splitlines()
            if line.strip()
        }

    async def results_match(self, remote_id: str, submitted: Sequence[str]) -> bool:
        mode = self._mode("download")
        if mode in ("transient", "lost", "capacity", "permanent"):
            raise TransientProviderError("scripted results: connection reset")
        if mode.startswith("crash"):
            raise Crash("crash mid-results")
        return set(self.remotes[remote_id].custom_ids) == self._submitted_ids(submitted)

    async def download_results(
        self,
        remote_id: str,
        files: Mapping[str, str],
        dests: Mapping[str, Path],
        *,
        writer: str | None = None,
        submitted: Sequence[str] = (),
    ) -> dict[str, DownloadedFile]:
        if not self.dialect.metadata:
            remote = self.remotes[remote_id]
            if set(remote.custom_ids) != self._submitted_ids(submitted):
                raise ForeignResults(
                    f"scripted results of {remote_id} are not the job's", remote_id=remote_id
                )
        return await super().download_results(
            remote_id, files, dests, writer=writer, submitted=submitted
        )

    async def aclose(self) -> None:
        return None
