"""Config loading: defaults, every error (file and dotted key), paths, overrides, jobs files."""

from __future__ import annotations

import tomllib
from pathlib import Path

import attrs
import pytest

from orchestrator.config import (
    EMBEDDED,
    Config,
    HttpConfig,
    InputOrigin,
    PollingConfig,
    WorkspaceConfig,
    load_config,
    load_jobs_dir,
    load_jobs_file,
    missing_inputs,
    parse_duration,
)
from orchestrator.errors import ConfigError
from orchestrator.model import JobSpec

REPO = Path(__file__).resolve().parents[2]
BAD = REPO / "tests" / "data" / "bad" / "config"

WORKSPACE = """
[workspaces.main]
api_key_env = "MISTRAL_API_KEY"
"""

JOB = """
[[jobs]]
name = "cheese"
workspace = "main"
input = "in.jsonl"
model = "mistral-small-latest"
endpoint = "/v1/chat/completions"
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A config folder holding one input file."""
    (tmp_path / "in.jsonl").write_text('{"custom_id": "a", "body": {"messages": [{}]}}\n')
    return tmp_path


def write(folder: Path, text: str, name: str = "config.toml") -> Path:
    """Write a TOML file into ``folder``."""
    path = folder / name
    path.write_text(text)
    return path


def load(folder: Path, text: str, **environ: str) -> Config:
    """Load ``text`` as config.toml in ``folder`` with only ``environ`` set."""
    return load_config(write(folder, text), environ=environ)


def error_of(folder: Path, text: str, **environ: str) -> ConfigError:
    """The ConfigError that loading ``text`` raises."""
    with pytest.raises(ConfigError) as caught:
        load(folder, text, **environ)
    return caught.value


def test_minimal_config_gets_documented_defaults(folder: Path) -> None:
    """A workspace alone is a complete config; everything else has its default."""
    config = load(folder, WORKSPACE)
    assert config.path == folder / "config.toml"
    assert config.ledger.url == f"sqlite:///{folder}/var/ledger.db"
    assert config.results.dir == folder / "var" / "results"
    assert config.polling == PollingConfig(initial=5.0, max=600.0, factor=1.5, jitter=0.1)
    assert config.intake.jobs_dir is None
    assert config.intake.rescan_interval == 30.0
    assert config.http.listen is None
    assert config.daemon.grace_period == 30.0
    assert (config.daemon.replica_id, config.daemon.lease_ttl) == (None, 60.0)
    assert (config.emulator.time_scale, config.emulator.throughput) == (1.0, 1000.0)
    assert (config.emulator.validation_seconds, config.emulator.seed) == (5.0, 0)
    assert config.jobs == ()
    assert config.workspaces == {
        "main": WorkspaceConfig(
            name="main",
            provider="mistral",
            base_url="https://api.mistral.ai",
            api_key_env="MISTRAL_API_KEY",
            pending_budget=1_000_000,
            count_external=False,
            config_file=str(folder / "config.toml"),
        )
    }


def test_full_job_is_read_with_absolute_inputs(folder: Path) -> None:
    """Every job key lands in the JobSpec; the input path is absolute."""
    config = load(
        folder,
        WORKSPACE + JOB + 'metadata = { team = "research" }\ntimeout_hours = 48\npriority = -3\n',
    )
    assert config.jobs == (
        JobSpec(
            name="cheese",
            workspace="main",
            model="mistral-small-latest",
            endpoint="/v1/chat/completions",
            inputs=(str(folder / "in.jsonl"),),
            metadata={"team": "research"},
            timeout_hours=48,
            priority=-3,
        ),
    )
    assert config.job_origins == {"cheese": f"{folder / 'config.toml'}: jobs[0]"}


def test_example_config_loads_and_sets_every_key() -> None:
    """config/example.toml loads, and documents every key the loader knows."""
    path = REPO / "config" / "example.toml"
    config = load_config(path, environ={})
    assert config.http.address() == ("127.0.0.1", 9464)
    document = tomllib.loads(path.read_text())
    assert set(document) == {
        "ledger", "results", "polling", "workspaces", "intake", "http", "emulator", "daemon",
        "jobs", "pricing",
    }  # fmt: skip
    assert set(document["pricing"]) == {"batch_discount", "models"}
    assert set(document["pricing"]["models"]["mistral-small-latest"]) == {"input", "output"}
    for shown in ("# currency = ", "# max_tokens = 1_024", "# spend_limit = ", "# batch_discount"):
        assert shown in path.read_text()  # optional, shown as comments
    assert config.pricing.price("mistral-small-latest") is not None
    assert set(document["polling"]) == {"initial", "max", "factor", "jitter"}
    assert set(document["http"]) == {"listen", "token_env", "allow_anonymous_reads"}
    assert config.http.token_env == "ORCH_HTTP_TOKEN"
    assert config.http.allow_anonymous_reads is False
    assert set(document["intake"]) == {"jobs_dir", "rescan_interval"}
    assert set(document["emulator"]) == {
        "time_scale", "throughput", "validation_seconds", "failure_fraction",
        "transient_fraction", "seed",
    }  # fmt: skip
    assert set(document["daemon"]) == {"grace_period", "reconcile_grace", "lease_ttl"}
    assert "# replica_id = " in path.read_text()  # optional, shown as a comment
    assert set(document["workspaces"]["main"]) == {
        "provider", "base_url", "api_key_env", "pending_budget", "count_external",
        "split_requests", "max_attempts", "retry_delay",
    }  # fmt: skip
    assert "api_key_file" in path.read_text()  # the alternative, shown as a comment
    assert "# token_budget = 2_000_000" in path.read_text()  # optional, shown as comments
    assert '# "gpt-4o" = 90_000' in path.read_text()
    assert set(document["jobs"][0]) == {
        "name", "workspace", "input", "model", "endpoint", "metadata", "timeout_hours",
        "priority",
    }  # fmt: skip
    assert "inputs" in document["jobs"][1]
    assert "# split_requests = 50_000" in path.read_text()  # a job's override, as a comment
    assert "# max_attempts = 5" in path.read_text()  # a job's override, as a comment
    assert config.workspaces["main"].split_requests == 100_000


