"""Reading config files: TOML parsing, typed getters, durations, paths and URLs.

A private helper of :mod:`orchestrator.config`: a :class:`Section` wraps one table of the
document and knows its key path (``workspaces.main``, ``jobs[2].metadata``), so every getter
can say exactly where a bad value is and what was expected.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from datetime import date, datetime, time
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from orchestrator.errors import ConfigError


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()
"""Default for a required key."""

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_LISTEN = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[^\s:\[\]]+):(?P<port>\d{1,5})")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?|\.\d+)\s*(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_HELP = (
    'a duration such as "250ms", "5s", "10m", "1h" (or "1h30m"), or a number of seconds'
)


def describe(value: object) -> str:
    """How a TOML value reads in an error message: ``'abc'``, ``12``, ``true``, ``a table``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:60] + "…")
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, datetime | date | time):
        return f"a date/time ({value.isoformat()})"
    return type(value).__name__


def key_part(name: str) -> str:
    """``name`` as one component of a dotted key, quoted when TOML would need quotes."""
    return name if _BARE_KEY.fullmatch(name) else '"' + name.replace('"', '\\"') + '"'


def suggestion(key: str, known: Iterable[str], *, noun: str = "known keys") -> str:
    """``; did you mean 'x'?`` for the closest known name, else ``; <noun>: a, b``."""
    choices = sorted(known)
    close = difflib.get_close_matches(key, choices, n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]!r}?"
    if not choices:
        return f"; {noun}: none"
    return f"; {noun}: " + ", ".join(choices)


def parse_duration(value: str | int | float, *, key: str, file: str) -> float:
    """Seconds in a duration: ``"250ms"``, ``"5s"``, ``"10m"``, ``"1h"``, ``"1h30m"`` or a number.

    Units are ``ms``, ``s``, ``m``, ``h`` and ``d``; parts may be combined (largest first is
    customary, not required) and may have decimals (``"1.5h"``). A bare TOML number is seconds.
    A string needs a unit, so ``"5"`` is refused rather than guessed.

    Args:
        value: The TOML value.
        key: Its dotted key, for the error message.
        file: The file it came from, for the error message.

    Returns:
        The duration in seconds (a finite number, zero or more).

    Raises:
        ConfigError: ``value`` is not a duration, is negative or not finite.
    """
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ConfigError(f"expected {_DURATION_HELP}, got {describe(value)}", file=file, key=key)
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = value.strip()
        position = 0
        seconds = 0.0
        for match in _DURATION_PART.finditer(text):
            if match.start() != position:
                break
            seconds += float(match.group(1)) * _UNITS[match.group(2)]
            position = match.end()
            while position < len(text) and text[position] == " ":
                position += 1
        if not text or position != len(text):
            hint = ""
            try:
                float(text)
                hint = f' (add a unit, e.g. "{text}s", or write the number without quotes)'
            except ValueError:
                pass
            raise ConfigError(
                f"expected {_DURATION_HELP}, got {describe(value)}{hint}", file=file, key=key
            )
    if not math.isfinite(seconds) or seconds < 0:
        raise ConfigError(
            f"a duration must be a finite number of seconds, zero or more; got {describe(value)}",
            file=file,
            key=key,
        )
    return seconds


