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

The private modules import downward only: ``_read`` (TOML, typed getters, durations, paths,
URLs), then ``_env`` (the overrides) and ``_workspace`` (providers, secrets, API keys), then
``_model`` (the values), ``_jobs`` (``[[jobs]]`` tables), ``_jobsdir`` (jobs files) and
``_load`` (:func:`load_config`).
"""

from __future__ import annotations

from orchestrator.config._hooks import HookConfig as HookConfig
from orchestrator.config._hooks import WebhookConfig as WebhookConfig
from orchestrator.config._jobs import DEFINITION_KEYS as DEFINITION_KEYS
from orchestrator.config._jobs import job_from_definition as job_from_definition
from orchestrator.config._jobs import job_from_flags as job_from_flags
from orchestrator.config._jobs import missing_inputs as missing_inputs
from orchestrator.config._jobsdir import JobsDirScan as JobsDirScan
from orchestrator.config._jobsdir import load_jobs_dir as load_jobs_dir
from orchestrator.config._jobsdir import load_jobs_file as load_jobs_file
from orchestrator.config._load import load_config as load_config
from orchestrator.config._model import DEFAULT_LEDGER_URL as DEFAULT_LEDGER_URL
from orchestrator.config._model import MIN_LEASE_TTL as MIN_LEASE_TTL
from orchestrator.config._model import Config as Config
from orchestrator.config._model import DaemonConfig as DaemonConfig
from orchestrator.config._model import EmulatorConfig as EmulatorConfig
from orchestrator.config._model import HttpConfig as HttpConfig
from orchestrator.config._model import InputOrigin as InputOrigin
from orchestrator.config._model import IntakeConfig as IntakeConfig
from orchestrator.config._model import LedgerConfig as LedgerConfig
from orchestrator.config._model import PollingConfig as PollingConfig
from orchestrator.config._model import ResultsConfig as ResultsConfig
from orchestrator.config._model import WorkspaceConfig as WorkspaceConfig
from orchestrator.config._read import parse_duration as parse_duration
from orchestrator.config._workspace import EMBEDDED as EMBEDDED
from orchestrator.config._workspace import PROVIDERS as PROVIDERS

__all__ = [
    "DEFINITION_KEYS",
    "EMBEDDED",
    "PROVIDERS",
    "Config",
    "DaemonConfig",
    "EmulatorConfig",
    "HookConfig",
    "HttpConfig",
    "InputOrigin",
    "IntakeConfig",
    "JobsDirScan",
    "LedgerConfig",
    "PollingConfig",
    "ResultsConfig",
    "WebhookConfig",
    "WorkspaceConfig",
    "job_from_definition",
    "job_from_flags",
    "load_config",
    "load_jobs_dir",
    "load_jobs_file",
    "missing_inputs",
    "parse_duration",
]
