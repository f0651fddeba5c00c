"""A provider whose remote side is a model the state-machine test drives and inspects.

It stands in for the HTTP provider (the daemon's loops and the ledger are what is under test):
remote jobs keep a timeline of snapshots, so a list or get can answer as of some seconds ago
(a lagging replica: out-of-order and repeated statuses, jobs not visible yet), and each kind of
call can be told to fail in the ways a real API fails, or to "crash" the daemon (a
BaseException nothing catches, like ``kill -9``) before or after the remote side acted.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

import attrs

from orchestrator.clock import Clock
from orchestrator.errors import CapacityRefused, PermanentProviderError, TransientProviderError
from orchestrator.model import CLIENT_TOKEN_KEY, RemotePhase
from orchestrator.providers.base import DownloadedFile, Provider, RemoteJob, UploadedFile
from orchestrator.providers.mistral import STATUS_PHASES


class Crash(BaseException):
    """The daemon process dies here: nothing in the daemon catches a BaseException."""


MODES = ("ok", "transient", "permanent", "crash_before", "crash_after", "lost", "capacity")
"""What the next call of a kind does. ``lost``: the remote side acted, the answer was lost (a
transient error); ``crash_after``: the remote side acted, then the daemon died."""

ACTIVE = frozenset({"QUEUED", "RUNNING", "CANCELLATION_REQUESTED"})


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


@attrs.define
class Remote:
    """One remote batch job: its requests and its timeline."""

    id: str
    token: str
    created_at: float
    custom_ids: list[str]
    timeline: list[Snapshot]

    @property
    def now(self) -> Snapshot:
        """The latest snapshot (the truth)."""
        return self.timeline[-1]

    def as_of(self, when: float) -> Snapshot | None:
        """The snapshot a replica lagging to ``when`` would serve (None: not created yet)."""
        seen = [s for s in self.timeline if s.at <= when]
        return seen[-1] if seen else None

    def processed(self, completed: int) -> tuple[list[str], list[str]]:
        """(succeeded, failed) custom_ids among the first ``completed`` requests."""
        done = self.custom_ids[:completed]
        return [c for c in done if not fails(c)], [c for c in done if fails(c)]

    @property
    def pending(self) -> int:
        """What this job holds against the provider's budget right now."""
        snap = self.now
        if snap.status not in ACTIVE:
            return 0
        return len(self.custom_ids) - snap.completed


class ScriptedProvider(Provider):
    """The remote side of one workspace, in memory, on the test's clock."""

    name = "scripted"

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.remotes: dict[str, Remote] = {}
        self.files: dict[str, bytes] = {}
        self.modes: dict[str, str] = {}
        """Call kind -> what its next call does (consumed by that call)."""
        self.lag = 0.0
        """Seconds behind the truth that lists and gets answer from."""
        self.max_pending = 0
        self.calls: dict[str, int] = {}
        self._ids = itertools.count(1)

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
        ends (``fail``: FAILED; ``expire``: TIMEOUT_EXCEEDED; ``cancel``: a requested
        cancellation completes)."""
        snap = remote.now
        if snap.status not in ACTIVE:
            return
        total = len(remote.custom_ids)
        if snap.status == "CANCELLATION_REQUESTED":
            if end == "cancel":
                self._finish(remote, "CANCELLED", snap.completed)
            return
        if end == "expire":
            self._finish(remote, "TIMEOUT_EXCEEDED", snap.completed)
            return
        if end == "fail":
            self._finish(remote, "FAILED", snap.completed)
            return
        if snap.status == "QUEUED":
            self._add(remote, "RUNNING", total, 0)
            return
        completed = min(total, snap.completed + amount)
        if completed == total:
            succeeded, _ = remote.processed(total)
            self._finish(remote, "SUCCESS" if succeeded else "FAILED", total)
        else:
            self._add(remote, "RUNNING", total, completed)

    def finish_all(self) -> None:
        """Bring every remote job to its end (the drain at the end of an example)."""
        for remote in self.remotes.values():
            while remote.now.status in ACTIVE:
                end = "cancel" if remote.now.status == "CANCELLATION_REQUESTED" else None
                self.step(remote, amount=len(remote.custom_ids), end=end)

    def _add(self, remote: Remote, status: str, total: int, completed: int, **files: str) -> None:
        remote.timeline.append(
            Snapshot(at=self.clock.now(), status=status, total=total, completed=completed, **files)
        )

    def _finish(self, remote: Remote, status: str, completed: int) -> None:
        succeeded, failed = remote.processed(completed)
        files = {}
        for kind, ids in (("output_file", succeeded), ("error_file", failed)):
            if ids:
                file_id = f"file-{next(self._ids)}"
                self.files[file_id] = b"".join(
                    json.dumps({"custom_id": c, "remote": remote.id}).encode() + b"\n" for c in ids
                )
                files[kind] = file_id
        total = len(remote.custom_ids) if status != "QUEUED" else 0
        self._add(remote, status, total, completed, **files)

    def _mode(self, kind: str) -> str:
        self.calls[kind] = self.calls.get(kind, 0) + 1
        return self.modes.pop(kind, "ok")

    def _job(self, remote: Remote, snap: Snapshot) -> RemoteJob:
        succeeded, failed = remote.processed(snap.completed)
        return RemoteJob(
            id=remote.id,
            status=snap.status,
            phase=STATUS_PHASES[snap.status],
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

    async def upload_input(
        self, paths: Sequence[Path], *, endpoint: str, model: str, filename: str
    ) -> UploadedFile:
        (path,) = paths
        file_id = await self.upload_file(path, filename=filename)
        data = self.files[file_id]
        return UploadedFile(id=file_id, bytes=len(data), sha256=hashlib.sha256(data).hexdigest())

    async def upload_file(self, path: Path, *, filename: str | None = None) -> str:
        mode = self._mode("upload")
        if mode in ("transient", "lost", "capacity"):
            if mode == "lost":
                self.files[f"file-{next(self._ids)}"] = path.read_bytes()  # an orphan upload
            raise TransientProviderError("scripted upload: HTTP 503")
        if mode == "permanent":
            raise PermanentProviderError("scripted upload: HTTP 400: file refused")
        if mode == "crash_before":
            raise Crash("crash before upload")
        file_id = f"file-{next(self._ids)}"
        self.files[file_id] = path.read_bytes()
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
    ) -> RemoteJob:
        mode = self._mode("create")
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
            timeline=[Snapshot(at=self.clock.now(), status="QUEUED", total=0, completed=0)],
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
        for remote in list(self.remotes.values()):
            snap = remote.as_of(when)
            if snap is None or (active_only and snap.status not in ACTIVE):
                continue
            if metadata and any(
                {CLIENT_TOKEN_KEY: remote.token}.get(k) != v for k, v in metadata.items()
            ):
                continue
            yield self._job(remote, snap)

    async def cancel_job(self, remote_id: str) -> RemoteJob:
        mode = self._mode("cancel")
        if mode in ("transient", "lost", "capacity", "permanent"):
            raise TransientProviderError("scripted cancel: HTTP 503")
        if mode.startswith("crash"):
            raise Crash("crash during cancel")
        remote = self.remotes[remote_id]
        if remote.now.status in ("QUEUED", "RUNNING"):
            self._add(remote, "CANCELLATION_REQUESTED", remote.now.total, remote.now.completed)
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

    async def aclose(self) -> None:
        return None


def phase_of(status: str) -> RemotePhase:
    """The phase of a scripted status."""
    return STATUS_PHASES[status]
