"""The service sees the daemon only through its view: no module of it imports the daemon."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import orchestrator.service

SERVICE = Path(orchestrator.service.__file__).parent
FORBIDDEN = "orchestrator.daemon"


def _package(path: Path) -> str:
    """The dotted package a module at ``path`` belongs to (what a relative import starts from)."""
    return ".".join(path.relative_to(SERVICE.parent.parent).parent.parts)


def imported_modules(source: str, package: str) -> list[tuple[int, str]]:
    """Every module ``source`` imports, absolute, with its line: top level, in functions, in
    ``TYPE_CHECKING`` blocks alike (``ast.walk`` visits them all).

    ``package`` is the package the module lives in, to resolve relative imports.
    """
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join([*base, *([module] if module else [])])
            found.append((node.lineno, module))
            # ``from orchestrator import daemon`` names the package in the alias.
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return found


def daemon_imports(source: str, package: str = "orchestrator.service") -> list[str]:
    """The imports of ``source`` that reach into :mod:`orchestrator.daemon`, as ``line: module``."""
    return [
        f"{line}: {module}"
        for line, module in imported_modules(source, package)
        if module == FORBIDDEN or module.startswith(FORBIDDEN + ".")
    ]


def test_no_service_module_imports_the_daemon() -> None:
    """Every module under orchestrator/service is free of orchestrator.daemon imports."""
    modules = sorted(SERVICE.rglob("*.py"))
    assert len(modules) >= 5  # the package was found
    offences = {
        str(path.relative_to(SERVICE)): found
        for path in modules
        if (found := daemon_imports(path.read_text(encoding="utf-8"), _package(path)))
    }
    assert offences == {}


@pytest.mark.parametrize(
    "source",
    [
        "import orchestrator.daemon",
        "import orchestrator.daemon.app as app",
        "import json, orchestrator.daemon.poll",
        "from orchestrator.daemon import Daemon",
        "from orchestrator.daemon.poll import Poller",
        "from orchestrator import daemon",
        "from .. import daemon",
        "from ..daemon.context import Runtime",
        "import typing\nif typing.TYPE_CHECKING:\n    from orchestrator.daemon import X",
        "def f():\n    from orchestrator.daemon import collect\n    return collect",
    ],
)
def test_every_form_of_import_is_caught(source: str) -> None:
    """Plain, from, relative, TYPE_CHECKING and function-local imports all count."""
    assert daemon_imports(source) != []


@pytest.mark.parametrize(
    "source",
    [
        "import orchestrator.daemonic",
        "from orchestrator.service.view import DaemonView",
        "from . import health",
        "from .view import DaemonView",
        "from orchestrator.model import Job",
    ],
)
def test_neighbours_are_not_flagged(source: str) -> None:
    """Names that merely start alike, and the service's own modules, are allowed."""
    assert daemon_imports(source) == []
