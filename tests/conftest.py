"""Shared fixtures: the anyio backend, retries without waiting, a clean environment."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import stamina
import structlog


@pytest.fixture
def anyio_backend() -> str:
    """SQLAlchemy's async engine needs asyncio."""
    return "asyncio"


@pytest.fixture(autouse=True)
def _retries_without_waiting() -> Iterator[None]:
    """Provider retries keep their attempt counts but never sleep in tests."""
    stamina.set_testing(True, attempts=3)
    yield
    stamina.set_testing(False)


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """A test that runs ``main()`` configures logging for the process: undo it afterwards."""
    yield
    structlog.reset_defaults()


@pytest.fixture(autouse=True)
def _no_orchestrator_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings from the developer's shell must not leak into tests."""
    for key in list(os.environ):
        if key.startswith("ORCH_") and key != "ORCH_TEST_POSTGRES_URL":
            monkeypatch.delenv(key)
