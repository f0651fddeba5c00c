"""Smoke tests of the benchmark harnesses: each runs once at a toy size (never the benchmark)."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """A harness's ``main`` configures the root logger: put it back as it was."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def run_harness(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> Callable[..., tuple[str, dict[str, Any]]]:
    """Run a harness's ``main`` with a scratch folder under ``tmp_path``; (report, figures)."""

    def run(main: Callable[[list[str]], int], *args: str) -> tuple[str, dict[str, Any]]:
        figures_path = tmp_path / "figures.json"
        work = tmp_path / "work"
        work.mkdir(exist_ok=True)
        assert main([*args, "--work-dir", str(work), "--json", str(figures_path)]) == 0
        assert list(work.iterdir()) == [], "the harness left scratch files behind"
        return capsys.readouterr().out, json.loads(figures_path.read_text())

    return run


needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
