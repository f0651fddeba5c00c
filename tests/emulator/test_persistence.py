"""State survives a restart on the same state folder."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from orchestrator.clock import FakeClock
from orchestrator.emulator import Emulator, EmulatorSettings
from tests.emulator.conftest import create, jsonl, upload

pytestmark = pytest.mark.anyio


async def test_restart_carries_on(tmp_path: Path, clock: FakeClock) -> None:
    """Jobs, files, counters and the signing key persist; progress continues from the clock."""
    settings = EmulatorSettings(validation_seconds=1.0, throughput=10.0, failure_fraction=0.1)
    with Emulator(settings, clock=clock, state_dir=tmp_path) as first:
        async with first.client("k") as client:
            file_id = await upload(client, jsonl(100))
            job = await create(client, file_id, metadata={"orchestrator_job_id": "1"})
            clock.advance(6.0)
            mid = (await client.get(f"/v1/batch/jobs/{job['id']}")).json()
            url = (await client.get(f"/v1/files/{file_id}/url")).json()["url"]
    assert mid["status"] == "RUNNING" and mid["completed_requests"] == 50
    # A restart with other settings: the running job keeps the knobs it was created with.
    with Emulator(EmulatorSettings(throughput=1.0), clock=clock, state_dir=tmp_path) as second:
        async with second.client("k") as client:
            again = (await client.get(f"/v1/batch/jobs/{job['id']}")).json()
            assert again == mid
            clock.advance(5.0)
            done = (await client.get(f"/v1/batch/jobs/{job['id']}")).json()
            assert done["status"] == "SUCCESS"
            assert done["failed_requests"] + done["succeeded_requests"] == 100
            async with second.client("other") as anonymous:
                response = await anonymous.get(url)
            assert response.status_code == 200 and response.content == jsonl(100)
        stats = second.workspace_stats("k")
    assert stats["jobs_by_orchestrator_job_id"] == {"1": 1}
    assert stats["max_pending"] == 100
    assert stats["requests"]["jobs.get"] == {"200": 3}


def test_temporary_state_is_removed() -> None:
    """Without a state folder the emulator owns a temporary one and removes it on close."""
    emu = Emulator()
    folder = emu.state_dir
    assert folder.is_dir()
    emu.close()
    emu.close()
    assert not folder.exists()


async def test_stored_states_keep_the_version_1_spelling(tmp_path: Path, clock: FakeClock) -> None:
    """Finished jobs are stored as ``SUCCESS`` etc., so state folders from before stay readable."""
    settings = EmulatorSettings(validation_seconds=0.0, throughput=1000.0)
    with Emulator(settings, clock=clock, state_dir=tmp_path) as emu:
        async with emu.client("k") as client:
            job = await create(client, await upload(client, jsonl(3)))
            clock.advance(1.0)
            assert (await client.get(f"/v1/batch/jobs/{job['id']}")).json()["status"] == "SUCCESS"
    with sqlite3.connect(tmp_path / "emulator.db") as db:
        final_status, final = db.execute("SELECT final_status, final FROM jobs").fetchone()
    assert final_status == "SUCCESS" and json.loads(final)["status"] == "SUCCESS"
