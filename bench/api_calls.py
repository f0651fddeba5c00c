"""Benchmark 1: API calls and detection delay, the daemon against the provider's documented loop.

Run from the repository root::

    .venv/bin/python -m bench.api_calls [--dialect mistral|openai|anthropic] [--jobs 100]

One in-process emulator serves both sides, each under its own API key (so its own workspace
and its own request counters). The jobs' simulated durations are log-spaced from
``--shortest`` (3 minutes) to ``--longest`` (24 hours): a job of ``n`` requests runs
``validation + n / throughput`` simulated seconds.

- **The daemon**: ``Daemon(config, clock=..., emulator=...)`` with the default polling
  settings, every job in its config, run until idle (``exit_when_idle``).
- **The naive loop**: what the provider's documentation shows, once per job, all jobs at once.
  Mistral (``--dialect mistral``, the default): upload, create, ``GET`` the job, then ``while
  status in ("QUEUED", "RUNNING"): GET; sleep(1)``, then download the output file. OpenAI
  (``--dialect openai``, the emulator's OpenAI wire): upload (``purpose=batch``), create the
  batch, ``GET /v1/batches/{id}`` until the status is terminal (``completed``, ``failed``,
  ``expired``, ``cancelled``), sleeping ``--naive-interval`` seconds (1, as the Mistral row)
  between two polls, then download ``output_file_id`` and ``error_file_id``. OpenAI's guide
  shows one ``retrieve`` and says to check the status again later: it gives no interval.
  Anthropic (``--dialect anthropic``): create the batch with its requests inline, ``retrieve``
  until ``ended`` (``--naive-interval`` between two polls), then GET ``results_url``
  (:mod:`bench._anthropic`).
- ``--old-batches N`` first creates ``N`` one-request batches in the daemon's workspace and
  lets them finish ``--old-age`` simulated seconds before the measured jobs: OpenAI's list has
  no filter, so this shows what old finished batches cost the daemon's poll cycles (list calls
  per cycle). Their own calls are not counted.

Time is simulated: both sides and the emulator share one :class:`bench._clock.SettledClock`
(an autojumping fake clock that does not move while a worker thread or SQLite call is busy), so
a 24-hour job runs in seconds and every delay is in simulated seconds, free of this machine's
speed. A real-time run with a large ``time_scale`` cannot host the naive loop: one GET per job
per simulated second would be a hundred thousand requests per real second.

Delays are measured from the job's simulated end (``created + validation + n / throughput``,
checked against the emulator's ``completed_at``): *detected* when the client first saw the job
terminal, *on disk* when its results were written (the daemon: collected, verified, ``job.json``
written; the naive loop: output file written).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import attrs
import httpx

from bench import _anthropic
from bench._clock import SettledClock, counting_sqlite
from bench._common import (
    chat_line,
    emit,
    machine,
    machine_line,
    median,
    percentile,
    table,
    work_folder,
    write_chat_input,
)
from orchestrator.config import load_config
from orchestrator.daemon import Daemon
from orchestrator.daemon.app import embedded_api_key
from orchestrator.emulator import Emulator, EmulatorSettings
from orchestrator.ledger import SqlLedger
from orchestrator.logging import configure_logging
from orchestrator.model import JobState

NAIVE_KEY = "bench-naive-loop"
ACTIVE = ("QUEUED", "RUNNING")
"""The statuses Mistral's documented loop keeps polling on."""
OPENAI_TERMINAL = ("completed", "failed", "expired", "cancelled")
"""The statuses OpenAI's loop stops on."""
MODELS = {
    "mistral": "mistral-small-latest",
    "openai": "gpt-4o-mini",
    "anthropic": _anthropic.MODEL,
}
ENDPOINTS = {"anthropic": "/v1/messages"}
"""The jobs' endpoint where it is not chat completions."""
"""The model of every job, per dialect."""
OPENAI_MAX_REQUESTS = 50_000
"""OpenAI's per-batch limit: a larger job would be split by the daemon and refused to the loop."""
BUCKETS: tuple[tuple[float, float, str], ...] = (
    (0, 900, "up to 15 min"),
    (900, 7200, "15 min - 2 h"),
    (7200, 28800, "2 h - 8 h"),
    (28800, math.inf, "8 h - 24 h"),
)


