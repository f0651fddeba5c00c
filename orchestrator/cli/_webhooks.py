"""``orchestrator webhooks``, and the deliveries section of ``show NAME``.

A delivery is one event for one endpoint (a ``[[webhooks]]`` URL or a ``[[hooks]]`` command):
pending (waiting for its next attempt), delivered, or dead (given up after ``max_age``, with
the last error). ``--redeliver`` makes one due again, with the same ``webhook-id`` and body.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Sequence
from typing import Any

from rich import box
from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from orchestrator.cli._ledger import CliError, open_ledger, wake_daemon
from orchestrator.cli._parser import EXIT_OK
from orchestrator.cli._render import Output
from orchestrator.clock import Clock
from orchestrator.config import Config
from orchestrator.ledger.outbox import DEAD, DELIVERED, PENDING, Delivery
from orchestrator.rows import timestamp

STATE_STYLES = {PENDING: "yellow", DELIVERED: "green", DEAD: "bold red"}


def delivery_row(delivery: Delivery, configured: Iterable[str]) -> dict[str, Any]:
    """A delivery for ``--json``: its fields, timestamps in ISO 8601, and whether its endpoint
    is still configured (a pending delivery to an endpoint that is not waits for it)."""
    row = delivery.as_json()
    for key in ("occurred_at", "since", "next_attempt_at", "last_attempt_at", "delivered_at"):
        row[key] = timestamp(row[key])
    if delivery.state != PENDING:
        row["next_attempt_at"] = None
    row["configured"] = delivery.endpoint in set(configured)
    return row


def _when(delivery: Delivery) -> str:
    if delivery.state == PENDING:
        return f"next {timestamp(delivery.next_attempt_at)}"
    if delivery.state == DELIVERED:
        return f"at {timestamp(delivery.delivered_at)}"
    return f"since {timestamp(delivery.last_attempt_at)}"


def _cells(delivery: Delivery, configured: set[str]) -> list[str]:
    endpoint = delivery.endpoint + ("" if delivery.endpoint in configured else " (not configured)")
    attempts = f"{delivery.attempts} attempt" + ("" if delivery.attempts == 1 else "s")
    return [
        str(delivery.id),
        delivery.job_name,
        delivery.type,
        delivery.state,
        attempts,
        delivery.last_status or "-",
        _when(delivery),
        endpoint,
        delivery.last_error or "",
    ]


def deliveries_plain(deliveries: Sequence[Delivery], configured: Iterable[str]) -> list[str]:
    """One line per delivery, for a pipe."""
    known = set(configured)
    rows = [_cells(d, known) for d in deliveries]
    widths = [max(len(row[i]) for row in rows) for i in range(7)] if rows else []
    lines = []
    for row in rows:
        head = "  ".join(cell.ljust(width) for cell, width in zip(row[:7], widths, strict=True))
        lines.append(f"  #{head}  {row[7]}" + (f"  ({row[8]})" if row[8] else ""))
    return lines


def deliveries_rich(
    deliveries: Sequence[Delivery], configured: Iterable[str], *, title: str
) -> RenderableType:
    """A table of deliveries, for a terminal."""
    known = set(configured)
    table = Table(box=box.SIMPLE_HEAD, title=title, title_justify="left", pad_edge=False)
    for header in ("ID", "JOB", "EVENT", "STATE", "ATTEMPTS", "LAST", "WHEN", "ENDPOINT", "ERROR"):
        table.add_column(header, overflow="fold")
    for delivery in deliveries:
        cells = _cells(delivery, known)
        table.add_row(*cells[:3], Text(cells[3], style=STATE_STYLES[delivery.state]), *cells[4:])
    return table


def show_section(out: Output, deliveries: Sequence[Delivery], config: Config) -> None:
    """The deliveries of one job, after the rest of ``show NAME``."""
    configured = [endpoint.endpoint for endpoint in config.endpoints]
    if not deliveries:
        if configured:
            out.line("\ndeliveries: none yet")
        return
    if out.rich:
        out.show(deliveries_rich(deliveries, configured, title=f"deliveries ({len(deliveries)})"))
    else:
        out.write(
            "\n"
            + "\n".join(
                [f"deliveries ({len(deliveries)}):", *deliveries_plain(deliveries, configured)]
            )
            + "\n"
        )


async def webhooks(args: argparse.Namespace, config: Config, clock: Clock, out: Output) -> int:
    """``webhooks``: the pending and dead deliveries (``--all``: delivered too), or
    ``--redeliver ID`` (a delivery id, or a webhook-id for every endpoint of that event)."""
    configured = [endpoint.endpoint for endpoint in config.endpoints]
    async with open_ledger(config, clock) as ledger:
        if args.redeliver:
            redone = await ledger.redeliver(args.redeliver)
            if not redone:
                raise CliError(
                    f"no delivery {args.redeliver!r}: give a delivery id or a webhook-id "
                    "from `orchestrator webhooks --all`"
                )
        else:
            states = None if args.all else (PENDING, DEAD)
            listed = await ledger.deliveries(states=states)
    if args.redeliver:
        if args.json:
            out.write(json.dumps([delivery_row(d, configured) for d in redone], indent=2) + "\n")
        else:
            for delivery in redone:
                out.line(
                    f"delivery #{delivery.id} ({delivery.type} of {delivery.job_name!r} to "
                    f"{delivery.endpoint}) is due again, webhook-id {delivery.webhook_id}"
                )
            pid = wake_daemon(config)
            out.line(
                f"the daemon (pid {pid}) was woken to deliver now"
                if pid is not None
                else "a running daemon delivers it within seconds; if none runs, "
                "`orchestrator run` will"
            )
        return EXIT_OK
    if args.json:
        out.write(json.dumps([delivery_row(d, configured) for d in listed], indent=2) + "\n")
    elif not listed:
        what = "deliveries" if args.all else "pending or dead deliveries"
        out.line(f"no {what} in the ledger {ledger.url}")
    elif out.rich:
        out.show(deliveries_rich(listed, configured, title=f"deliveries ({len(listed)})"))
    else:
        out.write("\n".join(deliveries_plain(listed, configured)) + "\n")
    return EXIT_OK
