"""The configuration's values: nested frozen attrs classes, one per TOML table.

A private helper of :mod:`orchestrator.config` (which re-exports them); :mod:`._load` builds
them from a file.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import attrs

from orchestrator.config._hooks import HookConfig, WebhookConfig
from orchestrator.config._workspace import EMBEDDED, read_api_key
from orchestrator.model import JobSpec
from orchestrator.pricing import Pricing

DEFAULT_LEDGER_URL = "sqlite:///var/ledger.db"

MIN_LEASE_TTL = 3.0
"""Shortest ``[daemon] lease_ttl`` accepted, in seconds."""

TOP_KEYS = frozenset(
    {
        "ledger",
        "results",
        "polling",
        "workspaces",
        "intake",
        "http",
        "emulator",
        "daemon",
        "jobs",
        "pricing",
        "webhooks",
        "hooks",
    }
)
"""The tables of the main config file."""


@attrs.frozen(kw_only=True)
class InputOrigin:
    """Where one input of a job is written: the file and the dotted key."""

    file: str | None
    key: str | None
    """``jobs[2].input`` or ``jobs[2].inputs[1]``; for ``submit``, ``--input``."""


@attrs.frozen(kw_only=True)
class LedgerConfig:
    """``[ledger]``: where the job ledger lives."""

    url: str = DEFAULT_LEDGER_URL
    """SQLAlchemy URL; an SQLite file path is absolute once loaded."""


@attrs.frozen(kw_only=True)
class ResultsConfig:
    """``[results]``: where downloaded results go (``<dir>/<job name>/``)."""

    dir: Path


@attrs.frozen(kw_only=True)
class PollingConfig:
    """``[polling]``: the poll schedule's tunables, in seconds."""

    initial: float = 5.0
    max: float = 600.0
    factor: float = 1.5
    jitter: float = 0.1


@attrs.frozen(kw_only=True)
class IntakeConfig:
    """``[intake]``: where more job definitions come from."""

    jobs_dir: Path | None = None
    """A folder of ``*.toml`` files with ``[[jobs]]`` tables, rescanned (and on SIGHUP)."""
    rescan_interval: float = 30.0


@attrs.frozen(kw_only=True)
class HttpConfig:
    """``[http]``: the optional endpoint: health, metrics, the dashboard and the JSON API."""

    listen: str | None = None
    """``HOST:PORT``, e.g. ``127.0.0.1:9464``; None disables it."""
    token_env: str | None = None
    """The environment variable holding the API's bearer token (None: writes answer 403)."""
    allow_anonymous_reads: bool = False
    """On a non-loopback address, serve the dashboard and ``/api/*`` reads without the token."""

    def token(self, environ: Mapping[str, str]) -> str | None:
        """The bearer token from ``token_env`` (None when unset, empty or not configured)."""
        if self.token_env is None:
            return None
        return environ.get(self.token_env, "").strip() or None

    def address(self) -> tuple[str, int] | None:
        """``(host, port)`` to bind (an IPv6 host without brackets), or None when disabled."""
        if self.listen is None:
            return None
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


@attrs.frozen(kw_only=True)
class EmulatorConfig:
    """``[emulator]``: the simulation used by workspaces with ``base_url = "embedded"``."""

    time_scale: float = 1.0
    """Simulated seconds per real second."""
    throughput: float = 1000.0
    """Requests processed per simulated second, per job."""
    validation_seconds: float = 5.0
    """Simulated seconds a new job stays ``QUEUED`` before it runs."""
    failure_fraction: float = 0.0
    """Share of requests that fail (land in the error file), the same on every attempt."""
    transient_fraction: float = 0.0
    """Share of requests that fail with a 503 on one attempt (drawn again per attempt)."""
    seed: int = 0
    """Seeds the synthetic results and the choice of failing requests."""


@attrs.frozen(kw_only=True)
class DaemonConfig:
    """``[daemon]``: process behaviour."""

    grace_period: float = 30.0
    """Seconds a stopping daemon lets in-flight calls finish before cancelling them."""
    reconcile_grace: float = 180.0
    """Seconds after a create intent before recovery trusts a list that lacks the job.

    A create whose client died can still land on the provider; this must exceed the provider's
    request timeout (60 s), so the default is 180 s. Only a test against a local emulator that
    answers in milliseconds has a reason to shorten it.
    """
    replica_id: str | None = None
    """This daemon's id among the replicas of one PostgreSQL ledger (None: a random one)."""
    lease_ttl: float = 60.0
    """Seconds a replica's claim on a job lasts unless renewed (every third of it)."""