@attrs.frozen
class PlannedJob:
    """One benchmark job."""

    name: str
    requests: int
    duration: float
    """Simulated seconds from creation to the end: validation + requests / throughput."""


@attrs.frozen
class Outcome:
    """When one job ended and when a client noticed it (simulated seconds)."""

    name: str
    remote_id: str
    duration: float
    end: float
    detected: float
    on_disk: float

    @property
    def detection_delay(self) -> float:
        return self.detected - self.end

    @property
    def disk_delay(self) -> float:
        return self.on_disk - self.end


def plan(args: argparse.Namespace) -> list[PlannedJob]:
    """Log-spaced durations from ``--shortest`` to ``--longest``, as request counts."""
    jobs = []
    for index in range(args.jobs):
        share = index / max(1, args.jobs - 1)
        target = args.shortest * (args.longest / args.shortest) ** share
        requests = max(1, round((target - args.validation) * args.throughput))
        duration = args.validation + requests / args.throughput + finalizing(args)
        jobs.append(PlannedJob(name=f"job-{index:03d}", requests=requests, duration=duration))
    return jobs


def finalizing(args: argparse.Namespace) -> float:
    """Simulated seconds a finished job stays ``finalizing`` (OpenAI; Mistral has none)."""
    return args.finalizing if args.dialect == "openai" else 0.0


def write_config(
    root: Path, inputs: Path, jobs: Sequence[PlannedJob], args: argparse.Namespace
) -> Path:
    """The daemon's config: default polling, one embedded workspace, every job."""
    root.mkdir(parents=True, exist_ok=True)
    lines = [
        "[ledger]",
        'url = "sqlite:///ledger.db"',
        "[results]",
        'dir = "results"',
        "[polling]",
        f'initial = "{args.poll_initial:g}s"',
        f'max = "{args.poll_max:g}s"',
        "factor = 1.5",
        "jitter = 0.1",
        "[workspaces.main]",
        f'provider = "{args.dialect}"',
        'base_url = "embedded"',
        f"pending_budget = {args.budget}",
    ]
    for job in jobs:
        lines += [
            "[[jobs]]",
            f'name = "{job.name}"',
            'workspace = "main"',
            f'input = "{inputs / job.name}.jsonl"',
            f'model = "{MODELS[args.dialect]}"',
            f'endpoint = "{ENDPOINTS.get(args.dialect, "/v1/chat/completions")}"',
            "timeout_hours = 48",
        ]
    path = root / "orchestrator.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


async def run_daemon(
    root: Path, emulator: Emulator, clock: SettledClock, jobs: Sequence[PlannedJob], args: Any
) -> dict[str, Any]:
    """Run the daemon until every job is collected; return its calls and delays."""
    config = load_config(write_config(root / "daemon", root / "inputs", jobs, args))
    before = emulator.workspace_stats(embedded_api_key("main"))["requests"]
    started, sim_started = time.perf_counter(), clock.now()
    daemon = Daemon(config, clock=clock, emulator=emulator)
    await daemon.run(exit_when_idle=True, migrate=True)
    real, simulated = time.perf_counter() - started, clock.now() - sim_started
    by_name = {job.name: job for job in jobs}
    outcomes = []
    ledger = await SqlLedger.connect(config.ledger.url, clock=clock)
    try:
        for job in await ledger.list_jobs():
            if job.state is not JobState.DONE or job.submitted_at is None:
                raise RuntimeError(f"job {job.name} did not finish: {job.state} {job.error}")
            moved = {event.to_state: event.at for event in await ledger.events(job.id)}
            planned = by_name[job.name]
            outcomes.append(
                Outcome(
                    name=job.name,
                    remote_id=job.remote_id or "",
                    duration=planned.duration,
                    end=job.submitted_at + planned.duration,
                    detected=moved[JobState.COLLECTING],
                    on_disk=moved[JobState.DONE],
                )
            )
    finally:
        await ledger.close()
    stats = emulator.workspace_stats(embedded_api_key("main"))
    return {
        "calls": subtract(stats["requests"], before),
        "outcomes": outcomes,
        "real_seconds": real,
        "simulated_seconds": simulated,
        "max_pending": stats["max_pending"],
        "poll_cycles": sum(poller.cycles for poller in daemon.pollers.values()),
    }


