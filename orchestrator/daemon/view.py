"""The daemon as the service sees it: the adapters behind :mod:`orchestrator.service.view`.

The service reads a running daemon only through these, so the loops' own objects (the runtime,
the pollers, the providers) never leave the daemon package, and what the service may read is
decided here: numbers are copied into frozen values, the ledger is handed out typed as its read
API.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from orchestrator.clock import Clock
from orchestrator.config import Config
from orchestrator.daemon import collect, submit
from orchestrator.daemon.context import Runtime, WorkspaceRuntime
from orchestrator.daemon.deliver import Deliverer
from orchestrator.daemon.poll import Poller
from orchestrator.service.view import DeliveryStats, LedgerReader, PollStats, WorkspaceStats


@attrs.frozen(kw_only=True)
class WorkspaceRuntimeView:
    """A :class:`~orchestrator.service.view.WorkspaceView` of one workspace's runtime."""

    _workspace: WorkspaceRuntime
    _pollers: Mapping[str, Poller]
    """The daemon's own mapping: its poll loops are added once they start."""

    @property
    def name(self) -> str:
        return self._workspace.name

    @property
    def pending_budget(self) -> int:
        return self._workspace.pending_budget

    @property
    def count_external(self) -> bool:
        return self._workspace.count_external

    def stats(self) -> WorkspaceStats:
        ws = self._workspace
        poller = self._pollers.get(ws.name)
        return WorkspaceStats(
            external_pending=ws.external_pending,
            # Only providers that count their calls report them (the Provider ABC does not).
            api_calls=dict(getattr(ws.provider, "calls", None) or {}),
            poll=None
            if poller is None
            else PollStats(
                cycles=poller.cycles,
                consecutive_failures=poller.consecutive_failures,
                durations=poller.durations.snapshot(),
            ),
            spend_used=None if ws.spend_limit is None else ws.spend_used,
        )


@attrs.frozen(kw_only=True)
class RuntimeView:
    """A :class:`~orchestrator.service.view.DaemonView` of a running daemon.

    Built by :class:`~orchestrator.daemon.Daemon` once its runtime exists; it holds the
    daemon's own ``workspaces`` and ``pollers`` mappings, so it sees poll loops that start
    after it was made.
    """

    _config: Config
    _runtime: Runtime
    _workspaces: Mapping[str, WorkspaceRuntime]
    _pollers: Mapping[str, Poller]
    _deliverer: Deliverer | None = None

    @property
    def clock(self) -> Clock:
        return self._runtime.clock

    @property
    def config(self) -> Config:
        return self._config

    @property
    def ledger(self) -> LedgerReader:
        return self._runtime.ledger

    @property
    def workspaces(self) -> Mapping[str, WorkspaceRuntimeView]:
        return {
            name: WorkspaceRuntimeView(workspace=ws, pollers=self._pollers)
            for name, ws in self._workspaces.items()
        }

    @property
    def heartbeats(self) -> Mapping[str, float]:
        return dict(self._runtime.heartbeats)

    @property
    def idle_waits(self) -> Mapping[str, float]:
        policy = self._config.polling
        return {
            "submit": submit.IDLE_WAIT,
            "collect": collect.IDLE_WAIT,
            # The schedule never sleeps past max (+ jitter) while nothing changes.
            "poll": policy.max * (1 + policy.jitter),
            "intake": self._config.intake.rescan_interval,
            # Replicas on a shared ledger renew their leases every third of the lease.
            **(
                {"leases": self._config.daemon.lease_ttl / 3} if self._runtime.ledger.shared else {}
            ),
        }

    @property
    def stopping(self) -> bool:
        return self._runtime.stopping.is_set()

    @property
    def bytes_downloaded(self) -> int:
        return self._runtime.bytes_downloaded

    @property
    def retried_lines(self) -> Mapping[str, int]:
        return dict(self._runtime.retried_lines)

    @property
    def deliveries(self) -> Mapping[str, DeliveryStats]:
        return {} if self._deliverer is None else self._deliverer.stats()
