"""`orchestrator run` as a real process against `orchestrator emulate`: the operator's view.

One run covers what an operator relies on: JSON lines on stdout with job names and ids, the API
key nowhere (not in any output, not in the ledger, even at DEBUG with faults and a refused key),
the HTTP endpoint, SIGHUP re-reading job definitions, and SIGTERM exiting 0 within the grace
period.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.service.conftest import stop_group, write_input

pytestmark = pytest.mark.slow

KEY = "sk-orchestrator-e2e-5c0ffee5c0ffee5c0ffee"
WRONG_KEY = "sk-orchestrator-wrong-0badc0de0badc0de"
GRACE = 10.0
DEADLINE = 120.0
EVENT_NAME = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$")


def _bounded(command: list[str], seconds: int) -> list[str]:
    """``command`` under coreutils ``timeout`` when available: it dies even if pytest is killed.

    ``--foreground`` makes ``timeout`` pass a signal on to the command once; otherwise it also
    signals the whole process group, and the daemon would get every SIGTERM twice.
    """
    wrapper = shutil.which("timeout")
    return (
        [wrapper, "--foreground", "--kill-after=5", str(seconds), *command] if wrapper else command
    )


def _wait_for(predicate: object, what: str, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


@contextmanager
def _process(
    command: list[str], log: Path, env: dict[str, str]
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``command`` with stdout and stderr to ``log``(.out/.err); always reap it.

    The command gets its own process group, and the whole group is stopped at the end: the
    ``timeout`` wrapper and the program under it alike.
    """
    with log.with_suffix(".out").open("wb") as out, log.with_suffix(".err").open("wb") as err:
        process = subprocess.Popen(command, stdout=out, stderr=err, env=env, start_new_session=True)
        try:
            yield process
        finally:
            stop_group(process)


