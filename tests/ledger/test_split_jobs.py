"""Split jobs in the ledger: parent and parts in one transaction, parent moves, cancel."""

from __future__ import annotations

import pytest

from orchestrator.errors import DefinitionConflict, IllegalTransition
from orchestrator.ledger import PartSpec, SqlLedger
from orchestrator.model import JobState, Outcome
from tests.ledger.factories import add, bring_to, make_spec

pytestmark = pytest.mark.anyio

PARTS = [
    PartSpec(inputs=("/r/big/parts/0001/input.jsonl",), request_count=1000),
    PartSpec(inputs=("/r/big/parts/0002/input.jsonl",), request_count=1000),
    PartSpec(inputs=("/r/big/parts/0003/input.jsonl",), request_count=500),
]


async def _split(ledger: SqlLedger, name: str = "big") -> tuple[int, list[int]]:
    parent, created = await ledger.add_split_job(
        make_spec(name, priority=3), definition_hash="h-split", request_count=2500, parts=PARTS
    )
    assert created
    return parent.id, [p.id for p in await ledger.parts(parent.id)]


async def test_parent_and_parts_are_recorded_together(ledger: SqlLedger) -> None:
    """The parent counts its parts; each part inherits the definition and points back."""
    parent_id, part_ids = await _split(ledger)
    parent = await ledger.get(parent_id)
    assert parent.part_count == 3 and parent.is_parent and parent.parent_id is None
    assert parent.request_count == 2500
    parts = await ledger.parts(parent_id)
    assert [p.name for p in parts] == ["big/part-0001", "big/part-0002", "big/part-0003"]
    assert part_ids == sorted(part_ids) and min(part_ids) > parent_id
    assert [p.request_count for p in parts] == [1000, 1000, 500]
    for part, spec in zip(parts, PARTS, strict=True):
        assert part.parent_id == parent_id and part.part_count == 0
        assert part.inputs == spec.inputs
        assert (part.workspace, part.model, part.priority) == ("main", parent.model, 3)
        assert part.metadata == parent.metadata
        assert part.state is JobState.QUEUED
    assert len({p.client_token for p in parts} | {parent.client_token}) == 4
    assert [p.id for p in await ledger.parents()] == [parent_id]
    assert await ledger.parts(part_ids[0]) == []


async def test_same_definition_is_a_no_op_and_another_a_conflict(ledger: SqlLedger) -> None:
    """Re-adding a split job is a no-op; another hash under the name is refused untouched."""
    parent_id, _ = await _split(ledger)
    again, created = await ledger.add_split_job(
        make_spec("big"), definition_hash="h-split", request_count=2500, parts=PARTS
    )
    assert (again.id, created) == (parent_id, False)
    with pytest.raises(DefinitionConflict) as caught:
        await ledger.add_split_job(
            make_spec("big"), definition_hash="h-other", request_count=2500, parts=PARTS[:1]
        )
    assert "split_requests" in str(caught.value)
    assert len(await ledger.parts(parent_id)) == 3


async def test_a_name_of_maximal_length_still_fits_its_parts(ledger: SqlLedger) -> None:
    """A 128-character job name plus '/part-NNNN' fits the name column on both dialects."""
    name = "n" * 128
    parent_id, _ = await _split(ledger, name)
    assert (await ledger.parts(parent_id))[0].name == name + "/part-0001"


async def test_parent_moves_follow_the_parent_table(ledger: SqlLedger) -> None:
    """A parent goes queued -> running -> collecting -> done; never queued -> admitted."""
    parent_id, _ = await _split(ledger)
    with pytest.raises(IllegalTransition):
        await ledger.transition(parent_id, JobState.QUEUED, JobState.ADMITTED)
    running = await ledger.transition(parent_id, JobState.QUEUED, JobState.RUNNING)
    assert running.state is JobState.RUNNING
    collecting = await ledger.transition(
        parent_id, JobState.RUNNING, JobState.COLLECTING, outcome=Outcome.SUCCEEDED
    )
    done = await ledger.transition(parent_id, collecting.state, JobState.DONE)
    assert done.outcome is Outcome.SUCCEEDED


async def test_an_ordinary_job_cannot_take_a_parent_move(ledger: SqlLedger) -> None:
    """queued -> running and running -> done are legal for parents only."""
    job = await add(ledger, "plain")
    with pytest.raises(IllegalTransition):
        await ledger.transition(job.id, JobState.QUEUED, JobState.RUNNING)
    job = await bring_to(ledger, job, JobState.RUNNING)
    with pytest.raises(IllegalTransition):
        await ledger.transition(job.id, JobState.RUNNING, JobState.DONE, outcome=Outcome.FAILED)
    assert (await ledger.get(job.id)).state is JobState.RUNNING


async def test_cancel_of_a_parent_flags_every_unfinished_part(ledger: SqlLedger) -> None:
    """One request flags the parent and its unfinished parts; a part alone flags itself."""
    parent_id, part_ids = await _split(ledger)
    first = await ledger.get(part_ids[0])
    await ledger.transition(
        first.id, JobState.QUEUED, JobState.DONE, outcome=Outcome.CANCELLED, detail="test"
    )
    await ledger.request_cancel("big/part-0002")
    assert not (await ledger.get(parent_id)).cancel_requested
    assert not (await ledger.get(part_ids[2])).cancel_requested
    parent = await ledger.request_cancel("big")
    assert parent.cancel_requested
    parts = await ledger.parts(parent_id)
    assert [p.cancel_requested for p in parts] == [False, True, True]
    history = await ledger.events(part_ids[2])
    assert history[-1].detail == "cancel requested (with big)"