@attrs.frozen(kw_only=True)
class WorkspaceConfig:
    """``[workspaces.<name>]``: one API key and base URL, with its own pending budget."""

    name: str
    provider: str = "mistral"
    base_url: str
    """Server root without a trailing slash, or ``"embedded"``."""
    api_key_env: str | None = None
    api_key_file: Path | None = None
    pending_budget: int = 1_000_000
    count_external: bool = False
    """Also count unfinished remote jobs this ledger did not create against the budget."""
    split_requests: int | None = None
    """Split a job of more requests than this into parts of at most this many (None: no
    splitting; an OpenAI workspace's default is 50,000); a job's own ``split_requests``
    overrides it."""
    token_budget: int | None = None
    """Prompt tokens of the in-flight jobs of one model (OpenAI's enqueued tokens), for every
    model not in :attr:`token_budgets`; None: no limit."""
    token_budgets: Mapping[str, int] = attrs.field(factory=dict)
    """Per-model token budgets (``[workspaces.NAME.token_budgets]``), overriding
    :attr:`token_budget`."""
    config_file: str | None = None
    """The file that defined the workspace (named in errors)."""
    completion_window: str = "24h"
    """OpenAI only: the batches' ``completion_window`` (``"24h"``, the only value today)."""
    organization: str | None = None
    """OpenAI only: sent as the ``OpenAI-Organization`` header when set."""
    project: str | None = None
    """OpenAI only: sent as the ``OpenAI-Project`` header when set."""
    max_attempts: int = 3
    """Remote attempts a request line may get (issue #14): lines that failed transiently or
    never ran are resubmitted until then; 1 never resubmits. A job's own key overrides it."""
    retry_delay: float = 60.0
    """Seconds before the first follow-up attempt; it doubles for each later one."""
    spend_limit: float | None = None
    """Most the workspace may spend in a calendar month (UTC), in the prices' currency; None:
    no limit. Admission holds back work whose cost estimate does not fit."""
    batch_discount: float | None = None
    """The workspace's own batch discount (None: ``[pricing] batch_discount``)."""

    @property
    def embedded(self) -> bool:
        """Whether this workspace runs the in-process emulator."""
        return self.base_url == EMBEDDED

    def token_budget_for(self, model: str) -> int | None:
        """The token budget of ``model`` in this workspace (None: not limited)."""
        return self.token_budgets.get(model, self.token_budget)

    def attempts_for(self, max_attempts: int | None) -> int:
        """The attempt limit of a job whose own ``max_attempts`` is this (None: inherit)."""
        return self.max_attempts if max_attempts is None else max_attempts

    def part_size(self, spec: JobSpec) -> int | None:
        """The part size that applies to ``spec`` (its own, else the workspace's), or None."""
        size = self.split_requests if spec.split_requests is None else spec.split_requests
        return size or None

    def api_key(self, environ: Mapping[str, str]) -> str:
        """The workspace's API key, read now from the environment or the key file.

        Surrounding whitespace (a file's final newline) is dropped. An embedded workspace needs
        no key and gets ``"embedded"``.

        Raises:
            ConfigError: the variable is unset or empty, the file is missing, unreadable,
                empty or holds more than one line. The message names the variable or file,
                never the key itself.
        """
        if self.embedded:
            return EMBEDDED
        return read_api_key(
            workspace=self.name,
            env=self.api_key_env,
            file=self.api_key_file,
            environ=environ,
            config_file=self.config_file,
        )


@attrs.frozen(kw_only=True)
class Config:
    """The whole configuration, as loaded by :func:`load_config`."""

    path: Path
    """The config file (absolute)."""
    ledger: LedgerConfig = attrs.field(factory=LedgerConfig)
    results: ResultsConfig
    polling: PollingConfig = attrs.field(factory=PollingConfig)
    workspaces: Mapping[str, WorkspaceConfig] = attrs.field(factory=dict)
    intake: IntakeConfig = attrs.field(factory=IntakeConfig)
    http: HttpConfig = attrs.field(factory=HttpConfig)
    emulator: EmulatorConfig = attrs.field(factory=EmulatorConfig)
    daemon: DaemonConfig = attrs.field(factory=DaemonConfig)
    jobs: tuple[JobSpec, ...] = ()
    """The ``[[jobs]]`` of the main file, in order."""
    job_origins: Mapping[str, str] = attrs.field(factory=dict)
    """Where each of ``jobs`` is defined (``file: jobs[i]``), for duplicate-name errors."""
    input_origins: Mapping[str, tuple[InputOrigin, ...]] = attrs.field(factory=dict)
    """Job name -> where each of its inputs is written (for errors about a missing file)."""
    pricing: Pricing = attrs.field(factory=Pricing)
    """``[pricing]``: the models' prices and the batch discount."""
    webhooks: tuple[WebhookConfig, ...] = ()
    """The ``[[webhooks]]`` receivers, in order."""
    hooks: tuple[HookConfig, ...] = ()
    """The ``[[hooks]]`` commands, in order."""

    @property
    def endpoints(self) -> tuple[WebhookConfig | HookConfig, ...]:
        """Every place events are delivered to: the webhooks, then the hooks."""
        return (*self.webhooks, *self.hooks)
