"""Processes for the survival suites: the emulator and the daemon as real, bounded processes.

Every process is started with a deadline and stopped by its pid (SIGKILL or SIGTERM, then a
bounded wait), whatever happens to the test. Logs go to files (JSON lines, unbuffered) so a
test can react to an event the daemon logged and a failure can show what happened.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from orchestrator.emulator import Emulator

START_TIMEOUT = 30.0
"""Seconds a process may take to come up (2 slow cores, a busy CI machine)."""
STOP_TIMEOUT = 15.0
"""Seconds a killed or stopped process may take to be reaped."""
API_KEY = "survival-key-0123456789"
"""The bearer key of the suites' workspace (the emulator accepts only this one)."""
API_KEY_ENV = "SURVIVAL_MISTRAL_API_KEY"


def python_env(**extra: str) -> dict[str, str]:
    """The environment of a child: no ORCH_* from the parent, unbuffered output, ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    env["PYTHONUNBUFFERED"] = "1"  # a SIGKILL must not eat the log lines a test waits for
    env.update(extra)
    return env


class LogTail:
    """Reads the JSON log lines a process appended to its log file since the last read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""

    def events(self) -> Iterator[dict[str, Any]]:
        """New complete log records (lines that are not JSON are skipped)."""
        try:
            with self.path.open("rb") as stream:
                stream.seek(self._offset)
                data = stream.read()
        except FileNotFoundError:
            return
        self._offset += len(data)
        data = self._partial + data
        *lines, self._partial = data.split(b"\n")
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                yield record


def read_events(path: Path) -> list[dict[str, Any]]:
    """Every JSON log record in ``path``."""
    return list(LogTail(path).events())


def stop_process(process: subprocess.Popen[bytes], *, sig: int = signal.SIGKILL) -> int:
    """Send ``sig`` to ``process`` (by its pid) unless it has ended; reap it; return its code."""
    if process.poll() is None:
        process.send_signal(sig)
    return process.wait(timeout=STOP_TIMEOUT)


class EmulatorProcess:
    """``orchestrator emulate`` on a persistent state folder; restartable on the same port."""

    def __init__(self, root: Path, *, options: Sequence[str], api_key: str = API_KEY) -> None:
        self.root = root
        self.state_dir = root / "emulator-state"
        self.options = list(options)
        self.api_key = api_key
        self.port = 0
        self.url = ""
        self.starts = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.workspace = Emulator.workspace_id(api_key)

    def start(self) -> str:
        """Start (or restart, on the same port and state) and return the base URL."""
        assert self.process is None or self.process.poll() is not None, "already running"
        self.starts += 1
        ready = self.root / "emulator.url"
        ready.unlink(missing_ok=True)
        log_path = self.root / f"emulator-{self.starts}.log"
        command = [
            sys.executable, "-m", "orchestrator", "emulate",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--state-dir", str(self.state_dir), "--ready-file", str(ready),
            "--api-key", self.api_key, *self.options,
        ]  # fmt: skip
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=python_env()
            )
        deadline = time.monotonic() + START_TIMEOUT
        while not ready.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                stop_process(self.process)
                raise AssertionError(f"the emulator did not start:\n{log_path.read_text()}")
            time.sleep(0.02)
        self.url = ready.read_text().strip()
        self.port = int(self.url.rsplit(":", 1)[1])
        return self.url

    def kill(self) -> None:
        """SIGKILL the emulator (its state stays on disk)."""
        if self.process is not None:
            stop_process(self.process)

    def terminate(self) -> int:
        """SIGTERM the emulator and return its exit code."""
        assert self.process is not None
        return stop_process(self.process, sig=signal.SIGTERM)

    def client(self) -> httpx.Client:
        """A client of the running emulator with the workspace's key."""
        return httpx.Client(
            base_url=self.url,
            timeout=60,
            # The Anthropic wire needs its version header; the others ignore it.
            headers={"Authorization": f"Bearer {self.api_key}", "anthropic-version": "2023-06-01"},
        )

    def stats(self) -> dict[str, Any]:
        """The workspace's introspection figures (``/_emulator/stats``)."""
        with self.client() as client:
            response = client.get("/_emulator/stats", params={"workspace": self.workspace})
            response.raise_for_status()
            data: dict[str, Any] = response.json()
        workspace: dict[str, Any] = data["workspaces"].get(self.workspace, {})
        return workspace

    def set_faults(self, faults: Mapping[str, Any]) -> None:
        """Replace the injected faults of the running emulator."""
        with httpx.Client(base_url=self.url, timeout=30) as client:
            client.put("/_emulator/faults", json=dict(faults)).raise_for_status()


class DaemonProcess:
    """One life of ``orchestrator run --exit-when-idle --migrate`` as a process."""

    def __init__(self, config: Path, log_path: Path, *, env: Mapping[str, str]) -> None:
        self.log_path = log_path
        command = [
            sys.executable, "-m", "orchestrator", "run", "--config", str(config),
            "--exit-when-idle", "--migrate", "--no-live", "--log-level", "INFO",
        ]  # fmt: skip
        self.started = time.monotonic()
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=dict(env)
            )
        self.tail = LogTail(log_path)

    @property
    def pid(self) -> int:
        """The daemon's process id."""
        return self.process.pid

    def running(self) -> bool:
        """True while the process has not ended."""
        return self.process.poll() is None

    def age(self) -> float:
        """Real seconds since the process was started."""
        return time.monotonic() - self.started

    def wait_for_event(self, names: frozenset[str], timeout: float) -> str | None:
        """Wait until the daemon logs one of ``names``; return it (None: timeout or exit)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for record in self.tail.events():
                if record.get("event") in names:
                    return str(record["event"])
            if not self.running():
                return None
            time.sleep(0.005)
        return None

    def kill(self) -> int:
        """SIGKILL the daemon (by its pid) and reap it."""
        return stop_process(self.process)

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the daemon."""
        self.process.send_signal(sig)

    def wait(self, timeout: float) -> int:
        """Wait for the daemon to exit; SIGKILL it and fail if it takes longer than ``timeout``."""
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"the daemon did not finish within {timeout:g} s; its log: {self.log_path}"
            ) from None

    def log_text(self, last: int = 40) -> str:
        """The last ``last`` lines of the daemon's log (for failure messages)."""
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-last:])
