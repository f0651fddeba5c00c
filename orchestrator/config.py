"""The configuration: one TOML file read into nested frozen values.

The format is the operator's contract (design.md §9); ``config/example.toml`` documents every
key. Loading checks everything it can without reading the JSONL inputs (that is intake's job):
types, ranges, unknown keys (with the closest known key as a hint), safe job names, known
workspaces, providers and endpoints, metadata. Every error is a
:class:`~orchestrator.errors.ConfigError` naming the file and the dotted key, e.g.
``config.toml: jobs[2].metadata.team: expected a string, got 5``.

Input files are not required to exist at load time: one job with a missing input must not stop
the daemon and every other job. Intake rejects that job with an error naming the file and key
(:func:`missing_inputs`), and ``orchestrator check-config`` reports it (exit code 2).

Paths: relative paths in a file (the SQLite ledger file, ``results.dir``, ``intake.jobs_dir``,
job inputs, ``api_key_file``) resolve against the folder of the file they are written in (for a
``jobs_dir/*.toml`` file, that file's folder); ``~`` expands to the home folder.
``ledger.url = "sqlite:///var/ledger.db"`` becomes ``sqlite:////<folder>/var/ledger.db``;
other database URLs are kept as written.

Environment overrides, applied after the file is read (an empty value is refused for the
ledger and results, and switches the optional feature off for the other two; relative paths in
them resolve against the current directory, like any path typed in a shell):

``ORCH_LEDGER_URL``
    replaces ``ledger.url`` (the place for a PostgreSQL URL with a password: passwords are
    refused in the file).
``ORCH_RESULTS_DIR``
    replaces ``results.dir``.
``ORCH_JOBS_DIR``
    replaces ``intake.jobs_dir``; empty disables the jobs folder.
``ORCH_HTTP_LISTEN``
    replaces ``http.listen`` (``HOST:PORT``); empty disables the HTTP endpoint.

Secrets never come from the file: a workspace names an environment variable
(``api_key_env``) or a file (``api_key_file``) and :meth:`WorkspaceConfig.api_key` reads it
when the provider is built.

More jobs come from ``intake.jobs_dir``: :func:`load_jobs_file` reads one ``*.toml`` file of
``[[jobs]]`` tables, :func:`load_jobs_dir` the whole folder (one error per bad file, job names
unique across all files). The folder may be missing when the config is loaded (it can be
created or mounted later); :func:`load_jobs_dir` reports it while it is.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import attrs

from orchestrator._configjobs import InputOrigin as InputOrigin
from orchestrator._configjobs import (
    check_name,
    claim_name,
    input_origins,
    parse_job,
    split_too_large,
)
from orchestrator._configjobs import job_from_flags as job_from_flags
from orchestrator._configjobs import missing_inputs as missing_inputs
from orchestrator._configjobsdir import TOP_KEYS
from orchestrator._configjobsdir import JobsDirScan as JobsDirScan
from orchestrator._configjobsdir import load_jobs_dir as load_jobs_dir
from orchestrator._configjobsdir import load_jobs_file as load_jobs_file
from orchestrator._configread import (
    EnvOverrides,
    Section,
    check_dir,
    describe,
    key_part,
    listen_address,
    read_toml,
    resolve_path,
    resolve_url,
    suggestion,
)
from orchestrator._configread import parse_duration as parse_duration
from orchestrator._configworkspace import EMBEDDED as EMBEDDED
from orchestrator._configworkspace import (
    check_base_url,
    check_env_name,
    read_api_key,
    refuse_secrets,
)
from orchestrator.model import JobSpec

__all__ = [
    "EMBEDDED",
    "PROVIDERS",
    "Config",
    "DaemonConfig",
    "EmulatorConfig",
    "HttpConfig",
    "InputOrigin",
    "IntakeConfig",
    "JobsDirScan",
    "LedgerConfig",
    "PollingConfig",
    "ResultsConfig",
    "WorkspaceConfig",
    "job_from_flags",
    "load_config",
    "load_jobs_dir",
    "load_jobs_file",
    "missing_inputs",
    "parse_duration",
]

PROVIDERS: Mapping[str, str] = {
    "mistral": "https://api.mistral.ai",
    "openai": "https://api.openai.com",
}
"""Known providers and their default ``base_url``."""

DEFAULT_LEDGER_URL = "sqlite:///var/ledger.db"


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
    """``[http]``: the optional health and metrics endpoint."""

    listen: str | None = None
    """``HOST:PORT``, e.g. ``127.0.0.1:9464``; None disables it."""

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
    """Share of requests that fail (land in the error file)."""
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
    splitting); a job's own ``split_requests`` overrides it."""
    config_file: str | None = None
    """The file that defined the workspace (named in errors)."""

    @property
    def embedded(self) -> bool:
        """Whether this workspace runs the in-process emulator."""
        return self.base_url == EMBEDDED

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


