"""Paging a job list: each job once, and a list that stops advancing is an error, not an end."""

from __future__ import annotations

import pytest

from orchestrator.errors import TransientProviderError
from orchestrator.model import RemotePhase
from orchestrator.providers._transport.pages import Page, iterate_pages
from orchestrator.providers.base import RemoteJob

pytestmark = pytest.mark.anyio


def _job(n: int) -> RemoteJob:
    return RemoteJob(
        id=f"batch_{n}", status="in_progress", phase=RemotePhase.RUNNING,
        total=1, completed=0, succeeded=0, failed=0,
    )  # fmt: skip


async def test_a_shifted_list_yields_each_job_once() -> None:
    """New jobs pushed page 1 down: the repeats are skipped, the walk goes on to the end."""
    pages = {None: Page([_job(3), _job(2)], "2"), "2": Page([_job(2), _job(1)], None)}

    async def fetch(cursor: str | None) -> Page[str]:
        return pages[cursor]

    assert [job.id async for job in iterate_pages(fetch, provider="t")] == [
        "batch_3",
        "batch_2",
        "batch_1",
    ]


async def test_a_page_of_repeats_that_announces_more_is_a_transient_error() -> None:
    """Reconcile must never read a stalled list as complete (it would create a duplicate)."""
    calls = 0

    async def fetch(cursor: str | None) -> Page[str]:
        nonlocal calls
        calls += 1
        return Page([_job(1)], "1")  # the same page, forever

    with pytest.raises(TransientProviderError, match="incomplete"):
        _ = [job async for job in iterate_pages(fetch, provider="t")]
    assert calls == 2
