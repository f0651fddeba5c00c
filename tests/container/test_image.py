"""The Docker image built and run for real (buildah/podman, no Docker engine needed).

Marked ``container``: it needs root, and installs buildah, podman, runc, debootstrap and
docker-compose with apt when they are missing (what CI does on its fresh machine). Anywhere else
it is skipped with the reason; ``ORCH_TEST_CONTAINERS=0`` skips it on purpose. The first run
takes a few minutes (a debootstrap'd base image, the dependency layer); later runs reuse the
cached images and take well under a minute.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.container import tools
from tests.service.conftest import stop_group, write_input

pytestmark = [pytest.mark.container, pytest.mark.timeout(1800)]

SKIP = os.environ.get("ORCH_TEST_CONTAINERS", "").strip() == "0"  # read before conftest cleans
KEY = "sk-container-7e57c0ffee7e57c0ffee"
GRACE = 10.0
JOB_DEADLINE = 180.0


@pytest.fixture(scope="module")
def image() -> str:
    """The image, built from the repository's Dockerfile (tools and base made if needed)."""
    if SKIP:
        pytest.skip("ORCH_TEST_CONTAINERS=0")
    try:
        tools.ensure_tools()
    except tools.Unavailable as exc:
        pytest.skip(str(exc))
    tools.ensure_base()
    tools.build_image()
    return tools.IMAGE


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for(
    check: Callable[[], bool], what: str, timeout: float, logs: Callable[[], str]
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}\n{logs()[-6000:]}")


def _jobs(base_url: str) -> dict[tuple[str, str], float]:
    """orchestrator_jobs by (state, outcome), or {} while the endpoint is not up."""
    try:
        body = httpx.get(f"{base_url}/metrics", timeout=5).text
    except httpx.HTTPError:
        return {}
    return {
        (s.labels["state"], s.labels["outcome"]): s.value
        for family in text_string_to_metric_families(body)
        if family.name == "orchestrator_jobs"
        for s in family.samples
    }


def _done(base_url: str) -> float:
    return sum(n for (state, _), n in _jobs(base_url).items() if state == "done")


