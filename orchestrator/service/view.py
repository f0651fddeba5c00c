"""What the service may read of a running daemon: a read-only view, not the daemon itself.

The service (health, readiness, metrics, and the coming dashboard and JSON API) depends on the
protocols here, and the daemon implements them (:mod:`orchestrator.daemon.view`); the
composition root hands the view to :class:`~orchestrator.service.http.HttpService`. So the
service never imports the daemon, and the daemon's loops stay free to change shape: what the
service reads is named here, once.

- :class:`DaemonView`: the clock, the config, the ledger's read API (:class:`LedgerReader`),
  the loops' heartbeats and longest idle waits, whether the daemon is stopping, and one
  :class:`WorkspaceView` per workspace.
- Snapshots are frozen values (:class:`WorkspaceStats`, :class:`PollStats`,
  :class:`Histogram`, :class:`Demand`), so a reader cannot change what the loops use.
- :class:`Durations` is the accumulator the poller records its cycle times in; it lives here
  because the view reports what it holds.

Growing the view is adding a member: a stream of job changes would be one more method on
:class:`DaemonView` (e.g. ``changes() -> AsyncIterator[JobChange]``), a job's detail page reads
:meth:`LedgerReader.get_by_name`, :meth:`~LedgerReader.events`, :meth:`~LedgerReader.files` and
:meth:`~LedgerReader.parts`. Nothing here writes: commands (cancel, submit) are not a view's.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

import attrs

from orchestrator.budget import in_flight_pending
from orchestrator.model import JobState

if TYPE_CHECKING:
    from orchestrator.clock import Clock
    from orchestrator.config import Config
    from orchestrator.ledger.values import JobEvent, ResultFile
    from orchestrator.model import Job
    from orchestrator.usage import Usage

CYCLE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
"""Seconds. A cycle is one list call per 100 active jobs plus ledger writes: usually well under
a second; the top buckets catch a slow or retrying provider."""


class LedgerReader(Protocol):
    """The ledger's read API (what :class:`~orchestrator.ledger.SqlLedger` offers for reading).

    Every method may raise the database's errors; callers that must answer anyway (a scrape,
    a probe) bound and catch them.
    """

    @property
    def owner(self) -> str | None:
        """This replica's id once the daemon took its jobs, else None."""
        ...

    @property
    def shared(self) -> bool:
        """True on PostgreSQL, where several replicas share the ledger."""
        ...

    async def list_jobs(
        self,
        states: Iterable[JobState] | None = None,
        workspace: str | None = None,
        *,
        held: bool = False,
    ) -> list[Job]:
        """Jobs in any of ``states`` (all by default), of one workspace or all.

        Ordered by priority (highest first), then id (oldest first). With ``held``, a job in
        a claimed state is listed only if this replica holds its lease.
        """
        ...

    async def parents(
        self,
        states: Iterable[JobState] | None = None,
        workspace: str | None = None,
        *,
        held: bool = False,
    ) -> list[Job]:
        """Split jobs' parents in any of ``states`` (all by default), oldest first."""
        ...

    async def parts(self, parent_id: int) -> list[Job]:
        """The parts of the split job ``parent_id``, in part order (empty for another job)."""
        ...

    async def attempts_of(self, job_id: int) -> list[Job]:
        """The retry attempts (2, 3, ...) of job ``job_id``, in order (empty: none)."""
        ...

    async def get(self, job_id: int) -> Job:
        """The job with id ``job_id``.

        Raises:
            JobNotFound: no such job.
        """
        ...

    async def get_by_name(self, name: str) -> Job:
        """The job named ``name``.

        Raises:
            JobNotFound: no such job.
        """
        ...

    async def files(self, job_id: int) -> list[ResultFile]:
        """The job's recorded result files, output first.

        Raises:
            JobNotFound: no such job.
        """
        ...

    async def events(self, job_id: int) -> list[JobEvent]:
        """The job's history, oldest first.

        Raises:
            JobNotFound: no such job.
        """
        ...

    async def counts_by_state(self) -> dict[tuple[str, str | None], int]:
        """How many jobs are in each ``(state, outcome)``; absent pairs have none."""
        ...

    async def held_count(self) -> int:
        """In-flight jobs this replica holds a live lease on."""
        ...

    # The JSON API's reads (orchestrator.ledger.feed) ----------------------------------

    async def jobs_page(
        self,
        *,
        states: Iterable[JobState] | None = None,
        workspace: str | None = None,
        parts: bool = False,
        after: tuple[int, int] | None = None,
        limit: int = 500,
    ) -> tuple[list[Job], int]:
        """One page of jobs in admission order after ``after`` (``(priority, id)`` of the
        previous page's last job), and how many match the filters in all pages."""
        ...

    async def jobs_by_ids(self, ids: Iterable[int]) -> dict[int, Job]:
        """The jobs with these ids, by id (unknown ids are absent)."""
        ...

    async def events_after(self, after: int, *, limit: int = 500) -> list[JobEvent]:
        """Events of every job with an id above ``after``, in id order."""
        ...

    async def recent_events(self, count: int) -> list[JobEvent]:
        """The last ``count`` events of every job, oldest first."""
        ...

    async def changed_since(self, since: float, *, limit: int = 1000) -> list[Job]:
        """Jobs updated at or after ``since``."""
        ...

    async def fingerprint(self) -> tuple[int, float, int]:
        """``(jobs, latest updated_at, latest event id)``: it changes whenever a job does."""
        ...

    async def usage_totals(self) -> dict[tuple[str, str], Usage]:
        """Tokens the jobs' own results reported, per ``(workspace, model)`` (only grows)."""
        ...

    async def delivery_counts(self) -> dict[tuple[str, str], int]:
        """Webhook and hook deliveries per ``(endpoint, state)``; absent pairs have none."""
        ...


