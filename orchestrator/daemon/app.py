"""The composition root: the only place that picks concrete classes.

``Daemon`` opens the ledger, becomes one of its replicas (SQLite: the one-daemon lock;
PostgreSQL: leases shared with the other replicas), builds one provider per workspace (an
in-process emulator for ``base_url = "embedded"``), and runs every loop in one anyio task group.
"""

from __future__ import annotations

import functools
import os
import re
import secrets
import signal
import socket
from collections.abc import Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import structlog
from anyio.abc import TaskStatus

from orchestrator.budget import TokenBudget
from orchestrator.clock import Clock, SystemClock
from orchestrator.config import Config, WorkspaceConfig
from orchestrator.daemon.collect import Collector
from orchestrator.daemon.commands import DaemonCommands
from orchestrator.daemon.context import Runtime, WorkspaceRuntime
from orchestrator.daemon.deliver import Deliverer, build_senders
from orchestrator.daemon.intake import Intake
from orchestrator.daemon.poll import Poller
from orchestrator.daemon.submit import Submitter
from orchestrator.daemon.view import RuntimeView
from orchestrator.daemon.waker import Waker
from orchestrator.emulator import Emulator, EmulatorSettings
from orchestrator.emulator.emulator import DIALECTS as EMULATOR_DIALECTS
from orchestrator.errors import ConfigError
from orchestrator.ledger import SqlLedger
from orchestrator.ledger.engine import display_url
from orchestrator.ledger.migrate import upgrade
from orchestrator.logging import redactor
from orchestrator.model import FINAL_STATES, Job, JobState
from orchestrator.polling import PollPolicy
from orchestrator.providers.anthropic import AnthropicProvider
from orchestrator.providers.base import Provider
from orchestrator.providers.mistral import MistralProvider
from orchestrator.providers.openai import OpenAIProvider

if TYPE_CHECKING:  # uvicorn and starlette: imported in run(), only with [http] listen
    from orchestrator.service.http import HttpService

log = structlog.get_logger(__name__)

EMBEDDED = "embedded"
PROVIDER_CLASSES: Mapping[str, type[Provider]] = {
    "mistral": MistralProvider,
    "openai": OpenAIProvider,
    "anthropic": AnthropicProvider,
}
"""The provider class of each ``provider`` a workspace may name."""
IDLE_CHECK = 60.0
"""Longest wait of the exit-when-idle watcher; every state change wakes it sooner."""
DELIVERY_DRAIN = 60.0
"""Seconds ``--exit-when-idle`` waits, once every job is final, for the pending webhook and
hook deliveries (a dead receiver's stay in the outbox for the next run)."""

TransportWrapper = Callable[[httpx.AsyncBaseTransport], httpx.AsyncBaseTransport]
"""Wraps each provider's HTTP transport: the seam where tests inject faults and crashes."""


def default_replica_id() -> str:
    """A fresh replica id: ``<hostname>-<pid>-<6 hex>``."""
    host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:30] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


def embedded_api_key(workspace: str) -> str:
    """The API key an embedded workspace uses with the in-process emulator."""
    return f"embedded-{workspace}"


class _ShieldedExitStack(AsyncExitStack):
    """Runs its cleanups to the end even when the daemon is being cancelled."""

    async def __aexit__(self, *exc_info: Any) -> bool:
        with anyio.CancelScope(shield=True):
            suppressed = await super().__aexit__(*exc_info)
        return bool(suppressed)


