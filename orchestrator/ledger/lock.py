"""The one-daemon locks: an exclusive ``flock`` on ``<db file>.lock``; PostgreSQL advisory locks.

The kernel drops a ``flock`` when the last descriptor of its open file closes, which
includes the death of the process by ``kill -9``: the lock can never outlive its holder, and a
stale lock file on disk means nothing. Locks are per open file, so a second attempt fails even
inside the same process.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from orchestrator.errors import LedgerLocked

log = structlog.get_logger(__name__)


def lock_path(database: Path) -> Path:
    """The lock file that guards ``database``."""
    return database.with_name(database.name + ".lock")


class DaemonLock:
    """A held exclusive lock; :meth:`release` (or process death) lets it go."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, database: Path) -> DaemonLock:
        """Take the lock for ``database`` at once, or fail.

        The holder writes its pid into the lock file, for operators; the file's content is
        never trusted, only the kernel lock.

        Raises:
            LedgerLocked: another process (or another handle in this one) holds the lock.
            OSError: the lock file cannot be created.
        """
        path = lock_path(database)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            log.warning("ledger.lock_busy", path=str(path), holder_pid=holder)
            raise LedgerLocked(str(database)) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        log.debug("ledger.lock_acquired", path=str(path), pid=os.getpid())
        return cls(path, fd)

    @property
    def held(self) -> bool:
        """True until :meth:`release`."""
        return self._fd is not None

    def release(self) -> None:
        """Let the lock go (idempotent)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
        log.debug("ledger.lock_released", path=str(self.path))


def _read_pid(fd: int) -> int | None:
    """The pid the holder wrote, if readable (diagnostics only)."""
    with contextlib.suppress(OSError, ValueError):
        return int(os.pread(fd, 32, 0).decode().strip())
    return None


DAEMON_LOCK_KEY = 0x6F72_6368_6461_656D & 0x7FFF_FFFF_FFFF_FFFF
"""The advisory-lock key of the one-daemon lock on PostgreSQL ("orchdaem")."""


@contextlib.asynccontextmanager
async def postgres_session_lock(engine: AsyncEngine, key: int, url: str) -> AsyncIterator[None]:
    """Hold session advisory lock ``key`` on a connection kept for the block, or fail at once.

    The server releases the lock when that connection drops, however the process dies.

    Raises:
        LedgerLocked: another session holds the lock.
    """
    async with engine.connect() as conn:
        held = await conn.scalar(sa.text("SELECT pg_try_advisory_lock(:key)"), {"key": key})
        await conn.commit()  # the lock is the session's; no transaction stays open
        if not held:
            raise LedgerLocked(url)
        log.debug("ledger.lock_acquired", url=url)
        try:
            yield
        finally:
            with anyio.CancelScope(shield=True):
                await conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                await conn.commit()
            log.debug("ledger.lock_released", url=url)
