"""Fuzzing the validators: whatever the TOML or JSONL, only the documented errors come out.

- ``load_config`` (and ``load_jobs_file``, and reading a workspace's API key) on TOML documents
  generated from the config's own schema: every known key, with values of every TOML type
  (meaningful ones like durations, URLs and paths among them), unknown keys, and hostile
  strings (NUL, surrogates, ``..``), plus raw byte mutations of a valid config and fuzzed
  ``ORCH_*`` overrides. They return a config or raise :class:`ConfigError`, nothing else.
- ``validate_inputs`` on byte-level mutations of a valid JSONL file (flipped, inserted and
  deleted bytes, special bytes such as NUL, CR, BOM, invalid UTF-8, cut lines, duplicated
  lines) for every endpoint: a summary or :class:`InputError`, nothing else. (Line-level
  generation lives in ``tests/unit/test_inputs.py``.)

CI tries 250 of each; the soak versions 3,000.
"""

from __future__ import annotations

import contextlib
import json
import math
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.config import load_config, load_jobs_file
from orchestrator.errors import ConfigError, InputError
from orchestrator.inputs import ENDPOINTS, InputLimits, validate_inputs
from tests.survival.settings import report

FUZZ = settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FUZZ_SOAK = settings(FUZZ, max_examples=3000)
REPO = Path(__file__).resolve().parents[2]
TRIED: Counter[str] = Counter()


@pytest.fixture(scope="module", autouse=True)
def _report_figures() -> Iterator[None]:
    """Publish how many documents and files the fuzzers of this module tried."""
    yield
    if TRIED:
        report("fuzz", dict(TRIED))


# TOML generation -----------------------------------------------------------------------------

SCHEMA: Mapping[str, tuple[str, ...]] = {
    "ledger": ("url",),
    "results": ("dir",),
    "polling": ("initial", "max", "factor", "jitter"),
    "intake": ("jobs_dir", "rescan_interval"),
    "http": ("listen",),
    "emulator": ("time_scale", "throughput", "validation_seconds", "failure_fraction", "seed"),
    "daemon": ("grace_period", "reconcile_grace"),
}
WORKSPACE_KEYS = (
    "provider", "base_url", "api_key_env", "api_key_file", "pending_budget", "count_external",
)  # fmt: skip
JOB_KEYS = (
    "name", "workspace", "input", "inputs", "model", "endpoint", "metadata", "timeout_hours",
    "priority",
)  # fmt: skip
MEANINGFUL = (
    "5s", "250ms", "1h30m", "1.5h", "-1s", "0", "10m", "1d", "", " ", "embedded", "mistral",
    "openai", "http://127.0.0.1:1", "https://api.mistral.ai/v1", "http://user:pw@host",
    "sqlite:///var/ledger.db", "sqlite://", "sqlite:///:memory:", "postgresql://u:p@h/db",
    "../escape", "/", ".", "..", "~", "a/../../b", "data/in.jsonl", "/v1/chat/completions",
    "/v1/embeddings", "main", "127.0.0.1:9464", "[::1]:9464", ":99999", "host:",
    "MISTRAL_API_KEY", "1BAD", "orchestrator_job_id", "x" * 200, "a\x00b", "\ud800", "é",
)  # fmt: skip

scalars = st.one_of(
    st.sampled_from(MEANINGFUL),
    st.text(max_size=12),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(),
    st.booleans(),
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)),
)
keys = st.one_of(st.sampled_from(JOB_KEYS + WORKSPACE_KEYS + ("url", "dir")), st.text(max_size=8))
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
    max_leaves=6,
)
durations = st.sampled_from(["5s", "250ms", "1m", "1h30m", "1.5h", 3, 0.5, "10m"])
fractions = st.floats(min_value=0.0, max_value=2.0)
PLAUSIBLE: Mapping[str, st.SearchStrategy[Any]] = {
    "url": st.sampled_from(["sqlite:///var/ledger.db", "sqlite:////tmp/l.db", "postgresql://h/d"]),
    "dir": st.sampled_from(["var/results", "/tmp/results", "~/r"]),
    "initial": durations,
    "max": durations,
    "factor": fractions,
    "jitter": fractions,
    "jobs_dir": st.sampled_from(["jobs.d", "."]),
    "rescan_interval": durations,
    "listen": st.sampled_from(["127.0.0.1:9464", "[::1]:1", "localhost:0"]),
    "time_scale": fractions,
    "throughput": fractions,
    "validation_seconds": durations,
    "failure_fraction": fractions,
    "seed": st.integers(min_value=0, max_value=100),
    "grace_period": durations,
    "reconcile_grace": durations,
    "provider": st.sampled_from(["mistral", "openai"]),
    "base_url": st.sampled_from(["embedded", "http://127.0.0.1:1", "https://api.mistral.ai"]),
    "api_key_env": st.just("MISTRAL_API_KEY"),
    "api_key_file": st.just("key.txt"),
    "pending_budget": st.integers(min_value=1, max_value=10**6),
    "count_external": st.booleans(),
    "name": st.sampled_from(["a", "job-1", "b.c", "x_y"]),
    "workspace": st.just("main"),
    "input": st.just("data/in.jsonl"),
    "inputs": st.lists(st.sampled_from(["data/in.jsonl", "data/two.jsonl"]), max_size=2),
    "model": st.just("mistral-small-latest"),
    "endpoint": st.sampled_from(ENDPOINTS),
    "metadata": st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=2),
    "timeout_hours": st.integers(min_value=0, max_value=200),
    "priority": st.integers(min_value=-3, max_value=3),
}
"""A plausible value per known key: documents get past the first check and reach the deep ones."""


