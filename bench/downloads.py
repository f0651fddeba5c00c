"""Benchmark 2: a large result file through the daemon's download path, against curl.

Run from the repository root::

    .venv/bin/python -m bench.downloads [--sizes-mb 100,1000] [--runs 3] [--json out.json]

It starts the emulator as its own process (``python -m orchestrator.emulator``, uvicorn on a
loopback socket), makes one finished chat job per size whose output file is about that many
MB, then downloads each file, in alternation, with:

- ``curl -o /dev/null`` (the network path alone), ``curl -o FILE`` (plus the disk),
  ``curl -o FILE`` followed by an ``fsync`` (the same durability the daemon gives), and
  ``curl -o FILE && sha256sum FILE`` (the daemon's verification done by C tools);
- the daemon's path: ``MistralProvider.download_file`` (streamed to ``.part``, sha256 and line
  count on the way, checkpoints, fsync, rename) in a fresh child process, which reports its
  time and its peak RSS (``VmHWM``);
- with ``--baseline TREE`` (a checkout of an older commit, e.g. ``git worktree add --detach
  /tmp/base <commit>``), the same child run from that tree's code, in the same rounds: a
  before/after comparison side by side on the same server and files;
- once per size, the whole daemon (``orchestrator run --exit-when-idle`` on a one-job config)
  uploading, submitting, polling and collecting the same job, for its peak RSS.

Every file it creates lives in a scratch folder under ``--work-dir`` (default: the system's
temporary folder), removed at the end, as is the emulator process.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import httpx

from bench._common import (
    emit,
    emulator_process,
    machine,
    machine_line,
    mb_per_s,
    median,
    run_measured,
    status_kib,
    table,
    work_folder,
    write_chat_input,
)

API_KEY = "bench-downloads"
CALIBRATION_LINES = 2_000


def _client(url: str) -> httpx.Client:
    return httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=httpx.Timeout(900)
    )


def finished_job(client: httpx.Client, data: Path) -> dict[str, Any]:
    """Upload ``data``, create a chat job on it and wait until its output file exists."""
    with data.open("rb") as handle:
        upload = client.post(
            "/v1/files", files={"file": (data.name, handle)}, data={"purpose": "batch"}
        )
    upload.raise_for_status()
    created = client.post(
        "/v1/batch/jobs",
        json={
            "input_files": [upload.json()["id"]],
            "model": "mistral-small-latest",
            "endpoint": "/v1/chat/completions",
        },
    )
    created.raise_for_status()
    # The first look after the end writes the result file (about 31,000 lines/s).
    job: dict[str, Any] = client.get(f"/v1/batch/jobs/{created.json()['id']}").json()
    if job["status"] != "SUCCESS" or not job.get("output_file"):
        raise RuntimeError(f"the benchmark job did not succeed: {job}")
    meta = client.get(f"/v1/files/{job['output_file']}").json()
    return {"job": job["id"], "file_id": job["output_file"], "bytes": meta["bytes"], **job}


def curl(url: str, file_id: str, dest: str) -> tuple[int, float]:
    """Download with curl; return (bytes, seconds) as curl measured them."""
    out = subprocess.run(
        [
            "curl", "-sS", "--fail", "-o", dest, "-H", f"Authorization: Bearer {API_KEY}",
            "-w", "%{size_download} %{time_total}", f"{url}/v1/files/{file_id}/content",
        ],
        check=True, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    size, seconds = out.stdout.split()
    return int(size), float(seconds)


def sha256sum(path: Path) -> tuple[str, float]:
    """``sha256sum path``: (hex digest, seconds)."""
    started = time.perf_counter()
    out = subprocess.run(
        ["sha256sum", str(path)], check=True, capture_output=True, text=True, timeout=600
    )
    return out.stdout.split()[0], time.perf_counter() - started


def fsync_seconds(path: Path) -> float:
    """How long making ``path`` durable takes (what curl leaves undone)."""
    started = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.perf_counter() - started


def child_download(url: str, file_id: str, dest: Path) -> dict[str, Any]:
    """Child mode: one download through ``MistralProvider.download_file``; figures as a dict."""
    from orchestrator.providers.mistral import MistralProvider

    async def run() -> dict[str, Any]:
        provider = MistralProvider(url, API_KEY, timeout=120.0)
        try:
            before = status_kib(os.getpid(), "VmRSS")
            started, cpu = time.perf_counter(), time.process_time()
            got = await provider.download_file(file_id, dest)
            seconds = time.perf_counter() - started
            return {
                "bytes": got.bytes,
                "lines": got.lines,
                "sha256": got.sha256,
                "seconds": seconds,
                "cpu": time.process_time() - cpu,
                "rss_before_mib": before / 1024,
                "peak_rss_mib": status_kib(os.getpid(), "VmHWM") / 1024,
            }
        finally:
            await provider.aclose()

    return anyio.run(run)


def whole_daemon(folder: Path, url: str, data: Path) -> dict[str, Any]:
    """Run ``orchestrator run --exit-when-idle`` on one job over ``data``; its cost and output."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.toml").write_text(
        "\n".join(
            [
                "[ledger]",
                'url = "sqlite:///ledger.db"',
                "[results]",
                'dir = "results"',
                "[polling]",
                'initial = "1s"',
                'max = "5s"',
                "[workspaces.main]",
                f'base_url = "{url}"',
                'api_key_env = "BENCH_API_KEY"',
                "[[jobs]]",
                'name = "big"',
                'workspace = "main"',
                f'input = "{data}"',
                'model = "mistral-small-latest"',
                'endpoint = "/v1/chat/completions"',
            ]
        )
        + "\n"
    )
    command = [
        sys.executable, "-m", "orchestrator", "run", "--config", str(folder / "config.toml"),
        "--exit-when-idle", "--migrate",
    ]  # fmt: skip
    measured = run_measured(command, timeout=1800, env={"BENCH_API_KEY": API_KEY})
    summary = json.loads((folder / "results" / "big" / "job.json").read_text())
    return {
        "wall": measured.wall,
        "cpu": measured.cpu,
        "peak_rss_mib": measured.peak_rss_mib,
        "outcome": summary["outcome"],
        "output_bytes": summary["files"]["output"]["bytes"],
    }


