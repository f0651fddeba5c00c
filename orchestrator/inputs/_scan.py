"""The line scanner behind :mod:`orchestrator.inputs`: one streaming pass per file. Pure.

The limits and summary values live here too (the scanner fills them); import them from
:mod:`orchestrator.inputs`.
"""

from __future__ import annotations

import array
import bisect
import hashlib
import io
import json
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs

from orchestrator.errors import InputError
from orchestrator.inputs.dialect import MISSING, LineRules, shown
from orchestrator.inputs.tokens import estimate_tokens, output_cap

_id_hash = hash
"""Hashes custom_ids for the duplicate index (64-bit; a module global so tests can force
collisions and see that pass two never reports one as a duplicate)."""

_CHUNK = 1 << 20  # 1 MiB: measured faster than 4-8 MiB (cache) at a third of the RSS


@attrs.frozen(kw_only=True)
class InputLimits:
    """The provider's limits an input must fit (Mistral's by default)."""

    max_file_bytes: int = attrs.field(default=512 * 1024 * 1024, validator=attrs.validators.gt(0))
    """Largest accepted input file, in bytes (Mistral uploads: 512 MB)."""
    max_requests: int = attrs.field(default=1_000_000, validator=attrs.validators.gt(0))
    """Most requests one job may hold, over all its files."""
    max_problems: int = attrs.field(default=20, validator=attrs.validators.ge(1))
    """Problems listed in an :class:`InputError`; the rest are only counted."""

    @classmethod
    def of(cls, rules: LineRules) -> InputLimits:
        """A dialect's per-batch limits (and the default ``max_problems``)."""
        return cls(max_file_bytes=rules.max_bytes, max_requests=rules.max_requests)


@attrs.frozen(kw_only=True)
class InputSummary:
    """What validation learnt about one valid input file."""

    path: Path
    requests: int
    """Lines, i.e. requests, in the file."""
    bytes: int
    """Size of the file as read."""
    sha256: str
    """Hex sha256 of the file's bytes."""
    prompt_tokens: int = 0
    """Prompt tokens of its requests, estimated (:func:`~orchestrator.inputs.estimate_tokens`)."""
    max_request_tokens: int = 0
    """The estimate of its largest request: a token budget below this can never run it."""
    max_output_tokens: int = 0
    """Σ of the output caps its requests set (``max_tokens``...; :func:`output_cap`)."""
    uncapped_requests: int = 0
    """Its requests that set no output cap (the cost estimate counts a default for each)."""


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not valid JSON (only finite numbers are)")


# One decoder, built once: json.loads(..., parse_constant=...) would build one per line.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


