"""Benchmark 5: what a poll cycle costs as the ledger grows from 1,000 to 10,000 jobs.

Run from the repository root::

    .venv/bin/python -m bench.scale [--sizes 1000,2500,5000,10000] [--cycles 15] [--json out.json]

For each size ``N`` it builds a ledger of ``N`` jobs of which ``N / 10`` are running (the rest
done, each with its recorded output file, as a ledger that has worked for a while looks), with
the running ones backed by real remote jobs on the emulator, which runs as its own process in
real time so that every running job progresses between two polls. Then it runs the real daemon
(``Daemon(config).run()``, system clock) in a fresh child process with ``polling.initial`` =
``polling.max`` = ``--interval``, lets it warm up for two poll cycles, and measures the next
``--cycles`` cycles:

- CPU time of the daemon process (every thread: the event loop, aiosqlite, workers) per poll
  cycle, and how it splits between the poll loop and the admission loop (which every progress
  update wakes);
- ledger rows read per cycle (``SqlLedger.list_jobs``), API calls per cycle, the emulator
  process's CPU per cycle;
- the daemon's resident memory (``VmRSS`` at the end, ``VmHWM``) and the ledger's size on disk.

Scratch files and the emulator process are removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import httpx

from bench._common import (
    emit,
    emulator_process,
    machine,
    machine_line,
    run_measured,
    status_kib,
    table,
    work_folder,
    write_chat_input,
)
from orchestrator.ledger import SqlLedger
from orchestrator.ledger.migrate import upgrade
from orchestrator.model import JobSpec, JobState, Outcome

API_KEY = "bench-scale"
ACTIVE_SHARE = 10
"""One job in this many is running."""
LINES = 1_200
"""Requests per remote job: 20 minutes of progress at one request per second."""


def _process_cpu(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (from ``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _spec(name: str, data: Path) -> JobSpec:
    return JobSpec(
        name=name,
        workspace="main",
        model="mistral-small-latest",
        endpoint="/v1/chat/completions",
        inputs=(str(data),),
        metadata={"team": "bench"},
    )


async def build_ledger(folder: Path, url: str, total: int, data: Path) -> dict[str, Any]:
    """A ledger of ``total`` jobs, one in :data:`ACTIVE_SHARE` running on the emulator."""
    ledger_url = f"sqlite:///{folder / 'ledger.db'}"
    await upgrade(ledger_url)
    active = total // ACTIVE_SHARE
    started = time.perf_counter()
    ledger = await SqlLedger.connect(ledger_url)
    results = folder / "results"
    try:
        for index in range(total - active):
            job, _ = await ledger.add_job(
                _spec(f"done-{index:05d}", data),
                definition_hash=f"bench-done-{index}",
                request_count=LINES,
            )
            await _finish(ledger, job.id, results / job.name / "output.jsonl")
        done_seconds = time.perf_counter() - started
        async with httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=120
        ) as client:
            upload = await client.post(
                "/v1/files",
                files={"file": ("input.jsonl", await anyio.Path(data).read_bytes())},
                data={"purpose": "batch"},
            )
            file_id = upload.raise_for_status().json()["id"]
            for index in range(active):
                job, _ = await ledger.add_job(
                    _spec(f"run-{index:05d}", data),
                    definition_hash=f"bench-run-{index}",
                    request_count=LINES,
                )
                await ledger.transition(job.id, JobState.QUEUED, JobState.ADMITTED)
                await ledger.transition(
                    job.id, JobState.ADMITTED, JobState.SUBMITTING, input_file_ids=(file_id,)
                )
                created = await client.post(
                    "/v1/batch/jobs",
                    json={
                        "input_files": [file_id],
                        "model": "mistral-small-latest",
                        "endpoint": "/v1/chat/completions",
                        "metadata": {"orchestrator_job_id": job.client_token},
                    },
                )
                remote = created.raise_for_status().json()
                await ledger.transition(
                    job.id,
                    JobState.SUBMITTING,
                    JobState.RUNNING,
                    remote_id=remote["id"],
                    remote_status=remote["status"],
                )
            # Validate every remote job now (the emulator does it on first sight), so the
            # daemon's first poll does not pay for it.
            page = 0
            while True:
                listed = await client.get(
                    "/v1/batch/jobs", params={"page": page, "page_size": 1000}
                )
                if len(listed.raise_for_status().json()["data"]) < 1000:
                    break
                page += 1
    finally:
        await ledger.close()
    return {
        "seconds": time.perf_counter() - started,
        "done_seconds": done_seconds,
        "active": active,
        "ledger_bytes": _ledger_bytes(folder),
    }


async def _finish(ledger: SqlLedger, job_id: int, output: Path) -> None:
    """Walk one job through its whole life, as the daemon would have (with its file)."""
    file_id = str(uuid.uuid4())
    await ledger.transition(job_id, JobState.QUEUED, JobState.ADMITTED)
    await ledger.transition(
        job_id, JobState.ADMITTED, JobState.SUBMITTING, input_file_ids=(str(uuid.uuid4()),)
    )
    await ledger.transition(
        job_id,
        JobState.SUBMITTING,
        JobState.RUNNING,
        remote_id=str(uuid.uuid4()),
        remote_status="QUEUED",
    )
    await ledger.transition(
        job_id,
        JobState.RUNNING,
        JobState.COLLECTING,
        remote_status="SUCCESS",
        outcome=Outcome.SUCCEEDED,
        output_file_id=file_id,
        total=LINES,
        completed=LINES,
        succeeded=LINES,
    )
    await ledger.record_file(
        job_id, "output", path=output, bytes=LINES * 700, sha256="0" * 64, lines=LINES
    )
    await ledger.transition(job_id, JobState.COLLECTING, JobState.DONE, detail="collected")


def _ledger_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("ledger.db*"))


def write_config(folder: Path, url: str, interval: float) -> Path:
    """The daemon's config for one size: its ledger, the emulator, a fixed poll interval."""
    config = folder / "orchestrator.toml"
    config.write_text(
        "\n".join(
            [
                "[ledger]",
                f'url = "sqlite:///{folder / "ledger.db"}"',
                "[results]",
                f'dir = "{folder / "results"}"',
                "[polling]",
                f'initial = "{interval:g}s"',
                f'max = "{interval:g}s"',
                "[workspaces.main]",
                f'base_url = "{url}"',
                'api_key_env = "BENCH_SCALE_API_KEY"',
                "pending_budget = 1000000000",
            ]
        )
        + "\n"
    )
    return config


