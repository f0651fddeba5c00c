"""Anthropic batch requests, written while the input streams into the create body. Pure.

A Message Batch carries its requests inline: ``POST /v1/messages/batches`` with
``{"requests": [{"custom_id", "params"}, …]}`` (``shared/api/anthropic-batches.md`` §3). The
body is the validated input rewritten line by line, never built in memory: each line
(``{custom_id, params}`` or ``{custom_id, body}``) becomes one array item with the exact source
text of ``custom_id`` and of the params, the job's ``model`` put first where a line names none
(the members are located with :mod:`json`'s C scanner, as for OpenAI's lines:
:mod:`._openai_lines`). :class:`RequestSet` spans every file of the batch: it places the
commas between items and keeps the custom_ids, whose sorted set's sha256 is the batch's
fingerprint (the intent the daemon records, and what a reconcile compares results with).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

from orchestrator.errors import PermanentProviderError
from orchestrator.providers._openai_lines import _fast_members, _members, _Refused

PREFIX = b'{"requests":['
SUFFIX = b"]}"
ALLOWED_KEYS = frozenset({"custom_id", "params", "body"})


def id_set_digest(custom_ids: Iterable[str]) -> str:
    """The sha256 of a set of custom_ids: sorted, each UTF-8 and ``\\n``-terminated."""
    digest = hashlib.sha256()
    for custom_id in sorted(custom_ids):
        digest.update(custom_id.encode("utf-8") + b"\n")
    return digest.hexdigest()


class RequestSet:
    """What the lines of one batch have in common while they stream (see module doc)."""

    def __init__(self) -> None:
        self.custom_ids: list[str] = []

    @property
    def count(self) -> int:
        """Requests written so far."""
        return len(self.custom_ids)

    def digest(self) -> str:
        """:func:`id_set_digest` of the custom_ids written so far."""
        return id_set_digest(self.custom_ids)


class AnthropicLines:
    """Rewrites one input file into request items of ``requests`` (a ``LineTransform``).

    Raises (from :meth:`feed` and :meth:`finish`):
        PermanentProviderError: a line cannot be written as a request (names file and line).
    """

    def __init__(self, *, model: str, requests: RequestSet, source: Path | str = "input") -> None:
        self._model_json = json.dumps(model, ensure_ascii=False)
        self._model = model
        self._requests = requests
        self._source = str(source)
        self._tail = b""
        self.lines = 0

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
            pieces.pop()
        out = []
        for line in pieces:
            self.lines += 1
            if not line.strip(" \t\r"):
                continue
            try:
                item, custom_id = self._item(line)
            except _Refused as exc:
                raise self._refused(str(exc)) from None
            out.append(item if not self._requests.count else "," + item)
            self._requests.custom_ids.append(custom_id)
        return "".join(out).encode("utf-8")

    def _item(self, line: str) -> tuple[str, str]:
        members = _fast_members(line) or _members(line)
        extra = sorted(set(members) - ALLOWED_KEYS)
        if extra:
            raise _Refused(f"has keys Anthropic does not take: {', '.join(extra)}")
        if "custom_id" not in members or not isinstance(members["custom_id"][0], str):
            raise _Refused("needs a string custom_id")
        key = "params" if "params" in members else "body"
        if key not in members or not isinstance(members[key][0], dict):
            raise _Refused("needs an object params")
        if "params" in members and "body" in members:
            raise _Refused("has both params and body")
        custom_id, id_start, id_end = members["custom_id"]
        params, start, end = members[key]
        if "model" in params:
            params_text = line[start:end]
        else:
            rest = line[start + 1 : end]
            params_text = '{"model":' + self._model_json + ("," + rest if params else "}")
        item = '{"custom_id":' + line[id_start:id_end] + ',"params":' + params_text + "}"
        return item, custom_id

    def _refused(self, why: str) -> PermanentProviderError:
        return PermanentProviderError(
            f"anthropic create_job: {self._source} line {self.lines} {why}: cannot write it as "
            "a Message Batches request (custom_id, params); intake should have refused it"
        )