def subtract(
    calls: dict[str, dict[str, int]], before: dict[str, dict[str, int]]
) -> dict[str, dict[str, int]]:
    """Requests counted since ``before`` (route -> status -> count; empty routes dropped)."""
    result: dict[str, dict[str, int]] = {}
    for route, statuses in calls.items():
        counts = {
            status: count - before.get(route, {}).get(status, 0)
            for status, count in statuses.items()
        }
        if kept := {status: count for status, count in counts.items() if count}:
            result[route] = kept
    return result


async def seed_old_batches(
    emulator: Emulator, clock: SettledClock, args: argparse.Namespace
) -> dict[str, Any]:
    """Create ``--old-batches`` one-request batches in the daemon's workspace, then let
    ``--old-age`` simulated seconds pass: they are finished, and older than every measured job.
    """
    model = MODELS[args.dialect]
    openai = args.dialect == "openai"
    started = time.perf_counter()
    if args.dialect == "anthropic":
        async with emulator.client(embedded_api_key("main"), timeout=600) as client:
            await _anthropic.seed_old(client, args.old_batches)
        await clock.sleep(args.old_age)
        return {
            "count": args.old_batches,
            "age": args.old_age,
            "real_seconds": time.perf_counter() - started,
        }
    line = chat_line(0, prefix="old", openai_model=model if openai else None).encode()
    started = time.perf_counter()
    async with emulator.client(embedded_api_key("main"), timeout=600) as client:
        upload = await client.post(
            "/v1/files", files={"file": ("old.jsonl", line)}, data={"purpose": "batch"}
        )
        upload.raise_for_status()
        file_id = upload.json()["id"]
        for _ in range(args.old_batches):
            if openai:
                created = await client.post(
                    "/v1/batches",
                    json={
                        "input_file_id": file_id,
                        "endpoint": "/v1/chat/completions",
                        "completion_window": "24h",
                    },
                )
            else:
                created = await client.post(
                    "/v1/batch/jobs",
                    json={
                        "input_files": [file_id],
                        "model": model,
                        "endpoint": "/v1/chat/completions",
                    },
                )
            created.raise_for_status()
    await clock.sleep(args.old_age)
    return {
        "count": args.old_batches,
        "age": args.old_age,
        "real_seconds": time.perf_counter() - started,
    }


async def naive_job(
    client: httpx.AsyncClient,
    clock: SettledClock,
    job: PlannedJob,
    root: Path,
    args: argparse.Namespace,
) -> Outcome:
    """The documented loop of ``args.dialect`` for one job."""
    if args.dialect == "anthropic":
        data = await anyio.Path(root / "inputs" / f"{job.name}.jsonl").read_bytes()
        remote_id, created_at, detected = await _anthropic.naive_job(
            client, clock, data, root / "naive", args.naive_interval
        )
        return Outcome(
            name=job.name,
            remote_id=remote_id,
            duration=job.duration,
            end=created_at + job.duration,
            detected=detected,
            on_disk=clock.now(),
        )
    if args.dialect == "openai":
        return await naive_openai_job(client, clock, job, root, args.naive_interval)
    return await naive_mistral_job(client, clock, job, root)


async def naive_mistral_job(
    client: httpx.AsyncClient, clock: SettledClock, job: PlannedJob, root: Path
) -> Outcome:
    """Mistral's documented loop for one job (upload, create, poll every second, download)."""
    data = await anyio.Path(root / "inputs" / f"{job.name}.jsonl").read_bytes()
    upload = await client.post(
        "/v1/files", files={"file": (f"{job.name}.jsonl", data)}, data={"purpose": "batch"}
    )
    upload.raise_for_status()
    created = await client.post(
        "/v1/batch/jobs",
        json={
            "input_files": [upload.json()["id"]],
            "model": "mistral-small-latest",
            "endpoint": "/v1/chat/completions",
            "timeout_hours": 48,
        },
    )
    created.raise_for_status()
    created_at = clock.now()
    url = f"/v1/batch/jobs/{created.json()['id']}"
    remote = (await client.get(url)).json()
    detected = clock.now()
    while remote["status"] in ACTIVE:
        remote = (await client.get(url)).json()
        detected = clock.now()
        await clock.sleep(1.0)  # time.sleep(1) in the documentation
    await download(client, root, job, remote, ("output_file", "error_file"))
    return Outcome(
        name=job.name,
        remote_id=created.json()["id"],
        duration=job.duration,
        end=created_at + job.duration,
        detected=detected,
        on_disk=clock.now(),
    )