def measure(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """Set up the files, run every download, and return the raw figures."""
    sizes = [int(float(s) * 1e6) for s in args.sizes_mb.split(",")]
    figures: dict[str, Any] = {"machine": machine(), "sizes": {}}
    with emulator_process(
        root / "emulator",
        "--throughput", "1e9", "--validation-seconds", "0", "--pending-budget", "100000000",
    ) as emu, _client(emu.url) as client:  # fmt: skip
        write_chat_input(root / "calibrate.jsonl", CALIBRATION_LINES, max_tokens=None)
        calibration = finished_job(client, root / "calibrate.jsonl")
        per_line = calibration["bytes"] / CALIBRATION_LINES
        files: dict[int, dict[str, Any]] = {}
        for size in sizes:
            lines = max(1, math.ceil(size / per_line))
            data = root / f"input-{size}.jsonl"
            write_chat_input(data, lines, max_tokens=None)
            started = time.perf_counter()
            files[size] = {**finished_job(client, data), "lines": lines, "input": str(data)}
            files[size]["generation_seconds"] = time.perf_counter() - started
        runs: dict[int, dict[str, list[Any]]] = {
            size: {
                "curl_null": [],
                "curl_file": [],
                "curl_fsync": [],
                "curl_sha256sum": [],
                "daemon": [],
                **({"daemon_before": []} if args.baseline else {}),
            }
            for size in sizes
        }
        dest = root / "download.jsonl"
        for _ in range(args.runs):
            for size in sizes:
                file_id, row = files[size]["file_id"], runs[size]
                got, seconds = curl(emu.url, file_id, "/dev/null")
                row["curl_null"].append({"bytes": got, "seconds": seconds})
                got, seconds = curl(emu.url, file_id, str(dest))
                digest, hashing = sha256sum(dest)
                flush = fsync_seconds(dest)
                row["curl_file"].append({"bytes": got, "seconds": seconds})
                row["curl_fsync"].append({"bytes": got, "seconds": seconds + flush})
                row["curl_sha256sum"].append({"bytes": got, "seconds": seconds + hashing})
                dest.unlink()
                trees = [("daemon", None)]
                if args.baseline:
                    trees.append(("daemon_before", args.baseline))
                for name, tree in trees:
                    child = _child(emu.url, file_id, dest, tree)
                    if (child["bytes"], child["lines"], child["sha256"]) != (
                        files[size]["bytes"],
                        files[size]["lines"],
                        digest,
                    ):
                        raise RuntimeError(f"the {name} download is wrong: {child}")
                    row[name].append(child)
                    dest.unlink()
        for size in sizes:
            entry: dict[str, Any] = {
                "bytes": files[size]["bytes"],
                "lines": files[size]["lines"],
                "generation_seconds": files[size]["generation_seconds"],
                "runs": runs[size],
            }
            if args.daemon:
                entry["whole_daemon"] = whole_daemon(
                    root / f"daemon-{size}", emu.url, Path(files[size]["input"])
                )
            figures["sizes"][str(size)] = entry
    return figures


def _child(url: str, file_id: str, dest: Path, tree: str | None) -> dict[str, Any]:
    """One measured download in a fresh process, from this checkout or from ``tree``'s code."""
    command = [sys.executable, "-m", "bench.downloads", "--child", url, file_id, str(dest)]
    env = None
    if tree is not None:
        # -P: no current folder on sys.path, so PYTHONPATH's tree wins over this checkout.
        command.insert(1, "-P")
        env = {"PYTHONPATH": str(Path(tree).resolve())}
    figures: dict[str, Any] = run_measured(command, timeout=1800, env=env).json()
    return figures


def _speeds(samples: Sequence[dict[str, Any]]) -> list[float]:
    return [mb_per_s(s["bytes"], s["seconds"]) for s in samples]


def report(figures: dict[str, Any], command: str) -> str:
    """The Markdown section for ``docs/benchmarks.md``."""
    rows, ratios, memory = [], [], []
    for entry in figures["sizes"].values():
        runs = entry["runs"]
        speed = {name: _speeds(samples) for name, samples in runs.items()}
        label = f"{entry['bytes'] / 1e6:,.0f} MB"
        for name, title in (
            ("curl_null", "curl -o /dev/null"),
            ("curl_file", "curl -o file"),
            ("curl_fsync", "curl -o file + fsync"),
            ("curl_sha256sum", "curl -o file && sha256sum file"),
            ("daemon_before", "daemon path, before (baseline tree)"),
            ("daemon", "daemon path (sha256, lines, usage, fsync, rename)"),
        ):
            if name not in speed:
                continue
            shown = ", ".join(f"{v:,.0f}" for v in speed[name])
            rows.append([label, title, shown, f"{median(speed[name]):,.0f}"])
        daemon = median(speed["daemon"])
        before = median(speed["daemon_before"]) if "daemon_before" in speed else None
        ratios.append(
            [
                label,
                f"{daemon / median(speed['curl_null']):.2f}",
                f"{daemon / median(speed['curl_file']):.2f}",
                f"{daemon / median(speed['curl_fsync']):.2f}",
                f"{daemon / median(speed['curl_sha256sum']):.2f}",
                f"{before / median(speed['curl_null']):.2f}" if before else "not run",
                f"{daemon / before:.2f}" if before else "not run",
            ]
        )
        peaks = [s["peak_rss_mib"] for s in runs["daemon"]]
        whole = entry.get("whole_daemon")
        memory.append(
            [
                label,
                f"{median([s['rss_before_mib'] for s in runs['daemon']]):.1f}",
                f"{max(peaks):.1f}",
                f"{max(s['peak_rss_mib'] for s in runs['daemon_before']):.1f}"
                if "daemon_before" in runs
                else "not run",
                f"{median([s['cpu'] for s in runs['daemon']]):.2f}",
                f"{median([s['cpu'] for s in runs['daemon_before']]):.2f}"
                if "daemon_before" in runs
                else "not run",
                f"{whole['peak_rss_mib']:.1f}" if whole else "not run",
            ]
        )
    return "\n\n".join(
        [
            f"Command: `{command}`",
            machine_line(figures["machine"]),
            "Throughput per run, MB/s (10^6 bytes per second):",
            table(["file", "client", "runs", "median"], rows),
            "Ratios of medians (daemon path / curl):",
            table(
                [
                    "file",
                    "vs /dev/null",
                    "vs file",
                    "vs file + fsync",
                    "vs file && sha256sum",
                    "before vs /dev/null",
                    "after / before",
                ],
                ratios,
            ),
            "Memory of the daemon's download path (child process) and of the whole daemon:",
            table(
                [
                    "file",
                    "RSS before (MiB)",
                    "peak RSS (MiB)",
                    "peak RSS before (MiB)",
                    "CPU s (median)",
                    "CPU s before (median)",
                    "whole daemon peak RSS (MiB)",
                ],
                memory,
            ),
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark (or, with ``--child``, one measured download)."""
    parser = argparse.ArgumentParser(prog="python -m bench.downloads", description=__doc__)
    parser.add_argument("--sizes-mb", default="100,1000", help="output sizes in MB (10^6 B)")
    parser.add_argument("--runs", type=int, default=3, help="downloads per client and size")
    parser.add_argument(
        "--no-daemon", dest="daemon", action="store_false", help="skip the whole-daemon run"
    )
    parser.add_argument(
        "--baseline",
        default=None,
        metavar="TREE",
        help="also time the download path of the checkout in TREE (before/after)",
    )
    parser.add_argument("--work-dir", default=None, help="parent of the scratch folder")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    parser.add_argument(
        "--child", nargs=3, metavar=("URL", "FILE_ID", "DEST"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.child:
        url, file_id, dest = args.child
        print(json.dumps(child_download(url, file_id, Path(dest))))
        return 0
    with work_folder("downloads", args.work_dir) as root:
        figures = measure(args, root)
    command = "python -m bench.downloads " + " ".join(argv if argv is not None else sys.argv[1:])
    emit(report(figures, command.strip()), figures, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
