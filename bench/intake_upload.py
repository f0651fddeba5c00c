"""Benchmark 3: intake (streaming validation) and upload of a large input, against wc and curl.

Run from the repository root::

    .venv/bin/python -m bench.intake_upload [--lines 1000000,100000] [--runs 3] [--json out.json]

For each size it writes a valid chat JSONL input of about 500 bytes a line (1,000,000 lines is
about 500 MB, under Mistral's 512 MB upload limit), then, in alternation and with the file in
the page cache:

- ``wc -l`` (the floor for reading the file once) against the daemon's intake validation
  (``orchestrator.inputs.validate_inputs``: every line parsed, ``custom_id`` uniqueness,
  sha256) in a fresh child process;
- ``curl -F file=@… -F purpose=batch`` against ``MistralProvider.upload_file`` (a streamed
  multipart body read in a worker thread) in a fresh child process, both to the emulator
  running as its own process on a loopback socket (which parses the multipart body, counts
  lines and hashes as it stores), and both to a sink process that reads and discards the body
  (the clients' own limit).

Each child reports its time and peak RSS (``VmHWM``). Everything it writes lives in a scratch
folder removed at the end; the emulator process is stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio

from bench._common import (
    emit,
    emulator_process,
    machine,
    machine_line,
    mb_per_s,
    median,
    run_measured,
    server_process,
    status_kib,
    table,
    work_folder,
    write_chat_input,
)

API_KEY = "bench-intake"
LINE_BYTES = 500
"""Target size of one request line (1,000,000 lines: about 500 MB)."""
_BASE_LINE = 119
"""Bytes of a line from ``chat_line`` without padding (for 6-digit indexes)."""
SINK_READ_BYTES = 1 << 20


def wc_lines(path: Path) -> tuple[int, float]:
    """``wc -l``: (lines, seconds)."""
    started = time.perf_counter()
    out = subprocess.run(["wc", "-l", str(path)], check=True, capture_output=True, text=True)
    return int(out.stdout.split()[0]), time.perf_counter() - started


def curl_upload(url: str, path: Path) -> tuple[int, float, str]:
    """``curl -F``: (bytes sent, seconds, file id)."""
    out = subprocess.run(
        [
            "curl", "-sS", "--fail", "-H", f"Authorization: Bearer {API_KEY}",
            "-F", "purpose=batch", "-F", f"file=@{path}", "-w", "\n%{size_upload} %{time_total}",
            f"{url}/v1/files",
        ],
        check=True, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    body, timing = out.stdout.rsplit("\n", 1)
    size, seconds = timing.split()
    return int(size), float(seconds), json.loads(body)["id"]


async def _sink_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer each request on one connection after reading (and dropping) its body."""
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            headers = {}
            for line in head.decode("latin-1").split("\r\n")[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if headers.get("expect", "").lower() == "100-continue":
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            left = int(headers.get("content-length", "0"))
            while left > 0:
                chunk = await reader.read(min(SINK_READ_BYTES, left))
                if not chunk:
                    return
                left -= len(chunk)
            body = b'{"id": "sink-file", "object": "file"}'
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            await writer.drain()
    finally:
        writer.close()


def run_sink(ready: Path) -> None:
    """Child mode: an HTTP server that reads every request body and throws it away."""

    async def serve() -> None:
        server = await asyncio.start_server(_sink_connection, "127.0.0.1", 0, limit=1 << 16)
        port = server.sockets[0].getsockname()[1]
        ready.with_suffix(".tmp").write_text(f"http://127.0.0.1:{port}\n")
        ready.with_suffix(".tmp").replace(ready)
        async with server:
            await server.serve_forever()

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    asyncio.run(serve())


def child_validate(path: Path) -> dict[str, Any]:
    """Child mode: validate ``path`` as the daemon's intake does."""
    from orchestrator.inputs import validate_inputs

    before = status_kib(os.getpid(), "VmRSS")
    started, cpu = time.perf_counter(), time.process_time()
    (summary,) = validate_inputs([path], endpoint="/v1/chat/completions")
    return {
        "requests": summary.requests,
        "bytes": summary.bytes,
        "seconds": time.perf_counter() - started,
        "cpu": time.process_time() - cpu,
        "rss_before_mib": before / 1024,
        "peak_rss_mib": status_kib(os.getpid(), "VmHWM") / 1024,
    }


def child_upload(url: str, path: Path) -> dict[str, Any]:
    """Child mode: upload ``path`` with ``MistralProvider.upload_file``."""
    from orchestrator.providers.mistral import MistralProvider

    size = path.stat().st_size

    async def run() -> dict[str, Any]:
        provider = MistralProvider(url, API_KEY, timeout=600.0)
        try:
            before = status_kib(os.getpid(), "VmRSS")
            started, cpu = time.perf_counter(), time.process_time()
            file_id = await provider.upload_file(path)
            return {
                "file_id": file_id,
                "bytes": size,
                "seconds": time.perf_counter() - started,
                "cpu": time.process_time() - cpu,
                "rss_before_mib": before / 1024,
                "peak_rss_mib": status_kib(os.getpid(), "VmHWM") / 1024,
            }
        finally:
            await provider.aclose()

    return anyio.run(run)


def _child(*args: str) -> dict[str, Any]:
    result: dict[str, Any] = run_measured(
        [sys.executable, "-m", "bench.intake_upload", "--child", *args], timeout=1800
    ).json()
    return result


def measure(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """Write the inputs, run every tool on them, and return the raw figures."""
    figures: dict[str, Any] = {"machine": machine(), "sizes": {}}
    sink_ready = root / "sink" / "ready"
    sink_command = [sys.executable, "-m", "bench.intake_upload", "--child", "sink", str(sink_ready)]
    with (
        emulator_process(root / "emulator") as emu,
        server_process(root / "sink", sink_command, sink_ready) as sink,
    ):
        for lines in (int(n) for n in args.lines.split(",")):
            data = root / f"input-{lines}.jsonl"
            size = write_chat_input(data, lines, pad=max(0, LINE_BYTES - _BASE_LINE))
            wc_lines(data)  # warm the page cache: every tool then reads from memory
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in TOOLS}
            for _ in range(args.runs):
                counted, seconds = wc_lines(data)
                runs["wc"].append({"bytes": size, "seconds": seconds, "lines": counted})
                checked = _child("validate", str(data))
                if checked["requests"] != lines:
                    raise RuntimeError(f"validation counted {checked['requests']} of {lines}")
                runs["validate"].append(checked)
                for server, suffix in ((emu, ""), (sink, "_sink")):
                    sent, seconds, _ = curl_upload(server.url, data)
                    runs["curl" + suffix].append({"bytes": size, "sent": sent, "seconds": seconds})
                    runs["upload" + suffix].append(_child("upload", server.url, str(data)))
            figures["sizes"][str(lines)] = {"lines": lines, "bytes": size, "runs": runs}
            data.unlink()
    return figures


TOOLS = (
    ("wc", "wc -l"),
    ("validate", "intake validation (parse, ids, sha256)"),
    ("curl", "curl -F, to the emulator"),
    ("upload", "daemon upload, to the emulator"),
    ("curl_sink", "curl -F, to a sink"),
    ("upload_sink", "daemon upload, to a sink"),
)


def report(figures: dict[str, Any], command: str) -> str:
    """The Markdown section for ``docs/benchmarks.md``."""
    rows, ratios, memory = [], [], []
    for entry in figures["sizes"].values():
        label = f"{entry['lines']:,} lines, {entry['bytes'] / 1e6:,.0f} MB"
        speed = {
            name: [mb_per_s(s["bytes"], s["seconds"]) for s in samples]
            for name, samples in entry["runs"].items()
        }
        for name, title in TOOLS:
            shown = ", ".join(f"{v:,.0f}" for v in speed[name])
            rows.append([label, title, shown, f"{median(speed[name]):,.0f}"])
        ratios.append(
            [
                label,
                f"{median(speed['validate']) / median(speed['wc']):.2f}",
                f"{median(speed['upload']) / median(speed['curl']):.2f}",
                f"{median(speed['upload_sink']) / median(speed['curl_sink']):.2f}",
            ]
        )
        for name in ("validate", "upload", "upload_sink"):
            samples = entry["runs"][name]
            memory.append(
                [
                    label,
                    name,
                    f"{median([s['rss_before_mib'] for s in samples]):.1f}",
                    f"{max(s['peak_rss_mib'] for s in samples):.1f}",
                    f"{median([s['cpu'] for s in samples]):.2f}",
                ]
            )
    return "\n\n".join(
        [
            f"Command: `{command}`",
            machine_line(figures["machine"]),
            "Throughput per run, MB/s (the file is in the page cache):",
            table(["input", "tool", "runs", "median"], rows),
            "Ratios of medians:",
            table(
                [
                    "input",
                    "validation / wc -l",
                    "upload / curl -F (emulator)",
                    "upload / curl -F (sink)",
                ],
                ratios,
            ),
            "Memory and CPU of the daemon's steps (fresh child process each):",
            table(["input", "step", "RSS before (MiB)", "peak RSS (MiB)", "CPU s"], memory),
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark (or, with ``--child``, one measured step)."""
    parser = argparse.ArgumentParser(prog="python -m bench.intake_upload", description=__doc__)
    parser.add_argument("--lines", default="1000000,100000", help="input sizes in lines")
    parser.add_argument("--runs", type=int, default=3, help="runs per tool and size")
    parser.add_argument("--work-dir", default=None, help="parent of the scratch folder")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        kind, *rest = args.child
        if kind == "sink":
            run_sink(Path(rest[0]))
            return 0
        if kind == "validate":
            result = child_validate(Path(rest[0]))
        else:
            result = child_upload(rest[0], Path(rest[1]))
        print(json.dumps(result))
        return 0
    with work_folder("intake", args.work_dir) as root:
        figures = measure(args, root)
    command = "python -m bench.intake_upload " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    emit(report(figures, command.strip()), figures, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
