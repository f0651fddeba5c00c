"""The usage scan of the download pass: the same sums however the bytes are chunked."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.providers._transport.usage import UsageScan, openai_style_usage


def _line(prompt: int | None, completion: int = 0) -> bytes:
    body: dict[str, Any] = {"choices": [{"message": {"content": 'usage "usage" ok'}}]}
    if prompt is not None:
        body["usage"] = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
    record = {"custom_id": "x", "response": {"status_code": 200, "body": body}, "error": None}
    return json.dumps(record).encode()


def _scan(data: bytes, cuts: list[int]) -> tuple[int, int, int, int]:
    scan = UsageScan(openai_style_usage)
    start = 0
    for cut in sorted(set(cuts)):
        scan.feed(data[start:cut])
        start = cut
    scan.feed(data[start:])
    lines = data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)
    usage = scan.usage(lines)
    return (
        usage.prompt_tokens,
        usage.completion_tokens,
        usage.total_tokens,
        usage.lines_without_usage,
    )


@settings(max_examples=200, deadline=None)
@given(
    records=st.lists(
        st.one_of(st.none(), st.tuples(st.integers(0, 10_000), st.integers(0, 10_000))),
        min_size=1,
        max_size=30,
    ),
    trailing_newline=st.booleans(),
    data=st.data(),
)
def test_any_chunking_gives_the_line_by_line_sums(
    records: list[tuple[int, int] | None], trailing_newline: bool, data: st.DataObject
) -> None:
    """Lines cut anywhere across chunks sum like whole lines; lines without usage count."""
    encoded = [_line(*r) if r is not None else _line(None) for r in records]
    blob = b"\n".join(encoded) + (b"\n" if trailing_newline else b"")
    cuts = data.draw(st.lists(st.integers(0, len(blob)), max_size=12))
    prompt = sum(r[0] for r in records if r is not None)
    completion = sum(r[1] for r in records if r is not None)
    without = sum(1 for r in records if r is None)
    assert _scan(blob, cuts) == (prompt, completion, prompt + completion, without)


def test_bad_lines_count_as_lines_without_usage() -> None:
    """Not JSON, a usage that is not an object, "usage" as a value or inside a string, a usage
    object cut short: zero tokens, counted; spaced-out JSON is read too."""
    blob = (
        b'{"usage": 3\n["usage"]\n{"response": {"body": {"usage": "none"}}}\n'
        b'{"text": "say \\"usage\\": {\\"prompt_tokens\\": 9}"}\n'
        b'{"usage": {"prompt_tokens": 1\n'
        b'{"usage" :  {"prompt_tokens": 2, "completion_tokens": 3, "x": {"y": 1}}}\n' + _line(5, 1)
    )
    assert _scan(blob, [7, 30, 100]) == (7, 4, 11, 5)


def test_responses_endpoint_names_and_a_missing_total() -> None:
    """input_tokens/output_tokens are read too; a missing total is the sum."""
    assert openai_style_usage({"input_tokens": 4, "output_tokens": 6}) == (4, 6, 10)


def test_a_dialect_plugs_in_its_own_field_names() -> None:
    """The reader is the dialect's: an Anthropic-shaped line read by its own hook."""

    def anthropic(usage: Mapping[str, Any]) -> tuple[int, int, int] | None:
        if "input_tokens" not in usage:
            return None
        return usage["input_tokens"], usage["output_tokens"], 0 + sum(usage.values())

    message = {"usage": {"input_tokens": 3, "output_tokens": 9}}
    blob = json.dumps({"result": {"type": "succeeded", "message": message}}).encode() + b"\n"
    scan = UsageScan(anthropic)
    scan.feed(blob)
    usage = scan.usage(1)
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (3, 9, 12)
    assert usage.lines_without_usage == 0