class _Meter:
    """Process CPU and wall time spent inside one kind of loop step."""

    def __init__(self) -> None:
        self.calls = 0
        self.cpu = 0.0
        self.wall = 0.0
        self.ended: anyio.Event | None = None
        """Set (then replaced) each time a step ends, once a watcher has created it."""

    async def wait_calls(self, count: int) -> None:
        """Return once ``count`` steps have ended."""
        while self.calls < count:
            if self.ended is None:
                self.ended = anyio.Event()
            await self.ended.wait()

    def wrap(self, method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        meter = self

        async def measured(*args: Any, **kwargs: Any) -> Any:
            cpu, wall = _self_cpu(), time.perf_counter()
            try:
                return await method(*args, **kwargs)
            finally:
                meter.calls += 1
                meter.cpu += _self_cpu() - cpu
                meter.wall += time.perf_counter() - wall
                if meter.ended is not None:
                    meter.ended.set()
                    meter.ended = anyio.Event()

        return measured


def child(config_path: Path, cycles: int, emulator_pid: int) -> dict[str, Any]:
    """Child mode: run the daemon, measure ``cycles`` poll cycles after two of warm-up."""
    from orchestrator.config import load_config
    from orchestrator.daemon import Daemon
    from orchestrator.daemon.poll import Poller
    from orchestrator.daemon.submit import Submitter
    from orchestrator.logging import configure_logging
    from orchestrator.providers.mistral import MistralProvider

    configure_logging(level="WARNING", stream=sys.stderr)
    meters = {"poll": _Meter(), "admission": _Meter()}
    rows = {"read": 0}
    Poller.cycle = meters["poll"].wrap(Poller.cycle)  # type: ignore[assignment,method-assign]
    Submitter.cycle = meters["admission"].wrap(Submitter.cycle)  # type: ignore[assignment,method-assign]
    original_list = SqlLedger.list_jobs

    async def counted_list(self: SqlLedger, *args: Any, **kwargs: Any) -> Any:
        jobs = await original_list(self, *args, **kwargs)
        rows["read"] += len(jobs)
        return jobs

    SqlLedger.list_jobs = counted_list  # type: ignore[method-assign]
    daemon = Daemon(load_config(config_path))
    result: dict[str, Any] = {}

    async def watch() -> None:
        poll = meters["poll"]
        await poll.wait_calls(3)  # two cycles of warm-up; measure from the end of the third
        poller = daemon.pollers["main"]
        provider = daemon.workspaces["main"].provider
        assert isinstance(provider, MistralProvider)
        start_calls, start_polled = poll.calls, poller.cycles
        start_cpu, start_wall = _self_cpu(), time.perf_counter()
        start_emulator, start_rows = _process_cpu(emulator_pid), rows["read"]
        start_meters = {name: (m.calls, m.cpu, m.wall) for name, m in meters.items()}
        start_api = sum(provider.calls.values())
        await poll.wait_calls(poll.calls + cycles)
        done = poll.calls - start_calls
        result.update(
            cycles=done,
            polled=poller.cycles - start_polled,
            cpu_per_cycle=(_self_cpu() - start_cpu) / done,
            wall_per_cycle=(time.perf_counter() - start_wall) / done,
            emulator_cpu_per_cycle=(_process_cpu(emulator_pid) - start_emulator) / done,
            rows_per_cycle=(rows["read"] - start_rows) / done,
            api_calls_per_cycle=(sum(provider.calls.values()) - start_api) / done,
            rss_mib=status_kib(os.getpid(), "VmRSS") / 1024,
            peak_rss_mib=status_kib(os.getpid(), "VmHWM") / 1024,
        )
        for name, meter in meters.items():
            calls0, cpu0, wall0 = start_meters[name]
            result[f"{name}_steps_per_cycle"] = (meter.calls - calls0) / done
            result[f"{name}_cpu_per_cycle"] = (meter.cpu - cpu0) / done
            result[f"{name}_wall_per_cycle"] = (meter.wall - wall0) / done
        assert daemon.runtime is not None
        daemon.runtime.stop()

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(daemon.run)
            tg.start_soon(watch)

    anyio.run(main)
    return result


def measure(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """Every size: build its ledger and remote jobs, then measure the daemon on it."""
    figures: dict[str, Any] = {"machine": machine(), "sizes": {}, "interval": args.interval}
    data = root / "input.jsonl"
    write_chat_input(data, LINES)
    for total in (int(n) for n in args.sizes.split(",")):
        folder = root / f"n{total}"
        folder.mkdir()
        with emulator_process(
            folder / "emulator",
            "--throughput", "1", "--validation-seconds", "0", "--pending-budget", "1000000000",
        ) as emu:  # fmt: skip
            built = anyio.run(build_ledger, folder, emu.url, total, data)
            config = write_config(folder, emu.url, args.interval)
            measured = run_measured(
                [sys.executable, "-m", "bench.scale", "--child", str(config), str(args.cycles),
                 str(emu.pid)],
                timeout=1800, env={"BENCH_SCALE_API_KEY": API_KEY},
            )  # fmt: skip
        figures["sizes"][str(total)] = {
            "jobs": total,
            **built,
            **measured.json(),
            "child_peak_rss_mib": measured.peak_rss_mib,
            "ledger_bytes_after": _ledger_bytes(folder),
        }
    return figures


def report(figures: dict[str, Any], command: str) -> str:
    """The Markdown section for ``docs/benchmarks.md``."""
    rows = [
        [
            f"{entry['jobs']:,}",
            f"{entry['active']:,}",
            f"{1000 * entry['cpu_per_cycle']:,.0f}",
            f"{1000 * entry['poll_wall_per_cycle']:,.0f}",
            f"{entry['admission_steps_per_cycle']:.1f}",
            f"{entry['rows_per_cycle']:,.0f}",
            f"{entry['api_calls_per_cycle']:.1f}",
            f"{1000 * entry['emulator_cpu_per_cycle']:,.0f}",
            f"{entry['rss_mib']:.0f} / {entry['peak_rss_mib']:.0f}",
            f"{entry['ledger_bytes'] / 1e6:.1f}",
        ]
        for entry in figures["sizes"].values()
    ]
    return "\n\n".join(
        [
            f"Command: `{command}`",
            machine_line(figures["machine"]),
            (
                f"Poll interval fixed at {figures['interval']:g} s; every running job "
                f"progresses between two polls. Per poll cycle: CPU of the daemon process (all "
                f"threads, every loop) in ms, the cycle's own duration in ms, admission passes "
                f"(a cycle that released budget wakes admission once), job rows read from the "
                f"ledger, API calls, and the emulator's CPU in ms."
            ),
            table(
                [
                    "jobs in ledger",
                    "running",
                    "daemon CPU",
                    "poll cycle takes",
                    "admission passes",
                    "ledger rows read",
                    "API calls",
                    "emulator CPU",
                    "daemon RSS / peak (MiB)",
                    "ledger (MB)",
                ],
                rows,
            ),
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark (or, with ``--child``, one measured daemon)."""
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__)
    parser.add_argument("--sizes", default="1000,2500,5000,10000", help="jobs in the ledger")
    parser.add_argument("--cycles", type=int, default=15, help="poll cycles measured")
    parser.add_argument("--interval", type=float, default=3.0, help="poll interval (s)")
    parser.add_argument("--work-dir", default=None, help="parent of the scratch folder")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        config, cycles, pid = args.child
        print(json.dumps(child(Path(config), int(cycles), int(pid))))
        return 0
    from orchestrator.logging import configure_logging

    configure_logging(level="WARNING", stream=sys.stderr)
    with work_folder("scale", args.work_dir) as root:
        figures = measure(args, root)
    command = "python -m bench.scale " + " ".join(argv if argv is not None else sys.argv[1:])
    emit(report(figures, command.strip()), figures, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