async def naive_openai_job(
    client: httpx.AsyncClient, clock: SettledClock, job: PlannedJob, root: Path, interval: float
) -> Outcome:
    """OpenAI's loop for one job: upload, create, retrieve until terminal (sleeping
    ``interval`` between two polls), download the output and error files."""
    data = await anyio.Path(root / "inputs" / f"{job.name}.jsonl").read_bytes()
    upload = await client.post(
        "/v1/files", files={"file": (f"{job.name}.jsonl", data)}, data={"purpose": "batch"}
    )
    upload.raise_for_status()
    created = await client.post(
        "/v1/batches",
        json={
            "input_file_id": upload.json()["id"],
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
        },
    )
    created.raise_for_status()
    created_at = clock.now()
    url = f"/v1/batches/{created.json()['id']}"
    batch = (await client.get(url)).json()  # client.batches.retrieve(batch.id)
    while batch["status"] not in OPENAI_TERMINAL:
        await clock.sleep(interval)  # time.sleep(interval)
        batch = (await client.get(url)).json()
    detected = clock.now()
    if batch["status"] != "completed":
        raise RuntimeError(f"naive loop: batch of {job.name} ended {batch['status']}: {batch}")
    await download(client, root, job, batch, ("output_file_id", "error_file_id"))
    return Outcome(
        name=job.name,
        remote_id=created.json()["id"],
        duration=job.duration,
        end=created_at + job.duration,
        detected=detected,
        on_disk=clock.now(),
    )


async def download(
    client: httpx.AsyncClient, root: Path, job: PlannedJob, remote: dict[str, Any], keys: Any
) -> None:
    """Stream each of the remote job's files named by ``keys`` into the naive side's folder."""
    for key in keys:
        if remote.get(key):
            dest = anyio.Path(root / "naive" / f"{job.name}-{key}.jsonl")
            async with (
                client.stream("GET", f"/v1/files/{remote[key]}/content") as response,
                await anyio.open_file(dest, "wb") as out,
            ):
                response.raise_for_status()
                async for chunk in response.aiter_bytes():
                    await out.write(chunk)