def _table(known: tuple[str, ...]) -> st.SearchStrategy[dict[str, Any]]:
    """A table with some of its known keys (mostly plausible values) and rarely a stranger."""
    optional = {key: st.one_of(PLAUSIBLE[key], PLAUSIBLE[key], values) for key in known}
    tables = st.fixed_dictionaries({}, optional=optional)
    strangers = st.dictionaries(keys, values, min_size=1, max_size=1)
    return st.one_of(tables, tables, tables, st.builds(lambda t, s: {**t, **s}, tables, strangers))


workspace = st.builds(
    lambda required, rest: {**rest, **required},
    st.fixed_dictionaries(
        {"base_url": PLAUSIBLE["base_url"], "api_key_env": PLAUSIBLE["api_key_env"]}
    ),
    _table(WORKSPACE_KEYS),
)
documents = st.fixed_dictionaries(
    {
        "workspaces": st.one_of(
            st.dictionaries(st.sampled_from(["main", "local"]), workspace, min_size=1, max_size=2),
            st.dictionaries(st.sampled_from(["a b", "", "../x"]) | st.text(max_size=6), values),
        ),
    },
    optional={
        **{name: _table(known) for name, known in SCHEMA.items()},
        "jobs": st.lists(_table(JOB_KEYS), max_size=3) | values,
    },
)


def _key(key: str) -> str:
    return json.dumps(key, ensure_ascii=False)


def _value(value: Any) -> str:
    """A TOML rendering (inline tables and arrays; strings as JSON strings, which TOML reads
    the same way; a lone surrogate or a DEL makes the document invalid TOML: fine too)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(type(value))


def to_toml(document: Mapping[str, Any]) -> str:
    """``document`` as TOML: tables as ``[name]`` sections, lists of tables as ``[[jobs]]``."""
    lines = []
    for name, value in document.items():
        if isinstance(value, dict) and name != "workspaces":
            lines.append(f"[{_key(name)}]")
            lines += [f"{_key(k)} = {_value(v)}" for k, v in value.items()]
        elif name == "jobs" and isinstance(value, list) and all(isinstance(v, dict) for v in value):
            for table in value:
                lines.append("[[jobs]]")
                lines += [f"{_key(k)} = {_value(v)}" for k, v in table.items()]
        else:
            lines.insert(0, f"{_key(name)} = {_value(value)}")
    return "\n".join(lines) + "\n"


def _load_everything(path: Path, environ: Mapping[str, str]) -> None:
    """Load the config, each workspace's key and a jobs file: ConfigError is the only way out."""
    TRIED["config_documents"] += 1
    try:
        config = load_config(path, environ=environ)
    except ConfigError:
        TRIED["config_errors"] += 1
    else:
        for workspace in config.workspaces.values():
            with contextlib.suppress(ConfigError):
                workspace.api_key(environ)
        with contextlib.suppress(ConfigError):
            load_jobs_file(path, config)


