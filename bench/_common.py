"""What the harnesses share: the machine's description, processes, memory, inputs, reports.

Benchmarks measure real time and real memory, so this module (like every harness) reads the
system clock directly: it is not daemon code and has no injected clock to honour.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs

EMULATOR_START_TIMEOUT = 60.0
"""Seconds an emulator process may take to write its ready file."""
STOP_TIMEOUT = 10.0
"""Seconds a process gets to exit after SIGTERM before it is killed."""


def machine() -> dict[str, str]:
    """The machine and software a figure was measured on (for the report's header)."""
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = "?"
    with contextlib.suppress(OSError, ValueError, IndexError):
        first = Path("/proc/meminfo").read_text().splitlines()[0]
        memory = f"{int(first.split()[1]) / 1024 / 1024:.0f} GiB"
    load = "?"
    with contextlib.suppress(OSError):
        load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{os.cpu_count()} x {cpu}",
        "memory": memory,
        "kernel": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "load_before": load,
    }


def machine_line(info: Mapping[str, str]) -> str:
    """One Markdown line describing ``info`` (see :func:`machine`)."""
    return (
        f"Machine: {info['cpu']}, {info['memory']} RAM, {info['kernel']}, Python "
        f"{info['python']}; load average before the run {info['load_before']}. "
        f"Date: {info['date']}."
    )


def status_kib(pid: int, field: str) -> int:
    """A ``/proc/<pid>/status`` memory field in KiB (``VmRSS``, ``VmHWM``); 0 if gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def self_rss_mib() -> float:
    """This process's resident memory now, in MiB."""
    return status_kib(os.getpid(), "VmRSS") / 1024


def self_peak_mib() -> float:
    """This process's peak resident memory so far (``VmHWM``), in MiB."""
    return status_kib(os.getpid(), "VmHWM") / 1024