def _env(**extra: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    return {**keep, "PYTHONUNBUFFERED": "1", **extra}


def _json_lines(path: Path) -> list[dict[str, object]]:
    text = path.read_text(encoding="utf-8")
    lines = []
    for raw in text.splitlines():
        try:
            lines.append(json.loads(raw))
        except json.JSONDecodeError:
            raise AssertionError(f"not a JSON line in {path.name}: {raw!r}") from None
    return lines


def _jobs_by_state(base_url: str) -> dict[str, float]:
    try:
        body = httpx.get(f"{base_url}/metrics", timeout=5).text
    except httpx.HTTPError:
        return {}
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(body):
        if family.name == "orchestrator_jobs":
            for sample in family.samples:
                state = sample.labels["state"]
                counts[state] = counts.get(state, 0) + sample.value
    return counts


def _write_config(folder: Path, emulator_url: str) -> Path:
    write_input(folder / "data" / "alpha.jsonl", 20, prefix="alpha")
    write_input(folder / "data" / "beta.jsonl", 30, prefix="beta")
    write_input(folder / "data" / "gamma.jsonl", 5, prefix="gamma")
    write_input(folder / "data" / "delta.jsonl", 10, prefix="delta")
    (folder / "jobs.d").mkdir()
    path = folder / "orchestrator.toml"
    path.write_text(
        f"""
[ledger]
url = "sqlite:///var/ledger.db"
[results]
dir = "var/results"
[polling]
initial = "250ms"
max = "1s"
[intake]
jobs_dir = "jobs.d"
rescan_interval = "1h"            # only SIGHUP brings new definitions in this test
[http]
listen = "127.0.0.1:0"
[daemon]
grace_period = "{GRACE:g}s"
[workspaces.main]
base_url = "{emulator_url}"
api_key_env = "MISTRAL_API_KEY"
[workspaces.stray]
base_url = "{emulator_url}"
api_key_env = "STRAY_API_KEY"     # a key the emulator refuses (401)
[[jobs]]
name = "alpha"
workspace = "main"
input = "data/alpha.jsonl"
model = "mistral-small-latest"
endpoint = "/v1/chat/completions"
[[jobs]]
name = "beta"
workspace = "main"
input = "data/beta.jsonl"
model = "mistral-small-latest"
endpoint = "/v1/chat/completions"
[[jobs]]
name = "gamma"
workspace = "stray"
input = "data/gamma.jsonl"
model = "mistral-small-latest"
endpoint = "/v1/chat/completions"
""",
        encoding="utf-8",
    )
    return path


def test_the_daemon_as_an_operator_sees_it(tmp_path: Path) -> None:
    """Jobs done, endpoint up, SIGHUP reloads, SIGTERM exits 0 in time, no key anywhere."""
    ready = tmp_path / "emulator.url"
    emulator = _bounded(
        [
            sys.executable, "-m", "orchestrator.emulator",
            "--port", "0", "--state-dir", str(tmp_path / "emulator"), "--ready-file", str(ready),
            "--api-key", KEY, "--validation-seconds", "0.5", "--throughput", "40",
            "--failure-fraction", "0.1",
            "--rate-limit-rate", "0.15", "--server-error-rate", "0.1", "--retry-after", "0",
            "--fault-routes", "jobs.list,files.upload,files.content", "--fault-seed", "5",
        ],
        300,
    )  # fmt: skip
    with _process(emulator, tmp_path / "emulator", _env()) as emu:
        _wait_for(lambda: ready.exists() or emu.poll() is not None, "the emulator", 30)
        assert emu.poll() is None, (tmp_path / "emulator.err").read_text()
        config = _write_config(tmp_path, ready.read_text().strip())
        daemon_cmd = _bounded(
            [
                sys.executable, "-m", "orchestrator", "--log-level", "DEBUG",
                "run", "--config", str(config), "--migrate",
            ],
            300,
        )  # fmt: skip
        env = _env(MISTRAL_API_KEY=KEY, STRAY_API_KEY=WRONG_KEY)
        out, err = tmp_path / "daemon.out", tmp_path / "daemon.err"
        with _process(daemon_cmd, tmp_path / "daemon", env) as daemon:

            def listening() -> str | None:
                for line in out.read_text(encoding="utf-8").splitlines():
                    if '"http.listening"' in line:
                        return str(json.loads(line)["url"])
                return None

            _wait_for(lambda: listening() or daemon.poll() is not None, "the endpoint", 30)
            assert daemon.poll() is None, err.read_text()
            base = listening()
            assert base is not None

            _wait_for(
                lambda: (
                    _jobs_by_state(base).get("done") == 2
                    and _jobs_by_state(base).get("rejected") == 1
                ),
                "alpha and beta done, gamma rejected",
            )
            assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200
            assert httpx.get(f"{base}/readyz", timeout=5).status_code == 200

            # A new definition arrives; SIGHUP (not the 1 h rescan) brings it in.
            (tmp_path / "jobs.d" / "delta.toml").write_text(
                '[[jobs]]\nname = "delta"\nworkspace = "main"\ninput = "../data/delta.jsonl"\n'
                'model = "mistral-small-latest"\nendpoint = "/v1/chat/completions"\n',
                encoding="utf-8",
            )
            daemon.send_signal(signal.SIGHUP)
            _wait_for(lambda: _jobs_by_state(base).get("done") == 3, "delta done after SIGHUP")

            started = time.monotonic()
            daemon.send_signal(signal.SIGTERM)
            code = daemon.wait(timeout=GRACE + 10)
            took = time.monotonic() - started
        assert code == 0, err.read_text()
        assert took < GRACE, f"SIGTERM took {took:.1f} s (grace period {GRACE:g} s)"
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{base}/healthz", timeout=2)

    # stdout: only JSON lines; stderr: nothing.
    assert err.read_text(encoding="utf-8") == ""
    lines = _json_lines(out)
    events = [str(line["event"]) for line in lines]
    for name in ("daemon.reload", "daemon.stopping", "http.stopped", "daemon.stopped"):
        assert name in events
    for line in lines:
        assert {"event", "level", "timestamp", "logger"} <= set(line), line
        if str(line["logger"]).startswith("orchestrator."):
            assert EVENT_NAME.match(str(line["event"])), line
        # Every line about a job names it and carries its ledger id.
        if {"job", "job_id", "remote_id"} & set(line):
            assert "job" in line and "job_id" in line, line
    provider_lines = [line for line in lines if line["logger"] == "orchestrator.providers.mistral"]
    assert any("job" in line for line in provider_lines), "provider lines carry the job"
    rejected = [line for line in lines if line.get("job") == "gamma" and line["level"] != "debug"]
    assert rejected, "the refused workspace's job is reported"

    # The keys: not in any output, the ledger or the results, even with DEBUG and errors.
    places = [out, err, *sorted((tmp_path / "var").rglob("*"))]
    for path in places:
        if path.is_file():
            data = path.read_bytes()
            for secret in (KEY, WRONG_KEY):
                assert secret.encode() not in data, f"{secret} leaked into {path}"

    results = tmp_path / "var" / "results"
    for name in ("alpha", "beta", "delta"):
        summary = json.loads((results / name / "job.json").read_text())
        assert summary["state"] == "done"
        assert summary["outcome"] in ("succeeded", "partial")
