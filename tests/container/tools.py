"""Building and running the image with buildah/podman on a machine without a Docker engine.

What these helpers do is what docs/operations.md ("Building the image without Docker")
describes: a stand-in ``python:3.11-slim`` made with debootstrap, the unchanged Dockerfile built
by buildah with chroot isolation, containers run by podman with runc and cgroupfs. All of it
needs root. Images stay cached under project tags (``localhost/orchestrator-test-base``,
``localhost/orchestrator:test``) so later runs skip the slow steps.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BASE = "localhost/orchestrator-test-base:bookworm"
SLIM = "docker.io/library/python:3.11-slim"
IMAGE = "localhost/orchestrator:test"
STAND_IN_LABEL = "org.orchestrator.test.stand-in"
TOOLS = ("podman", "buildah", "runc", "debootstrap")
PACKAGES = ("buildah", "podman", "runc", "debootstrap", "docker-compose")
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
RUN_FLAGS = (
    "--runtime", "runc", "--cgroup-manager=cgroupfs",
    "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024",
)  # fmt: skip
"""What podman needs on these machines (the default runtime and ulimits fail in the sandbox)."""
CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
"""
"""The same settings for ``podman system service`` (the docker-compose path)."""


class Unavailable(Exception):
    """The container tools cannot be used here; the message says why."""


def run(
    command: Sequence[str],
    *,
    timeout: float,
    check: bool = True,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing text; on failure raise with its output."""
    result = subprocess.run(
        list(command),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
        cwd=cwd,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(command)} exited {result.returncode}\n"
            f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}"
        )
    return result


def missing_tools() -> list[str]:
    """The tools this machine lacks."""
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def ensure_tools() -> None:
    """Install buildah, podman, runc, debootstrap and docker-compose with apt if missing.

    Raises:
        Unavailable: not root, not a Debian-like system, or the installation failed.
    """
    if os.geteuid() != 0:
        raise Unavailable(
            "container tests need root (rootful buildah/podman on this kind of machine); "
            "run them as root or in CI"
        )
    missing = missing_tools()
    if not missing:
        return
    if shutil.which("apt-get") is None:
        raise Unavailable(f"{', '.join(missing)} missing and no apt-get to install them")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        run(["apt-get", "update", "-qq"], timeout=300, env=env)
        run(["apt-get", "install", "-y", "-qq", *PACKAGES], timeout=600, env=env)
    except (AssertionError, subprocess.TimeoutExpired) as exc:
        raise Unavailable(f"could not install {', '.join(missing)} with apt-get: {exc}") from exc
    still = missing_tools()
    if still:
        raise Unavailable(f"{', '.join(still)} still missing after apt-get install")


def image_exists(name: str) -> bool:
    """Whether podman has an image by that name."""
    return run(["podman", "image", "exists", name], timeout=60, check=False).returncode == 0


def debian_mirror() -> str:
    """The machine's own Debian mirror (what apt uses), or deb.debian.org."""
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in sources:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError:
            continue
        for pattern in (r"^URIs:\s*(\S+/debian)\s*$", r"^deb\s+(?:\[[^]]*\]\s+)?(\S+/debian)\s"):
            match = re.search(pattern, text, re.MULTILINE)
            if match:
                return match.group(1)
    return "http://deb.debian.org/debian"


def ensure_base() -> None:
    """A ``python:3.11-slim`` to build on: the real one if present, else a debootstrap stand-in.

    A real ``python:3.11-slim`` in the store is never replaced; only a stand-in (labelled) is
    re-tagged.
    """
    if not image_exists(BASE):
        with tempfile.TemporaryDirectory(prefix="orch-rootfs-") as scratch:
            rootfs = Path(scratch) / "rootfs"
            run(
                [
                    "debootstrap", "--variant=minbase",
                    "--include=python3,python3-venv,python3-pip,ca-certificates",
                    "bookworm", str(rootfs), debian_mirror(),
                ],
                timeout=600,
            )  # fmt: skip
            # Debian marks its Python as externally managed; pip runs only inside the venv,
            # but keep the stand-in as permissive as the official image.
            (rootfs / "usr/lib/python3.11/EXTERNALLY-MANAGED").unlink(missing_ok=True)
            tarball = Path(scratch) / "base.tar"
            run(["tar", "-C", str(rootfs), "-cf", str(tarball), "."], timeout=300)
            run(
                ["podman", "import", "--change", f"LABEL {STAND_IN_LABEL}=true",
                 "--change", 'CMD ["python3"]', str(tarball), BASE],
                timeout=300,
            )  # fmt: skip
    if image_exists(SLIM):
        label = run(
            ["podman", "image", "inspect", "--format", f'{{{{index .Labels "{STAND_IN_LABEL}"}}}}',
             SLIM],
            timeout=60,
        ).stdout.strip()  # fmt: skip
        if label != "true":
            return  # a real python:3.11-slim: build on it
    run(["podman", "tag", BASE, SLIM], timeout=60)


def build_image() -> None:
    """Build the unchanged Dockerfile into :data:`IMAGE` (layers cached between runs)."""
    command = [
        "buildah", "bud", "--pull=never", "--isolation", "chroot", "--layers",
        "--format", "docker",  # HEALTHCHECK exists only in the docker image format
        "-t", IMAGE,
    ]  # fmt: skip
    if CA_BUNDLE.is_file():
        # Package downloads may pass through an intercepting proxy: trust its CA during the
        # build without putting it in a layer.
        command += ["-v", f"{CA_BUNDLE}:{CA_BUNDLE}:ro"]
    before = _image_id(IMAGE)
    run([*command, str(REPO)], timeout=900)
    if before and before != _image_id(IMAGE):
        # The previous build is no longer tagged: drop it (its cached layers may stay in use).
        run(["podman", "rmi", before], timeout=120, check=False)


def _image_id(name: str) -> str | None:
    result = run(
        ["podman", "image", "inspect", "--format", "{{.Id}}", name], timeout=60, check=False
    )
    return result.stdout.strip() or None if result.returncode == 0 else None