@contextmanager
def _emulator(folder: Path) -> Iterator[str]:
    """``orchestrator emulate`` on the host, bounded in time; yields its base URL."""
    ready = folder / "emulator.url"
    command = [
        sys.executable, "-m", "orchestrator.emulator", "--port", "0",
        "--state-dir", str(folder / "emulator"), "--ready-file", str(ready),
        "--api-key", KEY, "--validation-seconds", "1", "--throughput", "20",
        "--failure-fraction", "0.1",
    ]  # fmt: skip
    if shutil.which("timeout"):
        command = ["timeout", "--foreground", "--kill-after=5", "900", *command]
    with (folder / "emulator.log").open("wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            deadline = time.monotonic() + 30
            while not ready.exists():
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError((folder / "emulator.log").read_text())
                time.sleep(0.1)
            yield ready.read_text().strip()
        finally:
            stop_group(process)


def _config(folder: Path, emulator_url: str) -> Path:
    """/etc/orchestrator for the container: config.toml and its input."""
    etc = folder / "etc"
    write_input(etc / "inputs" / "survey.jsonl", 40, prefix="survey")
    (etc / "config.toml").write_text(
        f"""
[ledger]
url = "sqlite:////data/ledger.db"
[results]
dir = "/data/results"
[polling]
initial = "500ms"
max = "2s"
[daemon]
grace_period = "{GRACE:g}s"
[workspaces.main]
base_url = "{emulator_url}"
api_key_env = "MISTRAL_API_KEY"
[[jobs]]
name = "container-survey"
workspace = "main"
input = "inputs/survey.jsonl"
model = "mistral-small-latest"
endpoint = "/v1/chat/completions"
""",
        encoding="utf-8",
    )
    etc.chmod(0o755)
    return etc


def test_the_image_runs_a_job_as_non_root_and_stops_cleanly(image: str, tmp_path: Path) -> None:
    """Mounted config and /data: the job ends done on the volume; SIGTERM exits 0 in time."""
    name = f"orchestrator-test-{uuid.uuid4().hex[:8]}"
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    data = tmp_path / "data"
    data.mkdir()
    os.chown(data, 10001, 10001)  # the image's user owns what it writes

    def logs() -> str:
        result = tools.run(["podman", "logs", name], timeout=60, check=False)
        return result.stdout + result.stderr

    with _emulator(tmp_path) as emulator_url:
        etc = _config(tmp_path, emulator_url)
        try:
            tools.run(
                [
                    "podman", "run", "-d", "--name", name, *tools.RUN_FLAGS, "--network=host",
                    "-v", f"{etc}:/etc/orchestrator:ro", "-v", f"{data}:/data",
                    "-e", f"MISTRAL_API_KEY={KEY}", "-e", f"ORCH_HTTP_LISTEN=127.0.0.1:{port}",
                    image,
                ],
                timeout=120,
            )  # fmt: skip
            _wait_for(lambda: _done(base) == 1, "the job to be done", JOB_DEADLINE, logs)

            assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200
            assert httpx.get(f"{base}/readyz", timeout=5).status_code == 200
            # The image's HEALTHCHECK (docker format) runs the probe inside the container.
            tools.run(["podman", "healthcheck", "run", name], timeout=60)
            assert tools.run(["podman", "exec", name, "id", "-u"], timeout=60).stdout.strip() == (
                "10001"
            )
            uid_of_pid_1 = tools.run(
                ["podman", "exec", name, "sh", "-c", "awk '/^Uid:/ {print $2}' /proc/1/status"],
                timeout=60,
            ).stdout.strip()
            assert uid_of_pid_1 == "10001"

            started = time.monotonic()
            tools.run(["podman", "stop", "--time", str(int(GRACE) + 20), name], timeout=120)
            took = time.monotonic() - started
            state = tools.run(
                ["podman", "inspect", "--format", "{{.State.ExitCode}} {{.State.Status}}", name],
                timeout=60,
            ).stdout.split()
            output = logs()
        finally:
            tools.run(["podman", "rm", "--force", name], timeout=120, check=False)

    assert state == ["0", "exited"], output[-4000:]
    assert took < GRACE, f"podman stop took {took:.1f} s (grace period {GRACE:g} s)"

    # The results, on the mounted volume, written by the non-root user.
    folder = data / "results" / "container-survey"
    summary = json.loads((folder / "job.json").read_text())
    assert summary["state"] == "done"
    assert summary["outcome"] in ("succeeded", "partial")
    output_lines = (folder / "output.jsonl").read_bytes().count(b"\n")
    assert output_lines == summary["succeeded"] == summary["files"]["output"]["lines"]
    assert summary["succeeded"] + summary["failed"] == 40
    for path in (data / "ledger.db", folder / "output.jsonl", folder / "job.json"):
        assert path.stat().st_uid == 10001, path

    # The log: JSON lines only, the drain announced, the key nowhere.
    lines = [json.loads(line) for line in output.splitlines() if line.strip()]
    events = [line["event"] for line in lines]
    assert "daemon.stopping" in events and events[-1] == "daemon.stopped"
    assert next(line for line in lines if line["event"] == "daemon.stopping")["signal"] == "SIGTERM"
    assert KEY not in output


def test_the_compose_example_comes_up(image: str, tmp_path: Path) -> None:
    """docker-compose (v1, through podman's Docker API) runs the daemon and the emulator."""
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose is not installed (apt-get install docker-compose)")
    # docker-compose.yml builds localhost/orchestrator:latest; podman's API cannot build here
    # (chroot isolation and the proxy's CA are not reachable through it), so the image built
    # above stands in for it.
    tools.run(["podman", "tag", image, "localhost/orchestrator:latest"], timeout=60)
    conf = tmp_path / "containers.conf"
    conf.write_text(tools.CONTAINERS_CONF, encoding="utf-8")
    sock = tmp_path / "podman.sock"
    env = {
        **os.environ,
        "CONTAINERS_CONF": str(conf),
        "DOCKER_HOST": f"unix://{sock}",
        "COMPOSE_PROJECT_NAME": f"orchtest{uuid.uuid4().hex[:8]}",
        "ORCHESTRATOR_HTTP_PORT": str(_free_port()),
    }
    base = f"http://127.0.0.1:{env['ORCHESTRATOR_HTTP_PORT']}"
    compose = ["docker-compose", "-f", str(tools.REPO / "docker-compose.yml")]
    service = subprocess.Popen(
        ["timeout", "--foreground", "900", "podman", "system", "service", "--time=0",
         f"unix://{sock}"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip

    def logs() -> str:
        result = tools.run([*compose, "logs", "--no-color"], timeout=60, env=env, check=False)
        return result.stdout + result.stderr

    try:
        _wait_for(sock.exists, "podman's API socket", 30, lambda: "")
        tools.run([*compose, "up", "-d", "--no-build"], timeout=300, env=env, cwd=tools.REPO)
        _wait_for(lambda: _done(base) == 1, "the compose job to be done", JOB_DEADLINE, logs)
        status = tools.run(
            [*compose, "exec", "-T", "orchestrator", "orchestrator", "status", "--json"],
            timeout=120,
            env=env,
            cwd=tools.REPO,
        )
        [row] = json.loads(status.stdout)
        assert (row["name"], row["state"]) == ("hello", "done")
        tools.run([*compose, "stop", "--timeout", "60"], timeout=180, env=env, cwd=tools.REPO)
        project = env["COMPOSE_PROJECT_NAME"]
        code = tools.run(
            ["podman", "inspect", "--format", "{{.State.ExitCode}}", f"{project}_orchestrator_1"],
            timeout=60,
        ).stdout.strip()
        assert code == "0", logs()
    finally:
        tools.run(
            [*compose, "down", "--volumes", "--timeout", "30"],
            timeout=300,
            env=env,
            cwd=tools.REPO,
            check=False,
        )
        stop_group(service)