def test_demo_config_loads() -> None:
    """config/demo.toml (make demo) is a valid config."""
    config = load_config(REPO / "config" / "demo.toml", environ={})
    assert config.workspaces["demo"].embedded
    assert config.workspaces["demo-openai"].provider == "openai"
    assert config.workspaces["demo-openai"].embedded
    assert config.workspaces["demo-anthropic"].provider == "anthropic"
    assert config.workspaces["demo-anthropic"].embedded
    assert config.workspaces["demo-anthropic"].split_requests == 40  # 100,000 capped by budget
    assert len(config.jobs) == 7


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("250ms", 0.25),
        ("5s", 5.0),
        ("10m", 600.0),
        ("1h", 3600.0),
        ("1d", 86400.0),
        ("1h30m", 5400.0),
        ("1h 30m", 5400.0),
        ("1.5h", 5400.0),
        (".5s", 0.5),
        (" 2s ", 2.0),
        ("0s", 0.0),
        (5, 5.0),
        (0.25, 0.25),
        (0, 0.0),
    ],
)
def test_durations(value: str | int | float, seconds: float) -> None:
    """Duration strings with units, combined parts and bare numbers of seconds."""
    assert parse_duration(value, key="polling.initial", file="c.toml") == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("5", "got '5' (add a unit, e.g. \"5s\", or write the number without quotes)"),
        ("abc", "got 'abc'"),
        ("5 sec", "got '5 sec'"),
        ("-1s", "got '-1s'"),
        ("", "got ''"),
        ("1h x", "got '1h x'"),
        (True, "got true"),
        ([1], "got an array"),
        (-1, "a duration must be a finite number of seconds, zero or more; got -1"),
        (float("inf"), "a duration must be a finite number of seconds, zero or more; got inf"),
    ],
)
def test_bad_durations(value: object, message: str) -> None:
    """A bad duration names the key and file and shows what was given."""
    with pytest.raises(ConfigError) as caught:
        parse_duration(value, key="polling.initial", file="c.toml")  # type: ignore[arg-type]
    assert (caught.value.file, caught.value.key) == ("c.toml", "polling.initial")
    assert str(caught.value).startswith("c.toml: polling.initial: ")
    assert message in str(caught.value)


