"""An input that vanishes between intake and upload: retried, then the job alone is rejected."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.clock import FakeClock
from orchestrator.daemon import submit as submit_module
from orchestrator.daemon.app import embedded_api_key
from orchestrator.daemon.submit import Submitter
from orchestrator.emulator import Emulator
from orchestrator.ledger import SqlLedger
from orchestrator.ledger.migrate import upgrade
from orchestrator.model import JobSpec, JobState
from tests.daemon.conftest import (
    embedded_provider,
    loop_runtime,
    loop_workspace,
    write_chat_input,
)

pytestmark = pytest.mark.anyio


def _spec(name: str, path: Path) -> JobSpec:
    return JobSpec(
        name=name,
        workspace="main",
        model="mistral-small-latest",
        endpoint="/v1/chat/completions",
        inputs=(str(path),),
    )


async def test_a_deleted_input_is_retried_then_rejected_and_the_loop_goes_on(
    tmp_path: Path, clock: FakeClock, emulator_factory: Callable[..., Emulator]
) -> None:
    """No crash of the loop; backoff between tries; the other job is submitted meanwhile."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    await upgrade(url)
    gone = write_chat_input(tmp_path / "gone.jsonl", 3)
    kept = write_chat_input(tmp_path / "kept.jsonl", 2)
    emulator = emulator_factory()
    ledger = await SqlLedger.connect(url, clock=clock)
    provider = embedded_provider(emulator, clock)
    try:
        lost, _ = await ledger.add_job(_spec("lost", gone), definition_hash="a", request_count=3)
        other, _ = await ledger.add_job(_spec("other", kept), definition_hash="b", request_count=2)
        gone.unlink()  # after intake validated it
        submitter = Submitter(
            loop_runtime(clock, ledger, tmp_path), loop_workspace(clock, provider)
        )
        tries = 0
        while (await ledger.get(lost.id)).state is not JobState.REJECTED:
            await submitter.cycle()
            job = await ledger.get(lost.id)
            if job.state is JobState.ADMITTED:
                assert job.error is not None and str(gone) in job.error
                assert job.not_before is not None and job.not_before > clock.now()
            tries += 1
            assert tries < 20, "the job was never rejected"
            clock.advance(600.0)
        rejected = await ledger.get(lost.id)
        assert rejected.step_retries == submit_module.INPUT_READ_ATTEMPTS - 1
        assert rejected.error is not None
        assert rejected.error.startswith("an input cannot be read for the upload: ")
        assert str(gone) in rejected.error
        assert "no batch was created" in rejected.error
        assert rejected.input_file_ids == ()
        assert (await ledger.get(other.id)).state is JobState.RUNNING
        assert emulator.workspace_stats(embedded_api_key("main"))["jobs_created"] == 1
    finally:
        await provider.aclose()
        await ledger.close()
