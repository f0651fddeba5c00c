"""``python -m orchestrator.emulator`` as a process: SIGKILL, restart on the same state, SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow

KEY = {"Authorization": "Bearer process-key"}
START_TIMEOUT = 20.0


@contextmanager
def emulator_process(
    state_dir: Path, tmp_path: Path, name: str
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """Start the emulator on a free port; yield (process, base URL); always stop it."""
    ready = tmp_path / f"{name}.url"
    log = (tmp_path / f"{name}.log").open("wb")
    command = [
        sys.executable, "-m", "orchestrator.emulator",
        "--port", "0", "--state-dir", str(state_dir), "--ready-file", str(ready),
        "--validation-seconds", "0.5", "--throughput", "30", "--failure-fraction", "0.1",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not ready.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"emulator did not start: {(tmp_path / f'{name}.log').read_text()}"
                )
            time.sleep(0.05)
        yield process, ready.read_text().strip()
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        log.close()


def _wait_for(client: httpx.Client, job_id: str, status: str, timeout: float) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/v1/batch/jobs/{job_id}").json()
        if job["status"] == status or time.monotonic() > deadline:
            return dict(job)
        time.sleep(0.1)


def test_sigkill_and_restart(tmp_path: Path) -> None:
    """A job created before a SIGKILL finishes after a restart on the same state folder."""
    state = tmp_path / "state"
    lines = b"".join(
        b'{"custom_id": "%d", "body": {"messages": [{"role": "user", "content": "hi"}]}}\n' % i
        for i in range(120)
    )
    with emulator_process(state, tmp_path, "first") as (process, url):
        with httpx.Client(base_url=url, headers=KEY, timeout=10) as client:
            file_id = client.post(
                "/v1/files", files={"file": ("in.jsonl", lines)}, data={"purpose": "batch"}
            ).json()["id"]
            job = client.post(
                "/v1/batch/jobs",
                json={
                    "input_files": [file_id],
                    "model": "m",
                    "endpoint": "/v1/chat/completions",
                    "metadata": {"orchestrator_job_id": "p-1"},
                },
            ).json()
            before = _wait_for(client, job["id"], "RUNNING", 5.0)
            signed = client.get(f"/v1/files/{file_id}/url").json()["url"]
        assert before["status"] == "RUNNING"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    with emulator_process(state, tmp_path, "second") as (process, url):
        with httpx.Client(base_url=url, headers=KEY, timeout=10) as client:
            after = client.get(f"/v1/batch/jobs/{job['id']}").json()
            assert after["completed_requests"] >= before["completed_requests"]
            done = _wait_for(client, job["id"], "SUCCESS", 10.0)
            assert done["status"] == "SUCCESS"
            assert done["succeeded_requests"] + done["failed_requests"] == 120  # type: ignore[operator]
            output = client.get(f"/v1/files/{done['output_file']}/content").content
            assert len(output.splitlines()) == done["succeeded_requests"]
            stats = client.get("/_emulator/stats").json()
            ws = stats["caller_workspace"]
            assert stats["workspaces"][ws]["jobs_by_orchestrator_job_id"] == {"p-1": 1}
            assert stats["workspaces"][ws]["max_pending"] == 120
        old_port_url = signed.split("/signed/")[1]
        assert httpx.get(f"{url}/signed/{old_port_url}", timeout=10).content == lines
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0


def test_bad_options_exit_2(tmp_path: Path) -> None:
    """Inconsistent options are a one-line error and exit code 2."""
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator.emulator", "--drop-rate", "0.7",
         "--truncate-rate", "0.7", "--port", "0"],
        capture_output=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert b"must not exceed 1" in result.stderr
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator.emulator", "--throughput", "-1"],
        capture_output=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert b"--throughput" in result.stderr
