"""Prometheus metrics, gathered on scrape from the daemon's view and its ledger.

Nothing is counted twice: the daemon already keeps its numbers (API calls, poll cycles, their
failures and durations, downloaded bytes, heartbeats) and the ledger keeps the jobs, so
:class:`DaemonCollector` reads them through the :class:`~orchestrator.service.view.DaemonView`
when Prometheus asks.

A scrape is two steps because the ledger is async and a Prometheus collector is not:
``await collector.refresh()`` reads the ledger (bounded by a timeout), then the registry's
``collect()`` reports that snapshot together with the in-memory numbers.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

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
from orchestrator.budget import in_flight_tokens
from orchestrator.model import IN_FLIGHT_STATES, JobState, Outcome
from orchestrator.service.view import DaemonView, WorkspaceStats, WorkspaceView, demand
from orchestrator.usage import Usage

log = structlog.get_logger(__name__)

PREFIX = "orchestrator"
LEDGER_TIMEOUT = 5.0
"""Seconds a scrape waits for the ledger before reporting ``orchestrator_ledger_up 0``."""


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
    tokens: dict[str, dict[str, int]] = attrs.field(factory=dict)
    """Estimated prompt tokens of the in-flight jobs, per workspace and model."""
    usage: dict[tuple[str, str], Usage] = attrs.field(factory=dict)
    """Tokens the results reported, per (workspace, model): only grows."""
    deliveries: dict[tuple[str, str], int] = attrs.field(factory=dict)
    """Webhook and hook deliveries per ``(endpoint, state)``."""


class DaemonCollector(Collector):
    """Reports the daemon's state in Prometheus form (register it on a ``CollectorRegistry``)."""

    def __init__(self, view: DaemonView, *, ledger_timeout: float = LEDGER_TIMEOUT) -> None:
        self._view = view
        self._ledger_timeout = ledger_timeout
        self._snapshot: LedgerSnapshot | None = None

    async def refresh(self) -> None:
        """Read the jobs from the ledger for the next :meth:`collect`.

        Never raises for an unreachable or slow ledger: the snapshot is dropped instead (the
        job metrics disappear and ``orchestrator_ledger_up`` reports 0), so the in-memory
        metrics stay visible while the database is down.
        """
        ledger = self._view.ledger
        self._snapshot = None
        try:
            with anyio.fail_after(self._ledger_timeout):
                counts = await ledger.counts_by_state()
                active = await ledger.list_jobs(states=(JobState.QUEUED, *IN_FLIGHT_STATES))
                held = await ledger.held_count() if ledger.owner else 0
                usage = await ledger.usage_totals()
                deliveries = await ledger.delivery_counts()
        except Exception as exc:  # any database error: the scrape itself must still answer
            log.warning("metrics.ledger_unavailable", error=str(exc) or type(exc).__name__)
            return
        demands = demand(active, self._view.workspaces)
        tokens = {
            name: in_flight_tokens(job for job in active if job.workspace == name)
            for name in {job.workspace for job in active}
        }
        self._snapshot = LedgerSnapshot(
            tokens=tokens,
            counts=counts,
            pending={name: d.pending for name, d in demands.items()},
            queued_jobs={name: d.queued_jobs for name, d in demands.items()},
            queued_requests={name: d.queued_requests for name, d in demands.items()},
            held=held,
            usage=usage,
            deliveries=deliveries,
        )

    def collect(self) -> Iterator[Metric]:
        """Every metric, from the last :meth:`refresh` and the daemon's live counters."""
        workspaces = sorted(self._view.workspaces.items())
        # One read of the live numbers per scrape, so the families agree with each other.
        stats = {name: ws.stats() for name, ws in workspaces}
        yield from self._process()
        if self._snapshot is not None:
            yield from self._jobs(self._snapshot)
            yield from self._budgets(self._snapshot, workspaces, stats)
            yield from self._usage(self._snapshot, workspaces, stats)
        yield from self._calls(stats)
        yield from self._polling(stats)
        yield from self._deliveries(self._snapshot)

    def _process(self) -> Iterator[Metric]:
        view = self._view
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
        yield GaugeMetricFamily(
            f"{PREFIX}_daemon_stopping",
            "1 while the daemon drains after SIGTERM/SIGINT, else 0.",
            value=1 if view.stopping else 0,
        )
        yield CounterMetricFamily(
            f"{PREFIX}_downloaded_bytes",
            "Bytes of result files downloaded by this process.",
            value=view.bytes_downloaded,
        )
        retried = CounterMetricFamily(
            f"{PREFIX}_retried_lines",
            "Request lines resubmitted in a follow-up attempt by this process, by reason.",
            labels=["reason"],
        )
        for reason, count in sorted(view.retried_lines.items()):
            retried.add_metric([reason], count)
        yield retried
        beats = GaugeMetricFamily(
            f"{PREFIX}_loop_heartbeat_timestamp_seconds",
            "When each loop last finished a cycle (POSIX seconds); "
            "time() minus this is the loop's age.",
            labels=["loop"],
        )
        for loop, at in sorted(view.heartbeats.items()):
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

    def _budgets(
        self,
        snapshot: LedgerSnapshot,
        workspaces: Sequence[tuple[str, WorkspaceView]],
        stats: Mapping[str, WorkspaceStats],
    ) -> Iterator[Metric]:
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
        info = GaugeMetricFamily(
            f"{PREFIX}_workspace_info",
            "One series per workspace naming its provider dialect (always 1): join on "
            "workspace to break any workspace metric down by provider.",
            labels=["workspace", "provider"],
        )
        tokens = GaugeMetricFamily(
            f"{PREFIX}_workspace_prompt_tokens",
            "Estimated prompt tokens the in-flight jobs hold, per model (what a token budget "
            "counts, before the learnt scale).",
            labels=["workspace", "model"],
        )
        token_budget = GaugeMetricFamily(
            f"{PREFIX}_workspace_token_budget",
            'The token budget per model (model "" is the workspace\'s default for the others).',
            labels=["workspace", "model"],
        )
        configured = self._view.config.workspaces
        for name, _ in workspaces:
            settings = configured.get(name)
            if settings is not None:
                info.add_metric([name, settings.provider], 1)
                if settings.token_budget is not None:
                    token_budget.add_metric([name, ""], settings.token_budget)
                for model, limit in sorted(settings.token_budgets.items()):
                    token_budget.add_metric([name, model], limit)
            for model, held_tokens in sorted(snapshot.tokens.get(name, {}).items()):
                tokens.add_metric([name, model], held_tokens)
        yield from (info, tokens, token_budget)
        for name, ws in workspaces:
            external_pending = stats[name].external_pending
            held = snapshot.pending.get(name, 0)
            counted = held + (external_pending if ws.count_external else 0)
            pending.add_metric([name], held)
            external.add_metric([name], external_pending)
            budget.add_metric([name], ws.pending_budget)
            utilisation.add_metric([name], counted / ws.pending_budget)
            queued_jobs.add_metric([name], snapshot.queued_jobs.get(name, 0))
            queued_requests.add_metric([name], snapshot.queued_requests.get(name, 0))
        yield from (pending, external, budget, utilisation, queued_jobs, queued_requests)

    def _usage(
        self,
        snapshot: LedgerSnapshot,
        workspaces: Sequence[tuple[str, WorkspaceView]],
        stats: Mapping[str, WorkspaceStats],
    ) -> Iterator[Metric]:
        """Tokens and cost of the results, by workspace and model; the month's spend."""
        tokens = CounterMetricFamily(
            f"{PREFIX}_result_tokens",
            "Tokens the downloaded results reported, by workspace, model and kind "
            "(prompt or completion).",
            labels=["workspace", "model", "kind"],
        )
        cost = CounterMetricFamily(
            f"{PREFIX}_result_cost",
            "What those tokens cost at the configured prices and batch discount, in the "
            "prices' currency (models without a price are absent: their cost is unknown).",
            labels=["workspace", "model"],
        )
        config = self._view.config
        for (workspace, model), usage in sorted(snapshot.usage.items()):
            tokens.add_metric([workspace, model, "prompt"], usage.prompt_tokens)
            tokens.add_metric([workspace, model, "completion"], usage.completion_tokens)
            settings = config.workspaces.get(workspace)
            discount = None if settings is None else settings.batch_discount
            amount = config.pricing.cost(model, usage, discount=discount)
            if amount is not None:
                cost.add_metric([workspace, model], amount)
        yield from (tokens, cost)
        limit = GaugeMetricFamily(
            f"{PREFIX}_workspace_spend_limit",
            "The workspace's spend limit per calendar month (UTC), in the prices' currency.",
            labels=["workspace"],
        )
        used = GaugeMetricFamily(
            f"{PREFIX}_workspace_spend_used",
            "This month's actual cost of finished work plus the estimates of work in flight, "
            "as the last admission pass counted it.",
            labels=["workspace"],
        )
        for name, _ in workspaces:
            settings = config.workspaces.get(name)
            if settings is None or settings.spend_limit is None:
                continue
            limit.add_metric([name], settings.spend_limit)
            used.add_metric([name], stats[name].spend_used or 0.0)
        yield from (limit, used)

    def _calls(self, stats: Mapping[str, WorkspaceStats]) -> Iterator[Metric]:
        family = CounterMetricFamily(
            f"{PREFIX}_api_calls",
            "Provider API calls by operation and HTTP status (or transport error class).",
            labels=["workspace", "operation", "status"],
        )
        for name, workspace in stats.items():
            calls = workspace.api_calls
            for (operation, status), count in sorted(calls.items(), key=str):
                family.add_metric([name, operation, str(status)], count)
        yield family

    def _polling(self, stats: Mapping[str, WorkspaceStats]) -> Iterator[Metric]:
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
        for name, workspace in stats.items():
            poll = workspace.poll
            if poll is None:  # the poll loop has not started yet
                continue
            cycles.add_metric([name], poll.cycles)
            failures.add_metric([name], poll.consecutive_failures)
            timing = poll.durations
            durations.add_metric([name], list(timing.buckets), timing.sum)
        yield from (durations, cycles, failures)

    def _deliveries(self, snapshot: LedgerSnapshot | None) -> Iterator[Metric]:
        """Webhook and hook deliveries by endpoint: this process's counts, the ledger's rows."""
        labels = ["endpoint"]
        delivered = CounterMetricFamily(
            f"{PREFIX}_webhook_delivered",
            "Deliveries that reached their endpoint (a 2xx answer, a hook that exited 0).",
            labels=labels,
        )
        failed = CounterMetricFamily(
            f"{PREFIX}_webhook_failed_attempts",
            "Delivery attempts that failed (non-2xx, timeout, refused, non-zero exit).",
            labels=labels,
        )
        dead = CounterMetricFamily(
            f"{PREFIX}_webhook_dead",
            "Deliveries given up after the endpoint's max_age.",
            labels=labels,
        )
        latency = HistogramMetricFamily(
            f"{PREFIX}_webhook_attempt_duration_seconds",
            "Time one delivery attempt takes (request and answer, or the hook's run).",
            labels=labels,
        )
        for endpoint, stats in sorted(self._view.deliveries.items()):
            delivered.add_metric([endpoint], stats.delivered)
            failed.add_metric([endpoint], stats.failed)
            dead.add_metric([endpoint], stats.dead)
            latency.add_metric([endpoint], list(stats.latency.buckets), stats.latency.sum)
        yield from (delivered, failed, dead, latency)
        if snapshot is None:
            return
        rows = GaugeMetricFamily(
            f"{PREFIX}_webhook_deliveries",
            "Deliveries in the ledger by endpoint and state (pending, delivered, dead), every "
            "replica's.",
            labels=["endpoint", "state"],
        )
        for (endpoint, state), count in sorted(snapshot.deliveries.items()):
            rows.add_metric([endpoint, state], count)
        yield rows
