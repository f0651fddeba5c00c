"""Summing the token usage of result lines while they stream past (no second read).

The download pipeline hands every chunk it accounts for (hash, line count) to a
:class:`UsageScan` as well. The scan is cheap by design, because it runs on the byte path of a
download that may be a gigabyte: a chunk is searched for the dialect's ``needle`` (``b'"usage"'``)
with ``bytes.find`` (C speed), and only the lines that contain it are parsed as JSON. A line
without usage, or one that is not valid JSON, counts zero tokens and is counted as such
(``Usage.lines_without_usage``).

The field names are the dialect's: a provider supplies a :data:`UsageReader`, a function from one
parsed result line to ``(prompt, completion, total)`` or None (:func:`openai_style_usage` reads
``response.body.usage`` as Mistral and OpenAI write it).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, Final

from orchestrator.usage import Usage

UsageReader = Callable[[Mapping[str, Any]], tuple[int, int, int] | None]
"""A dialect's mapping of one parsed result line onto (prompt, completion, total) tokens."""

USAGE_NEEDLE: Final = b'"usage"'
"""What a line must contain for its usage to be looked for (every dialect names it so)."""


def _count(value: object) -> int:
    """A token count as a JSON value gives it: a non-negative integer, anything else 0."""
    if type(value) is int and value >= 0:
        return value
    return 0


def openai_style_usage(line: Mapping[str, Any]) -> tuple[int, int, int] | None:
    """``response.body.usage`` with ``prompt_tokens``, ``completion_tokens``, ``total_tokens``.

    Mistral's and OpenAI's result lines carry it so (``shared/api/batch-apis.md``,
    ``openai-batch.md``); OpenAI's Responses endpoint names them ``input_tokens`` and
    ``output_tokens``, read too. A missing ``total_tokens`` is the sum of the other two.
    """
    response = line.get("response")
    body = response.get("body") if type(response) is dict else None
    usage = body.get("usage") if type(body) is dict else None
    if type(usage) is not dict:
        return None
    prompt = _count(usage.get("prompt_tokens", usage.get("input_tokens")))
    completion = _count(usage.get("completion_tokens", usage.get("output_tokens")))
    total = usage.get("total_tokens")
    return prompt, completion, _count(total) if total is not None else prompt + completion


class UsageScan:
    """The usage of a stream of JSONL bytes, fed chunk by chunk (sync; thread-side)."""

    __slots__ = ("_carry", "_completion", "_prompt", "_reader", "_total", "with_usage")

    def __init__(self, reader: UsageReader) -> None:
        self._reader = reader
        self._carry = b""
        """The start of a line the previous chunk did not finish."""
        self._prompt = self._completion = self._total = 0
        self.with_usage = 0
        """Lines that carried usage."""

    def feed(self, chunk: bytes) -> None:
        """Account for the next ``chunk`` of the stream."""
        start = 0
        if self._carry:
            cut = chunk.find(b"\n")
            if cut < 0:
                self._carry += chunk
                return
            self._line(self._carry + chunk[:cut])
            self._carry = b""
            start = cut + 1
        end = chunk.rfind(b"\n")
        if end < start:
            self._carry = chunk[start:]
            return
        find = chunk.find
        hit = find(USAGE_NEEDLE, start, end)
        while hit >= 0:
            first = chunk.rfind(b"\n", start, hit) + 1
            last = find(b"\n", hit, end + 1)
            self._line(chunk[max(first, start) : last])
            hit = find(USAGE_NEEDLE, last, end)
        if end + 1 < len(chunk):
            self._carry = chunk[end + 1 :]

    def _line(self, line: bytes) -> None:
        if USAGE_NEEDLE not in line:
            return
        try:
            parsed = json.loads(line)
        except (ValueError, RecursionError):
            return  # not JSON: no usage (the line still counts, as one without)
        if type(parsed) is not dict:
            return
        found = self._reader(parsed)
        if found is None:
            return
        prompt, completion, total = found
        self._prompt += prompt
        self._completion += completion
        self._total += total
        self.with_usage += 1

    def usage(self, lines: int) -> Usage:
        """The usage so far of a stream of ``lines`` lines (the last may lack its newline)."""
        if self._carry:
            # The stream's last line has no newline: it is complete only now.
            carry, self._carry = self._carry, b""
            self._line(carry)
        return Usage(
            prompt_tokens=self._prompt,
            completion_tokens=self._completion,
            total_tokens=self._total,
            lines=lines,
            lines_without_usage=max(0, lines - self.with_usage),
        )
