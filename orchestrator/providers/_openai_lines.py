"""OpenAI batch input lines, rewritten while they stream to the upload. Pure (no I/O).

OpenAI needs ``{"custom_id", "method": "POST", "url": <endpoint>, "body": {..., "model"}}`` on
every line (``shared/api/openai-batch.md`` §6: a line without ``method``/``url`` fails the
batch, and a file holds requests to one model). Inputs come in the Mistral form
``{custom_id, body}`` or already in that form, validated at intake. :class:`OpenAILines`
rewrites them without a ``json.dumps`` of each line: the top-level object is walked with
:mod:`json`'s C scanner, which returns each member's value *and where its text ends*, so
the output reuses the exact source text of ``custom_id`` and ``body`` and only writes what
changes (``method``, ``url``, and ``"model"`` put first in the body when it is missing). A
body whose ``model`` differs from the job's is re-encoded with the job's model (the job's
model is the batch's). Anything but a JSON object with string keys, a string ``custom_id``
and an object ``body`` is refused with the file and line: intake should have refused it.

Lines end in ``\\n`` (a ``\\r`` before it, JSON whitespace, is dropped); empty lines are
skipped (intake allows only a final newline, so there are none in a validated file).
"""

from __future__ import annotations

import json
import json.scanner
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrator.errors import PermanentProviderError

_WS = re.compile(r"[ \t\n\r]*")
_FAST_HEAD = re.compile(r'[ \t\r]*\{[ \t\r]*"custom_id"[ \t\r]*:[ \t\r]*')
_FAST_BODY = re.compile(r'[ \t\r]*,[ \t\r]*"body"[ \t\r]*:[ \t\r]*')
_FAST_END = re.compile(r"[ \t\r]*\}[ \t\r]*\Z")
"""The Mistral form ``{"custom_id": …, "body": …}`` in that order, read with two scans."""
_decoder: Any = json.JSONDecoder()  # typeshed types make_scanner's argument as itself
_scan: Callable[[str, int], tuple[Any, int]] = json.scanner.make_scanner(_decoder)
"""The C scanner behind ``json.loads``: ``(value, end index)`` of the value at an index."""

ALLOWED_KEYS = frozenset({"custom_id", "method", "url", "body"})
"""The members of an OpenAI ``BatchRequestInput`` (OAS25)."""


class _Refused(ValueError):
    """A line that cannot be rewritten (the message says why)."""


def _skip(text: str, index: int) -> int:
    """The index of the first non-whitespace character at or after ``index``."""
    match = _WS.match(text, index)
    assert match is not None  # "*" always matches
    return match.end()


def _members(text: str) -> dict[str, tuple[Any, int, int]]:
    """The top-level members of a JSON object line: ``{key: (value, start, end)}``.

    Raises:
        _Refused: not one JSON object with unique string keys, or trailing garbage.
    """
    index = _skip(text, 0)
    if text[index : index + 1] != "{":
        raise _Refused("is not a JSON object")
    index = _skip(text, index + 1)
    members: dict[str, tuple[Any, int, int]] = {}
    closed = text[index : index + 1] == "}"
    if closed:
        index += 1
    while not closed:
        if text[index : index + 1] != '"':
            raise _Refused("is not valid JSON (expected a key)")
        key, index = _value(text, index)
        index = _skip(text, index)
        if text[index : index + 1] != ":":
            raise _Refused("is not valid JSON (expected ':')")
        start = _skip(text, index + 1)
        value, index = _value(text, start)
        if key in members:
            raise _Refused(f"has the key {key!r} twice")
        members[key] = (value, start, index)
        index = _skip(text, index)
        separator = text[index : index + 1]
        if separator not in (",", "}"):
            raise _Refused("is not valid JSON (expected ',' or '}')")
        closed = separator == "}"
        index = _skip(text, index + 1)
    if _skip(text, index) != len(text):
        raise _Refused("holds more than one JSON value")
    return members


