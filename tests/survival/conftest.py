"""Survival suites: short versions in CI, long ones (``soak``) on demand.

``ORCH_SOAK=1`` (or ``-m soak``) runs the tests marked ``soak``; otherwise they are skipped.
The other knobs are in :mod:`tests.survival.settings`.
"""

from __future__ import annotations

import pytest

from tests.survival.dialects import wire
from tests.survival.settings import SETTINGS

__all__ = ["wire"]  # the fixture every process suite takes: one run per dialect


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the soak versions unless ORCH_SOAK is set or ``-m`` names the marker."""
    if SETTINGS.soak or "soak" in (config.getoption("markexpr", "") or ""):
        return
    skip = pytest.mark.skip(reason="long version: run with ORCH_SOAK=1 or -m soak")
    for item in items:
        if "soak" in item.keywords:
            item.add_marker(skip)