@attrs.frozen(kw_only=True)
class Histogram:
    """A snapshot of :class:`Durations`, in the form Prometheus reports."""

    buckets: tuple[tuple[str, float], ...]
    """``(le, count of observations <= le)`` pairs, ending with ``+Inf``."""
    sum: float
    count: int


@attrs.frozen(kw_only=True)
class PollStats:
    """A workspace's poll loop, as it counts itself."""

    cycles: int
    """Poll cycles that asked the provider."""
    consecutive_failures: int
    """Poll cycles in a row that failed (0 after a success)."""
    durations: Histogram
    """How long those cycles took."""


@attrs.frozen(kw_only=True)
class DeliveryStats:
    """What one webhook or hook endpoint's delivery task counted since the daemon started."""

    delivered: int
    """Deliveries that reached the endpoint (a 2xx answer, a hook that exited 0)."""
    failed: int
    """Attempts that did not (each retry counts)."""
    dead: int
    """Deliveries given up after the endpoint's max_age."""
    latency: Histogram
    """How long attempts took."""


@attrs.frozen(kw_only=True)
class WorkspaceStats:
    """The live numbers of one workspace that the ledger does not hold."""

    external_pending: int
    """Pending requests of unfinished remote jobs this ledger did not create (last poll)."""
    api_calls: Mapping[tuple[str, int | str], int]
    """Provider API calls per ``(operation, HTTP status or transport error class)``."""
    poll: PollStats | None
    """None until the workspace's poll loop has started."""
    spend_used: float | None = None
    """With a spend limit: this month's actual plus in-flight estimated cost, as the last
    admission pass counted it (None: the workspace has no spend limit)."""


@attrs.frozen(kw_only=True)
class Demand:
    """What one workspace's jobs ask of its budget, computed from the ledger's jobs."""

    pending: int = 0
    """Σpending of the in-flight jobs: what they hold against the pending budget."""
    queued_jobs: int = 0
    """Jobs waiting for room in the budget (a split job's parts, not the parent)."""
    queued_requests: int = 0
    """Requests of those jobs."""


class WorkspaceView(Protocol):
    """One workspace of the daemon: its budget settings and live numbers."""

    @property
    def name(self) -> str:
        """The workspace's name (the key of ``[workspaces.<name>]``)."""
        ...

    @property
    def pending_budget(self) -> int:
        """The workspace's pending-request budget (always > 0)."""
        ...

    @property
    def count_external(self) -> bool:
        """Whether remote jobs this ledger did not create count against the budget."""
        ...

    def stats(self) -> WorkspaceStats:
        """The live numbers, now."""
        ...


