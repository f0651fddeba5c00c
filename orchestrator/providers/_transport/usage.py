"""Summing the token usage of result lines while they stream past (no second read).

The download pipeline hands every chunk it accounts for (hash, line count) to a
:class:`UsageScan` as well. The scan is cheap by design, because it runs on the byte path of a
download that may be a gigabyte: a whole result line is never parsed. ``bytes.find`` (C speed)
looks for the key ``"usage"`` (:data:`USAGE_NEEDLE`; a quote before it that is escaped is inside
a string, not a key), the object that is its value is delimited by counting braces with
``find``/``count``, and only that small object is parsed as JSON. The first such key of a line is
its usage. A line without one, or whose usage is not an object, counts zero tokens and is
counted as such (``Usage.lines_without_usage``).

When every line of a chunk carries a compact flat usage object of one layout (as Mistral's and
the emulator's do), the chunk is read by a single ``re.findall`` and summed key by key in C,
calling the dialect's reader once per chunk (:class:`_Layout`; only for an :func:`additive`
reader); any other line sends its chunk to the line-by-line reading, so the sums are the same.

The field names are the dialect's: a provider supplies a :data:`UsageReader`, a function from one
line's usage object to ``(prompt, completion, total)`` or None (:func:`openai_style_usage` reads
``prompt_tokens``/``completion_tokens``/``total_tokens`` as Mistral and OpenAI write them; an
Anthropic reader maps ``input_tokens``/``output_tokens``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar

from orchestrator.usage import Usage

UsageReader = Callable[[Mapping[str, Any]], tuple[int, int, int] | None]
"""A dialect's mapping of one result line's usage object onto (prompt, completion, total)."""

USAGE_NEEDLE: Final = b'"usage"'
"""The key a line's usage is found under (every dialect names it so)."""
_SPACE: Final = b" \t\r"


_ADDITIVE_MARK: Final = "__orchestrator_additive_usage__"
_Reader = TypeVar("_Reader", bound=Callable[..., Any])


def additive(reader: _Reader) -> _Reader:
    """Declare ``reader`` additive: for flat usage objects of non-negative integer counts that
    share one set of keys, it returns a tuple (never None), and that tuple for the key-wise sum
    of several such objects is the sum of its tuples for each of them (every count is a fixed
    key's value, or a fixed sum of them, chosen by which keys are present). The scan may then
    sum a chunk's counts key by key in C and call the reader once per chunk
    (:class:`_Layout`). A dialect's override of an additive method is not additive unless it
    says so again."""
    setattr(reader, _ADDITIVE_MARK, True)
    return reader


def _is_additive(reader: UsageReader) -> bool:
    return getattr(reader, _ADDITIVE_MARK, False) is True


def _count(value: object) -> int:
    """A token count as a JSON value gives it: a non-negative integer, anything else 0."""
    if type(value) is int and value >= 0:
        return value
    return 0


@additive
def openai_style_usage(usage: Mapping[str, Any]) -> tuple[int, int, int] | None:
    """``prompt_tokens``, ``completion_tokens``, ``total_tokens`` (``response.body.usage``).

    Mistral's and OpenAI's result lines carry it so (``shared/api/batch-apis.md``,
    ``openai-batch.md``); OpenAI's Responses endpoint names them ``input_tokens`` and
    ``output_tokens``, read too. A missing ``total_tokens`` is the sum of the other two.
    """
    prompt = _count(usage.get("prompt_tokens", usage.get("input_tokens")))
    completion = _count(usage.get("completion_tokens", usage.get("output_tokens")))
    total = usage.get("total_tokens")
    return prompt, completion, _count(total) if total is not None else prompt + completion


