"""Human output of the read commands: rich and coloured on a terminal, plain when piped.

Plain output is for scripts and logs: aligned columns, no colour, no box drawing, one line per
row whatever the width. On a terminal the same values become rich tables with progress bars.
``NO_COLOR`` turns colour off everywhere; ``FORCE_COLOR`` (or ``TTY_COMPATIBLE=1``) asks for
the terminal rendering when stdout is not one.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

from rich import box
from rich.console import Console, Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from orchestrator.costs import COST_HEADER, Costs, cost_cells, cost_lines, spend_notes
from orchestrator.ledger import JobEvent, ResultFile
from orchestrator.model import Job, JobState, pending
from orchestrator.rows import (
    attempt_label,
    duration,
    first_line,
    parent_name,
    progress,
    state_counts,
    timestamp,
    total,
)

STATE_STYLES = {
    JobState.QUEUED: "yellow",
    JobState.ADMITTED: "cyan",
    JobState.SUBMITTING: "cyan",
    JobState.RUNNING: "bold blue",
    JobState.COLLECTING: "magenta",
    JobState.DONE: "green",
    JobState.REJECTED: "bold red",
}
OUTCOME_STYLES = {
    "succeeded": "green",
    "partial": "yellow",
    "failed": "bold red",
    "expired": "red",
    "cancelled": "dim",
}
_BAR = 12


class Output:
    """Where a command writes its result (stdout), knowing whether it is a terminal."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.console = Console(
            file=self.stream, highlight=False, soft_wrap=True, emoji=False, markup=False
        )

    @property
    def rich(self) -> bool:
        """Whether to render for a terminal (colour, bars, boxes)."""
        return self.console.is_terminal

    def write(self, text: str) -> None:
        """Write plain text as it is."""
        self.stream.write(text)

    def line(self, text: str = "", style: str | None = None) -> None:
        """One line: styled on a terminal, plain otherwise."""
        if self.rich:
            self.console.print(Text(text, style=style or ""))
        else:
            self.stream.write(text + "\n")

    def show(self, renderable: RenderableType) -> None:
        """A rich renderable (terminal mode only)."""
        self.console.print(renderable, soft_wrap=False)