# (TOML after the workspace, dotted key, exact message). "{dir}" is the config folder.
ERRORS = [
    ("[ledgr]\nurl = 'x'", "ledgr", "unknown key 'ledgr'; did you mean 'ledger'?"),
    (
        "[polling]\njobs_dir = 'x'",
        "polling.jobs_dir",
        "unknown key 'jobs_dir'; it belongs in another table: intake.jobs_dir",
    ),
    (
        "[polling]\nfoo = 1",
        "polling.foo",
        "unknown key 'foo'; known keys: factor, initial, jitter, max",
    ),
    (
        "[polling]\ninitial = 'soon'",
        "polling.initial",
        'expected a duration such as "250ms", "5s", "10m", "1h" (or "1h30m"), or a number of '
        "seconds, got 'soon'",
    ),
    ("[polling]\ninitial = '0s'", "polling.initial", "must be more than zero"),
    (
        "[polling]\ninitial = '1m'\nmax = '30s'",
        "polling.max",
        "must be at least polling.initial (60 s), got 30 s",
    ),
    ("[polling]\nfactor = 'x'", "polling.factor", "expected a number, got 'x'"),
    ("[polling]\nfactor = 0.5", "polling.factor", "must be at least 1, got 0.5"),
    ("[polling]\njitter = 1", "polling.jitter", "must be less than 1, got 1"),
    ("[intake]\nrescan_interval = '0ms'", "intake.rescan_interval", "must be more than zero"),
    ("[intake]\njobs_dir = 'in.jsonl'", "intake.jobs_dir", "{dir}/in.jsonl is not a folder"),
    (
        "[http]\nlisten = 'localhost'",
        "http.listen",
        "expected HOST:PORT such as '127.0.0.1:9464' or '[::1]:9464', got 'localhost'",
    ),
    (
        "[http]\nlisten = '0.0.0.0:99999'",
        "http.listen",
        "expected HOST:PORT such as '127.0.0.1:9464' or '[::1]:9464', got '0.0.0.0:99999'",
    ),
    (
        "[daemon]\ngrace_period = 'x'",
        "daemon.grace_period",
        'expected a duration such as "250ms", "5s", "10m", "1h" (or "1h30m"), or a number of '
        "seconds, got 'x'",
    ),
    (
        "[daemon]\nlease_ttl = '2s'",
        "daemon.lease_ttl",
        "must be at least 3s (a replica renews its leases every third of it, and a shorter "
        "lease is lost to a slow database round trip), got 2s",
    ),
    (
        "[daemon]\nreplica_id = 'pod 0'",
        "daemon.replica_id",
        "must be 1-50 of letters, digits, '.', '_', ':' or '-', got 'pod 0'",
    ),
    (
        "[emulator]\nfailure_fraction = 2",
        "emulator.failure_fraction",
        "must be between 0 and 1, got 2",
    ),
    ("[emulator]\ntime_scale = 0", "emulator.time_scale", "must be more than 0, got 0"),
    ("[emulator]\nseed = 1.5", "emulator.seed", "expected an integer, got 1.5"),
    (
        "[ledger]\nurl = 'nonsense'",
        "ledger.url",
        'expected a database URL such as "sqlite:///var/ledger.db" or '
        "\"postgresql+asyncpg://user@host/db\", got 'nonsense'",
    ),
    (
        "[ledger]\nurl = 'sqlite://'",
        "ledger.url",
        "an in-memory SQLite ledger would lose every job when the daemon stops: give a file, "
        'e.g. "sqlite:///var/ledger.db"',
    ),
    (
        "[ledger]\nurl = 'sqlite:///:memory:'",
        "ledger.url",
        "an in-memory SQLite ledger would lose every job when the daemon stops: give a file, "
        'e.g. "sqlite:///var/ledger.db"',
    ),
    (
        "[ledger]\nurl = 'sqlite://var/x.db'",
        "ledger.url",
        'an SQLite URL has three slashes before a relative path ("sqlite:///var/ledger.db") and '
        "four before an absolute one (\"sqlite:////srv/ledger.db\"), got 'sqlite://var/x.db'",
    ),
    (
        "[ledger]\nurl = 'postgresql://orch:hunter2@db/orch'",
        "ledger.url",
        "the URL holds a password, and secrets must not be written in the config file: set the "
        "whole URL in ORCH_LEDGER_URL instead (or use a ~/.pgpass file)",
    ),
    ("[results]\ndir = 5", "results.dir", "expected a string, got 5"),
    ("[results]\ndir = ''", "results.dir", "must not be empty"),
    ("jobs = 'x'", "jobs", "expected an array of tables ([[jobs]] sections), got 'x'"),
    ("ledger = 'sqlite:///x.db'", "ledger", "expected a table, got 'sqlite:///x.db'"),
]


@pytest.mark.parametrize(("toml", "key", "message"), ERRORS)
def test_config_errors_name_file_and_key(folder: Path, toml: str, key: str, message: str) -> None:
    """Each mistake is a ConfigError with the file, the dotted key and a specific message."""
    error = error_of(folder, toml + "\n" + WORKSPACE)
    file = str(folder / "config.toml")
    assert (error.file, error.key) == (file, key)
    assert str(error) == f"{file}: {key}: {message.format(dir=folder)}"


WORKSPACE_ERRORS = [
    (
        "pending_budgt = 5",
        "workspaces.main.pending_budgt",
        "unknown key 'pending_budgt'; did you mean 'pending_budget'?",
    ),
    ("pending_budget = 'abc'", "workspaces.main.pending_budget", "expected an integer, got 'abc'"),
    ("pending_budget = true", "workspaces.main.pending_budget", "expected an integer, got true"),
    ("pending_budget = 0", "workspaces.main.pending_budget", "must be at least 1, got 0"),
    (
        "count_external = 'yes'",
        "workspaces.main.count_external",
        "expected true or false, got 'yes'",
    ),
    (
        "provider = 'mistrall'",
        "workspaces.main.provider",
        "unknown provider 'mistrall'; did you mean 'mistral'?",
    ),
    (
        "provider = 'acme'",
        "workspaces.main.provider",
        "unknown provider 'acme'; known providers: anthropic, mistral, openai",
    ),
    (
        "base_url = 'api.mistral.ai'",
        "workspaces.main.base_url",
        'expected "embedded" or an http(s) URL such as "https://api.mistral.ai", '
        "got 'api.mistral.ai'",
    ),
    (
        "base_url = 'https://api.mistral.ai/v1'",
        "workspaces.main.base_url",
        "give the server root without /v1 (the client adds /v1/...), "
        "got 'https://api.mistral.ai/v1'",
    ),
    (
        "base_url = 'https://api.mistral.ai/?x=1'",
        "workspaces.main.base_url",
        "must not have a query or fragment, got 'https://api.mistral.ai/?x=1'",
    ),
    (
        "api_key_file = 'key.txt'",
        "workspaces.main.api_key_file",
        "give api_key_env or api_key_file, not both: which one wins?",
    ),
    (
        "api_key = 'sk-123'",
        "workspaces.main.api_key",
        "secrets must not be written in the config file: remove 'api_key' and set "
        'api_key_env = "MISTRAL_API_KEY" (read from that environment variable) or '
        'api_key_file = "/run/secrets/api-key" (read from a file) in the workspace',
    ),
    (
        "token = 'sk-123'\nprovider = 'openai'",
        "workspaces.main.token",
        "secrets must not be written in the config file: remove 'token' and set "
        'api_key_env = "OPENAI_API_KEY" (read from that environment variable) or '
        'api_key_file = "/run/secrets/api-key" (read from a file) in the workspace',
    ),
]