def _check_document(document: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.toml"
        path.write_text(to_toml(document), encoding="utf-8", errors="surrogatepass")
        _load_everything(path, {"MISTRAL_API_KEY": "k" * 20})


@FUZZ
@given(document=documents)
def test_generated_config_documents_raise_only_config_error(document: dict[str, Any]) -> None:
    """Schema-shaped TOML with any values: a Config or a ConfigError, never anything else."""
    _check_document(document)


@pytest.mark.soak
@FUZZ_SOAK
@given(document=documents)
def test_generated_config_documents_soak(document: dict[str, Any]) -> None:
    """The long version: 3,000 generated documents."""
    _check_document(document)


EXAMPLE = (REPO / "config" / "example.toml").read_bytes()
mutations = st.lists(
    st.tuples(
        st.sampled_from(["insert", "delete", "replace"]),
        st.integers(min_value=0, max_value=len(EXAMPLE)),
        st.sampled_from([b"\x00", b"\xff", b"\r", b"\n", b"[", b"]", b'"', b"=", b"#", b"\\"])
        | st.binary(min_size=1, max_size=4),
    ),
    min_size=1,
    max_size=6,
)


def mutate(data: bytes, edits: list[tuple[str, int, bytes]]) -> bytes:
    """Apply byte edits (positions wrap around the current length)."""
    for kind, position, chunk in edits:
        at = position % (len(data) + 1)
        if kind == "insert":
            data = data[:at] + chunk + data[at:]
        elif kind == "delete":
            data = data[:at] + data[at + len(chunk) :]
        else:
            data = data[:at] + chunk + data[at + len(chunk) :]
    return data


overrides = st.dictionaries(
    st.sampled_from(["ORCH_LEDGER_URL", "ORCH_RESULTS_DIR", "ORCH_JOBS_DIR", "ORCH_HTTP_LISTEN"]),
    st.sampled_from(MEANINGFUL) | st.text(max_size=10),
    max_size=2,
)


def _check_mutated_config(edits: list[tuple[str, int, bytes]], environ: dict[str, str]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.toml"
        path.write_bytes(mutate(EXAMPLE, edits))
        _load_everything(path, {"MISTRAL_API_KEY": "k" * 20, **environ})


@FUZZ
@given(edits=mutations, environ=overrides)
def test_mutated_example_config_raises_only_config_error(
    edits: list[tuple[str, int, bytes]], environ: dict[str, str]
) -> None:
    """config/example.toml with bytes flipped, and odd ORCH_* overrides: only ConfigError."""
    _check_mutated_config(edits, environ)


@pytest.mark.soak
@FUZZ_SOAK
@given(edits=mutations, environ=overrides)
def test_mutated_example_config_soak(
    edits: list[tuple[str, int, bytes]], environ: dict[str, str]
) -> None:
    """The long version: 3,000 mutated configs."""
    _check_mutated_config(edits, environ)


GOOD_JSONL = b"".join(
    json.dumps(
        {"custom_id": f"r{i}", "body": {"messages": [{"role": "user", "content": f"q {i} é"}]}}
    ).encode()
    + b"\n"
    for i in range(6)
)
SPECIAL = [b"\x00", b"\r", b"\n", b"\r\n", b"\xef\xbb\xbf", b"\xff", b"\xc3", b"{", b"}", b'"']


jsonl_edits = st.lists(
    st.tuples(
        st.sampled_from(["insert", "delete", "replace"]),
        st.integers(min_value=0, max_value=len(GOOD_JSONL)),
        st.sampled_from(SPECIAL) | st.binary(min_size=1, max_size=3),
    ),
    max_size=5,
)
cuts = st.none() | st.integers(min_value=0, max_value=len(GOOD_JSONL))
repeats = st.integers(min_value=0, max_value=2)
endpoints = st.sampled_from(ENDPOINTS)
request_limits = st.sampled_from([3, 1_000_000])


def _check_jsonl(
    edits: list[tuple[str, int, bytes]], cut: int | None, repeat: int, endpoint: str, limit: int
) -> None:
    data = mutate(GOOD_JSONL, edits)
    if cut is not None:
        data = data[:cut]
    data += GOOD_JSONL.splitlines(keepends=True)[0] * repeat  # duplicated custom_ids
    TRIED["jsonl_files"] += 1
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "in.jsonl"
        path.write_bytes(data)
        try:
            summaries = validate_inputs(
                [path], endpoint=endpoint, limits=InputLimits(max_requests=limit)
            )
        except InputError as exc:
            TRIED["jsonl_rejected"] += 1
            assert "the job is rejected" in exc.summary or "unknown endpoint" in exc.summary
            return
        assert summaries[0].bytes == len(data)


@FUZZ
@given(edits=jsonl_edits, cut=cuts, repeat=repeats, endpoint=endpoints, limit=request_limits)
def test_mutated_jsonl_raises_only_input_error(
    edits: list[tuple[str, int, bytes]], cut: int | None, repeat: int, endpoint: str, limit: int
) -> None:
    """A valid JSONL file mutated byte by byte: a summary or an InputError, nothing else."""
    _check_jsonl(edits, cut, repeat, endpoint, limit)


@pytest.mark.soak
@FUZZ_SOAK
@given(edits=jsonl_edits, cut=cuts, repeat=repeats, endpoint=endpoints, limit=request_limits)
def test_mutated_jsonl_soak(
    edits: list[tuple[str, int, bytes]], cut: int | None, repeat: int, endpoint: str, limit: int
) -> None:
    """The long version: 3,000 mutated files."""
    _check_jsonl(edits, cut, repeat, endpoint, limit)
