"""The one-daemon lock of a SQLite ledger, and its absence on PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import anyio
import pytest

from orchestrator.clock import FakeClock
from orchestrator.errors import LedgerLocked
from orchestrator.ledger import SqlLedger
from orchestrator.ledger.engine import sqlite_path
from orchestrator.ledger.lock import lock_path
from orchestrator.ledger.migrate import upgrade

pytestmark = pytest.mark.anyio


@pytest.fixture
async def migrated(sqlite_url: str) -> str:
    """A SQLite ledger at head."""
    await upgrade(sqlite_url)
    return sqlite_url


async def test_a_second_holder_fails_at_once(migrated: str, clock: FakeClock) -> None:
    """While one ledger holds the lock, another fails fast with LedgerLocked naming the file."""
    async with (
        await SqlLedger.connect(migrated, clock=clock) as first,
        await SqlLedger.connect(migrated, clock=clock) as second,
    ):
        async with first.daemon_lock():
            with anyio.fail_after(1), pytest.raises(LedgerLocked) as info:
                async with second.daemon_lock():
                    pytest.fail("the lock was taken twice")
            assert str(sqlite_path(migrated)) in str(info.value)
            assert "run one daemon per ledger" in str(info.value)
            with pytest.raises(LedgerLocked):
                async with first.daemon_lock():
                    pytest.fail("the lock was taken twice by its holder")
        # Released at the end of the block: the other ledger may take it now.
        async with second.daemon_lock():
            pass


async def test_the_lock_file_names_its_holder(migrated: str) -> None:
    """The lock file carries the holder's pid, for operators."""
    async with await SqlLedger.connect(migrated) as ledger, ledger.daemon_lock():
        database = sqlite_path(migrated)
        assert database is not None
        assert lock_path(database).read_text().strip() == str(os.getpid())


async def test_close_releases_a_held_lock(migrated: str, clock: FakeClock) -> None:
    """Closing the ledger lets the lock go even if the lock block has not ended."""
    ledger = await SqlLedger.connect(migrated, clock=clock)
    held = ledger.daemon_lock()
    await held.__aenter__()
    await ledger.close()
    async with await SqlLedger.connect(migrated, clock=clock) as other, other.daemon_lock():
        pass
    await held.__aexit__(None, None, None)


async def test_a_killed_holder_releases_the_lock(migrated: str, clock: FakeClock) -> None:
    """A daemon killed with SIGKILL while holding the lock never blocks the next one."""
    script = textwrap.dedent(
        """
        import sys, anyio
        from orchestrator.ledger import SqlLedger

        async def main() -> None:
            async with await SqlLedger.connect(sys.argv[1]) as ledger:
                async with ledger.daemon_lock():
                    print("locked", flush=True)
                    await anyio.sleep(60)

        anyio.run(main)
        """
    )
    async with await SqlLedger.connect(migrated, clock=clock) as ledger:
        process = await anyio.open_process(
            [sys.executable, "-c", script, migrated], stdout=subprocess.PIPE
        )
        async with process:
            try:
                assert process.stdout is not None
                output = b""
                with anyio.fail_after(30):
                    while b"locked" not in output:
                        output += await process.stdout.receive()
                with pytest.raises(LedgerLocked):
                    async with ledger.daemon_lock():
                        pass
            finally:
                process.send_signal(signal.SIGKILL)
                with anyio.fail_after(10):
                    await process.wait()
        assert process.returncode == -signal.SIGKILL
        async with ledger.daemon_lock():
            pass


@pytest.mark.postgres
async def test_postgres_lock_is_one_daemon_per_ledger(postgres_url: str, clock: FakeClock) -> None:
    """Until leases exist, a second daemon on a PostgreSQL ledger fails fast too."""
    await upgrade(postgres_url)
    async with (
        await SqlLedger.connect(postgres_url, clock=clock) as first,
        await SqlLedger.connect(postgres_url, clock=clock) as second,
    ):
        async with first.daemon_lock():
            with pytest.raises(LedgerLocked, match="run one daemon per ledger"):
                async with second.daemon_lock():
                    pass
        async with second.daemon_lock():  # released with the first holder's block
            pass