def reset_peak_rss() -> bool:
    """Reset this process's ``VmHWM`` to its current RSS (Linux >= 4.0); False if refused."""
    try:
        Path(f"/proc/{os.getpid()}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class RssSampler:
    """Samples another process's ``VmRSS`` in a thread and keeps the peak (in KiB)."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rss-{pid}", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kib = max(self.peak_kib, status_kib(self.pid, "VmRSS"))
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM ``process``, wait up to :data:`STOP_TIMEOUT`, then SIGKILL it."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT)


@attrs.frozen
class ServerProcess:
    """A running server process that wrote its base URL to a ready file."""

    url: str
    pid: int
    folder: Path


@contextlib.contextmanager
def server_process(folder: Path, command: Sequence[str], ready: Path) -> Iterator[ServerProcess]:
    """Run ``command`` for the length of the block, once it has written its URL to ``ready``.

    Raises:
        RuntimeError: the process exited or did not become ready in time (its log is quoted).
    """
    folder.mkdir(parents=True, exist_ok=True)
    ready.unlink(missing_ok=True)
    log_path = folder / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(list(command), stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + EMULATOR_START_TIMEOUT
        while not ready.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the server did not start ({command}):\n{tail}")
            time.sleep(0.02)
        yield ServerProcess(url=ready.read_text().strip(), pid=process.pid, folder=folder)
    finally:
        stop_process(process)


def emulator_process(
    folder: Path, *options: str
) -> contextlib.AbstractContextManager[ServerProcess]:
    """Run the emulator as its own process on a free port for the length of a ``with`` block.

    Args:
        folder: where its state (``state/``), ready file and log go (created).
        options: more ``emulate`` options, e.g. ``"--throughput", "1e9"``.
    """
    ready = folder / "ready"
    command = [
        sys.executable, "-m", "orchestrator.emulator", "--port", "0",
        "--state-dir", str(folder / "state"), "--ready-file", str(ready), *options,
    ]  # fmt: skip
    return server_process(folder, command, ready)


@attrs.frozen
class Measured:
    """A finished child process: its output and what it cost."""

    returncode: int
    stdout: str
    stderr: str
    wall: float
    """Seconds from start to exit."""
    cpu: float
    """User + system CPU seconds of the child."""
    peak_rss_mib: float
    """The child's peak resident memory (``ru_maxrss``)."""

    def json(self) -> Any:
        """The child's last stdout line, parsed as JSON."""
        return json.loads(self.stdout.strip().splitlines()[-1])


def run_measured(
    command: Sequence[str], *, timeout: float = 3600.0, env: Mapping[str, str] | None = None
) -> Measured:
    """Run ``command`` to completion; return its output, wall time, CPU time and peak RSS.

    ``env`` adds variables to this process's environment for the child.

    Raises:
        RuntimeError: the command failed (its stderr is quoted) or outlived ``timeout``.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(
            list(command), stdout=out, stderr=err, env={**os.environ, **(env or {})}
        )
        timer = threading.Timer(timeout, process.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(process.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {process.returncode}:\n{stderr[-3000:]}")
    return Measured(
        returncode=process.returncode,
        stdout=stdout,
        stderr=stderr,
        wall=wall,
        cpu=usage.ru_utime + usage.ru_stime,
        peak_rss_mib=usage.ru_maxrss / 1024,
    )


def chat_line(
    index: int,
    *,
    prefix: str = "req",
    pad: int = 0,
    max_tokens: int | None = 64,
    openai_model: str | None = None,
) -> str:
    """One chat-completions request line.

    ``pad`` adds characters of prompt text; ``max_tokens`` caps the synthetic answer (None:
    the emulator draws up to 512 tokens, about 1.5 KB an output line). With ``openai_model``
    the line is in OpenAI's own form (``custom_id, method, url, body`` with that ``model``),
    which OpenAI's wire needs from a client that does not rewrite lines.
    """
    content = f"question {index} " + "x" * pad
    limit = "" if max_tokens is None else f'"max_tokens": {max_tokens}, '
    if openai_model is not None:
        return (
            f'{{"custom_id": "{prefix}-{index}", "method": "POST", "url": '
            f'"/v1/chat/completions", "body": {{"model": "{openai_model}", {limit}"messages": '
            f'[{{"role": "user", "content": "{content}"}}]}}}}\n'
        )
    return (
        f'{{"custom_id": "{prefix}-{index}", "body": {{{limit}"messages": '
        f'[{{"role": "user", "content": "{content}"}}]}}}}\n'
    )


def write_chat_input(
    path: Path,
    lines: int,
    *,
    prefix: str = "req",
    pad: int = 0,
    max_tokens: int | None = 64,
    openai_model: str | None = None,
) -> int:
    """Write a valid chat JSONL input of ``lines`` requests; return its size in bytes.

    ``openai_model``: OpenAI's line form, as :func:`chat_line`.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="ascii") as out:
        batch: list[str] = []
        for index in range(lines):
            batch.append(
                chat_line(
                    index, prefix=prefix, pad=pad, max_tokens=max_tokens, openai_model=openai_model
                )
            )
            if len(batch) == 10_000:
                out.write("".join(batch))
                batch.clear()
        out.write("".join(batch))
    return path.stat().st_size


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def median(values: Sequence[float]) -> float:
    """The median, or NaN for no values."""
    return statistics.median(values) if values else float("nan")


def percentile(values: Sequence[float], share: float) -> float:
    """The ``share`` quantile (0-1) by linear interpolation, or NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    position = share * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def mb_per_s(size: int, seconds: float) -> float:
    """Throughput in MB/s (10^6 bytes)."""
    return size / seconds / 1e6 if seconds > 0 else float("inf")


@contextlib.contextmanager
def work_folder(prefix: str, parent: str | None = None) -> Iterator[Path]:
    """A scratch folder for big files and state, removed (whatever happens) at the end."""
    with tempfile.TemporaryDirectory(
        prefix=f"orchestrator-bench-{prefix}-", dir=parent, ignore_cleanup_errors=True
    ) as name:
        yield Path(name)


def emit(report: str, figures: Mapping[str, Any], json_path: str | None) -> None:
    """Print the Markdown report; write ``figures`` as JSON when asked."""
    print(report)
    if json_path:
        Path(json_path).write_text(json.dumps(figures, indent=2, default=_plain) + "\n")


def _plain(value: object) -> object:
    """JSON for attrs instances (as dicts) and anything else (as text)."""
    if attrs.has(type(value)):
        return attrs.asdict(value)  # type: ignore[arg-type]
    return str(value)
