"""The poll-cycle histogram accumulator, and what the poller times."""

from __future__ import annotations

import pytest

from orchestrator.clock import FakeClock
from orchestrator.config import Config
from orchestrator.daemon.poll import Poller
from orchestrator.emulator import Emulator
from orchestrator.service.view import Durations
from tests.service.conftest import advance_until, all_final, running

pytestmark = pytest.mark.anyio


def test_observations_land_in_le_buckets() -> None:
    """A value equal to a bound counts in that bucket; counts are cumulative up to +Inf."""
    timing = Durations([0.1, 1.0, 10.0])
    for seconds in (0.05, 0.1, 0.5, 1.0, 3.0, 100.0):
        timing.observe(seconds)
    assert timing.cumulative() == [("0.1", 2.0), ("1.0", 4.0), ("10.0", 5.0), ("+Inf", 6.0)]
    assert timing.count == 6
    assert timing.sum == pytest.approx(104.65)


def test_a_negative_duration_counts_as_zero() -> None:
    """A clock stepping back between start and end records 0, not a negative sum."""
    timing = Durations([1.0])
    timing.observe(-3.0)
    assert timing.cumulative() == [("1.0", 1.0), ("+Inf", 1.0)]
    assert timing.sum == 0.0


@pytest.mark.parametrize("buckets", [[], [1.0, 0.5], [1.0, 1.0]])
def test_buckets_must_ascend(buckets: list[float]) -> None:
    """Empty, descending or repeated bounds are refused."""
    with pytest.raises(ValueError, match="distinct and ascending"):
        Durations(buckets)


async def test_the_poller_times_only_cycles_that_polled(
    config: Config, clock: FakeClock, emulator: Emulator
) -> None:
    """One observation per cycle that asked the provider; idle cycles are not counted."""
    async with running(config, clock, emulator) as daemon:
        poller = daemon.pollers["main"]
        assert isinstance(poller, Poller)
        await advance_until(clock, all_final(daemon))
        polled = poller.cycles
        assert polled > 0
        assert poller.durations.count == polled
        # With nothing running, cycles go by without a provider call and without a sample.
        clock.advance(3600)
        await advance_until(clock, all_final(daemon))
        assert poller.durations.count == poller.cycles == polled