def _fast_members(text: str) -> dict[str, tuple[Any, int, int]] | None:
    """:func:`_members` of a line in the plain Mistral form, or None for any other line."""
    head = _FAST_HEAD.match(text)
    if head is None:
        return None
    try:
        custom_id, id_end = _scan(text, head.end())
        middle = _FAST_BODY.match(text, id_end)
        if middle is None:
            return None
        body, end = _scan(text, middle.end())
    except (StopIteration, ValueError):
        return None  # the general walk says what is wrong
    if _FAST_END.match(text, end) is None:
        return None
    return {"custom_id": (custom_id, head.end(), id_end), "body": (body, middle.end(), end)}


def _value(text: str, index: int) -> tuple[Any, int]:
    try:
        return _scan(text, index)
    except (StopIteration, ValueError):
        raise _Refused("is not valid JSON") from None


class OpenAILines:
    """Rewrites one input file for a batch of ``model`` at ``endpoint`` (see module doc).

    Feed it chunks of the file in order (:meth:`feed`), then :meth:`finish`; each returns the
    rewritten complete lines so far. Satisfies the upload's ``LineTransform``.

    Raises (from :meth:`feed` and :meth:`finish`):
        PermanentProviderError: a line cannot be rewritten (names the file and line).
    """

    def __init__(self, *, endpoint: str, model: str, source: Path | str = "input") -> None:
        self._endpoint = endpoint
        self._head = ',"method":"POST","url":' + json.dumps(endpoint, ensure_ascii=False)
        self._model = model
        self._model_json = json.dumps(model, ensure_ascii=False)
        self._source = str(source)
        self._tail = b""
        self.lines = 0
        """Lines read so far (the line number of the last one)."""
        self.requests = 0
        """Requests written so far."""

    def feed(self, chunk: bytes) -> bytes:
        data = self._tail + chunk
        cut = data.rfind(b"\n") + 1
        self._tail = data[cut:]
        return self._rewrite(data[:cut]) if cut else b""

    def finish(self) -> bytes:
        data, self._tail = self._tail, b""
        return self._rewrite(data) if data else b""

    def _rewrite(self, block: bytes) -> bytes:
        try:
            text = block.decode("utf-8")
        except UnicodeDecodeError as exc:
            self.lines += block[: exc.start].count(b"\n") + 1
            raise self._refused("is not UTF-8") from None
        pieces = text.split("\n")
        if pieces[-1] == "":
            pieces.pop()  # what follows the last newline
        out = []
        for line in pieces:
            self.lines += 1
            if not line.strip(" \t\r"):
                continue
            try:
                out.append(self._line(line))
            except _Refused as exc:
                raise self._refused(str(exc)) from None
        self.requests += len(out)
        return "".join(out).encode("utf-8")

    def _line(self, line: str) -> str:
        members = _fast_members(line) or _members(line)
        extra = sorted(set(members) - ALLOWED_KEYS)
        if extra:
            raise _Refused(f"has keys OpenAI does not take: {', '.join(extra)}")
        if "custom_id" not in members or not isinstance(members["custom_id"][0], str):
            raise _Refused("needs a string custom_id")
        if "body" not in members or not isinstance(members["body"][0], dict):
            raise _Refused("needs an object body")
        if "method" in members and members["method"][0] != "POST":
            raise _Refused(f"has method {members['method'][0]!r}: OpenAI batches take POST only")
        if "url" in members and members["url"][0] != self._endpoint:
            raise _Refused(
                f"has url {members['url'][0]!r} but the job's endpoint is {self._endpoint!r}"
            )
        _, id_start, id_end = members["custom_id"]
        body, start, end = members["body"]
        if "model" not in body:
            rest = line[start + 1 : end]
            body_text = '{"model":' + self._model_json + ("," + rest if body else "}")
        elif body["model"] == self._model:
            body_text = line[start:end]
        else:
            body_text = json.dumps({**body, "model": self._model}, ensure_ascii=False)
        return '{"custom_id":' + line[id_start:id_end] + self._head + ',"body":' + body_text + "}\n"

    def _refused(self, why: str) -> PermanentProviderError:
        return PermanentProviderError(
            f"openai upload_file: {self._source} line {self.lines} {why}: cannot write it as "
            "an OpenAI batch line (custom_id, method, url, body); intake should have refused it"
        )
