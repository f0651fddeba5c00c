"""``[[webhooks]]`` and ``[[hooks]]``: where the daemon tells the world about jobs.

A private helper of :mod:`orchestrator.config`. Loading checks the shape of every table (an
http(s) URL, an environment variable's name, known event names, an absolute program path in
an argument list, durations); the secrets and the programs themselves are checked when the
daemon starts (:meth:`WebhookConfig.key`, :meth:`HookConfig.check_program`), before it wires
anything, so ``status`` from a shell without the daemon's environment still works.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TypedDict
from urllib.parse import urlsplit

import attrs

from orchestrator.config._read import Section, describe, suggestion
from orchestrator.errors import ConfigError
from orchestrator.webhooks import (
    EVENT_TYPES,
    SECRET_PREFIX,
    Subscription,
    hook_endpoint,
    parse_secret,
    webhook_endpoint,
)

DEFAULT_BACKOFF = 30.0
DEFAULT_TIMEOUT = 10.0
DEFAULT_MAX_AGE = 86400.0
WEBHOOK_KEYS = frozenset({"url", "secret_env", "events", "backoff", "timeout", "max_age"})
HOOK_KEYS = frozenset({"command", "events", "backoff", "timeout", "max_age"})

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@attrs.frozen(kw_only=True)
class Delivery:
    """The retry settings every endpoint has."""

    events: frozenset[str] = frozenset(EVENT_TYPES)
    backoff: float = DEFAULT_BACKOFF
    """Seconds before the first retry; each next one waits twice as long (with jitter)."""
    timeout: float = DEFAULT_TIMEOUT
    """Seconds one attempt may take (a request answered, a command exited)."""
    max_age: float = DEFAULT_MAX_AGE
    """Seconds a delivery is retried for before it is marked dead."""
    file: str | None = None
    key: str = ""
    """Where the table is written (``webhooks[0]``), named in errors."""


@attrs.frozen(kw_only=True)
class WebhookConfig(Delivery):
    """``[[webhooks]]``: a Standard Webhooks receiver."""

    url: str
    secret_env: str

    @property
    def endpoint(self) -> str:
        """The endpoint's name in the ledger, the CLI and the metrics."""
        return webhook_endpoint(self.url)

    def subscription(self) -> Subscription:
        return Subscription(endpoint=self.endpoint, events=self.events)

    def secret(self, environ: Mapping[str, str]) -> bytes:
        """The signing key, read now from ``secret_env`` (never stored or logged).

        Raises:
            ConfigError: the variable is unset or empty, or its value is not a ``whsec_``
                secret; named by file and key, without the value.
        """
        value = environ.get(self.secret_env, "").strip()
        where = f"{self.key}.secret_env"
        if not value:
            raise ConfigError(
                f"environment variable {self.secret_env} is not set (or empty): it must hold "
                "the webhook's signing secret, whsec_ followed by base64",
                file=self.file,
                key=where,
            )
        try:
            return parse_secret(value)
        except ValueError as exc:
            raise ConfigError(
                f"environment variable {self.secret_env}: {exc}", file=self.file, key=where
            ) from None


@attrs.frozen(kw_only=True)
class HookConfig(Delivery):
    """``[[hooks]]``: a program run for each event, without a shell."""

    command: tuple[str, ...]
    """The program (an absolute path) and its arguments; ``{job_json}`` and the other
    placeholders of :mod:`orchestrator.daemon.deliver` are replaced in each argument."""

    @property
    def endpoint(self) -> str:
        return hook_endpoint(self.command)

    def subscription(self) -> Subscription:
        return Subscription(endpoint=self.endpoint, events=self.events)

    def check_program(self) -> None:
        """Refuse a program that does not exist or cannot be run (checked at daemon start).

        Raises:
            ConfigError: named by file and ``hooks[i].command``.
        """
        program = Path(self.command[0])
        if not program.is_file() or not os.access(program, os.X_OK):
            raise ConfigError(
                f"{program} is not an executable file (check the path and its x bit)",
                file=self.file,
                key=f"{self.key}.command[0]",
            )


