"""SqlLedger: the durable truth of every job; this package holds the only SQL in the project.

Every state change is a compare-and-set: ``UPDATE jobs ... WHERE id = :id AND state =
:expected``, with the event row in the same transaction. A lost race raises
:class:`StaleTransition`; it never overwrites. A replica's writes about a job it holds are
also fenced on its lease (:mod:`orchestrator.ledger.leases`). On SQLite, write transactions
start with ``BEGIN IMMEDIATE`` (see :mod:`orchestrator.ledger.engine`); on PostgreSQL, the few
read-then-write steps lock their row with ``SELECT ... FOR UPDATE``.

The class is assembled from parts: connections (``_base``), leases (``_leasing``), reads
(``_reads``) and, here, the writes; their SQL lives in modules of functions that run on the
caller's connection (``_newjobs``, ``_writes``, ``_bulk``, ``_files``, ``_queries``,
``leases``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from os import PathLike
from types import TracebackType
from typing import Any, Self, TypeVar, Unpack

import anyio
import structlog
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from orchestrator.clock import Clock, SystemClock
from orchestrator.errors import (
    DefinitionConflict,
    IllegalTransition,
    JobNotFound,
    LedgerNotMigrated,
)
from orchestrator.ledger import _newjobs, leases
from orchestrator.ledger._attempts import AttemptMethods
from orchestrator.ledger._bulk import BulkUpdate, update_many
from orchestrator.ledger._files import new_file_record, upsert_file
from orchestrator.ledger._newjobs import PartSpec, insert_job, insert_split_job, new_job_values
from orchestrator.ledger._queries import add_event, job_row
from orchestrator.ledger._reads import ReadMethods
from orchestrator.ledger._writes import cas_transition, cas_update, flag_cancel
from orchestrator.ledger.engine import create_engine, display_url, sqlite_path
from orchestrator.ledger.feed import FeedMethods
from orchestrator.ledger.leases import claim_changes
from orchestrator.ledger.lock import DAEMON_LOCK_KEY, DaemonLock, postgres_session_lock
from orchestrator.ledger.migrate import head_revision, revision_of
from orchestrator.ledger.outbox import OutboxMethods
from orchestrator.ledger.schema import jobs
from orchestrator.ledger.values import (
    FileKind,
    ResultFile,
    definition_differences,
    encode_changes,
    job_from_row,
)
from orchestrator.model import (
    Job,
    JobChanges,
    JobSpec,
    JobState,
    check_transition,
)
from orchestrator.usage import Usage

log = structlog.get_logger(__name__)

D = TypeVar("D", bound=leases.Decision)


class SqlLedger(AttemptMethods, ReadMethods, FeedMethods, OutboxMethods):
    """The job ledger on SQLite (one daemon per file) or PostgreSQL (several replicas).

    Open it with :meth:`connect`, close it with :meth:`close` or ``async with``. Every
    timestamp it writes comes from the injected clock.
    """

    @classmethod
    async def connect(cls, url: str, *, clock: Clock | None = None) -> SqlLedger:
        """Open the ledger at ``url`` (``sqlite:///path`` or ``postgresql://...``).

        Args:
            url: the ledger URL; plain URLs get an async driver.
            clock: where every timestamp comes from (default: the system clock).

        Raises:
            LedgerNotMigrated: the schema is not at the migration head (a SQLite file that
                does not exist is not created).
            ConfigError: the URL is not a SQLite or PostgreSQL URL.
            LedgerError: the database cannot be opened (the message says why).
        """
        head = head_revision()
        path = sqlite_path(url)
        if path is not None and not path.exists():
            raise LedgerNotMigrated(display_url(url), None, head)
        engine = create_engine(url)
        try:
            current = await revision_of(engine)
            if current != head:
                raise LedgerNotMigrated(display_url(url), current, head)
        except BaseException:
            await engine.dispose()
            raise
        log.debug("ledger.connected", url=display_url(url), revision=current)
        return cls(engine, url=url, clock=clock or SystemClock())

    @property
    def url(self) -> str:
        """The ledger URL with any password masked."""
        return display_url(self._url)

    async def close(self) -> None:
        """Release a held daemon lock and close every connection (idempotent)."""
        while self._locks:
            self._locks.pop().release()
        # Shielded: closing from a cancelled scope would otherwise drop connections unclosed.
        with anyio.CancelScope(shield=True):
            await self._engine.dispose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @asynccontextmanager
    async def daemon_lock(self) -> AsyncIterator[None]:
        """Hold the one-daemon lock of the ledger for the duration of the block.

        SQLite: an exclusive ``flock`` on ``<db file>.lock``, which the kernel releases when
        the process dies, however it dies. PostgreSQL: a session advisory lock on a connection
        held for the block, which the server releases when that connection drops (the daemon
        does not take it there: replicas share a PostgreSQL ledger through leases, design §8;
        it is for a tool that needs the ledger to itself). In-memory SQLite: a no-op.

        Raises:
            LedgerLocked: another daemon holds the lock; raised at once, without waiting.
        """
        if self._engine.dialect.name == "postgresql":
            async with postgres_session_lock(self._engine, DAEMON_LOCK_KEY, self.url):
                yield
            return
        path = sqlite_path(self._url)
        if path is None:
            yield
            return
        lock = DaemonLock.acquire(path)
        self._locks.append(lock)
        try:
            yield
        finally:
            lock.release()
            if lock in self._locks:
                self._locks.remove(lock)

    async def add_job(
        self,
        spec: JobSpec,
        *,
        definition_hash: str,
        request_count: int,
        state: JobState = JobState.QUEUED,
        error: str | None = None,
        now: float | None = None,
        prompt_tokens: int = 0,
        max_output_tokens: int = 0,
        uncapped_requests: int | None = None,
    ) -> tuple[Job, bool]:
        """Record a new job, or find the same definition already recorded.

        Args:
            spec: the job as defined.
            definition_hash: digest of the definition (inputs' contents, model, endpoint,
                metadata, timeout); equal hashes mean the same job.
            request_count: requests counted in the inputs at intake.
            state: ``queued``, or ``rejected`` (with ``error``) for a job refused at intake.
            error: why the job was rejected.
            now: creation time; the clock's time by default.
            prompt_tokens: the inputs' prompt-token estimate (what a token budget counts).
            max_output_tokens, uncapped_requests: Σ output caps its requests set; how many set none.

        Returns:
            ``(job, created)``: ``created`` is False when the name already held this
            definition, which is returned untouched.

        Raises:
            DefinitionConflict: the name holds another definition; ``differences`` names
                the fields that differ (``input contents`` when only the files changed).
            ValueError: ``state`` is not queued/rejected, a rejection has no error, or the
                request count or token estimate is negative.
        """
        if state not in (JobState.QUEUED, JobState.REJECTED):
            raise ValueError(f"a new job starts queued or rejected, not {state.value}")
        if state is JobState.REJECTED and not error:
            raise ValueError(f"job {spec.name!r}: a rejected job needs an error saying why")
        if request_count < 0 or prompt_tokens < 0:
            raise ValueError(f"job {spec.name!r}: request_count and prompt_tokens must be >= 0")
        at = self._clock.now() if now is None else now
        values = new_job_values(
            spec,
            definition_hash=definition_hash,
            request_count=request_count,
            state=state,
            error=error,
            at=at,
            prompt_tokens=prompt_tokens,
            max_output_tokens=max_output_tokens,
            uncapped_requests=uncapped_requests,
        )
        detail = "created" if state is JobState.QUEUED else "rejected at intake"
        return await self._insert_once(
            spec, definition_hash, lambda conn: insert_job(conn, values, detail=detail)
        )

    async def add_split_job(
        self,
        spec: JobSpec,
        *,
        definition_hash: str,
        request_count: int,
        parts: Sequence[PartSpec],
        now: float | None = None,
    ) -> tuple[Job, bool]:
        """Record a split job: its parent and every part, in one transaction.

        The parent holds the definition (``spec``, ``definition_hash``, the whole request
        count and the sum of the parts' prompt tokens) and ``part_count``; each part is an
        ordinary queued job named ``<name>/part-NNNN`` with the parent's workspace, model,
        endpoint, metadata, timeout and priority, its own inputs, request count, prompt tokens
        and client token, and ``parent_id``.
        Parts get increasing ids, so admission serves them in order.

        Returns:
            ``(parent, created)``, as :meth:`add_job`.

        Raises:
            DefinitionConflict: the name holds another definition (nothing is changed).
            ValueError: no parts, or a part without requests.
        """
        if not parts:
            raise ValueError(f"job {spec.name!r}: a split job needs at least one part")
        if any(part.request_count <= 0 for part in parts):
            raise ValueError(f"job {spec.name!r}: every part needs at least one request")
        at = self._clock.now() if now is None else now
        values = new_job_values(
            spec,
            definition_hash=definition_hash,
            request_count=request_count,
            state=JobState.QUEUED,
            error=None,
            at=at,
            **_newjobs.split_totals(parts),
        )
        values["part_count"] = len(parts)
        return await self._insert_once(
            spec,
            definition_hash,
            lambda conn: insert_split_job(
                conn, spec, values, definition_hash=definition_hash, parts=parts
            ),
            splits=True,
        )

    async def _insert_once(
        self,
        spec: JobSpec,
        definition_hash: str,
        insert: Callable[[AsyncConnection], Awaitable[tuple[Any, bool]]],
        *,
        splits: bool = False,
    ) -> tuple[Job, bool]:
        """Run ``insert`` (the new row, or the one already named so) in a write transaction.

        Returns ``(job, True)`` for a new row, ``(job, False)`` when the name already holds
        this definition.

        Raises:
            DefinitionConflict: the name holds another definition (nothing is changed).
        """
        try:
            async with self._write() as conn:
                existing, inserted = await insert(conn)
                if inserted:
                    job = job_from_row(existing)
                    # A job rejected at intake tells its subscribers, in this transaction.
                    events = await self._record_events(conn, job, None, self._clock.now())
            if inserted:
                self._outbox_written(events)
                return job, True
        except IntegrityError:
            # Another replica inserted the same name between our check and our insert.
            async with self._read() as conn:
                existing = await job_row(conn, jobs.c.name == spec.name)
            if existing is None:
                raise
        job = job_from_row(existing)
        if job.definition_hash == definition_hash:
            return job, False
        raise DefinitionConflict(spec.name, definition_differences(job, spec, splits=splits))

    async def transition(
        self,
        job_id: int,
        expected: JobState,
        target: JobState,
        *,
        detail: str | None = None,
        **changes: Unpack[JobChanges],
    ) -> Job:
        """Move a job from ``expected`` to ``target`` (compare-and-set) and apply ``changes``.

        One ``UPDATE ... WHERE id AND state = expected`` plus one event row, in one
        transaction. Sets ``updated_at``; ``finished_at`` on reaching ``done`` or
        ``rejected`` and ``submitted_at`` on reaching ``running``, unless given or already
        set.

        Args:
            job_id: the job.
            expected: the state the caller saw.
            target: the state to move to.
            detail: why, for the job's history.
            **changes: other fields to set (keys of :class:`JobChanges`).

        Returns:
            The job after the move.

        Raises:
            IllegalTransition: the transition table forbids ``expected -> target``.
            StaleTransition: the job is no longer in ``expected`` (nothing was changed).
            JobNotFound: no such job.
            ValueError: the job would reach ``done`` without an outcome.
            TypeError: a key of ``changes`` is not a job field the ledger changes.
        """
        # A split job's parent follows PARENT_TRANSITIONS, every other job TRANSITIONS; the
        # UPDATE only matches a job whose kind allows the move.
        kinds = []
        for parent in (False, True):
            try:
                check_transition(expected, target, parent=parent)
            except IllegalTransition:
                continue
            kinds.append(parent)
        if not kinds:
            check_transition(expected, target)  # raises
        now = self._clock.now()
        values = encode_changes(changes)
        values.update(claim_changes(self._owner, self._ttl, expected, target, now))
        async with self._write() as conn:
            job = await cas_transition(
                conn,
                job_id,
                expected,
                target,
                values,
                kinds=kinds,
                now=now,
                detail=detail,
                guard=self._fence(expected),
                owner=self._owner,
            )
            # The events this move causes commit with it, or not at all (the outbox).
            events = await self._record_events(conn, job, expected, now)
        self._outbox_written(events)
        log.debug(
            "ledger.transitioned",
            job=job.name,
            job_id=job_id,
            from_state=expected,
            to_state=target,
            detail=detail,
        )
        return job

    async def update(
        self,
        job_id: int,
        expected: JobState,
        *,
        detail: str | None = None,
        **changes: Unpack[JobChanges],
    ) -> Job:
        """Change fields of a job that is still in ``expected`` (compare-and-set).

        For progress counts, uploaded file ids, the remote status, backoff. An event is
        recorded when ``detail`` is given or the remote status changed.

        Returns:
            The job after the update.

        Raises:
            StaleTransition: the job is no longer in ``expected`` (nothing was changed).
            JobNotFound: no such job.
            TypeError: a key of ``changes`` is not a job field the ledger changes.
        """
        async with self._write() as conn:
            row = await cas_update(
                conn,
                job_id,
                expected,
                encode_changes(changes),
                now=self._clock.now(),
                detail=detail,
                owner=self._owner if self._fence(expected) is not None else None,
            )
        return job_from_row(row)

    async def update_many(self, updates: Sequence[tuple[int, JobState, JobChanges]]) -> BulkUpdate:
        """:meth:`update` for many jobs, in one transaction (the poller's progress writes).

        Each ``(job id, expected state, changes)`` is a compare-and-set of its own: a job no
        longer in its expected state (or gone) is skipped and reported, and the others are
        still written. An event is recorded for each job whose remote status changed.

        Returns:
            Which jobs were updated, which were stale, which do not exist.

        Raises:
            TypeError: a key of some ``changes`` is not a job field the ledger changes
                (nothing is written).
            ValueError: a job appears twice (nothing is written).
        """
        encoded = [
            (job_id, JobState(expected), encode_changes(changes))
            for job_id, expected, changes in updates
        ]
        if len({job_id for job_id, _, _ in encoded}) != len(encoded):
            raise ValueError("update_many: each job may appear once")
        if not encoded:
            return BulkUpdate()
        async with self._write() as conn:
            result = await update_many(
                conn, encoded, now=self._clock.now(), owner=self._owner if self._fenced else None
            )
        if result.stale or result.missing:
            log.debug("ledger.update_many_skipped", stale=result.stale, missing=result.missing)
        return result

    async def request_cancel(self, name: str) -> Job:
        """Flag the job named ``name`` for cancellation (the daemon acts on the flag).

        Idempotent; a job that is already done or rejected is returned unchanged. For a split
        job's parent, every unfinished part is flagged too, in the same transaction; a part
        alone flags only itself.

        Raises:
            JobNotFound: no such job.
        """
        async with self._write() as conn:
            row = await flag_cancel(conn, name, now=self._clock.now())
        if row is None:
            raise JobNotFound(name)
        return job_from_row(row)

    async def note(self, job_id: int, detail: str) -> None:
        """Add ``detail`` to the job's history without changing it (e.g. "rerun as NAME.2").

        Not fenced by leases: a note changes no field a replica's loop works on.

        Raises:
            JobNotFound: no such job.
        """
        async with self._write() as conn:
            row = await job_row(conn, jobs.c.id == job_id)
            if row is None:
                raise JobNotFound(job_id)
            await add_event(conn, row, JobState(row.state), at=self._clock.now(), detail=detail)

    async def record_file(
        self,
        job_id: int,
        kind: FileKind,
        *,
        path: str | PathLike[str],
        bytes: int,  # shadows the builtin: it is the field's name in the ledger and job.json
        sha256: str,
        lines: int,
        usage: Usage | None = None,
    ) -> ResultFile:
        """Record (or replace) the job's downloaded ``output`` or ``error`` file (and the
        tokens its lines reported, when read).

        Raises:
            JobNotFound: no such job.
            ValueError: unknown kind, negative size or line count, or a sha256 that is not
                64 lowercase hex digits.
        """
        at, size = self._clock.now(), bytes
        record = new_file_record(
            job_id, kind, path=path, bytes=size, sha256=sha256, lines=lines, at=at, usage=usage
        )
        try:
            async with self._write() as conn:
                if self._fenced:
                    await self._require_held(conn, job_id)
                await upsert_file(conn, record)
        except IntegrityError:
            await self.get(job_id)  # JobNotFound when the foreign key is what failed
            raise
        return record