@pytest.mark.parametrize(("toml", "key", "message"), WORKSPACE_ERRORS)
def test_workspace_errors(folder: Path, toml: str, key: str, message: str) -> None:
    """Workspace keys are checked one by one, named workspaces.<name>.<key>."""
    error = error_of(folder, WORKSPACE + toml)
    file = str(folder / "config.toml")
    assert str(error) == f"{file}: {key}: {message}"


def test_workspace_needs_a_key_source_unless_embedded(folder: Path) -> None:
    """A real workspace needs api_key_env or api_key_file; an embedded one needs neither."""
    error = error_of(folder, "[workspaces.main]\npending_budget = 5\n")
    assert error.key == "workspaces.main.api_key_env"
    assert str(error).endswith(
        'missing required key: set api_key_env = "MISTRAL_API_KEY" (an environment '
        "variable) or api_key_file (a file holding the key)"
    )
    config = load(folder, "[workspaces.sim]\nbase_url = 'embedded'\n")
    assert config.workspaces["sim"].api_key({}) == EMBEDDED


def test_a_key_pasted_into_api_key_env_is_not_echoed(folder: Path) -> None:
    """api_key_env must be a variable name; the bad value never appears in the message."""
    error = error_of(folder, "[workspaces.main]\napi_key_env = 'sk-abc123SECRET'\n")
    assert error.key == "workspaces.main.api_key_env"
    assert "SECRET" not in str(error)
    assert "must name an environment variable" in str(error)


def test_credentials_in_base_url_are_refused_without_echo(folder: Path) -> None:
    """user:password@ in the base URL is a secret in the file: refused, not shown."""
    error = error_of(folder, WORKSPACE + "base_url = 'https://me:SECRET@api.mistral.ai'\n")
    assert error.key == "workspaces.main.base_url"
    assert "SECRET" not in str(error)


def test_secret_at_top_level_and_in_a_file_from_data(folder: Path) -> None:
    """api_key anywhere is refused with the way to do it instead."""
    error = error_of(folder, "api_key = 'x'\n" + WORKSPACE)
    assert error.key == "api_key"
    assert "secrets must not be written in the config file" in str(error)
    error = error_of(folder, (BAD / "api-key-in-file.toml").read_text())
    assert error.key == "workspaces.main.api_key"
    assert "sk-do-not-do-this" not in str(error)


def test_no_workspace_and_bad_workspace_tables(folder: Path) -> None:
    """At least one workspace; each must be a table with a safe name."""
    error = error_of(folder, "[polling]\nfactor = 2\n")
    assert error.key == "workspaces"
    assert "no workspace is defined" in str(error)
    error = error_of(folder, "[workspaces]\nmain = 5\n")
    assert error.key == "workspaces.main"
    assert str(error).endswith("expected a table [workspaces.main], got 5")
    error = error_of(folder, '[workspaces."my space"]\napi_key_env = "K"\n')
    assert error.key == 'workspaces."my space"'
    assert "workspace name 'my space' is not a safe name: it becomes a directory name" in str(error)


JOB_ERRORS = [
    ("nmae = 'x'", "jobs[0].nmae", "unknown key 'nmae'; did you mean 'name'?"),
    ("timeout_hours = 0", "jobs[0].timeout_hours", "must be between 1 and 168, got 0"),
    ("timeout_hours = 169", "jobs[0].timeout_hours", "must be between 1 and 168, got 169"),
    ("timeout_hours = '24h'", "jobs[0].timeout_hours", "expected an integer, got '24h'"),
    (
        "priority = 3000000000",
        "jobs[0].priority",
        "must be between -2,147,483,648 and 2,147,483,647, got 3000000000",
    ),
    ("metadata = { team = 5 }", "jobs[0].metadata.team", "expected a string, got 5"),
    (
        "metadata = { team = '' }",
        "jobs[0].metadata.team",
        "metadata values must be 1-512 characters for mistral, got 0",
    ),
    (
        f"metadata = {{ team = '{'x' * 513}' }}",
        "jobs[0].metadata.team",
        "metadata values must be 1-512 characters for mistral, got 513",
    ),
    (
        f"metadata = {{ {'k' * 33} = 'v' }}",
        f"jobs[0].metadata.{'k' * 33}",
        "metadata keys must be 1-32 characters for mistral, got 33",
    ),
    (
        "metadata = { orchestrator_job_id = 'x' }",
        "jobs[0].metadata.orchestrator_job_id",
        "'orchestrator_job_id' is reserved: the orchestrator sets it to the ledger's job token "
        "(crash recovery finds the remote job by it); use another key",
    ),
    ("metadata = 'team'", "jobs[0].metadata", "expected a table, got 'team'"),
    ("metadata = { a = { b = 'c' } }", "jobs[0].metadata.a", "expected a string, got a table"),
]


@pytest.mark.parametrize(("toml", "key", "message"), JOB_ERRORS)
def test_job_errors(folder: Path, toml: str, key: str, message: str) -> None:
    """Job keys are checked and named jobs[i].key (metadata: jobs[i].metadata.key)."""
    error = error_of(folder, WORKSPACE + JOB + toml + "\n")
    assert str(error) == f"{folder / 'config.toml'}: {key}: {message}"