def usage_object(data: bytes, start: int, end: int) -> Mapping[str, Any] | None:
    """The value of the first ``"usage"`` key in ``data[start:end]`` (one line), if an object.

    Delimited by counting braces (a brace inside a string value of the usage object would
    confuse it; token counts have none) and parsed on its own: the rest of the line is never
    decoded.
    """
    find = data.find
    hit = find(USAGE_NEEDLE, start, end)
    while hit >= 0:
        if hit == 0 or data[hit - 1] != 0x5C:  # a backslash before it: inside a string
            pos = hit + len(USAGE_NEEDLE)
            if data.startswith(b":{", pos):  # compact JSON, as providers write it: no loop
                return _parse_object(data, pos + 1, end)
            while pos < end and data[pos] in _SPACE:
                pos += 1
            if pos < end and data[pos] == 0x3A:  # ':' : a key, not a value
                pos += 1
                while pos < end and data[pos] in _SPACE:
                    pos += 1
                if pos >= end or data[pos] != 0x7B:  # '{'
                    return None
                return _parse_object(data, pos, end)
        hit = find(USAGE_NEEDLE, hit + 1, end)
    return None


def _parse_object(data: bytes, first: int, end: int) -> Mapping[str, Any] | None:
    close = data.find(b"}", first, end)
    if close < 0:
        return None  # cut short: not an object
    if data.find(b"{", first + 1, close) < 0:
        flat = _flat_counts(data[first + 1 : close])
        if flat is not None:
            return flat
    depth, pos = 1, first + 1
    while depth:
        close = data.find(b"}", pos, end)
        if close < 0:
            return None
        depth += data.count(b"{", pos, close) - 1
        pos = close + 1
    try:
        parsed = json.loads(data[first:pos])
    except (ValueError, RecursionError):
        return None
    return parsed if type(parsed) is dict else None


_KEY_NAMES: dict[bytes, str] = {}
"""Quoted key bytes -> key: the few keys of usage objects, decoded once."""
_KEY_NAMES_MAX: Final = 256


def _flat_counts(inner: bytes) -> dict[str, int] | None:
    """``"a":1,"b":2`` (a flat object of integers, compact) without the JSON decoder, which
    costs about twice as much per line; None for anything else (the decoder then reads it)."""
    counts = {}
    names = _KEY_NAMES
    for pair in inner.split(b","):
        key, sep, value = pair.partition(b":")
        name = names.get(key)
        if name is None:
            if not sep or len(key) < 2 or key[0] != 0x22 or key[-1] != 0x22:
                return None
            name = key[1:-1].decode("ascii", "replace")
            if len(names) < _KEY_NAMES_MAX:
                names[key] = name
        if not value.isdigit():
            return None
        counts[name] = int(value)
    return counts


_KEY_CHARS: Final = rb'[^"\\,:{}\x00-\x1f\x7f-\xff]*'
"""A key the fast path reads: printable ASCII without quote, backslash or JSON punctuation."""
_FIRST_FLAT: Final = re.compile(
    rb'"usage":\{((?:"' + _KEY_CHARS + rb'":[0-9]+,)*"' + _KEY_CHARS + rb'":[0-9]+)\}'
)
_MAX_BACKOFF_EXPONENT: Final = 6


class _Layout:
    """One compact, flat usage object layout (its keys, in order) and its C-speed reading.

    ``sums`` reads every line of a run of whole lines with one ``re.findall`` whose pattern
    matches each line's first ``"usage"`` key: followed by an object of exactly these keys
    (digits captured), then the rest of its line (so a later ``"usage"`` of the same line is
    not seen, as :func:`usage_object` does not see it); or bare, when it is followed by
    anything else. A ``"usage"`` after a backslash is passed over, as :func:`usage_object`
    passes over it. A bare hit sends the run to the line-by-line reading; otherwise every
    line's usage is an object of these keys, as :func:`_flat_counts` reads it, and the counts
    are summed key by key in C. That equals the line-by-line sum for an :func:`additive`
    reader.
    """

    __slots__ = ("_keys", "_pattern")

    def __init__(self, keys: tuple[str, ...]) -> None:
        self._keys = keys
        fields = b",".join(
            re.escape(b'"' + key.encode("ascii") + b'":') + b"([0-9]+)" for key in keys
        )
        # The look-behind comes after the literal "usage", so the regex engine still searches
        # for that literal at C speed; a "usage" after a backslash is passed over, as
        # usage_object passes over it. One more (empty) group: findall then returns tuples
        # whatever the number of keys.
        self._pattern = re.compile(
            USAGE_NEEDLE + rb'(?<!\\"usage")(?::\{' + fields + rb"\}()[^\n]*)?"
        )

    @classmethod
    def learn(cls, chunk: bytes, start: int, end: int, reader: UsageReader) -> _Layout | None:
        """The layout of the first usage object in ``chunk[start:end]``, if it has one."""
        hit = chunk.find(USAGE_NEEDLE, start, end)
        if hit < 0:
            return None
        first = _FIRST_FLAT.match(chunk, hit, end)
        if first is None:
            return None
        keys = tuple(
            pair.partition(b":")[0][1:-1].decode("ascii") for pair in first.group(1).split(b",")
        )
        if len(set(keys)) != len(keys) or reader(dict.fromkeys(keys, 0)) is None:
            return None
        return cls(keys)

    def sums(self, chunk: bytes, start: int, end: int) -> tuple[int, dict[str, int]] | None:
        """(lines with usage, key-wise sums) of ``chunk[start:end]``; None if a line differs."""
        found = self._pattern.findall(chunk, start, end)
        if not found:
            return 0, {}
        columns = list(zip(*found, strict=True))
        if b"" in columns[0]:
            return None  # a bare "usage": not this layout
        return len(found), {
            key: sum(map(int, column)) for key, column in zip(self._keys, columns, strict=False)
        }


