"""`run` refuses a ledger that is not at the schema head; `migrate` or `run --migrate` fixes it."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from orchestrator.cli import main
from orchestrator.config import load_config
from orchestrator.ledger.migrate import current_revision, downgrade, head_revision, upgrade
from tests.service.conftest import write_config as _write_config

FAST = '[emulator]\ntime_scale = 20.0\nvalidation_seconds = "1s"'
"""The embedded emulator at 20x: a whole run takes about a second of real time."""


def write_config(folder: Path, **kwargs: object) -> Path:
    """The service tests' config, with a fast embedded emulator."""
    return _write_config(folder, extra=FAST, **kwargs)  # type: ignore[arg-type]


pytestmark = pytest.mark.usefixtures("restore_logging")


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def test_run_refuses_a_ledger_never_migrated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No ledger yet: exit 1, one line naming the ledger and saying to run migrate."""
    path = write_config(tmp_path, listen=None)
    assert main(["run", "--config", str(path), "--exit-when-idle"]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith("orchestrator: ledger sqlite:///")
    assert "schema revision none" in line
    assert "run `orchestrator migrate --config FILE` (or `run --migrate`)" in line
    assert not (tmp_path / "var" / "ledger.db").exists()  # refusing creates nothing


def test_run_refuses_a_ledger_behind_the_head(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A ledger at an older revision is refused the same way, and left as it was."""
    path = write_config(tmp_path, listen=None)
    url = load_config(path, environ={}).ledger.url
    anyio.run(upgrade, url)
    anyio.run(downgrade, url, "base")
    assert main(["run", "--config", str(path), "--exit-when-idle"]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert f"expected {head_revision()}" in line
    assert "orchestrator migrate" in line
    assert anyio.run(current_revision, url) is None


def test_migrate_then_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`migrate` brings the ledger to head (twice is harmless); then `run` works."""
    path = write_config(tmp_path, listen=None)
    url = load_config(path, environ={}).ledger.url
    assert main(["migrate", "--config", str(path)]) == 0
    assert main(["migrate", "--config", str(path)]) == 0
    assert anyio.run(current_revision, url) == head_revision()
    capsys.readouterr()
    assert main(["run", "--config", str(path), "--exit-when-idle"]) == 0
    assert capsys.readouterr().err == ""
    assert (tmp_path / "var" / "results" / "alpha" / "job.json").is_file()


def test_run_migrate_does_it_first(tmp_path: Path) -> None:
    """`run --migrate` on a fresh ledger migrates, then runs every job to the end."""
    path = write_config(tmp_path, listen=None)
    assert main(["run", "--config", str(path), "--exit-when-idle", "--migrate"]) == 0
    assert (tmp_path / "var" / "results" / "beta" / "job.json").is_file()
