"""The ledger's connection handling, shared by the parts of :class:`SqlLedger`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from orchestrator.clock import Clock
from orchestrator.ledger.engine import READ_ONLY
from orchestrator.ledger.leases import EXCLUSIVE_TTL
from orchestrator.ledger.lock import DaemonLock


class LedgerBase:
    """The engine, the clock, the replica identity, and shielded transactions."""

    def __init__(self, engine: AsyncEngine, *, url: str, clock: Clock) -> None:
        """Wrap an engine of :func:`~orchestrator.ledger.engine.create_engine` (use connect).

        :meth:`connect` also checks the schema revision; this does not.
        """
        self._engine = engine
        # Reads start with a deferred BEGIN on SQLite, so they never wait for the write lock.
        self._reader = engine.execution_options(**{READ_ONLY: True})
        self._url = url
        self._clock = clock
        self._locks: list[DaemonLock] = []
        self._owner: str | None = None
        self._fenced = False
        self._ttl = EXCLUSIVE_TTL

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction that cancellation cannot cut in half.

        Cancelling a task mid-transaction would leave its connection inside ``BEGIN
        IMMEDIATE`` in aiosqlite's thread, holding the write lock until the busy timeout of
        whoever comes next; transactions here are short, so they always run to commit or
        rollback, and the cancellation lands right after.
        """
        with anyio.CancelScope(shield=True):
            async with self._engine.begin() as conn:
                yield conn

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        """A read-only connection, shielded for the same reason as :meth:`_write`."""
        with anyio.CancelScope(shield=True):
            async with self._reader.connect() as conn:
                yield conn
