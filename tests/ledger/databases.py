"""Scratch ledgers for the contract suites: a SQLite file, or a PostgreSQL database per test.

The fixtures are imported by the conftests of ``tests/ledger`` and ``tests/migrations``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from orchestrator.clock import FakeClock
from orchestrator.ledger.engine import async_url

POSTGRES_ENV = "ORCH_TEST_POSTGRES_URL"

BACKENDS = [
    pytest.param("sqlite_url", id="sqlite"),
    pytest.param("postgres_url", id="postgres", marks=pytest.mark.postgres),
]
"""Parameters of a fixture that resolves to one ledger URL per backend."""


@asynccontextmanager
async def scratch_postgres_database() -> AsyncIterator[str]:
    """Create an empty database on the test server; yield its plain URL; drop it.

    Skips the test when ``ORCH_TEST_POSTGRES_URL`` is not set.
    """
    base = os.environ.get(POSTGRES_ENV)
    if not base:
        pytest.skip(
            f"PostgreSQL tests need {POSTGRES_ENV}, e.g. postgresql://postgres@127.0.0.1:5432/test"
        )
    name = f"orch_test_{uuid.uuid4().hex[:16]}"
    admin = create_async_engine(async_url(base), isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(base).set(database=name).render_as_string(hide_password=False)
        finally:
            async with admin.connect() as conn:
                # FORCE ends sessions a failed test may have left open.
                await conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await admin.dispose()


@pytest.fixture
def clock() -> FakeClock:
    """A clock that only moves when the test says so."""
    return FakeClock()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite ledger URL in the test's own folder (the file does not exist yet)."""
    return f"sqlite:///{tmp_path / 'ledger.db'}"


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """A URL of an empty PostgreSQL database of this test's own, dropped afterwards."""
    async with scratch_postgres_database() as url:
        yield url


@pytest.fixture(params=BACKENDS)
def ledger_url(request: pytest.FixtureRequest) -> str:
    """The URL of an empty ledger on each backend."""
    url: str = request.getfixturevalue(request.param)
    return url