class _DeliveryKeys(TypedDict):
    events: frozenset[str]
    backoff: float
    timeout: float
    max_age: float
    file: str | None
    key: str


def _delivery(table: Section) -> _DeliveryKeys:
    """The keys every endpoint table has: events, backoff, timeout, max_age."""
    events = frozenset(EVENT_TYPES)
    if table.has("events"):
        names = table.strings("events")
        for index, name in enumerate(names):
            if name not in EVENT_TYPES:
                raise ConfigError(
                    f"unknown event {name!r}" + suggestion(name, EVENT_TYPES, noun="events"),
                    file=table.file,
                    key=f"{table.key('events')}[{index}]",
                )
        events = frozenset(names)
    backoff = table.duration("backoff", DEFAULT_BACKOFF, positive=True)
    timeout = table.duration("timeout", DEFAULT_TIMEOUT, positive=True)
    max_age = table.duration("max_age", DEFAULT_MAX_AGE, positive=True)
    return _DeliveryKeys(
        events=events,
        backoff=backoff,
        timeout=timeout,
        max_age=max_age,
        file=table.file,
        key=table.path,
    )


def parse_webhooks(root: Section) -> tuple[WebhookConfig, ...]:
    """Every ``[[webhooks]]`` table, checked (one endpoint per URL)."""
    webhooks: list[WebhookConfig] = []
    for _, table in root.tables("webhooks"):
        table.only(WEBHOOK_KEYS)
        url = table.string("url").strip()
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise table.error(
                "url", f"expected an http:// or https:// URL with a host, got {describe(url)}"
            )
        if parts.username or parts.password:
            raise table.error(
                "url",
                "the URL holds credentials; receivers authenticate deliveries by their "
                "signature (secret_env), and the URL is shown by `orchestrator webhooks`, "
                "`show` and the metrics: remove the user:password@ part",
            )
        if any(other.url == url for other in webhooks):
            raise table.error("url", f"{url} is already a webhook above: give each URL once")
        secret_env = table.string("secret_env")
        if secret_env.startswith(SECRET_PREFIX):
            raise table.error(
                "secret_env",
                "this looks like the secret itself; secrets never go in the file: put it in an "
                "environment variable and give its name here (such as ORCH_WEBHOOK_SECRET)",
            )
        if not _ENV_NAME.fullmatch(secret_env):
            raise table.error(
                "secret_env",
                f"expected the name of an environment variable (such as ORCH_WEBHOOK_SECRET), "
                f"got {describe(secret_env)}; the secret itself never goes in the file",
            )
        webhooks.append(WebhookConfig(url=url, secret_env=secret_env, **_delivery(table)))
    return tuple(webhooks)


def parse_hooks(root: Section) -> tuple[HookConfig, ...]:
    """Every ``[[hooks]]`` table, checked (one endpoint per command)."""
    hooks: list[HookConfig] = []
    for _, table in root.tables("hooks"):
        table.only(HOOK_KEYS)
        if not table.has("command"):
            raise table.error("command", "missing required key")
        raw = table.data["command"]
        if not isinstance(raw, list):
            raise table.error(
                "command",
                f'expected an array such as ["/usr/local/bin/notify", "{{job_json}}"] (the '
                f"program and its arguments, run without a shell), got {describe(raw)}",
            )
        command = tuple(table.strings("command"))
        if not os.path.isabs(command[0]):
            raise ConfigError(
                f"the program must be an absolute path (no shell, no PATH lookup), got "
                f"{describe(command[0])}",
                file=table.file,
                key=f"{table.key('command')}[0]",
            )
        if any(other.command == command for other in hooks):
            raise table.error("command", "this command is already a hook above: give it once")
        hooks.append(HookConfig(command=command, **_delivery(table)))
    return tuple(hooks)