def load_config(path: Path, *, environ: Mapping[str, str] | None = None) -> Config:
    """Read, check and resolve a config file, then apply the ``ORCH_*`` overrides.

    Args:
        path: The TOML file.
        environ: The environment for the overrides (default: ``os.environ``). API keys are
            not read here but by :meth:`WorkspaceConfig.api_key`.

    Returns:
        The configuration, with absolute paths.

    Raises:
        ConfigError: the file is missing or not valid TOML, or any key is unknown, missing,
            of the wrong type or out of range; the message names the file and dotted key.
    """
    environ = os.environ if environ is None else environ
    path = Path(os.path.abspath(Path(path).expanduser()))
    file = str(path)
    root = Section(read_toml(path), file=file)
    refuse_secrets(root, "mistral")
    root.only(TOP_KEYS, elsewhere=_ELSEWHERE)
    base = path.parent

    ledger = root.table("ledger")
    ledger.only({"url"}, elsewhere=_ELSEWHERE)
    url = resolve_url(
        ledger.string("url", DEFAULT_LEDGER_URL), base, file=file, key="ledger.url", in_file=True
    )

    results = root.table("results")
    results.only({"dir"}, elsewhere=_ELSEWHERE)
    results_dir = resolve_path(results.string("dir", "var/results"), base)

    polling = _polling(root.table("polling"))
    intake = root.table("intake")
    intake.only({"jobs_dir", "rescan_interval"}, elsewhere=_ELSEWHERE)
    jobs_dir = resolve_path(intake.string("jobs_dir"), base) if intake.has("jobs_dir") else None
    rescan = intake.duration("rescan_interval", 30.0, positive=True)

    http = root.table("http")
    http.only({"listen"}, elsewhere=_ELSEWHERE)
    listen = None
    if http.has("listen"):
        listen = listen_address(http.string("listen"), file=file, key="http.listen")

    overrides = EnvOverrides(environ)
    url = overrides.ledger_url(url)
    results_dir = overrides.path("ORCH_RESULTS_DIR", results_dir, optional=False) or results_dir
    if "ORCH_JOBS_DIR" in environ:
        jobs_dir = overrides.path("ORCH_JOBS_DIR", jobs_dir, optional=True)
    elif jobs_dir is not None:
        check_dir(jobs_dir, file=file, key="intake.jobs_dir")
    listen = overrides.listen(listen)

    workspaces = _workspaces(root.table("workspaces"), base)
    providers = {name: ws.provider for name, ws in workspaces.items()}
    budgets = {name: ws.pending_budget for name, ws in workspaces.items()}
    jobs: list[JobSpec] = []
    origins: dict[str, str] = {}
    inputs: dict[str, tuple[InputOrigin, ...]] = {}
    for index, table in root.tables("jobs"):
        spec = parse_job(table, base, providers, budgets)
        claim_name(spec, table, origins, f"{file}: jobs[{index}]")
        jobs.append(spec)
        inputs[spec.name] = input_origins(table)
    return Config(
        path=path,
        ledger=LedgerConfig(url=url),
        results=ResultsConfig(dir=results_dir),
        polling=polling,
        workspaces=workspaces,
        intake=IntakeConfig(jobs_dir=jobs_dir, rescan_interval=rescan),
        http=HttpConfig(listen=listen),
        emulator=_emulator(root.table("emulator")),
        daemon=_daemon(root.table("daemon")),
        jobs=tuple(jobs),
        job_origins=origins,
        input_origins=inputs,
    )


_WORKSPACE_KEYS = frozenset(
    {
        "provider",
        "base_url",
        "api_key_env",
        "api_key_file",
        "pending_budget",
        "count_external",
        "split_requests",
    }
)
_ELSEWHERE: Mapping[str, str] = {
    "url": "ledger.url",
    "dir": "results.dir",
    "initial": "polling.initial",
    "max": "polling.max",
    "factor": "polling.factor",
    "jitter": "polling.jitter",
    "jobs_dir": "intake.jobs_dir",
    "rescan_interval": "intake.rescan_interval",
    "listen": "http.listen",
    "grace_period": "daemon.grace_period",
    "reconcile_grace": "daemon.reconcile_grace",
    "replica_id": "daemon.replica_id",
    "lease_ttl": "daemon.lease_ttl",
    "time_scale": "emulator.time_scale",
    "throughput": "emulator.throughput",
    "validation_seconds": "emulator.validation_seconds",
    "failure_fraction": "emulator.failure_fraction",
    "pending_budget": "workspaces.<name>.pending_budget",
    "base_url": "workspaces.<name>.base_url",
    "api_key_env": "workspaces.<name>.api_key_env",
    "provider": "workspaces.<name>.provider",
}
"""Keys that only exist in one table, to redirect a key written in the wrong one."""