class Section:
    """One TOML table, its file and its key path."""

    def __init__(self, data: Mapping[str, Any], *, file: str, path: str = "") -> None:
        self.data = data
        self.file = file
        self.path = path

    def key(self, name: str) -> str:
        """The dotted key of ``name`` in this table."""
        part = key_part(name)
        return f"{self.path}.{part}" if self.path else part

    def error(self, name: str | None, message: str) -> ConfigError:
        """A :class:`ConfigError` about ``name`` (or about the table itself)."""
        return ConfigError(
            message, file=self.file, key=self.key(name) if name else (self.path or None)
        )

    def only(self, known: Iterable[str], *, elsewhere: Mapping[str, str] | None = None) -> None:
        """Refuse any key not in ``known``, suggesting the closest one.

        Args:
            known: The keys this table takes.
            elsewhere: Keys that belong to another table, mapped to their dotted key there.

        Raises:
            ConfigError: the first unknown key, named by its dotted key.
        """
        allowed = set(known)
        for name in self.data:
            if name in allowed:
                continue
            if elsewhere and name in elsewhere and elsewhere[name] != self.key(name):
                hint = f"; it belongs in another table: {elsewhere[name]}"
            else:
                hint = suggestion(name, allowed)
            raise self.error(name, f"unknown key {name!r}{hint}")

    def has(self, name: str) -> bool:
        """Whether the table sets ``name``."""
        return name in self.data

    def _get(self, name: str, default: object) -> object:
        if name in self.data:
            return self.data[name]
        if default is MISSING:
            raise self.error(name, "missing required key")
        return default

    def string(self, name: str, default: str | _Missing = MISSING, *, empty: bool = False) -> str:
        """A string value; an empty string is refused unless ``empty``."""
        value = self._get(name, default)
        if not isinstance(value, str):
            raise self.error(name, f"expected a string, got {describe(value)}")
        if not empty and not value.strip():
            raise self.error(name, "must not be empty")
        return value

    def optional_string(self, name: str) -> str | None:
        """A non-empty string, or None when the key is absent."""
        return self.string(name) if name in self.data else None

    def integer(
        self,
        name: str,
        default: int | _Missing = MISSING,
        *,
        low: int | None = None,
        high: int | None = None,
    ) -> int:
        """An integer within ``[low, high]`` (a float such as ``1.0`` is refused)."""
        value = self._get(name, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(name, f"expected an integer, got {describe(value)}")
        _check_range(self, name, value, low, high)
        return value

    def number(
        self,
        name: str,
        default: float | _Missing = MISSING,
        *,
        low: float | None = None,
        high: float | None = None,
        above: float | None = None,
        below: float | None = None,
    ) -> float:
        """A finite number (integer or float) within the bounds (``above``/``below`` strict)."""
        value = self._get(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(name, f"expected a number, got {describe(value)}")
        number = float(value)
        if not math.isfinite(number):
            raise self.error(name, f"expected a finite number, got {describe(value)}")
        if above is not None and not number > above:
            raise self.error(name, f"must be more than {_num(above)}, got {describe(value)}")
        if below is not None and not number < below:
            raise self.error(name, f"must be less than {_num(below)}, got {describe(value)}")
        _check_range(self, name, value, low, high)
        return number

    def boolean(self, name: str, default: bool | _Missing = MISSING) -> bool:
        """``true`` or ``false``."""
        value = self._get(name, default)
        if not isinstance(value, bool):
            raise self.error(name, f"expected true or false, got {describe(value)}")
        return value

    def duration(
        self, name: str, default: float | _Missing = MISSING, *, positive: bool = False
    ) -> float:
        """Seconds from a duration (see :func:`parse_duration`); ``positive`` refuses zero."""
        if name not in self.data:
            return float(self._get(name, default))  # type: ignore[arg-type]  # default is a float
        seconds = parse_duration(self.data[name], key=self.key(name), file=self.file)
        if positive and seconds <= 0:
            raise self.error(name, "must be more than zero")
        return seconds

    def table(self, name: str) -> Section:
        """The sub-table ``name`` (empty when absent)."""
        value = self.data.get(name, {})
        if not isinstance(value, dict):
            raise self.error(name, f"expected a table, got {describe(value)}")
        return Section(value, file=self.file, path=self.key(name))

    def tables(self, name: str) -> Iterator[tuple[int, Section]]:
        """The array of tables ``name`` (``[[name]]``), each with its ``name[i]`` path."""
        value = self.data.get(name, [])
        if not isinstance(value, list):
            raise self.error(
                name, f"expected an array of tables ([[{name}]] sections), got {describe(value)}"
            )
        for index, item in enumerate(value):
            path = f"{self.key(name)}[{index}]"
            if not isinstance(item, dict):
                raise ConfigError(
                    f"expected a table, got {describe(item)}", file=self.file, key=path
                )
            yield index, Section(item, file=self.file, path=path)

    def strings(self, name: str) -> list[str]:
        """A non-empty array of non-empty strings."""
        value = self._get(name, MISSING)
        if not isinstance(value, list):
            raise self.error(name, f"expected an array of strings, got {describe(value)}")
        if not value:
            raise self.error(name, "must not be an empty array")
        for index, item in enumerate(value):
            if not isinstance(item, str) or not item.strip():
                got = describe(item) if not isinstance(item, str) else "an empty string"
                raise ConfigError(
                    f"expected a non-empty string, got {got}",
                    file=self.file,
                    key=f"{self.key(name)}[{index}]",
                )
        return list(value)


def _check_range(
    section: Section, name: str, value: float, low: float | None, high: float | None
) -> None:
    if low is not None and high is not None and not low <= value <= high:
        raise section.error(name, f"must be between {_num(low)} and {_num(high)}, got {value}")
    if low is not None and value < low:
        raise section.error(name, f"must be at least {_num(low)}, got {value}")
    if high is not None and value > high:
        raise section.error(name, f"must be at most {_num(high)}, got {value}")


def _num(value: float) -> str:
    """``1,000,000`` for whole numbers, ``0.5`` otherwise."""
    return f"{int(value):,}" if float(value).is_integer() else f"{value:g}"


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file; every failure is a :class:`ConfigError` naming the file."""
    file = str(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError("config file not found", file=file) from None
    except IsADirectoryError:
        raise ConfigError("is a folder, not a TOML config file", file=file) from None
    except OSError as exc:
        raise ConfigError(f"cannot read the file: {exc.strerror}", file=file) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"not UTF-8 text (bad byte at offset {exc.start}); TOML files are UTF-8", file=file
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = re.fullmatch(r"(?s)(.*) \(at (line \d+, column \d+|end of document)\)", message)
        if match:
            message = f"{match.group(2)}: {match.group(1)[:1].lower()}{match.group(1)[1:]}"
        raise ConfigError(f"TOML syntax error at {message}", file=file) from None


def resolve_path(value: str, base: Path) -> Path:
    """``value`` as an absolute, normalised path (relative to ``base``)."""
    return Path(os.path.normpath(base / Path(value).expanduser()))


def check_dir(path: Path, *, file: str, key: str) -> None:
    """Refuse a folder setting that names a file (a missing folder may be created later)."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{path} is not a folder", file=file, key=key)


def resolve_url(url: str, base: Path, *, file: str | None, key: str | None, in_file: bool) -> str:
    """Make an SQLite file path absolute; check other URLs only for shape and secrets."""
    match = re.fullmatch(r"(sqlite(?:\+\w+)?)://(.*)", url.strip())
    if match:
        scheme, rest = match.groups()
        if rest and not rest.startswith("/"):
            raise ConfigError(
                "an SQLite URL has three slashes before a relative path "
                '("sqlite:///var/ledger.db") and four before an absolute one '
                f'("sqlite:////srv/ledger.db"), got {describe(url)}',
                file=file,
                key=key,
            )
        location, sep, query = rest[1:].partition("?")
        if location in ("", ":memory:"):
            raise ConfigError(
                "an in-memory SQLite ledger would lose every job when the daemon stops: "
                'give a file, e.g. "sqlite:///var/ledger.db"',
                file=file,
                key=key,
            )
        if location.startswith("file:"):
            return url.strip()  # an SQLite URI filename: taken as written
        absolute = resolve_path(location, base)
        return f"{scheme}:///{absolute}{sep}{query}"
    parts = urlsplit(url.strip())
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", parts.scheme or "") or not parts.netloc:
        raise ConfigError(
            'expected a database URL such as "sqlite:///var/ledger.db" or '
            f'"postgresql+asyncpg://user@host/db", got {describe(url)}',
            file=file,
            key=key,
        )
    if in_file and parts.password:
        raise ConfigError(
            "the URL holds a password, and secrets must not be written in the config file: "
            "set the whole URL in ORCH_LEDGER_URL instead (or use a ~/.pgpass file)",
            file=file,
            key=key,
        )
    return url.strip()


def listen_address(value: str, *, file: str, key: str) -> str:
    """Check a ``HOST:PORT`` listen address (IPv6 hosts in brackets)."""
    match = _LISTEN.fullmatch(value.strip())
    if not match or not 0 <= int(match.group("port")) <= 65535:
        raise ConfigError(
            f"expected HOST:PORT such as '127.0.0.1:9464' or '[::1]:9464', got {describe(value)}",
            file=file,
            key=key,
        )
    return value.strip()
