"""``orchestrator run`` in the foreground, with a live view of jobs and budget on a terminal.

The view is drawn on stdout and refreshed every second from the ledger (its own read-only use
of it, beside the daemon's); the logs go to stderr. When stderr is the same terminal, log lines
are printed above the view instead of tearing it, from WARNING up unless a level is asked for.
When stdout is not a terminal (a pipe, a container log) or with ``--no-live`` there is no
view: the logs are all there is, on stdout (JSON lines when it is not a terminal).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import anyio
import structlog
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text

from orchestrator.cli._budget import budget_rich
from orchestrator.cli._parser import EXIT_OK
from orchestrator.cli._render import Output, status_table
from orchestrator.cli._stderr import STDERR
from orchestrator.clock import Clock
from orchestrator.daemon import Daemon
from orchestrator.ledger import SqlLedger
from orchestrator.ledger.engine import display_url
from orchestrator.logging import configure_logging
from orchestrator.model import FINAL_STATES, STATE_ORDER, Job
from orchestrator.rows import budgets, duration, state_counts, with_attempt_limit

log = structlog.get_logger(__name__)

REFRESH = 1.0
"""Seconds between two frames of the live view."""


def pick_rows(jobs: Sequence[Job], limit: int) -> tuple[list[Job], int]:
    """The jobs worth a row, and how many did not fit.

    Unfinished jobs first (the ones closest to done first, then in admission order), then
    finished ones, the most recent first.
    """
    order = {state: index for index, state in enumerate(STATE_ORDER)}
    active = sorted(
        (j for j in jobs if j.state not in FINAL_STATES),
        key=lambda j: (order[j.state], -j.priority, j.id),
    )
    finished = sorted(
        (j for j in jobs if j.state in FINAL_STATES),
        key=lambda j: -(j.finished_at or j.updated_at),
    )
    chosen = (active + finished)[: max(1, limit)]
    return chosen, len(jobs) - len(chosen)


class LiveView:
    """The frames of the live view of one daemon."""

    def __init__(
        self, daemon: Daemon, console: Console, *, clock: Clock, interval: float = REFRESH
    ) -> None:
        self._daemon = daemon
        self._console = console
        self._clock = clock
        self._interval = interval
        self._started = clock.now()
        self._ledger: SqlLedger | None = None

    def render(self, jobs: Sequence[Job], *, now: float) -> RenderableType:
        """One frame: a header, the budget per workspace, the jobs that fit the screen."""
        config = self._daemon.config
        external = {name: ws.external_pending for name, ws in self._daemon.workspaces.items()}
        rows = budgets(config.workspaces, jobs, external=external)
        header = Text.assemble(
            ("orchestrator", "bold"),
            f"  {config.path}  ledger {display_url(config.ledger.url)}  ",
            (f"up {duration(now - self._started)}", "dim"),
        )
        # Room for the jobs: the terminal minus the header, budget table and margins.
        limit = self._console.size.height - len(rows) - 12
        shown, hidden = pick_rows(jobs, limit)
        parts: list[RenderableType] = [header, budget_rich(rows)]
        if jobs:
            parts.append(status_table(shown, now=now))
        summary = state_counts(jobs)
        if hidden:
            summary += f"  ({hidden} more not shown: `orchestrator status`)"
        parts.append(Text(summary, style="dim"))
        return Group(*parts)

    async def frame(self) -> RenderableType:
        """The current frame, read from the ledger (a placeholder while the daemon starts)."""
        if self._ledger is None:
            if self._daemon.runtime is None:
                return Text("orchestrator: starting…", style="dim")
            # The daemon is up, so the schema is at the head: open our own reader.
            self._ledger = await SqlLedger.connect(
                self._daemon.config.ledger.url, clock=self._clock
            )
        config = self._daemon.config
        jobs = [with_attempt_limit(job, config) for job in await self._ledger.list_jobs()]
        return self.render(jobs, now=self._clock.now())

    async def run(self, live: Live) -> None:
        """Refresh ``live`` until cancelled."""
        while True:
            live.update(await self.frame(), refresh=True)
            await self._clock.sleep(self._interval)

    async def close(self, live: Live) -> None:
        """Draw the last frame and close the reader."""
        with anyio.CancelScope(shield=True):
            try:
                live.update(await self.frame(), refresh=True)
            except Exception as exc:  # best effort: the daemon's own error matters more
                log.debug("cli.last_frame_failed", error=str(exc))
            finally:
                if self._ledger is not None:
                    await self._ledger.close()
                    self._ledger = None


async def run_daemon(
    daemon: Daemon,
    *,
    exit_when_idle: bool,
    migrate: bool,
    console: Console | None,
    clock: Clock,
    log_level: str = "INFO",
    interval: float = REFRESH,
) -> None:
    """Run ``daemon``; with a ``console`` (a terminal), draw the live view while it runs."""
    if console is None:
        await daemon.run(exit_when_idle=exit_when_idle, migrate=migrate)
        return
    view = LiveView(daemon, console, clock=clock, interval=interval)
    # The view owns stdout: logs go to stderr, and when stderr is the same terminal, through
    # the live display (printed above the view instead of tearing it).
    redirect = sys.stderr.isatty()
    with Live(
        console=console,
        auto_refresh=False,
        redirect_stdout=False,
        redirect_stderr=redirect,
        transient=False,
    ) as live:
        # Under redirect, sys.stderr is now the display's proxy: STDERR follows it.
        configure_logging(level=log_level, stream=STDERR)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(view.run, live)
                try:
                    await daemon.run(exit_when_idle=exit_when_idle, migrate=migrate)
                finally:
                    tg.cancel_scope.cancel()
        finally:
            await view.close(live)


async def run(args: argparse.Namespace, daemon: Daemon, clock: Clock, out: Output) -> int:
    """``run``: the daemon in the foreground until a signal or, with the flag, until idle.

    Under the live view on the terminal the view says what INFO lines would, so unless a level
    is asked for (``--log-level``, ``ORCH_LOG_LEVEL``) only warnings and errors are printed
    above it.
    """
    console = out.console if out.rich and not args.no_live else None
    level = args.resolved_log_level
    explicit = args.log_level is not None or bool(os.environ.get("ORCH_LOG_LEVEL", "").strip())
    if console is not None and sys.stderr.isatty() and not explicit:
        level = "WARNING"
    await run_daemon(
        daemon,
        exit_when_idle=args.exit_when_idle,
        migrate=args.migrate,
        console=console,
        clock=clock,
        log_level=level,
    )
    return EXIT_OK