def job(**keys: object) -> str:
    """A [[jobs]] table from ``keys`` (strings quoted, lists as TOML arrays)."""
    lines = ["[[jobs]]"]
    for key, value in keys.items():
        if isinstance(value, list):
            rendered = "[" + ", ".join(f'"{v}"' for v in value) + "]"
        elif isinstance(value, str):
            rendered = f'"{value}"'
        else:
            rendered = str(value)
        lines.append(f"{key} = {rendered}")
    return "\n".join(lines) + "\n"


BASE_JOB = {
    "name": "cheese",
    "workspace": "main",
    "input": "in.jsonl",
    "model": "m",
    "endpoint": "/v1/chat/completions",
}


def without(key: str, **changes: object) -> dict[str, object]:
    """BASE_JOB minus ``key``, plus ``changes``."""
    values: dict[str, object] = {k: v for k, v in BASE_JOB.items() if k != key}
    values.update(changes)
    return values


@pytest.mark.parametrize("missing", ["name", "workspace", "model", "endpoint"])
def test_missing_required_job_keys(folder: Path, missing: str) -> None:
    """Each required job key is named when absent."""
    error = error_of(folder, WORKSPACE + job(**without(missing)))
    assert str(error) == f"{folder / 'config.toml'}: jobs[0].{missing}: missing required key"


@pytest.mark.parametrize("name", ["a b", ".", "..", "x" * 129, "a/b", "café", "-rf*"])
def test_unsafe_job_names_say_why(folder: Path, name: str) -> None:
    """A job name becomes a directory name, so it must be a safe slug."""
    error = error_of(folder, WORKSPACE + job(**without("name", name=name)))
    assert error.key == "jobs[0].name"
    assert str(error).endswith(
        f"job name {name!r} is not a safe name: it becomes a directory name, so it must be "
        "1-128 characters of letters, digits, '.', '_' or '-', and not '.' or '..'"
    )


def test_safe_names_at_the_edges(folder: Path) -> None:
    """128 characters, dots, dashes and underscores are fine."""
    name = "A.b-c_" + "9" * 122
    config = load(folder, WORKSPACE + job(**without("name", name=name)))
    assert config.jobs[0].name == name


def test_unknown_workspace_suggests_the_closest(folder: Path) -> None:
    """A job's workspace must be defined; a near miss gets a hint."""
    error = error_of(folder, WORKSPACE + job(**without("workspace", workspace="mian")))
    assert str(error).endswith("jobs[0].workspace: unknown workspace 'mian'; did you mean 'main'?")
    error = error_of(folder, WORKSPACE + job(**without("workspace", workspace="zzz")))
    assert str(error).endswith("unknown workspace 'zzz'; defined workspaces: main")


def test_endpoint_must_belong_to_the_workspace_provider(folder: Path) -> None:
    """An unknown endpoint, or another provider's, is refused with the valid list."""
    error = error_of(folder, WORKSPACE + job(**without("endpoint", endpoint="/v1/responses")))
    assert error.key == "jobs[0].endpoint"
    assert "'/v1/responses' is not a mistral batch endpoint; use one of /v1/chat/completions," in (
        str(error)
    )
    openai = "[workspaces.oa]\nprovider = 'openai'\napi_key_env = 'OPENAI_API_KEY'\n"
    config = load(folder, openai + job(**without("workspace", workspace="oa",
                                                 endpoint="/v1/responses")))  # fmt: skip
    assert config.jobs[0].endpoint == "/v1/responses"


def test_openai_metadata_limits(folder: Path) -> None:
    """OpenAI allows 16 metadata pairs, one of which the orchestrator needs."""
    openai = "[workspaces.oa]\nprovider = 'openai'\napi_key_env = 'OPENAI_API_KEY'\n"
    pairs = ", ".join(f"k{i} = 'v'" for i in range(16))
    text = openai + job(**without("workspace", workspace="oa")) + f"metadata = {{ {pairs} }}\n"
    error = error_of(folder, text)
    assert str(error).endswith("jobs[0].metadata: 16 entries; openai allows at most 15")


def test_input_and_inputs(folder: Path) -> None:
    """Exactly one of input and inputs; every file must exist, each listed once."""
    file = folder / "config.toml"
    error = error_of(folder, WORKSPACE + job(**without("input", inputs=["in.jsonl"], input="x")))
    assert str(error) == (
        f"{file}: jobs[0]: give input or inputs, not both "
        '(input = "file.jsonl", or inputs = ["a.jsonl", "b.jsonl"])'
    )
    error = error_of(folder, WORKSPACE + job(**without("input")))
    assert str(error) == (
        f"{file}: jobs[0]: missing required key: input "
        '(input = "file.jsonl", or inputs = ["a.jsonl", "b.jsonl"])'
    )
    error = error_of(folder, WORKSPACE + job(**without("input", inputs=["in.jsonl", "./in.jsonl"])))
    assert str(error) == (
        f"{file}: jobs[0].inputs[1]: {folder}/in.jsonl is listed twice (also at "
        "jobs[0].inputs[0]); list each file once"
    )
    error = error_of(folder, WORKSPACE + job(**without("input", inputs=[])))
    assert str(error) == f"{file}: jobs[0].inputs: must not be an empty array"


