"""kill -9 of a real daemon process around a webhook delivery: no event is lost.

The daemon runs as ``orchestrator run`` on an embedded workspace (fast simulated jobs); the
receiver is a real HTTP server in this process, verifying with ``standardwebhooks``.
"""

from __future__ import annotations

import socket
import sqlite3
import time
from pathlib import Path

import pytest

from tests.survival.harness import DaemonProcess, python_env
from tests.webhook_receiver import SECRET, receiving

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _project(root: Path, url: str) -> Path:
    (root / "data").mkdir(parents=True)
    line = '{"custom_id": "r%d", "body": {"messages": [{"role": "user", "content": "q"}]}}\n'
    (root / "data" / "in.jsonl").write_text("".join(line % i for i in range(5)))
    config = root / "config.toml"
    config.write_text(
        '[ledger]\nurl = "sqlite:///var/ledger.db"\n[results]\ndir = "var/results"\n'
        '[polling]\ninitial = "200ms"\nmax = "1s"\n'
        '[emulator]\ntime_scale = 50.0\nvalidation_seconds = "1s"\n'
        '[workspaces.main]\nbase_url = "embedded"\n'
        f'[[webhooks]]\nurl = "{url}"\nsecret_env = "ORCH_WEBHOOK_SECRET"\n'
        'events = ["job.done"]\nbackoff = "1s"\n'
        '[[jobs]]\nname = "cheese"\nworkspace = "main"\ninput = "data/in.jsonl"\n'
        'model = "mistral-small-latest"\nendpoint = "/v1/chat/completions"\n'
    )
    return config


def _deliveries(root: Path) -> list[tuple[str, int]]:
    with sqlite3.connect(root / "var" / "ledger.db") as db:
        return list(db.execute("SELECT state, attempts FROM outbox_deliveries"))


ENV = python_env(ORCH_WEBHOOK_SECRET=SECRET)


@pytest.mark.timeout(120)
def test_kill9_after_done_before_delivery(tmp_path: Path) -> None:
    """Killed once job.done is committed while the receiver is down: the restart delivers."""
    port = _free_port()
    config = _project(tmp_path, f"http://127.0.0.1:{port}/hooks")
    daemon = DaemonProcess(config, tmp_path / "daemon-1.log", env=ENV)
    try:
        assert daemon.wait_for_event(frozenset({"collect.done"}), 60), daemon.log_text()
    finally:
        daemon.kill()
    ((state, _),) = _deliveries(tmp_path)
    assert state == "pending"
    with receiving(port=port) as receiver:
        again = DaemonProcess(config, tmp_path / "daemon-2.log", env=ENV)
        assert again.wait(60) == 0, again.log_text()
    (request,) = receiver.requests
    assert request["verified"] and request["payload"]["type"] == "job.done"
    assert request["payload"]["data"]["name"] == "cheese"
    assert _deliveries(tmp_path)[0][0] == "delivered"


@pytest.mark.timeout(120)
def test_kill9_mid_delivery_redelivers_the_same_id(tmp_path: Path) -> None:
    """Killed while the receiver holds the request: the restart sends the same message again."""
    with receiving(delay=30.0) as receiver:
        config = _project(tmp_path, receiver.url)
        daemon = DaemonProcess(config, tmp_path / "daemon-1.log", env=ENV)
        try:
            deadline = time.monotonic() + 60
            while not receiver.requests and time.monotonic() < deadline and daemon.running():
                time.sleep(0.01)
            assert receiver.requests, daemon.log_text()
        finally:
            daemon.kill()  # the receiver has not answered yet
        receiver.delay = 0.0
        again = DaemonProcess(config, tmp_path / "daemon-2.log", env=ENV)
        assert again.wait(60) == 0, again.log_text()
    first, second = receiver.requests
    assert first["headers"]["webhook-id"] == second["headers"]["webhook-id"]
    assert first["body"] == second["body"] and second["verified"]
    assert _deliveries(tmp_path) == [("delivered", 1)]
