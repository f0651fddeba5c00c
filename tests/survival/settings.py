"""Knobs of the survival suites, read from the environment once, when the tests are collected.

(The root conftest clears ``ORCH_*`` variables around each test, so they are read here, at
import time.)

``ORCH_SOAK=1``
    also run the long versions (tests marked ``soak``).
``ORCH_SURVIVAL_SEED``
    seed of every randomised suite (default 7): the kill moments, the workload, the faults.
``ORCH_SURVIVAL_KILLS``
    SIGKILLs of the CI kill suite (default 20; the soak version does 100 or this, if more).
``ORCH_SURVIVAL_REPORT_DIR``
    folder where each suite writes its figures as ``<suite>.json`` (docs/reliability.md
    quotes them); they are always written to stderr too.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import attrs


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None


@attrs.frozen(kw_only=True)
class Settings:
    """The survival knobs."""

    soak: bool
    seed: int
    kills: int
    report_dir: Path | None

    @classmethod
    def from_env(cls) -> Settings:
        """Read the knobs from ``os.environ``."""
        folder = os.environ.get("ORCH_SURVIVAL_REPORT_DIR", "").strip()
        return cls(
            soak=bool(os.environ.get("ORCH_SOAK", "").strip()),
            seed=_int("ORCH_SURVIVAL_SEED", 7),
            kills=_int("ORCH_SURVIVAL_KILLS", 20),
            report_dir=Path(folder).resolve() if folder else None,
        )


SETTINGS = Settings.from_env()


def report(name: str, figures: dict[str, Any]) -> None:
    """Write a suite's figures to stderr and, if asked, to ``<report dir>/<name>.json``."""
    text = json.dumps(figures, indent=2, sort_keys=True, default=str)
    sys.stderr.write(f"survival figures {name}: {text}\n")
    if SETTINGS.report_dir is not None:
        SETTINGS.report_dir.mkdir(parents=True, exist_ok=True)
        (SETTINGS.report_dir / f"{name}.json").write_text(text + "\n", encoding="utf-8")
