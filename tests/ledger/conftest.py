"""Fixtures of the ledger contract suite: a migrated ledger on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from orchestrator.clock import FakeClock
from orchestrator.ledger import SqlLedger
from orchestrator.ledger.migrate import upgrade
from tests.ledger.databases import clock, ledger_url, postgres_url, sqlite_url

__all__ = ["clock", "ledger_url", "postgres_url", "sqlite_url"]


@pytest.fixture
async def ledger(ledger_url: str, clock: FakeClock) -> AsyncIterator[SqlLedger]:
    """A migrated, connected ledger driven by the fake clock."""
    await upgrade(ledger_url)
    async with await SqlLedger.connect(ledger_url, clock=clock) as opened:
        yield opened