class Daemon:
    """The orchestrator daemon for one config."""

    def __init__(
        self,
        config: Config,
        *,
        clock: Clock | None = None,
        environ: Mapping[str, str] | None = None,
        emulator: Emulator | Sequence[Emulator] | None = None,
        wrap_transport: TransportWrapper | None = None,
    ) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self._environ = os.environ if environ is None else environ
        self._emulators: dict[str, Emulator] = {}
        """The in-process emulator of each dialect an embedded workspace speaks."""
        given = (
            () if emulator is None else (emulator,) if isinstance(emulator, Emulator) else emulator
        )
        for each in given:  # the embedded workspaces of each one's dialect use it
            self._emulators[each.dialect.name] = each
        self._wrap_transport = wrap_transport
        self.workspaces: dict[str, WorkspaceRuntime] = {}
        self.pollers: dict[str, Poller] = {}
        self.runtime: Runtime | None = None
        """Set while :meth:`run` runs."""
        self.view: RuntimeView | None = None
        """What the service reads (health, readiness, metrics), set with :attr:`runtime`."""
        self.http: HttpService | None = None
        """The health and metrics endpoint, while :meth:`run` runs with ``[http] listen``."""
        self.replica_id: str | None = None
        """This process's id among the replicas of the ledger, once :meth:`run` started."""
        self.deliverer: Deliverer | None = None
        """The webhook and hook deliveries, while :meth:`run` runs with endpoints configured."""

    async def run(self, *, exit_when_idle: bool = False, migrate: bool = False) -> None:
        """Run until cancelled, a signal, or (with ``exit_when_idle``) every job is final."""
        config = self.config
        async with _ShieldedExitStack() as stack:
            # Secrets and hook programs first: a bad one stops the daemon before it touches
            # anything (the ledger included).
            senders = build_senders(
                config, self._environ, wrap=self._transport if self._wrap_transport else None
            )
            for sender in senders:
                stack.push_async_callback(sender.aclose)
            if migrate:
                await upgrade(config.ledger.url)
            ledger = await SqlLedger.connect(config.ledger.url, clock=self.clock)
            stack.push_async_callback(ledger.close)
            self.replica_id = await self._take_jobs(ledger, stack)
            runtime = Runtime(
                clock=self.clock,
                ledger=ledger,
                results_dir=config.results.dir,
                policy=PollPolicy(
                    initial=config.polling.initial,
                    max=config.polling.max,
                    factor=config.polling.factor,
                    jitter=config.polling.jitter,
                ),
                activity=Waker(self.clock),
                reconcile_grace=config.daemon.reconcile_grace,
            )
            for name, ws_config in config.workspaces.items():
                provider = self._provider(ws_config, stack)
                stack.push_async_callback(provider.aclose)
                self.workspaces[name] = WorkspaceRuntime(
                    name=name,
                    provider=provider,
                    pending_budget=ws_config.pending_budget,
                    count_external=ws_config.count_external,
                    tokens=TokenBudget(
                        default=ws_config.token_budget, per_model=dict(ws_config.token_budgets)
                    ),
                    pricing=config.pricing,
                    batch_discount=ws_config.batch_discount,
                    spend_limit=ws_config.spend_limit,
                    admission=Waker(self.clock),
                    poll=Waker(self.clock),
                    collect=Waker(self.clock),
                    max_attempts=ws_config.max_attempts,
                    retry_delay=ws_config.retry_delay,
                )
            intake = Intake(
                config=config,
                ledger=ledger,
                clock=self.clock,
                waker=Waker(self.clock),
                on_new_job=self._on_new_job,
                on_cancel=self._on_cancel,
            )
            runtime.wakers.append(intake.waker)
            for ws in self.workspaces.values():
                runtime.wakers.extend((ws.admission, ws.poll, ws.collect))
            self.runtime = runtime
            if senders:
                self.deliverer = Deliverer(runtime, senders)
                # From here on every state change writes its events (the outbox).
                ledger.subscribe(
                    [sender.config.subscription() for sender in senders],
                    notify=self.deliverer.wake,
                )
                if not ledger.shared:
                    await ledger.release_delivery_claims()  # a killed predecessor's
            self.view = RuntimeView(
                config=config,
                runtime=runtime,
                workspaces=self.workspaces,
                pollers=self.pollers,
                deliverer=self.deliverer,
            )
            # Service endpoint (issue 6): bound before the loops start, so a taken port is a
            # config error at start; served in the outer group, stopped after the loops.
            address = config.http.address()
            if address is not None:
                from orchestrator.service.http import HttpService

                commands = DaemonCommands(
                    config=config,
                    ledger=ledger,
                    on_new_job=self._on_new_job,
                    on_cancel=self._on_cancel,
                )
                self.http = HttpService(
                    self.view,
                    host=address[0],
                    port=address[1],
                    commands=commands,
                    token=config.http.token(self._environ),
                )
                self.http.bind()
                stack.callback(self.http.close)
            # End of the service endpoint set-up.
            try:
                async with anyio.create_task_group() as outer:
                    async with anyio.create_task_group() as loops:
                        # The signal handlers first: from "started" on, a SIGTERM drains (a
                        # signal that came earlier killed the process the default way).
                        await outer.start(self._signals, runtime, intake, loops.cancel_scope)
                        log.info(
                            "daemon.started",
                            ledger=display_url(config.ledger.url),
                            workspaces=sorted(self.workspaces),
                            results=str(config.results.dir),
                        )
                        if self.http is not None:
                            await outer.start(self.http.serve)
                        await intake.scan()  # the first pass before anything else looks
                        beat_intake = functools.partial(runtime.beat, "intake")
                        beat_intake()
                        loops.start_soon(intake.run, runtime.stopping, beat_intake)
                        for ws in self.workspaces.values():
                            poller = Poller(runtime, ws)
                            self.pollers[ws.name] = poller
                            loops.start_soon(Submitter(runtime, ws).run)
                            loops.start_soon(poller.run)
                            loops.start_soon(Collector(runtime, ws).run)
                        if self.deliverer is not None:
                            loops.start_soon(self.deliverer.run)
                        if exit_when_idle:
                            loops.start_soon(self._exit_when_idle, runtime)
                        if ledger.shared:
                            # In the outer group: leases stay renewed while the loops drain.
                            outer.start_soon(self._keep_leases, runtime)
                    outer.cancel_scope.cancel()  # every loop has returned: stop listening
            except BaseException:
                log.exception("daemon.crashed")
                raise
            log.info("daemon.stopped")

    async def _take_jobs(self, ledger: SqlLedger, stack: AsyncExitStack) -> str:
        """Become a replica of the ledger; return this process's replica id.

        SQLite: the file lock proves this daemon is alone, so it claims every in-flight job at
        once, with leases that never expire and no fencing. PostgreSQL: no global lock; a
        replica announces itself in a session of its own (admission hands work to the replicas
        it sees); a configured ``replica_id`` is kept to one live process by a session advisory
        lock and takes its own leases back at once; the heartbeat (:meth:`_keep_leases`) does
        the rest.
        A graceful stop releases this replica's leases, so the others take over at once.
        """
        daemon = self.config.daemon
        replica = daemon.replica_id or default_replica_id()
        if not ledger.shared:
            await stack.enter_async_context(ledger.daemon_lock())
            ledger.act_as(replica, lease_ttl=None)
            claimed = await ledger.claim_all()
            log.info("daemon.replica", replica_id=replica, mode="exclusive", claimed=claimed)
            return replica
        await stack.enter_async_context(
            ledger.replica_session(replica, unique=daemon.replica_id is not None)
        )
        ledger.act_as(replica, lease_ttl=daemon.lease_ttl)
        reclaimed = await ledger.renew_leases() if daemon.replica_id is not None else 0
        stack.push_async_callback(self._release_leases, ledger)
        log.info(
            "daemon.replica",
            replica_id=replica,
            mode="shared",
            lease_ttl=daemon.lease_ttl,
            reclaimed=reclaimed,
        )
        return replica

    async def _release_leases(self, ledger: SqlLedger) -> None:
        try:
            released = await ledger.release_leases()
        except Exception as exc:  # the database may be what failed: leases expire anyway
            log.warning("daemon.leases_not_released", error=str(exc) or type(exc).__name__)
            return
        log.info("daemon.leases_released", replica_id=ledger.owner, jobs=released)

    async def _keep_leases(self, runtime: Runtime) -> None:
        """Renew this replica's leases every ttl/3 and claim orphans, until cancelled.

        Each pass: one UPDATE renews every claim; then up to ``ORPHAN_BATCH`` in-flight jobs
        whose lease expired (a dead replica's) are claimed ``FOR UPDATE SKIP LOCKED``, and the
        loops that carry them on are woken. Admission is woken in every workspace too: another
        replica's admission may have given this one jobs (it learns of them here, within
        ttl/3), and so is the idle watcher (other replicas finish jobs too). A database error
        is logged and retried next pass.
        """
        ledger, period = runtime.ledger, self.config.daemon.lease_ttl / 3
        while True:
            try:
                await ledger.renew_leases()
                for job in await ledger.claim_orphans():
                    log.info(
                        "daemon.job_taken_over",
                        job=job.name,
                        job_id=job.id,
                        state=job.state,
                        replica_id=ledger.owner,
                    )
                    self._wake_for(job)
                for ws in self.workspaces.values():
                    ws.admission.wake()
                # Other replicas' moves do not wake this process: the idle watcher looks again.
                runtime.activity.wake()
            except Exception as exc:  # a database outage must not end the daemon
                log.warning("daemon.lease_renewal_failed", error=str(exc) or type(exc).__name__)
            runtime.beat("leases")
            await self.clock.sleep(period)

    def _wake_for(self, job: Job) -> None:
        """Wake the loop that carries ``job`` on from its state."""
        ws = self.workspaces.get(job.workspace)
        if ws is None:
            return
        if job.state in (JobState.ADMITTED, JobState.SUBMITTING):
            ws.admission.wake()
        elif job.state is JobState.RUNNING and not job.is_parent:
            ws.poll.wake()
        else:
            ws.collect.wake()  # collecting, and a parent's parts keeper

    def _on_new_job(self, job: Job) -> None:
        ws = self.workspaces.get(job.workspace)
        if ws is not None:
            ws.admission.wake()

    def _on_cancel(self, job: Job) -> None:
        """A cancel request: queued jobs are handled by admission, running ones by the poller."""
        ws = self.workspaces.get(job.workspace)
        if ws is not None:
            ws.admission.wake()
            ws.poll.wake()

    def _provider(self, ws: WorkspaceConfig, stack: AsyncExitStack) -> Provider:
        if ws.provider not in PROVIDER_CLASSES:
            raise ConfigError(
                f"provider {ws.provider!r} is not supported yet "
                f"(supported: {', '.join(PROVIDER_CLASSES)})",
                file=str(self.config.path),
                key=f"workspaces.{ws.name}.provider",
            )
        if ws.base_url == EMBEDDED:
            emulator = self._embedded_emulator(stack, ws)
            return self._make_provider(
                ws,
                base_url="http://embedded",
                api_key=embedded_api_key(ws.name),
                transport=self._transport(httpx.ASGITransport(app=emulator.app)),
            )
        api_key = ws.api_key(self._environ)
        redactor.add([api_key])
        transport = self._transport(httpx.AsyncHTTPTransport()) if self._wrap_transport else None
        return self._make_provider(ws, base_url=ws.base_url, api_key=api_key, transport=transport)

    def _make_provider(
        self,
        ws: WorkspaceConfig,
        *,
        base_url: str,
        api_key: str,
        transport: httpx.AsyncBaseTransport | None,
    ) -> Provider:
        """The provider class of ``ws.provider``, with that dialect's own settings."""
        if ws.provider == "openai":
            return OpenAIProvider(
                base_url=base_url,
                api_key=api_key,
                transport=transport,
                clock=self.clock,
                organization=ws.organization,
                project=ws.project,
                completion_window=ws.completion_window,
            )
        if ws.provider == "anthropic":
            return AnthropicProvider(
                base_url=base_url, api_key=api_key, transport=transport, clock=self.clock
            )
        return MistralProvider(
            base_url=base_url, api_key=api_key, transport=transport, clock=self.clock
        )

    def _transport(self, transport: httpx.AsyncBaseTransport) -> httpx.AsyncBaseTransport:
        return self._wrap_transport(transport) if self._wrap_transport else transport

    def _embedded_emulator(self, stack: AsyncExitStack, ws: WorkspaceConfig) -> Emulator:
        """The emulator that speaks ``ws.provider``'s wire (one per dialect, made once).

        Raises:
            ConfigError: the bundled emulator does not speak that dialect.
        """
        dialect = ws.provider
        if dialect not in self._emulators:
            if dialect not in EMULATOR_DIALECTS:
                raise ConfigError(
                    f'base_url = "embedded" needs the emulator\'s {dialect} wire, which this '
                    f"version does not have (it speaks: {', '.join(sorted(EMULATOR_DIALECTS))}); "
                    "point base_url at a real API or another emulator",
                    file=str(self.config.path),
                    key=f"workspaces.{ws.name}.base_url",
                )
            settings = self.config.emulator
            emulator = Emulator(
                EmulatorSettings(
                    time_scale=settings.time_scale,
                    throughput=settings.throughput,
                    validation_seconds=settings.validation_seconds,
                    failure_fraction=settings.failure_fraction,
                    transient_fraction=settings.transient_fraction,
                    seed=settings.seed,
                ),
                clock=self.clock,
                dialect=dialect,
            )
            self._emulators[dialect] = emulator
            stack.callback(emulator.close)
        return self._emulators[dialect]

    async def _exit_when_idle(self, runtime: Runtime) -> None:
        """Stop once every known job is done or rejected (what the demo and tests use).

        Then pending webhook and hook deliveries get up to :data:`DELIVERY_DRAIN` seconds.
        """
        drain_until: float | None = None
        while not runtime.stopping.is_set():
            # A count by state, not the jobs: this runs on every state change of every job.
            counts = await runtime.ledger.counts_by_state()
            if all(JobState(state) in FINAL_STATES for state, _ in counts):
                pending = 0 if self.deliverer is None else await self.deliverer.pending()
                now = self.clock.now()
                drain_until = now + DELIVERY_DRAIN if drain_until is None else drain_until
                if pending and now < drain_until:
                    await runtime.activity.wait(min(IDLE_CHECK, drain_until - now))
                    continue
                if pending:
                    log.warning("daemon.idle_with_pending_deliveries", deliveries=pending)
                log.info("daemon.idle", jobs=sum(counts.values()))
                runtime.stop()
                return
            drain_until = None
            await runtime.activity.wait(IDLE_CHECK)

    async def _signals(
        self,
        runtime: Runtime,
        intake: Intake,
        loops: anyio.CancelScope,
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """SIGHUP rescans; SIGTERM/SIGINT drain within the grace period; a second one cuts."""
        grace = self.config.daemon.grace_period
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            task_status.started()
            async with anyio.create_task_group() as deadline:
                async for signum in signals:
                    if signum == signal.SIGHUP:
                        log.info("daemon.reload", signal="SIGHUP")
                        intake.waker.wake()
                        if self.deliverer is not None:
                            self.deliverer.wake()  # `orchestrator webhooks --redeliver`
                        continue
                    name = signal.Signals(signum).name
                    if runtime.stopping.is_set():
                        log.warning("daemon.stop_now", signal=name)
                        loops.cancel()
                        deadline.cancel_scope.cancel()
                        return
                    log.info("daemon.stopping", signal=name, grace_period=grace)
                    runtime.stop()
                    # Keep listening while the loops drain, so a second signal still cuts.
                    deadline.start_soon(self._cut_after_grace, grace, loops)

    async def _cut_after_grace(self, grace: float, loops: anyio.CancelScope) -> None:
        """Drain: loops finish the uploads, creates and downloads they hold, then return.

        A step still running after the grace period is cancelled; each step is safe to cut
        (intent is in the ledger, downloads resume from their ``.part``).
        """
        await self.clock.sleep(grace)
        log.warning("daemon.grace_expired", grace_period=grace)
        loops.cancel()