def plain_table(
    header: Sequence[str], rows: Iterable[Sequence[str]], right: Iterable[int] = ()
) -> str:
    """Aligned columns separated by two spaces; ``right`` columns are right-aligned."""
    table = [list(header), *(list(row) for row in rows)]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    right = set(right)
    lines = []
    for row in table:
        cells = [
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def plain_bar(share: float | None, width: int = _BAR) -> str:
    """``#####.......`` for a share of 0 to 1; blanks when unknown."""
    if share is None:
        return " " * width
    filled = round(share * width)
    return "#" * filled + "." * (width - filled)


def percent(share: float | None) -> str:
    """``42%`` (floored, so 100% means all done), or ``-``."""
    if share is None:
        return "-"
    return f"{int(share * 100)}%"


def outcome_text(job: Job) -> str:
    """The outcome, or what is about to happen to an unfinished job."""
    if job.outcome is not None:
        return job.outcome.value
    if job.cancel_requested and job.state not in (JobState.DONE, JobState.REJECTED):
        return "cancel requested"
    return "-"


_STATUS_HEADER = (
    "NAME",
    "STATE",
    "REMOTE",
    "PROGRESS",
    "",
    "DONE",
    "FAILED",
    "PENDING",
    "AGE",
    "OUTCOME",
)


def _status_cells(job: Job, now: float) -> list[str]:
    share = progress(job)
    done = job.completed or (job.succeeded + job.failed if job.state is JobState.DONE else 0)
    return [
        job.name,
        job.state.value,
        attempt_label(job) or job.remote_status or "-",
        plain_bar(share),
        percent(share),
        f"{done:,}/{total(job):,}",
        f"{job.failed:,}",
        f"{pending(job):,}",
        duration(now - job.created_at),
        outcome_text(job),
    ]


def status_plain(jobs: Sequence[Job], *, now: float, costs: Costs | None = None) -> str:
    """The ``status`` table for a pipe: one row per job, then any errors.

    With ``costs`` (each job's usage, cost and spend wait, and the prices), the table gains
    TOKENS and COST, and a job waiting for the spend limit says so below it.
    """
    header = _STATUS_HEADER + (COST_HEADER if costs is not None else ())
    text = plain_table(
        header,
        (_status_cells(j, now) + cost_cells(j, costs) for j in jobs),
        right=(4, 5, 6, 7, 8, 10, 11),
    )
    errors = [f"  {job.name}: {first_line(job.error)}" for job in jobs if job.error]
    text += "\n" + state_counts(jobs) + "\n"
    waits = spend_notes(jobs, costs)
    if waits:
        text += "waiting:\n" + "\n".join(waits) + "\n"
    if errors:
        text += (
            "errors (`orchestrator show NAME` has the full report):\n" + "\n".join(errors) + "\n"
        )
    return text


def status_table(
    jobs: Sequence[Job], *, now: float, title: str | None = None, costs: Costs | None = None
) -> Table:
    """The ``status`` table for a terminal: coloured states and progress bars."""
    table = Table(title=title, box=box.SIMPLE_HEAD, expand=False, pad_edge=False)
    for header in _STATUS_HEADER + (COST_HEADER if costs is not None else ()):
        numeric = header in ("DONE", "FAILED", "PENDING", "AGE", "", *COST_HEADER)
        table.add_column(
            header,
            justify="right" if numeric else "left",
            no_wrap=header != "NAME",
            overflow="fold" if header == "NAME" else "ellipsis",
        )
    for job in jobs:
        cells = _status_cells(job, now)
        share = progress(job)
        bar: RenderableType = (
            ProgressBar(total=1.0, completed=share, width=_BAR) if share is not None else Text("")
        )
        outcome = outcome_text(job)
        table.add_row(
            Text(job.name, style="bold"),
            Text(job.state.value, style=STATE_STYLES[job.state]),
            Text(cells[2], style="dim" if cells[2] == "-" else ""),
            bar,
            cells[4],
            cells[5],
            Text(cells[6], style="red" if job.failed else "dim"),
            cells[7],
            cells[8],
            Text(outcome, style=OUTCOME_STYLES.get(outcome, "dim" if outcome == "-" else "yellow")),
            *cost_cells(job, costs),
        )
    return table


def status_rich(jobs: Sequence[Job], *, now: float, costs: Costs | None = None) -> RenderableType:
    """The whole ``status`` view for a terminal: the table, the counts, the errors."""
    parts: list[RenderableType] = [
        status_table(jobs, now=now, costs=costs),
        Text(state_counts(jobs)),
    ]
    waits = spend_notes(jobs, costs)
    if waits:
        parts.append(Text("waiting:", style="bold"))
        parts.extend(Text(line, style="yellow") for line in waits)
    errors = [job for job in jobs if job.error]
    if errors:
        parts.append(Text("errors (`orchestrator show NAME` has the full report):", style="bold"))
        parts.extend(
            Text.assemble(("  " + job.name, "bold"), ": ", (first_line(job.error), "red"))
            for job in errors
        )
    return Group(*parts)


def show_lines(
    job: Job,
    files: Sequence[ResultFile],
    events: Sequence[JobEvent],
    *,
    now: float,
    parts: Sequence[Job] = (),
    costs: Costs | None = None,
    attempts: Sequence[Job] = (),
) -> list[tuple[str, str]]:
    """``show`` as (label, value) pairs: definition, remote side, counts, times, parts (and,
    with ``costs``, usage, cost and a spend-limit wait)."""
    share = progress(job)
    state = job.state.value + (f" (remote {job.remote_status})" if job.remote_status else "")
    metadata = ", ".join(f"{k}={v}" for k, v in sorted(job.metadata.items())) or "-"
    counts = (
        f"{plain_bar(share)} {percent(share)}  {job.completed:,}/{total(job):,} processed: "
        f"{job.succeeded:,} succeeded, {job.failed:,} failed; {pending(job):,} pending"
    )

    def when(at: float | None) -> str:
        return "-" if at is None else f"{timestamp(at)} ({duration(now - at)} ago)"

    rows = [
        ("job", f"{job.name} (ledger id {job.id})"),
        ("state", state),
        ("outcome", outcome_text(job)),
        ("workspace", job.workspace),
        ("model", job.model),
        ("endpoint", job.endpoint),
        *(("input" if i == 0 else "", path) for i, path in enumerate(job.inputs)),
        ("metadata", metadata),
        ("timeout", f"{job.timeout_hours} h"),
        ("priority", str(job.priority)),
        ("requests", f"{job.request_count:,} (counted at intake)"),
        ("tokens", f"{job.prompt_tokens:,} prompt tokens (estimated at intake)"),
        ("definition", job.definition_hash),
        ("remote id", job.remote_id or "-"),
        ("input files", ", ".join(job.input_file_ids) or "-"),
        ("output file", job.output_file_id or "-"),
        ("error file", job.error_file_id or "-"),
        ("progress", counts),
        ("created", when(job.created_at)),
        ("submitted", when(job.submitted_at)),
        ("finished", when(job.finished_at)),
    ]
    rows.extend(cost_lines(job, costs))
    if job.step_retries:
        rows.append(
            ("step retries", f"{job.step_retries} (next not before {timestamp(job.not_before)})")
        )
    if job.claimed_by:
        rows.append(("lease", f"held by {job.claimed_by} until {timestamp(job.lease_until)}"))
    parent = parent_name(job)
    if parent is not None:
        rows.append(("parent", f"{parent} (`show {parent}` lists every part)"))
    label = attempt_label(job)
    limit = job.max_attempts or "?"
    if attempts:
        first = dict((job.attempt_info or {}).get("first") or {})
        rows.append(
            (
                "attempts",
                f"1/{limit}  {first.get('remote_id') or job.remote_id or '-'}  "
                f"{first.get('outcome') or '-'}  {first.get('succeeded', 0):,} succeeded, "
                f"{first.get('failed', 0):,} failed" + (f"  ({label})" if label else ""),
            )
        )
    for attempt in attempts:
        reasons = dict((attempt.attempt_info or {}).get("reasons") or {})
        why = ", ".join(f"{n:,} {r}" for r, n in sorted(reasons.items())) or "-"
        outcome = attempt.outcome.value if attempt.outcome else attempt.state.value
        rows.append(
            (
                "",
                f"{attempt.attempt}/{limit}  {attempt.remote_id or '-'}  {outcome}  "
                f"{attempt.request_count:,} retried ({why}): {attempt.succeeded:,} succeeded, "
                f"{attempt.failed:,} failed",
            )
        )
    for i, part in enumerate(parts):
        outcome = f", {part.outcome.value}" if part.outcome else ""
        rows.append(
            (
                "parts" if i == 0 else "",
                f"{part.name}  {part.state.value}{outcome}  {part.remote_id or '-'}  "
                f"{part.completed:,}/{total(part):,} processed",
            )
        )
    return rows


def show_plain(
    job: Job,
    files: Sequence[ResultFile],
    events: Sequence[JobEvent],
    *,
    now: float,
    parts: Sequence[Job] = (),
    costs: Costs | None = None,
    attempts: Sequence[Job] = (),
) -> str:
    """``show NAME`` for a pipe: fields, error, files, then the full event history."""
    pairs = show_lines(job, files, events, now=now, parts=parts, costs=costs, attempts=attempts)
    width = max(len(label) for label, _ in pairs)
    out = [f"{label.ljust(width)}  {value}".rstrip() for label, value in pairs]
    if job.error:
        out += ["", "error:", *(f"  {line}" for line in job.error.splitlines())]
    out += ["", "files:" if files else "files: none downloaded yet"]
    out += [
        f"  {f.kind:<6}  {f.path}  {f.bytes:,} bytes  {f.lines:,} lines  sha256 {f.sha256}"
        for f in files
    ]
    out += ["", f"history ({len(events)} events):"]
    out += ["  " + "  ".join(_event_cells(e)).rstrip() for e in events]
    return "\n".join(out) + "\n"


def _event_cells(event: JobEvent) -> list[str]:
    move = (
        f"{event.from_state.value} -> {event.to_state.value}"
        if event.from_state and event.from_state is not event.to_state
        else (event.to_state.value if event.from_state else f"new -> {event.to_state.value}")
    )
    return [
        timestamp(event.at) or "",
        move.ljust(24),
        (event.remote_status or "").ljust(10),
        event.detail or "",
    ]


def show_rich(
    job: Job,
    files: Sequence[ResultFile],
    events: Sequence[JobEvent],
    *,
    now: float,
    parts: Sequence[Job] = (),
    costs: Costs | None = None,
    attempts: Sequence[Job] = (),
) -> RenderableType:
    """``show NAME`` for a terminal."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    pairs = show_lines(job, files, events, now=now, parts=parts, costs=costs, attempts=attempts)
    for label, value in pairs:
        style = ""
        if label == "state":
            style = STATE_STYLES[job.state]
        elif label == "outcome":
            style = OUTCOME_STYLES.get(value, "")
        grid.add_row(label, Text(value, style=style))
    blocks: list[RenderableType] = [grid]
    if job.error:
        blocks += [Text("\nerror:", style="bold red"), Text(job.error, style="red")]
    files_table = Table(box=box.SIMPLE_HEAD, title="files", title_justify="left", pad_edge=False)
    for header in ("KIND", "PATH", "BYTES", "LINES", "SHA256"):
        # Paths and digests are copied from here: fold them, never cut them short.
        files_table.add_column(
            header,
            justify="right" if header in ("BYTES", "LINES") else "left",
            overflow="fold",
        )
    for f in files:
        files_table.add_row(f.kind, f.path, f"{f.bytes:,}", f"{f.lines:,}", f.sha256)
    blocks.append(files_table if files else Text("\nfiles: none downloaded yet", style="dim"))
    history = Table(
        box=box.SIMPLE_HEAD,
        title=f"history ({len(events)} events)",
        title_justify="left",
        pad_edge=False,
    )
    for header in ("AT", "MOVE", "REMOTE", "DETAIL"):
        history.add_column(header)
    for event in events:
        at, move, remote, detail = _event_cells(event)
        history.add_row(
            at, Text(move.strip(), style=STATE_STYLES[event.to_state]), remote.strip(), detail
        )
    blocks.append(history)
    return Group(*blocks)


def results_lines(detail: dict[str, Any]) -> list[str]:
    """``results NAME`` as plain lines (the terminal rendering colours the same lines)."""
    head = f"{detail['name']}: {detail['state']}"
    if detail["outcome"]:
        head += f", {detail['outcome']}"
    head += (
        f": {detail['succeeded']:,} succeeded, {detail['failed']:,} failed "
        f"of {detail['total']:,} requests"
    )
    lines = [head, f"  folder   {detail['folder']}"]
    for f in detail["files"]:
        missing = "" if f["exists"] else "  (MISSING on disk)"
        lines.append(
            f"  {f['kind']:<7}  {f['path']}  {f['lines']:,} lines  {f['bytes']:,} bytes  "
            f"sha256 {f['sha256']}{missing}"
        )
    if detail["summary"]:
        lines.append(f"  summary  {detail['summary']}")
    if not detail["files"]:
        if detail["state"] in ("done", "rejected"):
            lines.append("  no result files (nothing was downloaded)")
        else:
            lines.append(
                "  no results yet: they are downloaded here when the job is done "
                "(output.jsonl, errors.jsonl, job.json)"
            )
    return lines
