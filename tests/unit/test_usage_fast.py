"""The C-speed usage sums (one layout per chunk) against the line-by-line reading.

The fast path is taken only for an ``additive`` reader; the same reader wrapped in a plain
function is read line by line, so the two scans of the same bytes must agree exactly, however
the lines mix layouts, odd keys, escapes and chunk cuts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.providers._transport.usage import UsageScan, additive, openai_style_usage
from orchestrator.usage import Usage


def _line_by_line(usage: Mapping[str, Any]) -> tuple[int, int, int] | None:
    return openai_style_usage(usage)


_HEAD = b'{"custom_id":"r","response":{"status_code":200,"body":{"id":"x",'
_TAIL = b',"choices":[{"message":{"content":"ok"}}]}}}'
_SHAPES = [
    b'"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}',
    b'"usage":{"completion_tokens":%d,"prompt_tokens":%d,"total_tokens":%d}',
    b'"usage":{"input_tokens":%d,"output_tokens":%d,"cache":%d}',
    b'"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d,"prompt_tokens":%d}',
    b'"usage":{"prompt_tokens":0%d,"completion_tokens":%d,"total_tokens":%d}',
    b'"usage": {"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}',
    b'"usage":{"prompt_tokens": %d,"completion_tokens":%d,"total_tokens":%d}',
    b'"usage":{"prompt_tokens":%d,"details":{"cached":%d},"total_tokens":%d}',
    b'"usage":{"prompt_tokens":%d}',
    b'"usage":{}',
    b'"usage":null',
    b'"note":"usage","usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}',
    b'"a\\"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}',
    b'"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d},'
    b'"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}',
    b'"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":-%d}',
    b'"none":%d',
]


def _record(shape: bytes, numbers: list[int]) -> bytes:
    fields = shape % tuple(numbers[: shape.count(b"%d")])
    return _HEAD + fields + _TAIL


def _sums(reader: Any, data: bytes, cuts: list[int]) -> Usage:
    scan = UsageScan(reader)
    start = 0
    for cut in sorted(set(cuts)):
        scan.feed(data[start:cut])
        start = cut
    scan.feed(data[start:])
    lines = data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)
    return scan.usage(lines)


_LINES = st.lists(
    st.tuples(
        st.sampled_from(range(len(_SHAPES))),
        st.lists(st.integers(0, 10**6), min_size=6, max_size=6),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(
    lines=_LINES,
    uniform_first=st.integers(0, 30),
    cuts=st.lists(st.integers(0, 20_000), max_size=6),
    ending=st.sampled_from([b"\n", b""]),
)
def test_fast_sums_equal_the_line_by_line_sums(
    lines: list[tuple[int, list[int]]], uniform_first: int, cuts: list[int], ending: bytes
) -> None:
    # A run of one layout first, so the fast path learns it, then anything.
    records = [_record(_SHAPES[0], [n + 1, n, 2 * n + 1]) for n in range(uniform_first)]
    records += [_record(_SHAPES[shape], numbers) for shape, numbers in lines]
    data = b"\n".join(records) + (ending if records else b"")
    assert _sums(openai_style_usage, data, cuts) == _sums(_line_by_line, data, cuts)


@settings(max_examples=300, deadline=None)
@given(
    run=st.integers(0, 40),
    odd=st.lists(
        st.tuples(
            st.integers(0, 40),
            st.sampled_from(range(1, len(_SHAPES))),
            st.lists(st.integers(0, 10**6), min_size=6, max_size=6),
        ),
        max_size=2,
    ),
    cuts=st.lists(st.integers(0, 20_000), max_size=3),
)
def test_an_odd_line_among_one_layout_is_read_as_the_line_by_line_reading_reads_it(
    run: int, odd: list[tuple[int, int, list[int]]], cuts: list[int]
) -> None:
    records = [_record(_SHAPES[0], [n + 3, n, 2 * n + 3]) for n in range(run)]
    for position, shape, numbers in odd:
        records.insert(position, _record(_SHAPES[shape], numbers))
    data = b"\n".join(records) + b"\n"
    assert _sums(openai_style_usage, data, cuts) == _sums(_line_by_line, data, cuts)


def test_a_file_of_one_layout_is_summed_per_chunk() -> None:
    data = b"".join(_record(_SHAPES[0], [n, 2 * n, 3 * n]) + b"\n" for n in range(1, 2_001))
    calls: list[Mapping[str, Any]] = []

    @additive
    def counting(usage: Mapping[str, Any]) -> tuple[int, int, int] | None:
        calls.append(usage)
        return openai_style_usage(usage)

    cuts = list(range(0, len(data), 64 << 10))
    usage = _sums(counting, data, cuts)
    total = sum(range(1, 2_001))
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (
        total,
        2 * total,
        3 * total,
    )
    assert usage.lines_without_usage == 0
    # Far fewer reader calls than lines: whole chunks were summed at once.
    assert len(calls) < 2_000 // 10


def test_an_override_without_the_mark_is_read_line_by_line() -> None:
    data = b"".join(_record(_SHAPES[0], [n, n, 2 * n]) + b"\n" for n in range(100))
    calls: list[Mapping[str, Any]] = []

    def counting(usage: Mapping[str, Any]) -> tuple[int, int, int] | None:
        calls.append(usage)
        return openai_style_usage(usage)

    _sums(counting, data, [len(data) // 2])
    assert len(calls) == 100
