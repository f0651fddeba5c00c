"""Human output of ``budget`` (and the live view's budget panel): one row per workspace.

Split from :mod:`orchestrator.cli._render`, whose plain-table helper it shares.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich import box
from rich.console import Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from orchestrator.cli._render import plain_table
from orchestrator.rows import WorkspaceBudget


def budget_plain(rows: Sequence[WorkspaceBudget]) -> str:
    """``budget`` for a pipe: one row per workspace, then notes."""
    header = (
        "WORKSPACE",
        "BUDGET",
        "IN FLIGHT",
        "JOBS",
        "FREE",
        "QUEUED",
        "JOBS",
        "EXTERNAL",
        "NEXT",
    )
    cells = [_budget_cells(row) for row in rows]
    text = plain_table(header, cells, right=(1, 2, 3, 4, 5, 6, 7))
    return text + "".join(f"{note}\n" for note in budget_notes(rows))


def _budget_cells(row: WorkspaceBudget) -> list[str]:
    if row.external is not None:
        external = f"{row.external:,}"
    else:
        external = "daemon only" if row.count_external else "not counted"
    following = "-"
    if row.next_job:
        fits = row.free is not None and row.next_requests <= row.free
        following = f"{row.next_job} ({row.next_requests:,}: {'fits now' if fits else 'waits'})"
    return [
        row.name,
        "-" if row.budget is None else f"{row.budget:,}",
        f"{row.in_flight:,}",
        str(row.in_flight_jobs),
        "-" if row.free is None else f"{row.free:,}",
        f"{row.queued:,}",
        str(row.queued_jobs),
        external,
        following,
    ]


def budget_notes(rows: Sequence[WorkspaceBudget]) -> list[str]:
    """What the budget table cannot say in a cell."""
    notes = []
    if any(row.count_external and row.external is None for row in rows):
        notes.append(
            "external: jobs of the workspace that this ledger did not create; only a running "
            "daemon counts them (count_external = true), so they are not in FREE here."
        )
    for row in rows:
        if row.budget is None:
            notes.append(f"workspace {row.name!r} has jobs in the ledger but is not in the config")
        notes.extend(
            f"job {name!r} needs more than the whole budget of {row.name!r}: the daemon rejects it"
            for name in row.never_fits
        )
        for entry in row.tokens:
            if entry.budget is None and not entry.in_flight:
                continue  # nothing to say: no budget, nothing held
            limit = "no token budget" if entry.budget is None else f"token budget {entry.budget:,}"
            notes.append(
                f"{row.name}: {entry.model}: {entry.in_flight:,} prompt tokens in flight "
                f"(estimated), {limit}"
            )
        notes.extend(
            f"job {name!r} is estimated above its model's whole token budget in {row.name!r}: "
            "the daemon rejects it"
            for name in row.never_fits_tokens
        )
    return notes


def budget_rich(rows: Sequence[WorkspaceBudget]) -> RenderableType:
    """``budget`` for a terminal: a bar of the budget held per workspace."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for header in (
        "WORKSPACE",
        "USED",
        "BUDGET",
        "IN FLIGHT",
        "JOBS",
        "FREE",
        "QUEUED",
        "JOBS",
        "EXTERNAL",
        "NEXT",
    ):
        table.add_column(
            header,
            justify="left" if header in ("WORKSPACE", "USED", "NEXT", "EXTERNAL") else "right",
            no_wrap=True,
        )
    for row in rows:
        cells = _budget_cells(row)
        used = row.in_flight + (row.external or 0)
        bar: RenderableType = (
            ProgressBar(total=float(row.budget), completed=float(min(used, row.budget)), width=16)
            if row.budget
            else Text("")
        )
        table.add_row(Text(cells[0], style="bold"), bar, *cells[1:])
    notes = [Text(note, style="dim") for note in budget_notes(rows)]
    return Group(table, *notes)
