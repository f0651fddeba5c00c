"""``orchestrator ledger copy --from URL --to URL``: a whole ledger into an empty database.

The copy itself is :func:`orchestrator.ledger.copy.copy_ledger`; this adds the kernel's word
on who holds a SQLite ledger (``/proc/locks``) and turns refusals into exit code 2.
"""

from __future__ import annotations

import argparse

from orchestrator.cli._ledger import CliError, lock_holder
from orchestrator.cli._parser import EXIT_OK, EXIT_USAGE
from orchestrator.cli._render import Output
from orchestrator.clock import Clock
from orchestrator.errors import ConfigError, CopyRefused
from orchestrator.ledger.copy import copy_ledger
from orchestrator.ledger.engine import sqlite_path
from orchestrator.ledger.lock import lock_path


async def ledger_copy(args: argparse.Namespace, clock: Clock, out: Output) -> int:
    """``ledger copy``: copy, then say how many rows of each table went over.

    Raises:
        CliError: the copy was refused (code 2: the message says why); nothing changed.
    """
    for flag, url in (("--from", args.source), ("--to", args.target)):
        _refuse_held(flag, url)
    try:
        report = await copy_ledger(args.source, args.target, clock=clock)
    except CopyRefused as exc:
        raise CliError(str(exc), code=EXIT_USAGE) from None
    counts = ", ".join(f"{n} {table}" for table, n in report.rows.items())
    cleared = f"; leases cleared on {report.leases_cleared} jobs" if report.leases_cleared else ""
    out.line(f"copied {counts} from {report.source} to {report.target}{cleared}")
    return EXIT_OK


def _refuse_held(flag: str, url: str) -> None:
    """Refuse a SQLite ledger whose daemon lock a live process holds, naming its pid.

    The copy takes the lock itself (and refuses then too); asking the kernel first names the
    holder even when its pid in the lock file is stale, and logs no lock warning.
    """
    try:
        path = sqlite_path(url)
    except ConfigError:
        return  # the copy says what is wrong with the URL
    if path is None:
        return
    pid = lock_holder(lock_path(path))
    if pid is not None:
        raise CliError(
            f"{flag}: a running daemon (pid {pid}) holds the ledger {path} "
            f"(lock {lock_path(path)}): stop it first",
            code=EXIT_USAGE,
        )