class DaemonView(Protocol):
    """A running daemon as the service sees it: read-only, never the daemon's own objects."""

    @property
    def clock(self) -> Clock:
        """The daemon's clock (the one its heartbeats are stamped with)."""
        ...

    @property
    def config(self) -> Config:
        """The configuration the daemon runs with."""
        ...

    @property
    def ledger(self) -> LedgerReader:
        """The daemon's ledger, for reading."""
        ...

    @property
    def workspaces(self) -> Mapping[str, WorkspaceView]:
        """Every configured workspace, by name."""
        ...

    @property
    def heartbeats(self) -> Mapping[str, float]:
        """Loop name (``submit:main``, ``intake``, ...) -> when its last cycle ended."""
        ...

    @property
    def idle_waits(self) -> Mapping[str, float]:
        """Loop kind (``submit``, ``poll``, ``collect``, ``intake``) -> the longest sleep
        between two of its cycles, in seconds: how old a heartbeat may get while idle."""
        ...

    @property
    def stopping(self) -> bool:
        """True once the daemon drains after SIGTERM/SIGINT."""
        ...

    @property
    def bytes_downloaded(self) -> int:
        """Bytes of result files this process downloaded."""
        ...

    @property
    def retried_lines(self) -> Mapping[str, int]:
        """Request lines this process wrote into follow-up attempts, by reason
        (``rate_limited``, ``server_error``, ``transient``, ``not_processed``, ``job_failed``)."""
        ...

    @property
    def deliveries(self) -> Mapping[str, DeliveryStats]:
        """Endpoint (a webhook's URL, ``hook:[...]``) -> what its delivery task counted."""
        ...


def demand(jobs: Iterable[Job], workspaces: Iterable[str] = ()) -> dict[str, Demand]:
    """The budget demand per workspace of ``jobs`` (the queued and in-flight ones).

    Args:
        jobs: jobs of any state; only queued and in-flight ones count.
        workspaces: names to report even when none of ``jobs`` is theirs (with zeros).
    """
    by_workspace: dict[str, list[Job]] = defaultdict(list)
    for job in jobs:
        by_workspace[job.workspace].append(job)
    result = {}
    for name in {*workspaces, *by_workspace}:
        mine = by_workspace.get(name, [])
        # A split job's parent is queued beside its parts: count the parts only.
        queued = [job for job in mine if job.state is JobState.QUEUED and not job.is_parent]
        result[name] = Demand(
            pending=in_flight_pending(mine),
            queued_jobs=len(queued),
            queued_requests=sum(job.request_count for job in queued),
        )
    return result


class Durations:
    """A histogram accumulator: cumulative bucket counts, sum and count of observations."""

    def __init__(self, buckets: Sequence[float] = CYCLE_BUCKETS) -> None:
        if list(buckets) != sorted(set(buckets)) or not buckets:
            raise ValueError(f"buckets must be distinct and ascending, got {list(buckets)}")
        self.buckets = tuple(float(b) for b in buckets)
        self._counts = [0] * (len(self.buckets) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        """Record one duration (negative values, from a clock stepping back, count as 0)."""
        seconds = max(0.0, seconds)
        # bisect_left: a value equal to a bound belongs to that bucket (Prometheus "le").
        self._counts[bisect.bisect_left(self.buckets, seconds)] += 1
        self.sum += seconds
        self.count += 1

    def cumulative(self) -> list[tuple[str, float]]:
        """``(le, count of observations <= le)`` pairs, ending with ``+Inf``."""
        pairs, running = [], 0
        for bound, count in zip((*self.buckets, float("inf")), self._counts, strict=True):
            running += count
            pairs.append((_le(bound), float(running)))
        return pairs

    def snapshot(self) -> Histogram:
        """The observations so far, as a value the accumulator no longer changes."""
        return Histogram(buckets=tuple(self.cumulative()), sum=self.sum, count=self.count)


def _le(bound: float) -> str:
    """A bucket bound as Prometheus writes it (``0.5``, ``1.0``, ``+Inf``)."""
    return "+Inf" if bound == float("inf") else repr(bound)