def _polling(table: Section) -> PollingConfig:
    table.only({"initial", "max", "factor", "jitter"}, elsewhere=_ELSEWHERE)
    initial = table.duration("initial", 5.0, positive=True)
    maximum = table.duration("max", 600.0, positive=True)
    if maximum < initial:
        raise table.error(
            "max", f"must be at least polling.initial ({initial:g} s), got {maximum:g} s"
        )
    return PollingConfig(
        initial=initial,
        max=maximum,
        factor=table.number("factor", 1.5, low=1.0),
        jitter=table.number("jitter", 0.1, low=0.0, below=1.0),
    )


def _emulator(table: Section) -> EmulatorConfig:
    table.only(
        {"time_scale", "throughput", "validation_seconds", "failure_fraction", "seed"},
        elsewhere=_ELSEWHERE,
    )
    return EmulatorConfig(
        time_scale=table.number("time_scale", 1.0, above=0.0),
        throughput=table.number("throughput", 1000.0, above=0.0),
        validation_seconds=table.duration("validation_seconds", 5.0),
        failure_fraction=table.number("failure_fraction", 0.0, low=0.0, high=1.0),
        seed=table.integer("seed", 0),
    )


def _daemon(table: Section) -> DaemonConfig:
    table.only({"grace_period", "reconcile_grace", "replica_id", "lease_ttl"}, elsewhere=_ELSEWHERE)
    replica_id = table.optional_string("replica_id")
    if replica_id is not None and not _REPLICA_ID.fullmatch(replica_id):
        raise table.error(
            "replica_id",
            f"must be 1-50 of letters, digits, '.', '_', ':' or '-', got {replica_id!r}",
        )
    lease_ttl = table.duration("lease_ttl", 60.0, positive=True)
    if lease_ttl < MIN_LEASE_TTL:
        raise table.error(
            "lease_ttl",
            f"must be at least {MIN_LEASE_TTL:g}s (a replica renews its leases every third of "
            f"it, and a shorter lease is lost to a slow database round trip), got {lease_ttl:g}s",
        )
    return DaemonConfig(
        grace_period=table.duration("grace_period", 30.0),
        reconcile_grace=table.duration("reconcile_grace", 180.0, positive=True),
        replica_id=replica_id,
        lease_ttl=lease_ttl,
    )


MIN_LEASE_TTL = 3.0
"""Shortest ``[daemon] lease_ttl`` accepted, in seconds."""

_REPLICA_ID = re.compile(r"[A-Za-z0-9._:-]{1,50}")
"""A replica id; 50 at most, so it fits PostgreSQL's application_name (63 bytes) with a prefix."""


def _workspaces(table: Section, base: Path) -> dict[str, WorkspaceConfig]:
    if not table.data:
        raise table.error(
            None,
            "no workspace is defined: add one, e.g. [workspaces.main] with "
            'api_key_env = "MISTRAL_API_KEY"',
        )
    workspaces = {}
    for name, value in table.data.items():
        if not isinstance(value, dict):
            raise table.error(
                name, f"expected a table [workspaces.{key_part(name)}], got {describe(value)}"
            )
        ws = Section(value, file=table.file, path=table.key(name))
        check_name(table, name, name, "workspace name")
        provider = ws.string("provider", "mistral")
        if provider not in PROVIDERS:
            raise ws.error(
                "provider",
                f"unknown provider {provider!r}"
                + suggestion(provider, PROVIDERS, noun="known providers"),
            )
        refuse_secrets(ws, provider)
        ws.only(_WORKSPACE_KEYS, elsewhere=_ELSEWHERE)
        base_url = check_base_url(ws, ws.string("base_url", PROVIDERS[provider]))
        key_env = ws.optional_string("api_key_env")
        if key_env is not None:
            check_env_name(ws, "api_key_env", key_env, provider)
        key_file = ws.optional_string("api_key_file")
        if key_env is not None and key_file is not None:
            raise ws.error(
                "api_key_file", "give api_key_env or api_key_file, not both: which one wins?"
            )
        if key_env is None and key_file is None and base_url != EMBEDDED:
            raise ws.error(
                "api_key_env",
                f'missing required key: set api_key_env = "{provider.upper()}_API_KEY" (an '
                "environment variable) or api_key_file (a file holding the key)",
            )
        budget = ws.integer("pending_budget", 1_000_000, low=1)
        split = None
        if ws.has("split_requests"):
            split = ws.integer("split_requests", low=1)
            if split > budget:
                raise ws.error("split_requests", split_too_large(split, budget))
        workspaces[name] = WorkspaceConfig(
            name=name,
            provider=provider,
            base_url=base_url,
            api_key_env=key_env,
            api_key_file=resolve_path(key_file, base) if key_file is not None else None,
            pending_budget=budget,
            split_requests=split,
            count_external=ws.boolean("count_external", False),
            config_file=table.file,
        )
    return workspaces