def test_missing_input_loads_and_is_reported_with_file_and_key(folder: Path) -> None:
    """A missing input does not fail the load; missing_inputs names file, key and path."""
    file = folder / "config.toml"
    text = (
        WORKSPACE
        + job(**without("input", inputs=["in.jsonl", "x.jsonl", "."]))
        + JOB.replace("cheese", "good")
    )
    config = load(folder, text)
    assert [spec.name for spec in config.jobs] == ["cheese", "good"]
    bad, good = config.jobs
    assert bad.inputs == (str(folder / "in.jsonl"), str(folder / "x.jsonl"), str(folder))
    errors = missing_inputs(bad, config.input_origins["cheese"])
    assert [str(e) for e in errors] == [
        f"{file}: jobs[0].inputs[1]: input file {folder}/x.jsonl does not exist",
        f"{file}: jobs[0].inputs[2]: input {folder} is not a file",
    ]
    assert missing_inputs(good, config.input_origins["good"]) == ()
    assert config.input_origins["good"] == (InputOrigin(file=str(file), key="jobs[1].input"),)
    # Without origins (a job from `submit`), the path alone is named.
    assert [str(e) for e in missing_inputs(bad)] == [
        f"input file {folder}/x.jsonl does not exist",
        f"input {folder} is not a file",
    ]
    # Created later: no longer missing (checked when it matters, not at load time).
    (folder / "x.jsonl").write_text("{}\n")
    assert len(missing_inputs(bad, config.input_origins["cheese"])) == 1


def test_duplicate_job_names_name_both_places(folder: Path) -> None:
    """Two jobs with one name: the error points at both definitions."""
    file = folder / "config.toml"
    error = error_of(folder, WORKSPACE + job(**BASE_JOB) + job(**BASE_JOB))
    assert str(error) == (
        f"{file}: jobs[1].name: job name 'cheese' is defined twice: at {file}: jobs[0] and at "
        f"{file}: jobs[1]; job names must be unique (rename one)"
    )


def test_toml_syntax_error_gives_line_and_column() -> None:
    """A TOML syntax error is a ConfigError with the file, line and column."""
    path = BAD / "syntax-error.toml"
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert str(caught.value) == (
        f"{path}: TOML syntax error at line 4, column 12: expected newline or end of document "
        "after a statement"
    )


def test_unreadable_config_files(tmp_path: Path) -> None:
    """Missing file, a folder, and non-UTF-8 bytes each get a clear message."""
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="is a folder, not a TOML config file"):
        load_config(tmp_path)
    path = tmp_path / "latin1.toml"
    path.write_bytes(b"# caf\xe9\n")
    with pytest.raises(ConfigError, match=r"not UTF-8 text \(bad byte at offset 5\)"):
        load_config(path)


