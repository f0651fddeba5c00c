"""The ``ORCH_*`` environment overrides, applied after the config file is read.

A private helper of :mod:`orchestrator.config`, which documents the variables.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from orchestrator.config._read import check_dir, listen_address, resolve_path, resolve_url
from orchestrator.errors import ConfigError

ENVIRONMENT = "environment"
"""The ``file`` named in errors about an ``ORCH_*`` variable."""


class EnvOverrides:
    """The ``ORCH_*`` environment overrides."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.cwd = Path.cwd()

    def _value(self, name: str, *, optional: bool) -> str | None:
        value = self.environ.get(name)
        if value is None:
            return None
        if not value.strip() and not optional:
            raise ConfigError(
                "is set but empty: unset it or give a value", file=ENVIRONMENT, key=name
            )
        return value.strip()

    def ledger_url(self, url: str) -> str:
        value = self._value("ORCH_LEDGER_URL", optional=False)
        if value is None:
            return url
        return resolve_url(value, self.cwd, file=ENVIRONMENT, key="ORCH_LEDGER_URL", in_file=False)

    def path(self, name: str, current: Path | None, *, optional: bool) -> Path | None:
        value = self._value(name, optional=optional)
        if value is None:
            return current
        if not value:
            return None
        path = resolve_path(value, self.cwd)
        if name == "ORCH_JOBS_DIR":
            check_dir(path, file=ENVIRONMENT, key=name)
        return path

    def listen(self, current: str | None) -> str | None:
        value = self._value("ORCH_HTTP_LISTEN", optional=True)
        if value is None:
            return current
        if not value:
            return None
        return listen_address(value, file=ENVIRONMENT, key="ORCH_HTTP_LISTEN")
