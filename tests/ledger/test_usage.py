"""Usage in the ledger: per file, per job at done, summed per model (both backends)."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from orchestrator.budget import Admission
from orchestrator.clock import FakeClock
from orchestrator.ledger import SqlLedger
from orchestrator.model import Job, JobState, Outcome
from orchestrator.usage import Usage
from tests.ledger.factories import SHA, add, bring_to

pytestmark = pytest.mark.anyio

ONE = Usage(prompt_tokens=10, completion_tokens=5, total_tokens=15, lines=3, lines_without_usage=1)


async def _done(ledger: SqlLedger, name: str, usage: Usage | None) -> Job:
    job = await bring_to(ledger, await add(ledger, name), JobState.COLLECTING)
    return await ledger.transition(
        job.id, JobState.COLLECTING, JobState.DONE, outcome=Outcome.SUCCEEDED, usage=usage
    )


async def test_a_file_and_a_job_keep_their_usage(ledger: SqlLedger) -> None:
    """record_file keeps the file's usage; the done transition keeps the job's."""
    job = await bring_to(ledger, await add(ledger), JobState.COLLECTING)
    await ledger.record_file(
        job.id, "output", path="/r/out", bytes=10, sha256=SHA, lines=3, usage=ONE
    )
    await ledger.record_file(job.id, "error", path="/r/err", bytes=1, sha256=SHA, lines=1)
    output, errors = await ledger.files(job.id)
    assert output.usage == ONE
    assert errors.usage is None  # recorded without usage: unknown, not zero
    assert job.usage is None
    done = await ledger.transition(
        job.id, JobState.COLLECTING, JobState.DONE, outcome=Outcome.SUCCEEDED, usage=ONE
    )
    assert done.usage == ONE
    assert (await ledger.get(job.id)).usage == ONE


async def test_usage_sums_and_the_months_spend_read_in_admission(
    ledger: SqlLedger, clock: FakeClock
) -> None:
    """usage_totals sums per (workspace, model); admit_spending sees only what finished since."""
    await _done(ledger, "early", ONE)
    clock.advance(100)
    since = clock.now()
    await _done(ledger, "late", ONE)
    await _done(ledger, "nothing", None)
    await add(ledger, "waiting")
    totals = await ledger.usage_totals()
    assert totals == {("main", "mistral-small-latest"): ONE + ONE}

    seen: list[Mapping[str, Usage]] = []

    def decide(jobs: list[Job], finished: Mapping[str, Usage]) -> Admission:
        seen.append(finished)
        assert [job.name for job in jobs] == ["waiting"]
        return Admission()  # admit nothing

    _, admitted = await ledger.admit_spending("main", decide, since=since)
    assert admitted == []
    assert seen == [{"mistral-small-latest": ONE}]
