"""Loading the main config file: :func:`load_config` and the checks of its tables.

A private helper of :mod:`orchestrator.config`, which documents the format.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from orchestrator.config._env import EnvOverrides
from orchestrator.config._hooks import parse_hooks, parse_webhooks
from orchestrator.config._jobs import (
    check_name,
    claim_name,
    input_origins,
    parse_job,
    split_too_large,
)
from orchestrator.config._model import (
    DEFAULT_LEDGER_URL,
    MIN_LEASE_TTL,
    TOP_KEYS,
    Config,
    DaemonConfig,
    EmulatorConfig,
    HttpConfig,
    InputOrigin,
    IntakeConfig,
    LedgerConfig,
    PollingConfig,
    ResultsConfig,
    WorkspaceConfig,
)
from orchestrator.config._pricing import WORKSPACE_SPEND_KEYS, read_pricing, workspace_spend
from orchestrator.config._read import (
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
from orchestrator.config._workspace import (
    EMBEDDED,
    ENV_NAME,
    OPENAI_KEYS,
    PROVIDERS,
    check_base_url,
    check_env_name,
    openai_options,
    refuse_secrets,
)
from orchestrator.errors import ConfigError
from orchestrator.inputs import rules_for
from orchestrator.model import JobSpec
from orchestrator.retries import MAX_ATTEMPTS_LIMIT


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
    http.only({"listen", "token_env", "allow_anonymous_reads"}, elsewhere=_ELSEWHERE)
    listen = None
    if http.has("listen"):
        listen = listen_address(http.string("listen"), file=file, key="http.listen")
    token_env = http.optional_string("token_env")
    if token_env is not None and not ENV_NAME.fullmatch(token_env):
        # Not echoed: a token pasted here by mistake must not end up in a log.
        raise http.error(
            "token_env",
            "must name an environment variable (letters, digits and '_'), e.g. "
            '"ORCH_HTTP_TOKEN"; the value is not shown in case it is the token itself',
        )

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
        http=HttpConfig(
            listen=listen,
            token_env=token_env,
            allow_anonymous_reads=http.boolean("allow_anonymous_reads", False),
        ),
        emulator=_emulator(root.table("emulator")),
        daemon=_daemon(root.table("daemon")),
        jobs=tuple(jobs),
        job_origins=origins,
        input_origins=inputs,
        webhooks=parse_webhooks(root),
        hooks=parse_hooks(root),
        pricing=read_pricing(root.table("pricing")),
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
        "token_budget",
        "token_budgets",
        "max_attempts",
        "retry_delay",
        *OPENAI_KEYS,
        *WORKSPACE_SPEND_KEYS,
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
    "token_env": "http.token_env",
    "allow_anonymous_reads": "http.allow_anonymous_reads",
    "grace_period": "daemon.grace_period",
    "reconcile_grace": "daemon.reconcile_grace",
    "replica_id": "daemon.replica_id",
    "lease_ttl": "daemon.lease_ttl",
    "time_scale": "emulator.time_scale",
    "throughput": "emulator.throughput",
    "validation_seconds": "emulator.validation_seconds",
    "failure_fraction": "emulator.failure_fraction",
    "pending_budget": "workspaces.<name>.pending_budget",
    "token_budget": "workspaces.<name>.token_budget",
    "token_budgets": "workspaces.<name>.token_budgets",
    "base_url": "workspaces.<name>.base_url",
    "api_key_env": "workspaces.<name>.api_key_env",
    "provider": "workspaces.<name>.provider",
    "spend_limit": "workspaces.<name>.spend_limit",
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
        {
            "time_scale",
            "throughput",
            "validation_seconds",
            "failure_fraction",
            "transient_fraction",
            "seed",
        },
        elsewhere=_ELSEWHERE,
    )
    return EmulatorConfig(
        time_scale=table.number("time_scale", 1.0, above=0.0),
        throughput=table.number("throughput", 1000.0, above=0.0),
        validation_seconds=table.duration("validation_seconds", 5.0),
        failure_fraction=table.number("failure_fraction", 0.0, low=0.0, high=1.0),
        transient_fraction=table.number("transient_fraction", 0.0, low=0.0, high=1.0),
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
        base_url = check_base_url(ws, ws.string("base_url", PROVIDERS[provider]), provider)
        window, organization, project = openai_options(ws, provider)
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
        split = _workspace_split(ws, provider, budget)
        token_budget, token_budgets = _token_budgets(ws)
        spend_limit, batch_discount = workspace_spend(ws)
        workspaces[name] = WorkspaceConfig(
            name=name,
            provider=provider,
            base_url=base_url,
            api_key_env=key_env,
            api_key_file=resolve_path(key_file, base) if key_file is not None else None,
            pending_budget=budget,
            split_requests=split,
            token_budget=token_budget,
            token_budgets=token_budgets,
            count_external=ws.boolean("count_external", False),
            config_file=table.file,
            completion_window=window,
            organization=organization,
            project=project,
            max_attempts=ws.integer("max_attempts", 3, low=1, high=MAX_ATTEMPTS_LIMIT),
            retry_delay=ws.duration("retry_delay", 60.0),
            spend_limit=spend_limit,
            batch_discount=batch_discount,
        )
    return workspaces


def _workspace_split(ws: Section, provider: str, budget: int) -> int | None:
    """The workspace's part size: its ``split_requests``, 0 for none, else the dialect's default.

    OpenAI's batches hold at most 50,000 requests (and 200 MB), so an OpenAI workspace splits
    a larger job by default, in parts of that many requests (fewer under a smaller
    ``pending_budget``); Mistral's splits only when asked.
    """
    if ws.has("split_requests"):
        split = ws.integer("split_requests", low=0)
        if split > budget:
            raise ws.error("split_requests", split_too_large(split, budget))
        return split or None
    if provider in ("openai", "anthropic"):  # 50,000 / 100,000 requests a batch at most
        return min(rules_for(provider).max_requests, budget)
    return None


def _token_budgets(ws: Section) -> tuple[int | None, dict[str, int]]:
    """``token_budget`` (every model) and ``[....token_budgets]`` (per model, overriding it)."""
    default = ws.integer("token_budget", low=1) if ws.has("token_budget") else None
    table = ws.table("token_budgets")
    per_model = {}
    for model in table.data:
        if not model.strip():
            raise ConfigError(
                "a model name must not be empty", file=table.file, key=f'{table.path}."{model}"'
            )
        per_model[model] = table.integer(model, low=1)
    return default, per_model