async def run_naive(
    root: Path,
    emulator: Emulator,
    clock: SettledClock,
    jobs: Sequence[PlannedJob],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Run the documented loop for every job at once; return its calls and delays."""
    (root / "naive").mkdir()
    outcomes: list[Outcome] = []
    started, sim_started = time.perf_counter(), clock.now()
    async with emulator.client(NAIVE_KEY, timeout=600) as client:

        async def one(job: PlannedJob) -> None:
            outcomes.append(await naive_job(client, clock, job, root, args))

        async with anyio.create_task_group() as tg:
            for job in jobs:
                tg.start_soon(one, job)
    stats = emulator.workspace_stats(NAIVE_KEY)
    return {
        "calls": stats["requests"],
        "outcomes": sorted(outcomes, key=lambda o: o.name),
        "real_seconds": time.perf_counter() - started,
        "simulated_seconds": clock.now() - sim_started,
        "max_pending": stats["max_pending"],
    }


async def measure(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """Both sides against one emulator, on one simulated clock."""
    jobs = plan(args)
    openai_model = MODELS["openai"] if args.dialect == "openai" else None
    for job in jobs:
        write_chat_input(
            root / "inputs" / f"{job.name}.jsonl",
            job.requests,
            prefix=job.name,
            openai_model=openai_model,
        )
    clock = SettledClock()
    settings = EmulatorSettings(
        time_scale=1.0,
        throughput=args.throughput,
        validation_seconds=args.validation,
        pending_budget=args.budget,
        finalizing_seconds=args.finalizing,
        seed=1,
    )
    figures: dict[str, Any] = {"machine": machine(), "jobs": [attrs.asdict(j) for j in jobs]}
    with (
        counting_sqlite(),
        Emulator(settings, clock=clock, state_dir=root / "emulator", dialect=args.dialect) as emu,
    ):
        if args.old_batches:
            figures["old_batches"] = await seed_old_batches(emu, clock, args)
        figures["daemon"] = await run_daemon(root, emu, clock, jobs, args)
        sides = ["daemon"]
        if not args.no_naive:
            figures["naive"] = await run_naive(root, emu, clock, jobs, args)
            sides.append("naive")
        figures["remote_end_gap"] = await remote_end_gap(emu, figures, sides, args.dialect)
    figures["clock"] = {"jumps": clock.jumps, "held_back": clock.held_back}
    figures["settings"] = {
        key: getattr(args, key)
        for key in (
            "dialect", "jobs", "shortest", "longest", "throughput", "validation", "budget",
            "finalizing", "naive_interval", "old_batches", "old_age",
        )
    } | {"poll_initial": args.poll_initial, "poll_max": args.poll_max}  # fmt: skip
    return figures


async def completed_at(emulator: Emulator, key: str, dialect: str) -> dict[str, float]:
    """Every remote job of ``key``'s workspace: its ``completed_at`` (None while unfinished)."""
    async with emulator.client(key) as client:
        if dialect == "anthropic":
            return await _anthropic.ended_at(client)  # type: ignore[return-value]
        if dialect != "openai":
            listed = (await client.get("/v1/batch/jobs", params={"page_size": 1000})).json()
            return {job["id"]: job["completed_at"] for job in listed["data"]}
        found: dict[str, float] = {}
        params: dict[str, str | int] = {"limit": 100}
        while True:
            page = (await client.get("/v1/batches", params=params)).json()
            found |= {batch["id"]: batch["completed_at"] for batch in page["data"]}
            if not page["data"] or not page.get("has_more"):
                return found
            params = {"limit": 100, "after": page["data"][-1]["id"]}


async def remote_end_gap(
    emulator: Emulator, figures: dict[str, Any], sides: Sequence[str], dialect: str
) -> float:
    """How far our computed job ends are from the emulator's ``completed_at`` (at most 1 s).

    ``completed_at`` is whole seconds; a larger gap would mean the benchmark's clock moved
    while a job was being created, and its delays could not be trusted.
    """
    gaps = []
    keys = {"daemon": embedded_api_key("main"), "naive": NAIVE_KEY}
    for side in sides:
        completed = await completed_at(emulator, keys[side], dialect)
        gaps += [abs(o.end - completed[o.remote_id]) for o in figures[side]["outcomes"]]
    gap = float(max(gaps))
    if gap > 1.0:
        raise RuntimeError(f"computed job ends are {gap:.1f} s away from the emulator's")
    return gap


def total_calls(calls: dict[str, dict[str, int]]) -> int:
    """All requests of a side, whatever the route and status."""
    return sum(sum(statuses.values()) for statuses in calls.values())


def _delays(outcomes: Sequence[Outcome], attribute: str) -> dict[str, float]:
    absolute = [getattr(o, attribute) for o in outcomes]
    share = [100 * getattr(o, attribute) / o.duration for o in outcomes]
    return {
        "median_s": median(absolute),
        "p90_s": percentile(absolute, 0.9),
        "max_s": max(absolute),
        "median_pct": median(share),
        "p90_pct": percentile(share, 0.9),
        "max_pct": max(share),
    }


def summarize(figures: dict[str, Any]) -> dict[str, Any]:
    """Totals, ratios and delay statistics from the raw figures."""
    jobs = len(figures["jobs"])
    summary: dict[str, Any] = {}
    for side in SIDES:
        if side not in figures:
            continue
        outcomes = figures[side]["outcomes"]
        summary[side] = {
            "calls": total_calls(figures[side]["calls"]),
            "calls_per_job": total_calls(figures[side]["calls"]) / jobs,
            "detected": _delays(outcomes, "detection_delay"),
            "on_disk": _delays(outcomes, "disk_delay"),
            "buckets": [
                {
                    "label": label,
                    "jobs": len(chosen),
                    "median_detected_pct": median(
                        [100 * o.detection_delay / o.duration for o in chosen]
                    ),
                    "max_detected_s": max((o.detection_delay for o in chosen), default=0.0),
                }
                for low, high, label in BUCKETS
                if (chosen := [o for o in outcomes if low < o.duration <= high])
            ],
        }
    daemon = figures["daemon"]
    cycles = daemon.get("poll_cycles", 0)
    lists = sum(daemon["calls"].get("jobs.list", {}).values())
    summary["daemon"]["poll_cycles"] = cycles
    summary["daemon"]["list_calls_per_cycle"] = lists / cycles if cycles else float("nan")
    if "naive" in summary:
        summary["ratio"] = summary["naive"]["calls"] / summary["daemon"]["calls"]
    return summary


SIDES = ("daemon", "naive")
TITLES = {"daemon": "daemon", "naive": "naive loop"}


def report(figures: dict[str, Any], command: str) -> str:
    """The Markdown section for ``docs/benchmarks.md``."""
    summary = summarize(figures)
    settings = figures["settings"]
    sides = [side for side in SIDES if side in summary]
    routes = sorted(set().union(*(figures[side]["calls"] for side in sides)))
    call_rows = [
        [route, *(f"{sum(figures[side]['calls'].get(route, {}).values()):,}" for side in sides)]
        for route in routes
    ]
    call_rows.append(["**total**", *(f"**{summary[side]['calls']:,}**" for side in sides)])
    call_rows.append(["per job", *(f"{summary[side]['calls_per_job']:,.1f}" for side in sides)])
    delay_rows = []
    for side in sides:
        for kind in ("detected", "on_disk"):
            d = summary[side][kind]
            delay_rows.append(
                [
                    TITLES[side],
                    kind.replace("_", " "),
                    f"{d['median_s']:.1f} s ({d['median_pct']:.2f} %)",
                    f"{d['p90_s']:.1f} s ({d['p90_pct']:.2f} %)",
                    f"{d['max_s']:.1f} s ({d['max_pct']:.2f} %)",
                ]
            )
    naive_buckets = summary["naive"]["buckets"] if "naive" in summary else None
    bucket_rows = [
        [
            bucket["label"],
            bucket["jobs"],
            f"{bucket['median_detected_pct']:.2f} %",
            f"{bucket['max_detected_s']:.1f} s",
            *([f"{naive_buckets[i]['median_detected_pct']:.2f} %"] if naive_buckets else []),
        ]
        for i, bucket in enumerate(summary["daemon"]["buckets"])
    ]
    daemon = figures["daemon"]
    if settings["dialect"] == "anthropic":
        loop = (
            "The naive loop: Anthropic's, create the batch with its requests inline, "
            f"`GET /v1/messages/batches/{{id}}` until `ended`, sleeping "
            f"{settings['naive_interval']:g} s between two polls, then GET `results_url`."
        )
    elif settings["dialect"] == "openai":
        loop = (
            f"The naive loop: OpenAI's, upload, create, `GET /v1/batches/{{id}}` until the "
            f"status is terminal, sleeping {settings['naive_interval']:g} s between two polls."
        )
    else:
        loop = (
            "The naive loop: Mistral's documented one, `while status in (QUEUED, RUNNING): "
            "GET; sleep(1)`."
        )
    parts = [
        f"Command: `{command}`",
        machine_line(figures["machine"]),
        (
            f"Dialect: {settings['dialect']}. {len(figures['jobs'])} jobs, simulated durations "
            f"log-spaced from {settings['shortest'] / 60:g} min to "
            f"{settings['longest'] / 3600:g} h (validation {settings['validation']:g} s, then "
            f"{settings['throughput']:g} requests/s per job"
            + (
                f", then {settings['finalizing']:g} s finalizing"
                if settings["dialect"] == "openai"
                else ""
            )
            + f"; {sum(j['requests'] for j in figures['jobs']):,} requests in all). Daemon "
            f"polling: initial {settings['poll_initial']:g} s, max {settings['poll_max']:g} s, "
            f"factor 1.5, jitter 0.1. Simulated time (SettledClock); computed job ends match "
            f"the emulator's `completed_at` within {figures['remote_end_gap']:.2f} s."
        ),
    ]
    if "naive" in figures:
        parts.append(loop)
    if "old_batches" in figures:
        old = figures["old_batches"]
        parts.append(
            f"{old['count']:,} finished one-request batches were created in the daemon's "
            f"workspace {old['age']:g} simulated seconds before the measured jobs (their calls "
            "are not counted)."
        )
    parts += [
        "API calls by route:",
        table(["route", *(TITLES[side] for side in sides)], call_rows),
        (
            f"Daemon: {summary['daemon']['poll_cycles']:,} poll cycles, "
            f"{summary['daemon']['list_calls_per_cycle']:.2f} list calls per cycle."
        ),
    ]
    if "ratio" in summary:
        parts.append(
            f"The naive loop spends **{summary['ratio']:,.0f}x** the daemon's calls "
            f"(the daemon: 1/{summary['ratio']:,.0f} of them; target at most 1/50)."
        )
    parts += [
        "Delay from a job's end to detection and to its results on disk (simulated "
        "seconds, and as a share of the job's duration):",
        table(["client", "delay to", "median", "p90", "max"], delay_rows),
        "Detection delay by job duration:",
        table(
            [
                "duration",
                "jobs",
                "daemon median",
                "daemon max",
                *(["naive median"] if naive_buckets else []),
            ],
            bucket_rows,
        ),
        f"Real time: daemon {daemon['real_seconds']:.1f} s for "
        f"{daemon['simulated_seconds'] / 3600:.1f} simulated hours"
        + (
            f"; naive loop {figures['naive']['real_seconds']:.1f} s for "
            f"{figures['naive']['simulated_seconds'] / 3600:.1f} h."
            if "naive" in figures
            else "."
        ),
    ]
    return "\n\n".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print its report."""
    parser = argparse.ArgumentParser(prog="python -m bench.api_calls", description=__doc__)
    parser.add_argument("--dialect", choices=sorted(MODELS), default="mistral")
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--shortest", type=float, default=180.0, help="simulated seconds")
    parser.add_argument("--longest", type=float, default=86_400.0, help="simulated seconds")
    parser.add_argument(
        "--throughput",
        type=float,
        default=None,
        help="requests per simulated second, per job (default 1; 0.5 with --dialect openai, "
        "so that no job exceeds OpenAI's 50,000 requests per batch)",
    )
    parser.add_argument("--validation", type=float, default=60.0, help="simulated seconds")
    parser.add_argument(
        "--finalizing", type=float, default=2.0, help="simulated seconds finalizing (OpenAI)"
    )
    parser.add_argument("--budget", type=int, default=100_000_000, help="pending budget")
    parser.add_argument("--poll-initial", type=float, default=5.0, help="polling.initial (s)")
    parser.add_argument("--poll-max", type=float, default=600.0, help="polling.max (s)")
    parser.add_argument(
        "--naive-interval",
        type=float,
        default=1.0,
        help="seconds the OpenAI loop sleeps between two polls (Mistral's loop: always 1)",
    )
    parser.add_argument("--no-naive", action="store_true", help="run the daemon only")
    parser.add_argument(
        "--old-batches", type=int, default=0, help="finished batches created beforehand"
    )
    parser.add_argument(
        "--old-age", type=float, default=3600.0, help="simulated seconds they precede the jobs"
    )
    parser.add_argument("--work-dir", default=None, help="parent of the scratch folder")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.throughput is None:
        args.throughput = 0.5 if args.dialect == "openai" else 1.0
    if not 0 < args.shortest <= args.longest or args.shortest <= args.validation:
        parser.error("need validation < shortest <= longest")
    if args.naive_interval <= 0 or args.old_batches < 0:
        parser.error("need --naive-interval > 0 and --old-batches >= 0")
    if args.dialect == "openai":
        largest = round((args.longest - args.validation) * args.throughput)
        if largest > OPENAI_MAX_REQUESTS:
            parser.error(
                f"the longest job would have {largest:,} requests, over OpenAI's "
                f"{OPENAI_MAX_REQUESTS:,} per batch: lower --throughput or --longest"
            )
    configure_logging(level="WARNING", stream=sys.stderr)
    with work_folder("api-calls", args.work_dir) as root:
        figures = anyio.run(measure, args, root)
    command = "python -m bench.api_calls " + " ".join(argv if argv is not None else sys.argv[1:])
    emit(report(figures, command.strip()), figures, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
