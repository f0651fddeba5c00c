"""Providers, workspace checks and API key reading: where secrets may come from, and not.

A private helper of :mod:`orchestrator.config`. Secrets come from an environment variable or a
file; a key-like entry in the TOML is refused, and no message ever repeats a value that could be
a key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from orchestrator.config._read import Section, describe, key_part
from orchestrator.errors import ConfigError

EMBEDDED = "embedded"
"""The ``base_url`` that runs the emulator in-process (no key, no cost)."""

PROVIDERS: Mapping[str, str] = {
    "mistral": "https://api.mistral.ai",
    "openai": "https://api.openai.com",
    "anthropic": "https://api.anthropic.com",
}
"""Known providers and their default ``base_url``."""

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
"""An environment variable name."""
_ENV_NAME = ENV_NAME
_SECRET_KEYS = frozenset(
    {"api_key", "apikey", "api-key", "key", "token", "api_token", "secret", "password"}
)


def refuse_secrets(table: Section, provider: str) -> None:
    """Refuse a key that looks like a secret written in the file, and say what to use."""
    for name in table.data:
        if name.lower() in _SECRET_KEYS:
            raise table.error(
                name,
                f"secrets must not be written in the config file: remove {name!r} and set "
                f'api_key_env = "{provider.upper()}_API_KEY" (read from that environment '
                'variable) or api_key_file = "/run/secrets/api-key" (read from a file) in '
                "the workspace",
            )


def check_env_name(table: Section, name: str, value: str, provider: str) -> None:
    """Refuse an ``api_key_env`` that is not a variable name (maybe a pasted key)."""
    if not _ENV_NAME.fullmatch(value):
        # Not echoed: a key pasted here by mistake must not end up in a log.
        raise table.error(
            name,
            "must name an environment variable (letters, digits and '_'), e.g. "
            f'"{provider.upper()}_API_KEY"; the value is not shown in case it is a secret',
        )


OPENAI_KEYS = ("completion_window", "organization", "project")
"""Workspace keys only an OpenAI workspace takes."""

COMPLETION_WINDOWS = ("24h",)
"""The ``completion_window`` values OpenAI accepts today."""


def check_base_url(ws: Section, value: str, provider: str = "mistral") -> str:
    """``value`` without a trailing slash, or a :class:`ConfigError` saying what is wrong.

    An OpenAI base URL may end in ``/v1`` (the form its SDK takes): it is dropped, the
    client adds ``/v1/...`` itself.
    """
    value = value.strip()
    if value == EMBEDDED:
        return value
    if provider == "openai" and value.rstrip("/").endswith("/v1"):
        value = value.rstrip("/")[: -len("/v1")]
    parts = urlsplit(value)
    problem = None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        problem = f'expected "embedded" or an http(s) URL such as "{PROVIDERS.get(provider, "")}"'
    elif parts.username or parts.password:
        problem = "must not hold credentials: secrets come from api_key_env or api_key_file"
    elif parts.query or parts.fragment:
        problem = "must not have a query or fragment"
    elif parts.path.rstrip("/").endswith("/v1"):
        problem = "give the server root without /v1 (the client adds /v1/...)"
    if problem:
        shown = "" if parts.username or parts.password else f", got {describe(value)}"
        raise ws.error("base_url", problem + shown)
    return value.rstrip("/")


def openai_options(ws: Section, provider: str) -> tuple[str, str | None, str | None]:
    """``(completion_window, organization, project)``, checked (set only for OpenAI).

    Raises:
        ConfigError: one is given for another provider, or holds a value OpenAI refuses.
    """
    if provider != "openai":
        for name in OPENAI_KEYS:
            if ws.has(name):
                raise ws.error(name, 'only an OpenAI workspace takes it (provider = "openai")')
        return "24h", None, None
    window = ws.string("completion_window", "24h")
    if window not in COMPLETION_WINDOWS:
        raise ws.error(
            "completion_window",
            f"OpenAI accepts only {', '.join(repr(w) for w in COMPLETION_WINDOWS)}, "
            f"got {describe(window)}",
        )
    ids: list[str | None] = []
    for name in ("organization", "project"):
        value = ws.optional_string(name)
        if value is not None and (not value or not _HEADER_ID.fullmatch(value)):
            raise ws.error(
                name,
                f"must be an OpenAI {name} id (letters, digits, '-' and '_'), "
                f"got {describe(value)}",
            )
        ids.append(value)
    return window, ids[0], ids[1]


_HEADER_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


def read_api_key(
    *,
    workspace: str,
    env: str | None,
    file: Path | None,
    environ: Mapping[str, str],
    config_file: str | None,
) -> str:
    """Read a workspace's key from ``environ[env]`` or from ``file``, stripped.

    Raises:
        ConfigError: unset, empty, unreadable or multi-line; names the source, never the key.
    """
    prefix = f"workspaces.{key_part(workspace)}"
    if env is not None:
        key = f"{prefix}.api_key_env"
        value = environ.get(env)
        if value is None:
            raise ConfigError(
                f"environment variable {env} is not set: export it with the API key of "
                f"workspace {workspace!r}",
                file=config_file,
                key=key,
            )
        if not value.strip():
            raise ConfigError(
                f"environment variable {env} is empty: set it to the API key of workspace "
                f"{workspace!r}",
                file=config_file,
                key=key,
            )
        return _single_line(value.strip(), f"environment variable {env}", config_file, key)
    if file is not None:
        key = f"{prefix}.api_key_file"
        try:
            text = file.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(
                f"API key file {file} does not exist", file=config_file, key=key
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "it is not UTF-8 text"
            raise ConfigError(
                f"cannot read API key file {file}: {reason}", file=config_file, key=key
            ) from None
        if not text.strip():
            raise ConfigError(f"API key file {file} is empty", file=config_file, key=key)
        return _single_line(text.strip(), f"API key file {file}", config_file, key)
    raise ConfigError(
        "no API key source: set api_key_env or api_key_file", file=config_file, key=prefix
    )


def _single_line(value: str, source: str, config_file: str | None, key: str) -> str:
    if any(char in value for char in "\r\n"):
        raise ConfigError(
            f"{source} holds more than one line; it must hold only the API key",
            file=config_file,
            key=key,
        )
    return value
