"""Property tests: line counting agrees with reading, and timelines only move forward."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.emulator.lines import LineCounter, iter_raw_lines
from orchestrator.emulator.results import failed_prefix
from orchestrator.emulator.simulation import (
    TERMINAL,
    SimParams,
    Timeline,
    Validation,
    pending_at,
    phase_at,
)

T0 = 1_000_000.0


@settings(max_examples=200, deadline=None)
@given(
    data=st.binary(max_size=300).map(lambda b: b.replace(b"\x00", b"\n")),
    cuts=st.lists(st.integers(min_value=0, max_value=300), max_size=8),
)
def test_counter_matches_reader(
    tmp_path_factory: pytest.TempPathFactory, data: bytes, cuts: list[int]
) -> None:
    """However the upload is chunked, its line count is what validation will read."""
    path = tmp_path_factory.mktemp("lines") / "x.jsonl"
    path.write_bytes(data)
    counter = LineCounter()
    start = 0
    for cut in sorted(cuts):
        counter.feed(data[start:cut])
        start = max(start, cut)
    counter.feed(data[start:])
    assert counter.finish() == sum(1 for _ in iter_raw_lines([path]))


@settings(max_examples=200, deadline=None)
@given(bits=st.lists(st.booleans(), max_size=100), k=st.integers(min_value=0, max_value=100))
def test_failed_prefix(bits: list[bool], k: int) -> None:
    """The bitmap popcount of a prefix counts the failing lines in it."""
    bitmap = bytearray((len(bits) + 7) // 8 + 1)
    for i, bit in enumerate(bits):
        if bit:
            bitmap[i >> 3] |= 1 << (i & 7)
    k = min(k, len(bits))
    assert failed_prefix(bytes(bitmap), k) == sum(bits[:k])


@settings(max_examples=300, deadline=None)
@given(
    n=st.integers(min_value=0, max_value=5000),
    throughput=st.floats(min_value=0.01, max_value=1e4),
    scale=st.floats(min_value=0.1, max_value=1e4),
    validation=st.floats(min_value=0, max_value=600),
    timeout=st.integers(min_value=1, max_value=168),
    cancel=st.one_of(st.none(), st.floats(min_value=0, max_value=1e6)),
    times=st.lists(st.floats(min_value=0, max_value=1e6), min_size=2, max_size=12),
    failed=st.integers(min_value=0, max_value=5000),
)
def test_timeline_is_monotonic(
    n: int,
    throughput: float,
    scale: float,
    validation: float,
    timeout: int,
    cancel: float | None,
    times: list[float],
    failed: int,
) -> None:
    """Progress never goes back, stays within the total, and a terminal state is final."""
    params = SimParams(
        time_scale=scale,
        throughput=throughput,
        validation_seconds=validation,
        cancel_seconds=2.0,
        failure_fraction=0.0,
        seed=0,
    )
    tl = Timeline(
        created_at=T0,
        requests=n,
        timeout_hours=timeout,
        params=params,
        cancel_at=None if cancel is None else T0 + cancel,
    )
    validation_outcome = Validation(usable=n > 0, failed_total=min(failed, n))
    last_processed, last_terminal = 0, None
    for t in sorted(times):
        if cancel is not None and t < cancel:
            continue  # a cancel is only ever recorded at the instant it happens
        phase = phase_at(tl, T0 + t, validation_outcome)
        assert not phase.needs_validation
        assert 0 <= phase.processed <= n
        assert phase.total in (0, n)
        assert phase.processed >= last_processed
        assert 0 <= pending_at(tl, T0 + t, validation_outcome) <= n
        if last_terminal is not None:
            assert phase.state == last_terminal
        if phase.state in TERMINAL:
            last_terminal = phase.state
            assert phase.terminal_at is not None
        last_processed = phase.processed