def test_relative_paths_resolve_against_the_config_folder(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ledger file, results, jobs_dir, inputs and key file: relative to the file's folder."""
    monkeypatch.chdir("/")
    sub = folder / "conf"
    (sub / "jobs.d").mkdir(parents=True)
    text = (
        "[ledger]\nurl = 'sqlite+aiosqlite:///../state/ledger.db?timeout=5'\n"
        "[results]\ndir = 'out'\n[intake]\njobs_dir = 'jobs.d'\n"
        "[workspaces.main]\napi_key_file = 'secrets/key'\n"
        + job(**without("input", input="../in.jsonl"))
    )
    config = load_config(write(sub, text), environ={})
    assert config.ledger.url == f"sqlite+aiosqlite:///{folder}/state/ledger.db?timeout=5"
    assert config.results.dir == sub / "out"
    assert config.intake.jobs_dir == sub / "jobs.d"
    assert config.workspaces["main"].api_key_file == sub / "secrets" / "key"
    assert config.jobs[0].inputs == (str(folder / "in.jsonl"),)


def test_absolute_home_and_non_sqlite_paths(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Absolute paths stay; ~ is the home folder; other database URLs are untouched."""
    monkeypatch.setenv("HOME", str(folder))
    text = (
        f"[ledger]\nurl = 'sqlite:///{folder}/abs.db'\n[results]\ndir = '~/results'\n" + WORKSPACE
    )
    config = load(folder, text)
    assert config.ledger.url == f"sqlite:///{folder}/abs.db"
    assert config.results.dir == folder / "results"
    url = "postgresql+asyncpg://orch@db.example:5432/orch?ssl=require"
    assert load(folder, f"[ledger]\nurl = '{url}'\n" + WORKSPACE).ledger.url == url


def test_environment_overrides(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The four ORCH_* variables replace the file's values; relative ones use the cwd."""
    (folder / "elsewhere" / "jobs").mkdir(parents=True)
    monkeypatch.chdir(folder / "elsewhere")
    config = load(
        folder,
        "[http]\nlisten = '127.0.0.1:1'\n" + WORKSPACE,
        ORCH_LEDGER_URL="sqlite:///l.db",
        ORCH_RESULTS_DIR="res",
        ORCH_JOBS_DIR="jobs",
        ORCH_HTTP_LISTEN="[::1]:9464",
    )
    assert config.ledger.url == f"sqlite:///{folder}/elsewhere/l.db"
    assert config.results.dir == folder / "elsewhere" / "res"
    assert config.intake.jobs_dir == folder / "elsewhere" / "jobs"
    assert config.http.listen == "[::1]:9464"
    assert config.http.address() == ("::1", 9464)


def test_environment_overrides_come_from_os_environ_by_default(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without an explicit environ, os.environ is used; a password is fine there."""
    url = "postgresql://orch:hunter2@db/orch"
    monkeypatch.setenv("ORCH_LEDGER_URL", url)
    assert load_config(write(folder, WORKSPACE)).ledger.url == url


def test_empty_overrides(folder: Path) -> None:
    """Empty disables the optional features and is an error for the required ones."""
    (folder / "jobs.d").mkdir()
    text = "[intake]\njobs_dir = 'jobs.d'\n[http]\nlisten = '127.0.0.1:1'\n" + WORKSPACE
    config = load(folder, text, ORCH_JOBS_DIR="", ORCH_HTTP_LISTEN="")
    assert (config.intake.jobs_dir, config.http.listen, config.http.address()) == (
        None,
        None,
        None,
    )
    for name in ("ORCH_LEDGER_URL", "ORCH_RESULTS_DIR"):
        error = error_of(folder, WORKSPACE, **{name: " "})
        assert str(error) == f"environment: {name}: is set but empty: unset it or give a value"


def test_bad_overrides_name_the_variable(folder: Path) -> None:
    """A bad override names the variable, with file 'environment'."""
    error = error_of(folder, WORKSPACE, ORCH_HTTP_LISTEN="9464")
    assert (error.file, error.key) == ("environment", "ORCH_HTTP_LISTEN")
    error = error_of(folder, WORKSPACE, ORCH_JOBS_DIR=str(folder / "in.jsonl"))
    assert str(error) == f"environment: ORCH_JOBS_DIR: {folder}/in.jsonl is not a folder"
    error = error_of(folder, WORKSPACE, ORCH_LEDGER_URL="sqlite://")
    assert error.key == "ORCH_LEDGER_URL"


def test_override_replaces_a_bad_jobs_dir_check(folder: Path) -> None:
    """The folder actually used is the one checked."""
    text = "[intake]\njobs_dir = 'in.jsonl'\n" + WORKSPACE
    assert load(folder, text, ORCH_JOBS_DIR="").intake.jobs_dir is None


def test_api_key_from_environment(folder: Path) -> None:
    """The key is read from the named variable, stripped; missing or empty names it."""
    ws = load(folder, WORKSPACE).workspaces["main"]
    assert ws.api_key({"MISTRAL_API_KEY": " sk-1 \n"}) == "sk-1"
    file = str(folder / "config.toml")
    with pytest.raises(ConfigError) as caught:
        ws.api_key({})
    assert str(caught.value) == (
        f"{file}: workspaces.main.api_key_env: environment variable MISTRAL_API_KEY is not set: "
        "export it with the API key of workspace 'main'"
    )
    with pytest.raises(ConfigError, match="environment variable MISTRAL_API_KEY is empty"):
        ws.api_key({"MISTRAL_API_KEY": "  "})
    with pytest.raises(ConfigError, match="holds more than one line") as caught:
        ws.api_key({"MISTRAL_API_KEY": "sk-1\nsk-2"})
    assert "sk-1" not in str(caught.value)


def test_api_key_from_file(folder: Path) -> None:
    """api_key_file is read when asked, with its final newline dropped."""
    ws = load(folder, "[workspaces.main]\napi_key_file = 'key'\n").workspaces["main"]
    key_file = folder / "key"
    with pytest.raises(ConfigError) as caught:
        ws.api_key({})
    assert str(caught.value).endswith(
        f"workspaces.main.api_key_file: API key file {key_file} does not exist"
    )
    key_file.write_text("sk-from-file\n")
    assert ws.api_key({}) == "sk-from-file"
    key_file.write_text("\n")
    with pytest.raises(ConfigError, match=f"API key file {key_file} is empty"):
        ws.api_key({})
    key_file.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="it is not UTF-8 text"):
        ws.api_key({})


def test_config_values_are_frozen(folder: Path) -> None:
    """Config values cannot be changed after loading."""
    config = load(folder, WORKSPACE)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        config.polling.initial = 1.0  # type: ignore[misc]
    assert HttpConfig().address() is None


JOBS_FILE = """
[[jobs]]
name = "{name}"
workspace = "main"
input = "{input}"
model = "m"
endpoint = "/v1/embeddings"
"""


def test_jobs_file_resolves_inputs_against_its_own_folder(folder: Path) -> None:
    """A jobs_dir file's relative inputs are relative to that file."""
    jobs_dir = folder / "jobs.d"
    jobs_dir.mkdir()
    (jobs_dir / "data.jsonl").write_text("{}\n")
    config = load(folder, "[intake]\njobs_dir = 'jobs.d'\n" + WORKSPACE + JOB)
    path = write(jobs_dir, JOBS_FILE.format(name="emb", input="data.jsonl"), "a.toml")
    (spec,) = load_jobs_file(path, config)
    assert spec.inputs == (str(jobs_dir / "data.jsonl"),)
    assert spec.endpoint == "/v1/embeddings"
    assert load_jobs_file(write(jobs_dir, "", "empty.toml"), config) == ()


def test_jobs_file_errors(folder: Path) -> None:
    """Names clash with the main config (both places named); only [[jobs]] is allowed."""
    config = load(folder, WORKSPACE + JOB)
    main = folder / "config.toml"
    path = write(folder, JOBS_FILE.format(name="cheese", input="in.jsonl"), "more.toml")
    with pytest.raises(ConfigError) as caught:
        load_jobs_file(path, config)
    assert str(caught.value) == (
        f"{path}: jobs[0].name: job name 'cheese' is defined twice: at {main}: jobs[0] and at "
        f"{path}: jobs[0]; job names must be unique (rename one)"
    )
    path = write(folder, "[polling]\ninitial = '1s'\n", "wrong.toml")
    with pytest.raises(ConfigError) as caught:
        load_jobs_file(path, config)
    assert str(caught.value) == (
        f"{path}: polling: unknown key 'polling': it belongs in the main config {main}"
    )
    path = write(folder, JOBS_FILE.format(name="x", input="in.jsonl") + "colour = 1\n", "j.toml")
    with pytest.raises(ConfigError, match=r"jobs\[0\].colour: unknown key 'colour'"):
        load_jobs_file(path, config)


def test_load_jobs_dir_skips_bad_files_and_catches_cross_file_duplicates(folder: Path) -> None:
    """Good files count, a bad file adds no job, a repeated name names the first file."""
    jobs_dir = folder / "jobs.d"
    jobs_dir.mkdir()
    config = load(folder, "[intake]\njobs_dir = 'jobs.d'\n" + WORKSPACE)
    first = write(jobs_dir, JOBS_FILE.format(name="a", input="../in.jsonl"), "1.toml")
    second = write(
        jobs_dir,
        JOBS_FILE.format(name="b", input="../in.jsonl") + JOBS_FILE.format(name="a", input="x"),
        "2.toml",
    )
    write(jobs_dir, JOBS_FILE.format(name="c", input="../in.jsonl"), "3.toml")
    write(jobs_dir, "not toml at all", ".hidden.toml")
    write(jobs_dir, "ignored", "notes.txt")
    scan = load_jobs_dir(config)
    assert [spec.name for spec in scan.jobs] == ["a", "c"]
    assert scan.files == (first, second, jobs_dir / "3.toml")
    (error,) = scan.errors
    assert error.file == str(second)
    assert error.key == "jobs[1].name"  # a missing input ("x") is intake's business
    assert scan.input_origins == {
        "a": (InputOrigin(file=str(first), key="jobs[0].input"),),
        "c": (InputOrigin(file=str(jobs_dir / "3.toml"), key="jobs[0].input"),),
    }
    write(jobs_dir, JOBS_FILE.format(name="a", input="../in.jsonl"), "2.toml")
    (error,) = load_jobs_dir(config).errors
    assert str(error) == (
        f"{second}: jobs[0].name: job name 'a' is defined twice: at {first}: jobs[0] and at "
        f"{second}: jobs[0]; job names must be unique (rename one)"
    )


def test_load_jobs_dir_without_a_folder(folder: Path) -> None:
    """No jobs_dir: nothing; a missing folder: one error saying so."""
    assert load_jobs_dir(load(folder, WORKSPACE)).jobs == ()
    config = load(folder, "[intake]\njobs_dir = 'later'\n" + WORKSPACE)
    (error,) = load_jobs_dir(config).errors
    assert error.key == "intake.jobs_dir"
    assert "does not exist" in str(error)


def test_token_budgets_one_for_every_model_and_per_model(folder: Path) -> None:
    """token_budget is every model's, [....token_budgets] overrides it per model."""
    config = load(
        folder,
        WORKSPACE
        + 'token_budget = 2_000_000\n[workspaces.main.token_budgets]\n"gpt-4o" = 90_000\n',
    )
    ws = config.workspaces["main"]
    assert (ws.token_budget, dict(ws.token_budgets)) == (2_000_000, {"gpt-4o": 90_000})
    assert (ws.token_budget_for("gpt-4o"), ws.token_budget_for("o3")) == (90_000, 2_000_000)
    assert load(folder, WORKSPACE).workspaces["main"].token_budget_for("gpt-4o") is None


@pytest.mark.parametrize(
    ("toml", "key", "message"),
    [
        ("token_budget = 0", "workspaces.main.token_budget", "must be at least 1, got 0"),
        ("token_budget = '2M'", "workspaces.main.token_budget", "expected an integer, got '2M'"),
        ("token_budgets = 5", "workspaces.main.token_budgets", "expected a table, got 5"),
        (
            '[workspaces.main.token_budgets]\n"gpt-4o" = -1',
            "workspaces.main.token_budgets.gpt-4o",
            "must be at least 1, got -1",
        ),
        (
            '[workspaces.main.token_budgets]\n"" = 5',
            'workspaces.main.token_budgets.""',
            "a model name must not be empty",
        ),
    ],
)
def test_token_budget_errors(folder: Path, toml: str, key: str, message: str) -> None:
    """Bad token budgets name the file and the dotted key."""
    error = error_of(folder, WORKSPACE + toml)
    assert str(error) == f"{folder / 'config.toml'}: {key}: {message}"


def test_openai_workspaces_split_by_default(folder: Path) -> None:
    """An OpenAI workspace splits at 50,000 (or its smaller budget); 0 turns splitting off."""
    openai = WORKSPACE + 'provider = "openai"\n'
    assert load(folder, openai).workspaces["main"].split_requests == 50_000
    small = load(folder, openai + "pending_budget = 20_000\n")
    assert small.workspaces["main"].split_requests == 20_000
    assert load(folder, openai + "split_requests = 0\n").workspaces["main"].split_requests is None
    assert load(folder, WORKSPACE).workspaces["main"].split_requests is None
