"""Prometheus metrics, gathered on scrape from the daemon, its runtime and the ledger.

Nothing is counted twice: the daemon already keeps its numbers (``provider.calls``,
``Poller.consecutive_failures``, ``Runtime.bytes_downloaded``, heartbeats) and the ledger keeps
the jobs, so :class:`DaemonCollector` reads them when Prometheus asks. The one thing the daemon
does not measure on its own is how long a poll cycle takes: :class:`TimedPoller` adds that.

A scrape is two steps because the ledger is async and a Prometheus collector is not:
``await collector.refresh()`` reads the ledger (bounded by a timeout), then the registry's
``collect()`` reports that snapshot together with the in-memory numbers.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import anyio
import attrs
import structlog
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from orchestrator import __version__
from orchestrator.budget import in_flight_pending
from orchestrator.daemon.context import Runtime, WorkspaceRuntime
from orchestrator.daemon.poll import Poller
from orchestrator.model import IN_FLIGHT_STATES, JobState, Outcome

if TYPE_CHECKING:
    from orchestrator.daemon import Daemon

log = structlog.get_logger(__name__)

PREFIX = "orchestrator"
CYCLE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
"""Seconds. A cycle is one list call per 100 active jobs plus ledger writes: usually well under
a second; the top buckets catch a slow or retrying provider."""
LEDGER_TIMEOUT = 5.0
"""Seconds a scrape waits for the ledger before reporting ``orchestrator_ledger_up 0``."""


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


def _le(bound: float) -> str:
    """A bucket bound as Prometheus writes it (``0.5``, ``1.0``, ``+Inf``)."""
    return "+Inf" if bound == float("inf") else repr(bound)


class TimedPoller(Poller):
    """A :class:`~orchestrator.daemon.poll.Poller` that also times its cycles.

    Only cycles that polled count (the poller skips the provider when no job runs).
    """

    def __init__(self, runtime: Runtime, workspace: WorkspaceRuntime) -> None:
        super().__init__(runtime, workspace)
        self.durations = Durations()
        self._clock = runtime.clock

    async def cycle(self) -> float:
        """One poll cycle (see :meth:`Poller.cycle`), timed."""
        before, started = self.cycles, self._clock.now()
        try:
            return await super().cycle()
        finally:
            if self.cycles != before:
                self.durations.observe(self._clock.now() - started)


@attrs.frozen(kw_only=True)
class LedgerSnapshot:
    """What one scrape read from the ledger."""

    counts: dict[tuple[str, str | None], int]
    """Jobs per ``(state, outcome)``."""
    pending: dict[str, int]
    """Σpending of the in-flight jobs, per workspace."""
    queued_jobs: dict[str, int]
    queued_requests: dict[str, int]
    held: int = 0
    """In-flight jobs this replica holds a live lease on."""


class DaemonCollector(Collector):
    """Reports the daemon's state in Prometheus form (register it on a ``CollectorRegistry``)."""

    def __init__(self, daemon: Daemon, *, ledger_timeout: float = LEDGER_TIMEOUT) -> None:
        self._daemon = daemon
        self._ledger_timeout = ledger_timeout
        self._snapshot: LedgerSnapshot | None = None

    async def refresh(self) -> None:
        """Read the jobs from the ledger for the next :meth:`collect`.

        Never raises for an unreachable or slow ledger: the snapshot is dropped instead (the
        job metrics disappear and ``orchestrator_ledger_up`` reports 0), so the in-memory
        metrics stay visible while the database is down.
        """
        runtime = self._daemon.runtime
        self._snapshot = None
        if runtime is None:
            return
        try:
            with anyio.fail_after(self._ledger_timeout):
                counts = await runtime.ledger.counts_by_state()
                active = await runtime.ledger.list_jobs(states=(JobState.QUEUED, *IN_FLIGHT_STATES))
                held = await runtime.ledger.held_count() if runtime.ledger.owner else 0
        except Exception as exc:  # any database error: the scrape itself must still answer
            log.warning("metrics.ledger_unavailable", error=str(exc) or type(exc).__name__)
            return
        by_workspace = defaultdict(list)
        for job in active:
            by_workspace[job.workspace].append(job)
        pending, queued_jobs, queued_requests = {}, {}, {}
        for name in {*self._daemon.workspaces, *by_workspace}:
            jobs = by_workspace.get(name, [])
            # A split job's parent is queued beside its parts: count the parts only.
            queued = [job for job in jobs if job.state is JobState.QUEUED and not job.is_parent]
            pending[name] = in_flight_pending(jobs)
            queued_jobs[name] = len(queued)
            queued_requests[name] = sum(job.request_count for job in queued)
        self._snapshot = LedgerSnapshot(
            counts=counts,
            pending=pending,
            queued_jobs=queued_jobs,
            queued_requests=queued_requests,
            held=held,
        )

    def collect(self) -> Iterator[Metric]:
        """Every metric, from the last :meth:`refresh` and the daemon's live counters."""
        yield from self._process()
        if self._snapshot is not None:
            yield from self._jobs(self._snapshot)
            yield from self._budgets(self._snapshot)
        yield from self._calls()
        yield from self._polling()

    def _process(self) -> Iterator[Metric]:
        runtime = self._daemon.runtime
        info = GaugeMetricFamily(
            f"{PREFIX}_build_info", "The orchestrator's version (always 1).", labels=["version"]
        )
        info.add_metric([__version__], 1)
        yield info
        yield GaugeMetricFamily(
            f"{PREFIX}_ledger_up",
            "1 if this scrape could read the ledger, else 0 (job metrics are then absent).",
            value=1 if self._snapshot is not None else 0,
        )
        stopping = runtime is not None and runtime.stopping.is_set()
        yield GaugeMetricFamily(
            f"{PREFIX}_daemon_stopping",
            "1 while the daemon drains after SIGTERM/SIGINT, else 0.",
            value=1 if stopping else 0,
        )
        yield CounterMetricFamily(
            f"{PREFIX}_downloaded_bytes",
            "Bytes of result files downloaded by this process.",
            value=runtime.bytes_downloaded if runtime is not None else 0,
        )
        beats = GaugeMetricFamily(
            f"{PREFIX}_loop_heartbeat_timestamp_seconds",
            "When each loop last finished a cycle (POSIX seconds); "
            "time() minus this is the loop's age.",
            labels=["loop"],
        )
        for loop, at in sorted((runtime.heartbeats if runtime is not None else {}).items()):
            beats.add_metric([loop], at)
        yield beats

    def _jobs(self, snapshot: LedgerSnapshot) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            f"{PREFIX}_jobs",
            "Jobs in the ledger by state and outcome (outcome is empty until the remote job ends).",
            labels=["state", "outcome"],
        )
        # Every combination is reported, zeros included, so a series never vanishes.
        combos: dict[tuple[str, str], int] = {(state.value, ""): 0 for state in JobState}
        combos.update({(JobState.DONE.value, outcome.value): 0 for outcome in Outcome})
        for (state, outcome), count in snapshot.counts.items():
            combos[(state, outcome or "")] = combos.get((state, outcome or ""), 0) + count
        for (state, outcome), count in sorted(combos.items()):
            family.add_metric([state, outcome], count)
        yield family
        yield GaugeMetricFamily(
            f"{PREFIX}_jobs_held",
            "In-flight jobs this replica holds a live lease on (with several replicas on one "
            "PostgreSQL ledger, each reports its own share).",
            value=snapshot.held,
        )

    def _budgets(self, snapshot: LedgerSnapshot) -> Iterator[Metric]:
        labels = ["workspace"]
        pending = GaugeMetricFamily(
            f"{PREFIX}_workspace_pending_requests",
            "Requests this ledger's jobs hold against the workspace's pending budget.",
            labels=labels,
        )
        external = GaugeMetricFamily(
            f"{PREFIX}_workspace_external_pending_requests",
            "Pending requests of unfinished remote jobs this ledger did not create "
            "(seen by the last poll).",
            labels=labels,
        )
        budget = GaugeMetricFamily(
            f"{PREFIX}_workspace_budget_requests",
            "The workspace's pending-request budget.",
            labels=labels,
        )
        utilisation = GaugeMetricFamily(
            f"{PREFIX}_workspace_budget_utilisation_ratio",
            "Share of the budget in use: pending (plus external pending when count_external "
            "is on) over budget.",
            labels=labels,
        )
        queued_jobs = GaugeMetricFamily(
            f"{PREFIX}_workspace_queued_jobs",
            "Jobs waiting for room in the budget.",
            labels=labels,
        )
        queued_requests = GaugeMetricFamily(
            f"{PREFIX}_workspace_queued_requests",
            "Requests of the jobs waiting for room in the budget.",
            labels=labels,
        )
        for name, ws in sorted(self._daemon.workspaces.items()):
            held = snapshot.pending.get(name, 0)
            counted = held + (ws.external_pending if ws.count_external else 0)
            pending.add_metric([name], held)
            external.add_metric([name], ws.external_pending)
            budget.add_metric([name], ws.pending_budget)
            utilisation.add_metric([name], counted / ws.pending_budget)
            queued_jobs.add_metric([name], snapshot.queued_jobs.get(name, 0))
            queued_requests.add_metric([name], snapshot.queued_requests.get(name, 0))
        yield from (pending, external, budget, utilisation, queued_jobs, queued_requests)

    def _calls(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            f"{PREFIX}_api_calls",
            "Provider API calls by operation and HTTP status (or transport error class).",
            labels=["workspace", "operation", "status"],
        )
        for name, ws in sorted(self._daemon.workspaces.items()):
            calls = getattr(ws.provider, "calls", None) or {}
            for (operation, status), count in sorted(calls.items(), key=str):
                family.add_metric([name, operation, str(status)], count)
        yield family

    def _polling(self) -> Iterator[Metric]:
        labels = ["workspace"]
        durations = HistogramMetricFamily(
            f"{PREFIX}_poll_cycle_duration_seconds",
            "Time one poll cycle of a workspace takes (list calls, per-job lookups, ledger "
            "writes); cycles with no running job are not counted.",
            labels=labels,
        )
        cycles = CounterMetricFamily(
            f"{PREFIX}_poll_cycles",
            "Poll cycles that asked the provider.",
            labels=labels,
        )
        failures = GaugeMetricFamily(
            f"{PREFIX}_poll_consecutive_failures",
            "Poll cycles in a row that failed (0 after a success).",
            labels=labels,
        )
        for name, poller in sorted(self._daemon.pollers.items()):
            cycles.add_metric([name], poller.cycles)
            failures.add_metric([name], poller.consecutive_failures)
            if isinstance(poller, TimedPoller):
                timing = poller.durations
                durations.add_metric([name], timing.cumulative(), timing.sum)
        yield from (durations, cycles, failures)
