# ruff: noqa: T201 (a benchmark script reports on stdout)
"""Benchmark: serve a >1 GiB result file over a real socket, measured with curl.

Not a test (pytest does not collect it). Run it from the repository root::

    .venv/bin/python -m tests.emulator.bench_large_file [--lines 750000] [--runs 3]

It starts ``python -m orchestrator.emulator`` on a free port with a temporary state folder,
uploads a chat input, lets the job finish at once (huge throughput), then downloads the
output file with curl several times while sampling the server's resident memory.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx


def _rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def main() -> int:
    """Run the benchmark and print a summary."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=750_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ready = root / "url"
        command = [
            sys.executable, "-m", "orchestrator.emulator", "--port", "0",
            "--state-dir", str(root / "state"), "--ready-file", str(ready),
            "--throughput", "1e9", "--validation-seconds", "0",
            "--pending-budget", str(max(1_000_000, args.lines)),
        ]  # fmt: skip
        log = (root / "server.log").open("wb")
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while not ready.exists():
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the emulator did not start")
                time.sleep(0.05)
            url = ready.read_text().strip()
            headers = {"Authorization": "Bearer bench"}
            data = root / "in.jsonl"
            with data.open("w") as out:
                for i in range(args.lines):
                    body = {"messages": [{"role": "user", "content": f"question {i}"}]}
                    out.write(json.dumps({"custom_id": str(i), "body": body}) + "\n")
            with httpx.Client(base_url=url, headers=headers, timeout=900) as client:
                with data.open("rb") as handle:
                    file_id = client.post(
                        "/v1/files", files={"file": ("in.jsonl", handle)}, data={"purpose": "batch"}
                    ).json()["id"]
                job = client.post(
                    "/v1/batch/jobs",
                    json={
                        "input_files": [file_id],
                        "model": "m",
                        "endpoint": "/v1/chat/completions",
                    },
                ).json()
                started = time.perf_counter()
                job = client.get(f"/v1/batch/jobs/{job['id']}").json()
                generated = time.perf_counter() - started
                assert job["status"] == "SUCCESS", job
                size = client.get(f"/v1/files/{job['output_file']}").json()["bytes"]
            print(f"output: {size:,} bytes, {args.lines:,} lines, generated in {generated:.1f} s")
            print(f"server RSS before downloads: {_rss_kib(server.pid, 'VmRSS') / 1024:.1f} MiB")
            for run in range(args.runs):
                peak = [0]
                done = threading.Event()

                def sample(peak: list[int] = peak, done: threading.Event = done) -> None:
                    while not done.is_set():
                        peak[0] = max(peak[0], _rss_kib(server.pid, "VmRSS"))
                        done.wait(0.02)

                sampler = threading.Thread(target=sample)
                sampler.start()
                result = subprocess.run(
                    ["curl", "-s", "-o", "/dev/null", "-H", "Authorization: Bearer bench",
                     "-w", "%{size_download} %{time_total} %{speed_download}",
                     f"{url}/v1/files/{job['output_file']}/content"],
                    capture_output=True, text=True, check=True, timeout=600,
                )  # fmt: skip
                done.set()
                sampler.join()
                got, seconds, speed = result.stdout.split()
                assert int(got) == size, (got, size)
                print(
                    f"run {run + 1}: {int(got):,} bytes in {float(seconds):.2f} s = "
                    f"{float(speed) / 1e6:.0f} MB/s, server peak RSS {peak[0] / 1024:.1f} MiB"
                )
            print(f"server VmHWM (whole life): {_rss_kib(server.pid, 'VmHWM') / 1024:.1f} MiB")
        finally:
            server.terminate()
            server.wait(timeout=30)
            log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
