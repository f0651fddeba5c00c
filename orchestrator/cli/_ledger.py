"""The CLI's side of the ledger: open it read-write without the daemon lock, find jobs by name,
and nudge a local daemon (SIGHUP) after ``submit`` or ``cancel``.

The read commands run while the daemon runs: SQLite in WAL mode lets them read (and ``submit``
and ``cancel`` write one short transaction) beside it. They never take the daemon lock.
"""

from __future__ import annotations

import difflib
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import structlog

from orchestrator.clock import Clock
from orchestrator.config import Config
from orchestrator.errors import JobNotFound, LedgerNotMigrated
from orchestrator.ledger import SqlLedger
from orchestrator.ledger.engine import display_url, sqlite_path
from orchestrator.ledger.lock import lock_path
from orchestrator.model import Job

log = structlog.get_logger(__name__)


class CliError(Exception):
    """A problem the CLI reports in one line with an exit code (not a bug)."""

    def __init__(self, message: str, *, code: int = 1) -> None:
        self.code = code
        super().__init__(message)


def ledger_missing(config: Config) -> CliError | None:
    """A clear error when the config's SQLite ledger file does not exist yet, else None."""
    path = sqlite_path(config.ledger.url)
    if path is None or path.exists():
        return None
    return CliError(
        f"the ledger {path} does not exist yet: create it with `orchestrator migrate --config "
        f"{config.path}` (or start the daemon with `orchestrator run --config {config.path} "
        "--migrate`)"
    )


@asynccontextmanager
async def open_ledger(config: Config, clock: Clock) -> AsyncIterator[SqlLedger]:
    """The config's ledger, closed on exit.

    Raises:
        CliError: the SQLite file does not exist yet (with the command that creates it).
        LedgerNotMigrated: the schema is behind (its message says to run ``migrate``).
        LedgerError: the database cannot be opened.
    """
    missing = ledger_missing(config)
    if missing is not None:
        raise missing
    try:
        ledger = await SqlLedger.connect(config.ledger.url, clock=clock)
    except LedgerNotMigrated as exc:
        raise CliError(
            f"{exc} (config {config.path}, ledger {display_url(config.ledger.url)})"
        ) from None
    try:
        yield ledger
    finally:
        await ledger.close()


async def find_job(ledger: SqlLedger, name: str, config: Config) -> Job:
    """The job named ``name``.

    Raises:
        CliError: no such job: the message suggests close names and how to list them.
    """
    try:
        return await ledger.get_by_name(name)
    except JobNotFound:
        names = [job.name for job in await ledger.list_jobs()]
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
        if not names:
            listing = "the ledger holds no job yet"
        else:
            listing = f"`orchestrator status --config {config.path}` lists the {len(names)} jobs"
        raise CliError(f"no job {name!r} in the ledger: {hint}{listing}") from None


def wake_daemon(config: Config) -> int | None:
    """Send SIGHUP to the daemon running on this machine on this SQLite ledger, if any.

    The daemon then rescans at once (intake admits a submitted job, wakes the loops for a
    cancel request). Only a process that provably holds the ledger's daemon lock (Linux
    ``/proc/locks``), whose pid is the one written in the lock file, and that handles SIGHUP
    right now is signalled: SIGHUP's default action would end any other process.

    Returns:
        The pid signalled, or None (PostgreSQL ledger, no local daemon, not Linux).
    """
    database = sqlite_path(config.ledger.url)
    if database is None:
        return None
    pid = lock_holder(lock_path(database))
    if pid is None or not _catches_sighup(pid):
        return None
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError:
        return None
    log.debug("cli.daemon_woken", pid=pid)
    return pid


def lock_holder(path: Path) -> int | None:
    """The pid holding an exclusive ``flock`` on ``path`` (per ``/proc/locks``), or None.

    The pid must also be the one the holder wrote into the file: the kernel is the proof that
    the lock is held, the file only names the holder.
    """
    try:
        info = os.stat(path)
        written = int(path.read_text(encoding="ascii").strip() or 0)
        table = Path("/proc/locks").read_text(encoding="ascii")
    except (OSError, ValueError):
        return None
    for line in table.splitlines():
        # "1: FLOCK  ADVISORY  WRITE 1234 08:02:131081 0 EOF"; waiters show "->" first.
        fields = line.split()
        if len(fields) < 6 or fields[1] != "FLOCK" or fields[3] != "WRITE":
            continue
        try:
            pid = int(fields[4])
            major, minor, inode = fields[5].split(":")
            same = (
                int(inode) == info.st_ino
                and int(major, 16) == os.major(info.st_dev)
                and int(minor, 16) == os.minor(info.st_dev)
            )
        except ValueError:
            continue
        if same and pid == written:
            return pid
    return None


def _catches_sighup(pid: int) -> bool:
    """Whether process ``pid`` has a SIGHUP handler installed (``SigCgt`` in its status)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    for line in status.splitlines():
        if line.startswith("SigCgt:"):
            try:
                mask = int(line.split()[1], 16)
            except (IndexError, ValueError):
                return False
            return bool(mask >> (signal.SIGHUP - 1) & 1)
    return False
