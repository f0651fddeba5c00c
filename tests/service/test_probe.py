"""The container HEALTHCHECK client against a real daemon endpoint, and on its own."""

from __future__ import annotations

import functools
import socket
import subprocess
import sys

import anyio
import pytest

from orchestrator.clock import FakeClock
from orchestrator.config import Config
from orchestrator.emulator import Emulator
from orchestrator.service import probe
from tests.service.conftest import running


@pytest.mark.parametrize(
    ("listen", "url"),
    [
        ("127.0.0.1:9464", "http://127.0.0.1:9464/healthz"),
        ("0.0.0.0:9464", "http://127.0.0.1:9464/healthz"),
        ("[::]:8000", "http://[::1]:8000/healthz"),
        ("[::1]:8000", "http://[::1]:8000/healthz"),
        ("metrics.internal:80", "http://metrics.internal:80/healthz"),
        (" 10.0.0.5:1 ", "http://10.0.0.5:1/healthz"),
    ],
)
def test_health_url(listen: str, url: str) -> None:
    """Wildcard hosts become loopback; IPv6 keeps its brackets."""
    assert probe.health_url(listen) == url


@pytest.mark.parametrize("listen", ["9464", "host:", "host:port", ""])
def test_health_url_refuses_non_addresses(listen: str) -> None:
    """Anything but HOST:PORT is a clear error."""
    with pytest.raises(ValueError, match="expected HOST:PORT"):
        probe.health_url(listen)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_nothing_listening_is_unhealthy(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No answer at ORCH_HTTP_LISTEN: exit 1 and a line saying so."""
    port = _free_port()
    monkeypatch.setenv("ORCH_HTTP_LISTEN", f"0.0.0.0:{port}")
    assert probe.main([]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"unhealthy: no answer from http://127.0.0.1:{port}/healthz")


def test_bad_arguments(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Two URLs, --help or a malformed ORCH_HTTP_LISTEN: exit 2 with a usage line."""
    assert probe.main(["a", "b"]) == 2
    assert probe.main(["--help"]) == 2
    monkeypatch.setenv("ORCH_HTTP_LISTEN", "nonsense")
    assert probe.main([]) == 2
    assert "ORCH_HTTP_LISTEN: expected HOST:PORT" in capsys.readouterr().err


@pytest.mark.anyio
async def test_probe_follows_the_daemon_health(
    config: Config,
    clock: FakeClock,
    emulator: Emulator,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Exit 0 while the loops are fresh; exit 1 naming the stalled loop once one stalls."""
    async with running(config, clock, emulator) as daemon:
        assert daemon.http is not None and daemon.runtime is not None
        url = daemon.http.url + "/healthz"
        # urllib blocks: run it in a thread while the server runs on this event loop.
        assert await anyio.to_thread.run_sync(probe.main, [url]) == 0
        # (The daemon's own log lines share stdout here: the probe's line is the last.)
        assert capsys.readouterr().out.splitlines()[-1] == "healthy: ok"
        daemon.runtime.heartbeats["collect:main"] = clock.now() - 100_000
        assert await anyio.to_thread.run_sync(functools.partial(probe.main, [url])) == 1
        assert capsys.readouterr().out.splitlines()[-1] == (
            f"unhealthy: HTTP 503 from {url}: stalled loops: collect:main"
        )


def test_the_probe_starts_without_the_daemon() -> None:
    """`python -m orchestrator.service.probe` imports none of the daemon's dependencies."""
    code = (
        "import sys, runpy; sys.argv = ['probe', 'http://127.0.0.1:1/healthz']\n"
        "try:\n    runpy.run_module('orchestrator.service.probe', run_name='__main__')\n"
        "except SystemExit as exit:\n    code = exit.code\n"
        "heavy = sorted(m for m in ('orchestrator.daemon', 'sqlalchemy', 'uvicorn', 'httpx',"
        " 'prometheus_client', 'structlog') if m in sys.modules)\n"
        "print(code, heavy)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert result.stdout.splitlines()[-1] == "1 []"
