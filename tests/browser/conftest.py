"""A real daemon process serving the dashboard, and headless Chromium to look at it.

The browser is Debian's ``chromium`` (``.ci/run`` installs it), driven by Playwright's Python
package with ``executable_path``: Playwright never downloads a browser here. Without
``/usr/bin/chromium`` (or without the ``playwright`` package) these tests are skipped with the
reason.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.service.conftest import stop_group, write_input

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TOKEN = "browser-test-token-5e5e5e5e"
START_TIMEOUT = 60.0

try:
    import playwright.async_api  # noqa: F401

    HAVE_PLAYWRIGHT = True
except ImportError:  # pragma: no cover - the test extra installs it
    HAVE_PLAYWRIGHT = False

requires_browser = pytest.mark.skipif(
    not CHROMIUM.exists() or not HAVE_PLAYWRIGHT,
    reason="browser tests need Debian's chromium at /usr/bin/chromium (apt-get install "
    "chromium; .ci/run installs it) and the playwright package (the test extra)",
)


def _config(folder: Path) -> Path:
    """Two quick jobs, one that runs for minutes (to cancel), one rejected with markup in its
    error text (to check it is shown as text)."""
    write_input(folder / "data" / "quick-a.jsonl", 6, prefix="qa")
    write_input(folder / "data" / "quick-b.jsonl", 8, prefix="qb")
    write_input(folder / "data" / "long-haul.jsonl", 400, prefix="lh")
    hostile = '<img src=x onerror="window.pwned=1"><b>bold</b>'
    line = json.dumps({"custom_id": hostile, "body": {"messages": []}})
    (folder / "data" / "hostile.jsonl").write_text(f"{line}\n{line}\n", encoding="utf-8")
    jobs = ""
    for name in ("quick-a", "quick-b", "long-haul", "hostile"):
        jobs += (
            f'[[jobs]]\nname = "{name}"\nworkspace = "main"\ninput = "data/{name}.jsonl"\n'
            'model = "mistral-small-latest"\nendpoint = "/v1/chat/completions"\n'
        )
    path = folder / "orchestrator.toml"
    path.write_text(
        f"""
[ledger]
url = "sqlite:///var/ledger.db"
[results]
dir = "var/results"
[polling]
initial = "200ms"
max = "1s"
jitter = 0.0
[intake]
rescan_interval = "1s"
[http]
listen = "127.0.0.1:0"
token_env = "ORCH_HTTP_TOKEN"
[workspaces.main]
base_url = "embedded"
pending_budget = 1000
[workspaces.openai]
provider = "openai"
base_url = "embedded"
pending_budget = 500
token_budget = 50000
[emulator]
time_scale = 2.0
throughput = 1.0
validation_seconds = 5.0
failure_fraction = 0.1
seed = 5
{jobs}""",
        encoding="utf-8",
    )
    return path


def _listening_url(log: Path) -> str | None:
    if not log.exists():
        return None
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        if '"http.listening"' in line:
            return str(json.loads(line)["url"])
    return None


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """``orchestrator run`` on its own process group: (base URL, config path)."""
    config = _config(tmp_path)
    log = tmp_path / "daemon.log"
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    env |= {"PYTHONUNBUFFERED": "1", "ORCH_HTTP_TOKEN": TOKEN}
    command = [sys.executable, "-m", "orchestrator", "run", "--config", str(config), "--migrate"]
    wrapper = shutil.which("timeout")
    if wrapper:  # dies even if pytest is killed
        command = [wrapper, "--foreground", "--kill-after=5", "300", *command]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while (url := _listening_url(log)) is None:
                assert process.poll() is None, log.read_text(encoding="utf-8")
                assert time.monotonic() < deadline, "the daemon did not start listening"
                time.sleep(0.1)
            httpx.get(f"{url}/healthz", timeout=10).raise_for_status()
            yield url, config
        finally:
            stop_group(process)


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[object]:
    """A fresh headless Chromium (its own profile folder), as a Playwright browser context."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1180, "height": 760},
        )
        try:
            yield context
        finally:
            await context.close()
