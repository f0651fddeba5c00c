"""Benchmark 4: how full the daemon keeps the pending budget while a backlog waits.

Run from the repository root::

    .venv/bin/python -m bench.budget_use [--jobs 50] [--scale 0.01] [--json out.json]
    .venv/bin/python -m bench.budget_use --token-budget 150000000 --split 50000

A backlog of ``--jobs`` jobs of random sizes (uniform, 10,000-900,000 requests, seeded) waits
in the queue of one workspace whose budget is 1,000,000 pending requests. The provider runs
each job at ``--rate`` requests per second (100: a 900,000-request job takes 2.5 hours) after
``--validation`` seconds of validation, during which the whole job counts as pending.

- **The daemon, for real**: ``Daemon`` with its default polling against the in-process
  emulator, on a :class:`bench._clock.SettledClock` (simulated seconds). Sizes, budget and rate
  are all multiplied by ``--scale`` (default 1/100, so 227,000 request lines instead of 22.7
  million): every job keeps its duration and its share of the budget, so the budget in use,
  as a share, is the same; only the granularity of progress changes (one request is 0.1 % of
  the budget instead of 0.0001 %).
- **The rule alone, with perfect information**: the same backlog at full scale in a pure
  model that knows every job's pending count every second, for the daemon's rule
  (``orchestrator.budget.admit``: strict head-of-line) and for two alternatives: first-fit
  (any queued job that fits goes in; a large job can starve) and EASY backfilling (a later job
  goes in only if it fits now and, at its known rate, still leaves room for the head at the
  time the head is due to fit).

The budget in use at time ``t`` is what the provider counts: for each created job, its
request count while validating, then ``total - completed``. The share is averaged over the time
work is queued (from the start until the last job is admitted). The ideal makespan is a lower
bound: each job occupies ``n * validation + n^2 / (2 * rate)`` request-seconds of budget, so
with the budget full at every instant the backlog cannot finish before their sum / budget
(nor before its longest job).

**A token budget** (``--token-budget T``, full-scale tokens, scaled like the rest): the workspace
is OpenAI's (``provider = "openai"``, the emulator's OpenAI wire) with ``token_budget`` of
``T`` estimated prompt tokens per model and a request budget too large to bind, so tokens are
the binding dimension. Every prompt is padded (``--pad``, 400 characters by default: about 146
tokens a request by the daemon's estimate). OpenAI counts a batch's prompt tokens in full from
its creation until it ends (``validating``, ``in_progress``, ``finalizing``): the share reported
is the time-averaged sum of the created batches' estimated tokens over that span, divided by
the budget, while work is queued. The emulator's own limit (``EmulatorSettings.token_limit``)
is set to the same figure (``--provider-limit none``: no limit): it counts ``ceil(chars / 4)``
per request, less than the daemon's estimate, so it should refuse no batch. The pure models
are those of the request budget and are not run for tokens.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import attrs

from bench._clock import SettledClock, counting_sqlite
from bench._common import (
    emit,
    machine,
    machine_line,
    median,
    table,
    work_folder,
    write_chat_input,
)
from orchestrator.budget import admit
from orchestrator.config import load_config
from orchestrator.daemon import Daemon
from orchestrator.daemon.app import embedded_api_key
from orchestrator.emulator import Emulator, EmulatorSettings
from orchestrator.emulator.openai.lines import prompt_tokens
from orchestrator.ledger import SqlLedger
from orchestrator.logging import configure_logging
from orchestrator.model import Job, JobState

BUDGET = 1_000_000
SMALLEST, LARGEST = 10_000, 900_000
OPENAI_MODEL = "gpt-4o-mini"
FINALIZING = 2.0
"""Simulated seconds an OpenAI batch stays ``finalizing`` (the emulator's default)."""


@attrs.frozen
class Run:
    """When one job was admitted and created, and its size (seconds, requests)."""

    size: int
    admitted: float
    created: float
    tokens: int = 0
    """Its estimated prompt tokens (the daemon's ``Job.prompt_tokens``)."""


def sizes(args: argparse.Namespace) -> list[int]:
    """The backlog's job sizes at full scale (seeded)."""
    rng = random.Random(args.seed)
    return [rng.randint(SMALLEST, LARGEST) for _ in range(args.jobs)]


def job_pending(size: int, created: float, t: float, *, rate: float, validation: float) -> float:
    """Requests a job created at ``created`` holds at ``t`` (continuous progress)."""
    if t < created:
        return 0.0
    running = t - created - validation
    if running < 0:
        return float(size)
    return max(0.0, size - running * rate)


def area(size: int, *, rate: float, validation: float) -> float:
    """Request-seconds of budget one job occupies from creation to its end."""
    return size * validation + size * size / (2 * rate)


def ideal_makespan(
    all_sizes: Sequence[int], *, budget: int, rate: float, validation: float
) -> float:
    """A lower bound on the makespan: the budget full at every instant."""
    packed = sum(area(n, rate=rate, validation=validation) for n in all_sizes) / budget
    longest = max(validation + n / rate for n in all_sizes)
    return max(packed, longest)


def utilisation(
    runs: Sequence[Run], *, budget: int, rate: float, validation: float, start: float, step: float
) -> tuple[float, float]:
    """(time-averaged share of the budget in use while work was queued, that period in s)."""
    until = max(run.admitted for run in runs)
    if until <= start:
        return 1.0, 0.0
    total, t = 0.0, start
    while t < until:
        width = min(step, until - t)
        middle = t + width / 2
        used = sum(
            job_pending(r.size, r.created, middle, rate=rate, validation=validation) for r in runs
        )
        total += min(used, budget) * width
        t += width
    return total / (budget * (until - start)), until - start


def token_utilisation(
    runs: Sequence[Run],
    *,
    budget: int,
    rate: float,
    validation: float,
    finalizing: float,
    start: float,
) -> tuple[float, float]:
    """(time-averaged share of the token budget held at the provider while work was queued,
    that period in s).

    A batch holds its tokens in full from its creation until it ends (``validation + n /
    rate + finalizing`` later), as OpenAI counts enqueued tokens; exact, from the intervals.
    """
    until = max(run.admitted for run in runs)
    if until <= start:
        return 1.0, 0.0
    # Sweep the interval ends: between two events the held tokens are constant.
    events: list[tuple[float, int]] = []
    for r in runs:
        end = r.created + validation + r.size / rate + finalizing
        events += [(r.created, r.tokens), (end, -r.tokens)]
    events.sort()
    total, held, t = 0.0, 0, start
    for at, delta in events:
        if at > t:
            upto = min(at, until)
            if upto > t:
                total += min(held, budget) * (upto - t)
                t = upto
        held += delta
    if until > t:
        total += min(held, budget) * (until - t)
    return total / (budget * (until - start)), until - start


def provider_tokens(path: Path) -> tuple[int, int]:
    """(requests, prompt tokens as the emulator's OpenAI wire counts them) of an input."""
    requests = tokens = 0
    with path.open(encoding="ascii") as lines:
        for line in lines:
            requests += 1
            tokens += prompt_tokens("/v1/chat/completions", json.loads(line)["body"])
    return requests, tokens


def _job(index: int, size: int) -> Job:
    return Job(
        id=index + 1,
        name=f"job-{index:03d}",
        workspace="bench",
        model="m",
        endpoint="/v1/chat/completions",
        inputs=(),
        metadata={},
        timeout_hours=24,
        priority=0,
        definition_hash="",
        client_token="",
        request_count=size,
        state=JobState.QUEUED,
    )


class Backlog:
    """The pure model: a queue, the jobs created so far, perfect knowledge of their pending."""

    def __init__(
        self, all_sizes: Sequence[int], *, budget: int, rate: float, validation: float
    ) -> None:
        self.sizes = list(all_sizes)
        self.budget = budget
        self.rate = rate
        self.validation = validation
        self.queued = list(range(len(all_sizes)))
        self.runs: list[Run] = []
        self._active: list[Run] = []
        self._reservation: tuple[int, int, float] | None = None

    def used(self, t: float, extra: Sequence[Run] = ()) -> float:
        """Pending requests at ``t`` of the jobs created so far (and of ``extra``)."""
        return sum(
            job_pending(r.size, r.created, t, rate=self.rate, validation=self.validation)
            for r in (*self._active, *extra)
        )

    def start(self, index: int, t: float) -> None:
        """Create job ``index`` at ``t``."""
        self.queued.remove(index)
        run = Run(size=self.sizes[index], admitted=t, created=t)
        self.runs.append(run)
        self._active.append(run)

    def prune(self, t: float) -> None:
        """Forget jobs that have ended (they hold nothing any more)."""
        self._active = [
            r for r in self._active if r.created + self.validation + r.size / self.rate > t
        ]

    def fits_at(self, head: int, t: float, step: float) -> float:
        """The first time (on ``step``) from ``t`` at which the head fits (cached)."""
        key = (len(self.runs), head)
        if self._reservation is not None and self._reservation[:2] == key:
            return self._reservation[2]
        horizon = t
        while self.used(horizon) + self.sizes[head] > self.budget:
            horizon += step
        self._reservation = (*key, horizon)
        return horizon

    def choose(self, rule: str, t: float, step: float) -> list[int]:
        """Indexes of queued jobs ``rule`` admits at ``t``."""
        used = self.used(t)
        if rule == "head-of-line":
            # The daemon's own function, fed the exact pending count.
            decision = admit(
                [_job(i, self.sizes[i]) for i in self.queued],
                in_flight=math.ceil(used),
                budget=self.budget,
                now=t,
            )
            return [job_id - 1 for job_id in decision.admit]
        chosen: list[int] = []
        if rule == "first-fit":
            for index in self.queued:
                if used + self.sizes[index] <= self.budget:
                    chosen.append(index)
                    used += self.sizes[index]
            return chosen
        if rule == "best-fit":
            # Fill the room with the largest job that fits, again and again (no order kept).
            while fitting := [
                i for i in self.queued if i not in chosen and used + self.sizes[i] <= self.budget
            ]:
                best = max(fitting, key=lambda i: self.sizes[i])
                chosen.append(best)
                used += self.sizes[best]
            return chosen
        if rule != "easy-backfill":
            raise ValueError(f"unknown rule {rule!r}")
        extra: list[Run] = []
        head: int | None = None
        head_at = 0.0
        for index in self.queued:
            size = self.sizes[index]
            fits_now = used + size <= self.budget
            if head is None and not fits_now:
                head, head_at = index, self.fits_at(index, t, step)
                continue
            if not fits_now:
                continue
            if head is not None:
                candidate = Run(size=size, admitted=t, created=t)
                if self.used(head_at, [*extra, candidate]) + self.sizes[head] > self.budget:
                    continue  # it would push the head's start back
            chosen.append(index)
            extra.append(Run(size=size, admitted=t, created=t))
            used += size
        return chosen


def simulate(
    all_sizes: Sequence[int],
    rule: str,
    *,
    budget: int,
    rate: float,
    validation: float,
    step: float = 5.0,
) -> dict[str, float]:
    """The backlog under ``rule`` with perfect information, decided every ``step`` seconds."""
    backlog = Backlog(all_sizes, budget=budget, rate=rate, validation=validation)
    t = 0.0
    while backlog.queued:
        backlog.prune(t)
        for index in backlog.choose(rule, t, step):
            backlog.start(index, t)
        t += step
    runs = backlog.runs
    share, queued_for = utilisation(
        runs, budget=budget, rate=rate, validation=validation, start=0.0, step=10.0
    )
    makespan = max(r.created + validation + r.size / rate for r in runs)
    return {"utilisation": share, "queued_seconds": queued_for, "makespan": makespan}


def split(all_sizes: Sequence[int], chunk: int) -> list[int]:
    """Each job cut into near-equal parts of at most ``chunk`` requests, order kept."""
    parts = []
    for size in all_sizes:
        count = math.ceil(size / chunk)
        parts += [size // count + (1 if i < size % count else 0) for i in range(count)]
    return parts


def write_config(
    root: Path,
    inputs: Sequence[Path],
    *,
    budget: int,
    split: int | None = None,
    token_budget: int | None = None,
) -> Path:
    """One embedded workspace with the scaled budget, default polling, the whole backlog.

    With ``split`` the workspace splits every job larger than that into parts. With
    ``token_budget`` it is an OpenAI workspace with that ``token_budget``.
    """
    lines = [
        "[ledger]",
        'url = "sqlite:///ledger.db"',
        "[results]",
        'dir = "results"',
        "[workspaces.main]",
    ]
    if token_budget is not None:
        lines += ['provider = "openai"', f"token_budget = {token_budget}"]
    lines += ['base_url = "embedded"', f"pending_budget = {budget}"]
    if split is not None:
        lines.append(f"split_requests = {split}")
    model = "mistral-small-latest" if token_budget is None else OPENAI_MODEL
    for path in inputs:
        lines += [
            "[[jobs]]",
            f'name = "{path.stem}"',
            'workspace = "main"',
            f'input = "{path}"',
            f'model = "{model}"',
            'endpoint = "/v1/chat/completions"',
        ]
    config = root / "orchestrator.toml"
    config.write_text("\n".join(lines) + "\n")
    return config


async def run_daemon(
    root: Path, all_sizes: Sequence[int], args: argparse.Namespace
) -> dict[str, Any]:
    """The real daemon on the scaled backlog; admissions, creations and emulator stats."""
    budget, rate = round(BUDGET * args.scale), args.rate * args.scale
    scaled = [max(1, round(size * args.scale)) for size in all_sizes]
    tokens = args.token_budget is not None
    token_budget = max(1, round(args.token_budget * args.scale)) if tokens else None
    if tokens:
        budget = sum(scaled)  # so large that only the token budget binds
    inputs = []
    for index, size in enumerate(scaled):
        path = root / "inputs" / f"job-{index:03d}.jsonl"
        write_chat_input(path, size, prefix=f"j{index}", pad=args.pad if tokens else 0)
        inputs.append(path)
    split = max(1, round(args.split * args.scale)) if args.split else None
    config = load_config(
        write_config(root, inputs, budget=budget, split=split, token_budget=token_budget)
    )
    clock = SettledClock()
    settings = EmulatorSettings(
        time_scale=1.0,
        throughput=rate,
        validation_seconds=args.validation,
        pending_budget=budget,
        finalizing_seconds=FINALIZING,
        token_limit=token_budget if tokens and args.provider_limit == "same" else None,
        seed=2,
    )
    started = time.perf_counter()
    with (
        counting_sqlite(),
        Emulator(
            settings,
            clock=clock,
            state_dir=root / "emulator",
            dialect="openai" if tokens else "mistral",
        ) as emu,
    ):
        await Daemon(config, clock=clock, emulator=emu).run(exit_when_idle=True, migrate=True)
        stats = emu.workspace_stats(embedded_api_key("main"))
    real = time.perf_counter() - started
    runs, finished, start = [], [], math.inf
    ledger = await SqlLedger.connect(config.ledger.url, clock=clock)
    try:
        for job in await ledger.list_jobs():
            if job.is_parent:
                # A split job: its parts are the batch jobs; its end is the merge on disk.
                if job.state is not JobState.DONE or job.finished_at is None:
                    raise RuntimeError(f"job {job.name} did not finish: {job.state} {job.error}")
                finished.append(job.finished_at)
                continue
            if job.state is not JobState.DONE or job.submitted_at is None:
                raise RuntimeError(f"job {job.name} did not finish: {job.state} {job.error}")
            moved = {event.to_state: event.at for event in await ledger.events(job.id)}
            runs.append(
                Run(
                    size=job.request_count,
                    admitted=moved[JobState.ADMITTED],
                    created=job.submitted_at,
                    tokens=job.prompt_tokens,
                )
            )
            finished.append(moved[JobState.DONE])
            start = min(start, job.created_at)
    finally:
        await ledger.close()
    runs.sort(key=lambda r: r.admitted)
    share, queued_for = utilisation(
        runs, budget=budget, rate=rate, validation=args.validation, start=start, step=5.0
    )
    figures: dict[str, Any] = {}
    if token_budget is not None:
        token_share, queued_for = token_utilisation(
            runs,
            budget=token_budget,
            rate=rate,
            validation=args.validation,
            finalizing=FINALIZING,
            start=start,
        )
        counted = [provider_tokens(path) for path in inputs]
        ours = sum(r.tokens for r in runs)
        theirs = sum(t for _, t in counted)
        figures["tokens"] = {
            "budget": token_budget,
            "utilisation": token_share,
            "estimated": ours,
            "provider_counted": theirs,
            "provider_over_estimate": theirs / ours if ours else float("nan"),
            "per_request": ours / sum(r.size for r in runs),
            "provider_limit": settings.token_limit,
            "max_enqueued": stats["max_enqueued_tokens"].get(OPENAI_MODEL, 0),
            "refusals": stats["token_refusals"],
            "largest_part": max(r.tokens for r in runs),
        }
    return figures | {
        "budget": budget,
        "rate": rate,
        "split": split,
        "batch_jobs": len(runs),
        # Scale-free: sizes, budget and rate are all scaled by the same factor.
        "ideal": ideal_makespan(
            [r.size for r in runs], budget=budget, rate=rate, validation=args.validation
        ),
        "utilisation": share,
        "queued_seconds": queued_for,
        "makespan": max(r.created + args.validation + r.size / rate for r in runs) - start,
        "results_on_disk": max(finished) - start,
        "lags": []
        if token_budget is not None
        else admission_lags(runs, budget=budget, rate=rate, validation=args.validation),
        "max_pending": stats["max_pending"],
        "refused_creates": stats["refused_creates"],
        "list_calls": sum(stats["requests"].get("jobs.list", {}).values()),
        "real_seconds": real,
        "runs": runs,
    }


def admission_lags(
    runs: Sequence[Run], *, budget: int, rate: float, validation: float
) -> list[float]:
    """For each admission after the first wave: seconds between the moment the job would have
    fitted (head-of-line order kept, exact pending) and the moment the daemon admitted it."""
    lags = []
    for k, run in enumerate(runs):
        earlier = runs[:k]
        t = runs[k - 1].admitted if k else run.admitted
        while t < run.admitted:
            used = sum(
                job_pending(r.size, r.created, t, rate=rate, validation=validation) for r in earlier
            )
            if used + run.size <= budget:
                break
            t += 1.0
        lags.append(max(0.0, run.admitted - t))
    return lags[1:]


VARIANTS = (
    ("head-of-line", None, "the daemon's rule (`budget.admit`)"),
    ("easy-backfill", None, "EASY backfilling"),
    ("first-fit", None, "first fit (a large job can starve)"),
    ("best-fit", None, "largest job that fits (order ignored)"),
    ("head-of-line", 100_000, "the daemon's rule, jobs split into parts of <= 100,000"),
    ("head-of-line", 50_000, "the daemon's rule, jobs split into parts of <= 50,000"),
)


def measure(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """The real daemon run, then every rule in the pure model."""
    all_sizes = sizes(args)
    figures: dict[str, Any] = {"machine": machine(), "sizes": all_sizes}
    figures["settings"] = {
        key: getattr(args, key)
        for key in (
            "jobs", "seed", "rate", "validation", "scale", "split", "token_budget", "pad",
            "provider_limit",
        )
    }  # fmt: skip
    figures["ideal"] = ideal_makespan(
        all_sizes, budget=BUDGET, rate=args.rate, validation=args.validation
    )
    figures["daemon"] = anyio.run(run_daemon, root, all_sizes, args)
    models = []
    if args.token_budget is not None:
        figures["models"] = models  # the models are the request budget's
        return figures
    for rule, chunk, title in VARIANTS:
        backlog = split(all_sizes, chunk) if chunk else all_sizes
        result = simulate(backlog, rule, budget=BUDGET, rate=args.rate, validation=args.validation)
        result["ideal"] = ideal_makespan(
            backlog, budget=BUDGET, rate=args.rate, validation=args.validation
        )
        models.append({"rule": rule, "chunk": chunk, "title": title, **result})
    figures["models"] = models
    return figures


def token_report(figures: dict[str, Any], command: str) -> str:
    """The Markdown section of a token-budget run."""
    settings, daemon = figures["settings"], figures["daemon"]
    tokens = daemon["tokens"]
    hours = 3600.0
    sizes_ = figures["sizes"]
    split = f"split_requests = {settings['split']:,}" if settings["split"] else "no split_requests"
    row = [
        f"**the daemon**, OpenAI, token_budget = {settings['token_budget']:,} ({split}: "
        f"{daemon['batch_jobs']} batches)",
        f"**{100 * tokens['utilisation']:.1f} %** of the token budget "
        f"(provider's count: {100 * tokens['utilisation'] * tokens['provider_over_estimate']:.1f}"
        " %)",
        f"{daemon['queued_seconds'] / hours:.1f} h",
        f"{daemon['makespan'] / hours:.1f} h",
    ]
    limit = tokens["provider_limit"]
    return "\n\n".join(
        [
            f"Command: `{command}`",
            machine_line(figures["machine"]),
            (
                f"{settings['jobs']} jobs of {min(sizes_):,}-{max(sizes_):,} requests "
                f"({sum(sizes_):,} in all, seed {settings['seed']}), prompts padded by "
                f"{settings['pad']} characters ({tokens['per_request']:.1f} estimated tokens a "
                f"request), token budget {settings['token_budget']:,} per model (the request "
                f"budget does not bind), {settings['rate']:g} requests/s per job after "
                f"{settings['validation']:g} s of validation and before {FINALIZING:g} s of "
                f"finalizing. The daemon ran at scale {settings['scale']:g} (token budget "
                f"{tokens['budget']:,}, {daemon['rate']:g} requests/s per job) in simulated "
                f"time ({daemon['real_seconds']:.0f} s real)."
            ),
            table(["admission", "budget in use while queued", "queued for", "makespan"], [row]),
            (
                f"Estimated tokens: {tokens['estimated']:,} in all; the emulator counts "
                f"{tokens['provider_counted']:,} (ceil(chars / 4) a request: "
                f"{tokens['provider_over_estimate']:.2f} of the estimate). Largest batch: "
                f"{tokens['largest_part']:,} estimated tokens. Provider's token limit: "
                + (f"{limit:,} (the daemon's budget)" if limit else "none")
                + f"; its peak enqueued count {tokens['max_enqueued']:,}; batches refused for "
                f"the token limit: **{tokens['refusals']}**. {daemon['list_calls']} list calls; "
                f"results of the last job on disk "
                f"{(daemon['results_on_disk'] - daemon['makespan']):.0f} s after it ended."
            ),
        ]
    )


def report(figures: dict[str, Any], command: str) -> str:
    """The Markdown section for ``docs/benchmarks.md``."""
    if figures["settings"].get("token_budget") is not None:
        return token_report(figures, command)
    settings, daemon = figures["settings"], figures["daemon"]
    hours = 3600.0
    if settings["split"]:
        title = (
            f"**the daemon** (real run, default polling, split_requests = "
            f"{settings['split']:,}: {daemon['batch_jobs']} parts)"
        )
        versus = (
            f"{daemon['makespan'] / daemon['ideal']:.2f} "
            f"(of its own ideal, {daemon['ideal'] / hours:.1f} h)"
        )
    else:
        title = "**the daemon** (real run, default polling)"
        versus = f"{daemon['makespan'] / figures['ideal']:.2f}"
    rows = [
        [
            title,
            f"**{100 * daemon['utilisation']:.1f} %**",
            f"{daemon['queued_seconds'] / hours:.1f} h",
            f"{daemon['makespan'] / hours:.1f} h",
            versus,
        ]
    ]
    rows += [
        [
            f"model: {model['title']}",
            f"{100 * model['utilisation']:.1f} %",
            f"{model['queued_seconds'] / hours:.1f} h",
            f"{model['makespan'] / hours:.1f} h",
            f"{model['makespan'] / model['ideal']:.2f}"
            + (f" (ideal {model['ideal'] / hours:.1f} h)" if model["chunk"] else ""),
        ]
        for model in figures["models"]
    ]
    lags = daemon["lags"]
    sizes_ = figures["sizes"]
    return "\n\n".join(
        [
            f"Command: `{command}`",
            machine_line(figures["machine"]),
            (
                f"{settings['jobs']} jobs of {min(sizes_):,}-{max(sizes_):,} requests "
                f"({sum(sizes_):,} in all, seed {settings['seed']}), budget {BUDGET:,}, "
                f"{settings['rate']:g} requests/s per job after {settings['validation']:g} s "
                f"of validation. The daemon ran at scale {settings['scale']:g} (budget "
                f"{daemon['budget']:,}, {daemon['rate']:g} requests/s per job) in simulated "
                f"time ({daemon['real_seconds']:.0f} s real). Ideal makespan (budget full at "
                f"every instant): {figures['ideal'] / hours:.1f} h."
            ),
            table(
                ["admission", "budget in use while queued", "queued for", "makespan", "vs ideal"],
                rows,
            ),
            (
                f"The daemon's run: peak pending seen by the provider "
                f"{daemon['max_pending']:,} of {daemon['budget']:,}, {daemon['refused_creates']} "
                f"creates refused, {daemon['list_calls']} list calls; results of the last job on "
                f"disk {(daemon['results_on_disk'] - daemon['makespan']):.0f} s after it ended. "
                f"Delay between the moment the queue's head would have fitted and its admission "
                f"(polling lag, {len(lags)} admissions): median {median(lags):.0f} s, max "
                f"{max(lags, default=0.0):.0f} s, {sum(lags) / hours:.1f} h in all."
            ),
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print its report."""
    parser = argparse.ArgumentParser(prog="python -m bench.budget_use", description=__doc__)
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rate", type=float, default=100.0, help="requests/s per job")
    parser.add_argument("--validation", type=float, default=60.0, help="seconds")
    parser.add_argument("--scale", type=float, default=0.01, help="scale of the daemon's run")
    parser.add_argument(
        "--split",
        type=int,
        default=None,
        metavar="N",
        help="the daemon splits jobs into parts of at most N full-size requests (scaled "
        "with --scale, like the sizes)",
    )
    parser.add_argument(
        "--token-budget",
        type=int,
        default=None,
        metavar="T",
        help="an OpenAI workspace whose binding budget is T estimated prompt tokens per model "
        "(full size, scaled with --scale)",
    )
    parser.add_argument(
        "--pad", type=int, default=400, help="characters added to each prompt (token budget)"
    )
    parser.add_argument(
        "--provider-limit",
        choices=("same", "none"),
        default="same",
        help="the emulator's token limit: the daemon's token budget, or none",
    )
    parser.add_argument("--work-dir", default=None, help="parent of the scratch folder")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)
    configure_logging(level="WARNING", stream=sys.stderr)
    with work_folder("budget", args.work_dir) as root:
        figures = measure(args, root)
    command = "python -m bench.budget_use " + " ".join(argv if argv is not None else sys.argv[1:])
    emit(report(figures, command.strip()), figures, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