class UsageScan:
    """The usage of a stream of JSONL bytes, fed chunk by chunk (sync; thread-side)."""

    __slots__ = (
        "_additive",
        "_carry",
        "_completion",
        "_layout",
        "_misses",
        "_prompt",
        "_reader",
        "_skip",
        "_total",
        "with_usage",
    )

    def __init__(self, reader: UsageReader) -> None:
        self._reader = reader
        self._additive = _is_additive(reader)
        self._layout: _Layout | None = None
        """The usage layout the last chunks shared (the fast path's), if any."""
        self._misses = self._skip = 0
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
            line = self._carry + chunk[:cut]
            self._carry = b""
            self._line(line, 0, len(line))
            start = cut + 1
        end = chunk.rfind(b"\n")
        if end < start:
            self._carry = chunk[start:]
            return
        if not self._fast_lines(chunk, start, end):
            self._lines(chunk, start, end)
        if end + 1 < len(chunk):
            self._carry = chunk[end + 1 :]

    def _lines(self, chunk: bytes, start: int, end: int) -> None:
        """The lines of ``chunk[start:end]``, one by one (the reference reading)."""
        find = chunk.find
        hit = find(USAGE_NEEDLE, start, end)
        while hit >= 0:
            # ``hit`` is the line's first "usage": its line starts before it, and nothing
            # before it in the line matters.
            last = find(b"\n", hit, end + 1)
            self._line(chunk, hit, last)
            hit = find(USAGE_NEEDLE, last, end)

    def _fast_lines(self, chunk: bytes, start: int, end: int) -> bool:
        """The lines of ``chunk[start:end]`` at C speed, if they all share one layout.

        True when done; False (nothing counted) when a line needs :meth:`_lines`.
        """
        if not self._additive:
            return False
        if self._skip:
            self._skip -= 1
            return False
        layout = self._layout
        if layout is None:
            layout = self._layout = _Layout.learn(chunk, start, end, self._reader)
            if layout is None:
                return self._missed()
        counts = layout.sums(chunk, start, end)
        if counts is None:
            self._layout = None  # another layout (or an odd line) here: learn afresh
            return self._missed()
        found, sums = counts
        if found:
            summed = self._reader(sums)
            assert summed is not None, "an additive reader returned None"
            prompt, completion, total = summed
            self._prompt += prompt
            self._completion += completion
            self._total += total
            self.with_usage += found
        self._misses = 0
        return True

    def _missed(self) -> bool:
        """Back off: a stream whose lines keep failing the fast path is read line by line."""
        self._misses = min(self._misses + 1, _MAX_BACKOFF_EXPONENT)
        self._skip = (1 << self._misses) - 1
        return False

    def _line(self, data: bytes, start: int, end: int) -> None:
        usage = usage_object(data, start, end)
        if usage is None:
            return
        found = self._reader(usage)
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
            self._line(carry, 0, len(carry))
        return Usage(
            prompt_tokens=self._prompt,
            completion_tokens=self._completion,
            total_tokens=self._total,
            lines=lines,
            lines_without_usage=max(0, lines - self.with_usage),
        )