class _Problems:
    """The first ``cap`` problems in (file, line) order, and a count of all of them."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.shown: list[tuple[int, int, int, str]] = []
        """(file index, line, arrival, text), sorted: pass two adds earlier lines late."""
        self.total = 0

    def add(self, file: int, line: int, text: str) -> None:
        self.total += 1
        entry = (file, line, self.total, text)
        if len(self.shown) < self.cap:
            bisect.insort(self.shown, entry)
        elif self.shown and entry < self.shown[-1]:
            bisect.insort(self.shown, entry)
            self.shown.pop()

    def texts(self) -> tuple[str, ...]:
        return tuple(entry[3] for entry in self.shown)


class _Scan:
    """One validation run over the inputs of one job (pass one, and pass two if needed)."""

    def __init__(
        self,
        files: list[Path],
        *,
        endpoint: str,
        rules: LineRules,
        limits: InputLimits,
        model: str | None = None,
    ) -> None:
        self.files = files
        self.endpoint = endpoint
        self.limits = limits
        self.check = rules.line_check(endpoint, model)
        self.tokens = 0
        """Prompt tokens of the file being read (estimated)."""
        self.max_tokens = 0
        self.caps = 0
        """Σ output caps of the file being read."""
        self.uncapped = 0
        """Requests of the file being read that set no output cap."""
        self.problems = _Problems(limits.max_problems)
        self.requests = 0
        self.blank = 0
        # custom_id hashes, bucketed by their low byte so the duplicate check at the end of the
        # pass only ever builds a small set (8 bytes per id instead of ~60 in one big set).
        self.buckets = [array.array("q") for _ in range(256)]

    def run(self) -> tuple[InputSummary, ...]:
        summaries = [self._file(index, file) for index, file in enumerate(self.files)]
        if self.requests > self.limits.max_requests:
            where = str(self.files[0]) if len(self.files) == 1 else "the job's inputs"
            # Sorted first: it is the one problem no line-level fix can solve.
            self.problems.add(
                -1,
                0,
                f"{where}: {self.requests:,} requests, more than the limit of "
                f"{self.limits.max_requests:,} per batch (max_requests): split the input into "
                "several jobs, or let the orchestrator split it (split_requests)",
            )
        duplicates = self._duplicate_hashes()
        if duplicates:
            self._report_duplicates(duplicates)
        if self.problems.total:
            raise self._error()
        return tuple(summary for summary in summaries if summary is not None)

    def _error(self) -> InputError:
        total = self.problems.total
        listed = self.problems.texts()
        where = str(self.files[0]) if len(self.files) == 1 else f"{len(self.files)} input files"
        noun = "problem" if total == 1 else "problems"
        summary = (
            f"invalid batch input for {self.endpoint} in {where}: {total:,} {noun}; "
            "the job is rejected and nothing was uploaded"
        )
        if total > len(listed):
            summary += f" (the first {len(listed)} are listed, {total - len(listed):,} more)"
        return InputError(summary, listed)

    def _file(self, index: int, path: Path) -> InputSummary | None:
        """Pass one over one file: size, sha256, and every line's checks.

        File-level problems (missing, unreadable, empty, too large) are recorded like line
        problems, so one error lists what is wrong with every input of the job.
        """
        limit = self.limits.max_file_bytes
        too_large = (
            f"more than the limit of {limit:,} bytes per input file (max_file_bytes): split it "
            "into several files (a job may list several inputs)"
        )
        try:
            info = path.stat()
        except FileNotFoundError:
            self.problems.add(index, 0, f"{path}: input file does not exist")
            return None
        except OSError as exc:
            self.problems.add(index, 0, f"{path}: cannot read the input file: {exc.strerror}")
            return None
        if not stat.S_ISREG(info.st_mode):
            self.problems.add(index, 0, f"{path}: not a regular file; an input is a JSONL file")
            return None
        if info.st_size > limit:
            self.problems.add(index, 0, f"{path}: {info.st_size:,} bytes, {too_large}")
            return None
        if info.st_size == 0:
            self.problems.add(
                index, 0, f"{path}: input file is empty (0 bytes): a batch needs a request"
            )
            return None
        digest = hashlib.sha256()
        lines = 0
        blank = self.blank
        self.tokens = self.max_tokens = self.caps = self.uncapped = 0
        try:
            with path.open("rb", buffering=0) as stream:
                for number, text, raw in self._lines(stream, digest.update):
                    lines = number
                    if text is None:
                        self._bad_utf8(index, path, number, raw)
                    else:
                        self._line(index, path, number, text)
                size = stream.tell()
        except OSError as exc:
            self.problems.add(index, 0, f"{path}: cannot read the input file: {exc.strerror}")
            return None
        if size > limit:
            self.problems.add(index, 0, f"{path}: grew while it was read: {too_large}")
            return None
        requests = lines - (self.blank - blank)
        self.requests += requests
        if requests == 0:
            self.problems.add(index, 0, f"{path}: holds no requests, only empty lines")
        return InputSummary(
            path=path,
            requests=requests,
            bytes=size,
            sha256=digest.hexdigest(),
            prompt_tokens=self.tokens,
            max_request_tokens=self.max_tokens,
            max_output_tokens=self.caps,
            uncapped_requests=self.uncapped,
        )

    def _lines(
        self, stream: io.FileIO, update: Callable[[bytes], object]
    ) -> Iterator[tuple[int, str | None, bytes]]:
        """Yield (line number, decoded line or None if not UTF-8, raw bytes if not UTF-8).

        The raw bytes are only kept for a line that fails to decode; runs of good lines are
        decoded in one call. The final piece after the last newline is a line too, unless it
        is empty (a trailing newline is fine). Stops early if the file grows past the limit.
        """
        number = 0
        pending: list[bytes] = []  # the start of a line longer than one chunk
        read = 0
        while True:
            chunk = stream.read(_CHUNK)
            if not chunk:
                break
            read += len(chunk)
            if read > self.limits.max_file_bytes:
                return
            update(chunk)
            cut = chunk.rfind(b"\n")
            if cut < 0:
                pending.append(chunk)
                continue
            block = b"".join((*pending, chunk[:cut])) if pending else chunk[:cut]
            pending = [chunk[cut + 1 :]]
            for text, raw in _decode(block):
                number += 1
                yield number, text, raw
        tail = b"".join(pending)
        if tail:
            for text, raw in _decode(tail):
                number += 1
                yield number, text, raw

    def _bad_utf8(self, index: int, path: Path, number: int, raw: bytes) -> None:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            self.problems.add(
                index,
                number,
                f"{path}:{number}: not valid UTF-8: byte 0x{raw[exc.start]:02x} at byte offset "
                f"{exc.start} of the line; batch inputs must be UTF-8",
            )

    def _line(self, index: int, path: Path, number: int, text: str) -> None:
        """Check one decoded line: a JSON object, its custom_id, then the dialect's rules."""
        try:
            request = _DECODER.decode(text)
        except ValueError as exc:
            self._bad_json(index, path, number, text, exc)
            return
        except RecursionError:
            self.problems.add(index, number, f"{path}:{number}: not valid JSON: nested too deeply")
            return
        if type(request) is not dict:
            self.problems.add(
                index,
                number,
                f"{path}:{number}: a request must be a JSON object, got {shown(request)}",
            )
            return
        custom_id = request.get("custom_id", MISSING)
        if type(custom_id) is str and custom_id:
            value = _id_hash(custom_id)
            self.buckets[value & 255].append(value)
        elif custom_id is MISSING:
            self.problems.add(index, number, f"{path}:{number}: missing (custom_id)")
        elif custom_id == "":
            self.problems.add(index, number, f"{path}:{number}: empty string (custom_id)")
        else:
            self.problems.add(
                index,
                number,
                f"{path}:{number}: must be a non-empty string, got {shown(custom_id)} (custom_id)",
            )
        tokens = estimate_tokens(request)
        self.tokens += tokens
        if tokens > self.max_tokens:
            self.max_tokens = tokens
        cap = output_cap(request)
        if cap is None:
            self.uncapped += 1
        else:
            self.caps += cap
        problems = self.check(request)
        if problems:  # the common case pays for no loop
            for problem in problems:
                self.problems.add(index, number, f"{path}:{number}: {problem}")

    def _bad_json(self, index: int, path: Path, number: int, text: str, exc: ValueError) -> None:
        # Classify here, on the error path, so good lines pay nothing for these checks.
        if not text.strip(" \t\r"):
            self.blank += 1
            what = "empty line: only a single final newline may end the file; remove it"
        elif text.startswith("\ufeff"):
            what = (
                "starts with a UTF-8 byte order mark (BOM), which JSON Lines does not allow: "
                "save the file as UTF-8 without BOM (e.g. `sed -i '1s/^\\xEF\\xBB\\xBF//' FILE`)"
            )
        elif isinstance(exc, json.JSONDecodeError):
            # Some messages end in "at" ("Unterminated string starting at"): one "at" is enough.
            what = f"not valid JSON: {exc.msg.removesuffix(' at')} at column {exc.colno}"
        else:
            what = f"not valid JSON: {exc}"
        self.problems.add(index, number, f"{path}:{number}: {what}")

    def _duplicate_hashes(self) -> set[int]:
        """custom_id hashes seen more than once (maybe collisions: pass two decides)."""
        duplicates: set[int] = set()
        for bucket in self.buckets:
            if len(set(bucket)) != len(bucket):
                seen: set[int] = set()
                for value in bucket:
                    if value in seen:
                        duplicates.add(value)
                    seen.add(value)
        return duplicates

    def _report_duplicates(self, hashes: set[int]) -> None:
        """Pass two: find the exact duplicate ids and where each was first used."""
        first: dict[str, tuple[int, int]] = {}
        for index, path in enumerate(self.files):
            try:
                with path.open("rb", buffering=0) as stream:
                    for number, text, _ in self._lines(stream, _ignore):
                        custom_id = _custom_id(text)
                        if custom_id is None or _id_hash(custom_id) not in hashes:
                            continue
                        place = first.setdefault(custom_id, (index, number))
                        if place != (index, number):
                            self._duplicate(index, number, custom_id, place)
            except OSError:
                continue  # already reported by pass one (or vanished since: nothing to add)

    def _duplicate(self, index: int, number: int, custom_id: str, place: tuple[int, int]) -> None:
        first_index, first_line = place
        where = (
            f"line {first_line}"
            if first_index == index
            else f"{self.files[first_index]}:{first_line}"
        )
        self.problems.add(
            index,
            number,
            f"{self.files[index]}:{number}: duplicate {shown(custom_id)}, first used on "
            f"{where} (custom_id)",
        )


def _ignore(chunk: bytes) -> None:
    """Pass two needs no digest."""


def _decode(block: bytes) -> Iterator[tuple[str | None, bytes]]:
    """Split a block of whole lines; decode them together, or line by line if that fails."""
    try:
        text = block.decode("utf-8")
    except UnicodeDecodeError:
        for raw in block.split(b"\n"):
            try:
                yield raw.decode("utf-8"), b""
            except UnicodeDecodeError:
                yield None, raw
        return
    for line in text.split("\n"):
        yield line, b""


def _custom_id(text: str | None) -> str | None:
    """The line's custom_id if it is a good one (pass two), else None."""
    if text is None:
        return None
    try:
        request = _DECODER.decode(text)
    except (ValueError, RecursionError):
        return None
    if type(request) is not dict:
        return None
    custom_id = request.get("custom_id")
    return custom_id if type(custom_id) is str and custom_id else None
