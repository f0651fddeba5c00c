"""Reading ``[[jobs]]`` tables (main config and ``jobs_dir`` files) into :class:`JobSpec`.

A private helper of :mod:`orchestrator.config`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from orchestrator.config._model import InputOrigin
from orchestrator.config._read import Section, describe, resolve_path, suggestion
from orchestrator.errors import ConfigError
from orchestrator.inputs import rules_for
from orchestrator.model import CLIENT_TOKEN_KEY, JOB_NAME_RULE, JobSpec, is_safe_job_name
from orchestrator.retries import MAX_ATTEMPTS_LIMIT

NAME_RULE = JOB_NAME_RULE
"""What a safe job or workspace name is (it becomes a directory name)."""

_INT32 = 2**31 - 1  # priorities are stored in a 32-bit integer column

JOB_KEYS = frozenset(
    {
        "name",
        "workspace",
        "input",
        "inputs",
        "model",
        "endpoint",
        "metadata",
        "timeout_hours",
        "priority",
        "split_requests",
        "max_attempts",
    }
)

_METADATA_LIMITS: Mapping[str, tuple[int, int, int | None]] = {
    "mistral": (32, 512, None),
    "openai": (64, 512, 15),  # OpenAI allows 16 pairs; the orchestrator adds one
    # A Message Batch has no metadata: it stays in the ledger and job.json, never sent.
    "anthropic": (64, 512, None),
}
"""Per provider: longest metadata key, longest value, most pairs the operator may set."""


def check_name(table: Section, name: str, value: str, what: str) -> str:
    """Refuse a name that is not a safe directory name."""
    if not is_safe_job_name(value):
        raise table.error(
            name,
            f"{what} {value!r} is not a safe name: it becomes a directory name, so it must be "
            f"{NAME_RULE}",
        )
    return value


def split_too_large(split: int, budget: int) -> str:
    """The error for a part size larger than the workspace's budget (a part could never fit)."""
    return (
        f"{split:,} is more than the workspace's pending_budget ({budget:,}): a part that "
        "large could never be admitted; use at most the budget (5-10 % of it keeps the "
        "budget full)"
    )


def parse_job(
    table: Section,
    base: Path,
    providers: Mapping[str, str],
    budgets: Mapping[str, int] | None = None,
) -> JobSpec:
    """One ``[[jobs]]`` table; ``providers`` maps each workspace name to its provider.

    ``budgets`` maps each workspace name to its pending budget: a job's ``split_requests``
    must not exceed it (unchecked without it).

    Raises:
        ConfigError: the first problem, named by file and ``jobs[i].key``.
    """
    table.only(JOB_KEYS)
    name = check_name(table, "name", table.string("name"), "job name")
    workspace_name = table.string("workspace")
    provider = providers.get(workspace_name)
    if provider is None:
        raise table.error(
            "workspace",
            f"unknown workspace {workspace_name!r}"
            + suggestion(workspace_name, providers, noun="defined workspaces"),
        )
    endpoint = table.string("endpoint")
    allowed = rules_for(provider).endpoints
    if endpoint not in allowed:
        raise table.error(
            "endpoint",
            f"{endpoint!r} is not a {provider} batch endpoint; use one of " + ", ".join(allowed),
        )
    return JobSpec(
        name=name,
        workspace=workspace_name,
        model=table.string("model"),
        endpoint=endpoint,
        inputs=_inputs(table, base),
        metadata=_metadata(table, provider),
        timeout_hours=table.integer("timeout_hours", 24, low=1, high=168),
        priority=table.integer("priority", 0, low=-_INT32 - 1, high=_INT32),
        split_requests=_split_requests(table, (budgets or {}).get(workspace_name)),
        max_attempts=(
            table.integer("max_attempts", low=1, high=MAX_ATTEMPTS_LIMIT)
            if table.has("max_attempts")
            else None
        ),
    )


def _split_requests(table: Section, budget: int | None) -> int | None:
    """The job's ``split_requests``: None when absent, 0 to disable splitting."""
    if not table.has("split_requests"):
        return None
    split = table.integer("split_requests", low=0)
    if budget is not None and split > budget:
        raise table.error("split_requests", split_too_large(split, budget))
    return split


def _inputs(table: Section, base: Path) -> tuple[str, ...]:
    """The job's input paths, absolute; each file listed once.

    Whether the files exist is not checked here: a missing input must not stop the daemon
    from starting. Intake rejects that one job (see :func:`missing_inputs`), and
    ``check-config`` reports it.
    """
    paths: dict[str, str] = {}
    for key, value in _input_entries(table):
        path = resolve_path(value, base)
        where = f"{table.path}.{key}"
        if str(path) in paths:
            raise ConfigError(
                f"{path} is listed twice (also at {paths[str(path)]}); list each file once",
                file=table.file,
                key=where,
            )
        paths[str(path)] = where
    return tuple(paths)


def _input_entries(table: Section) -> list[tuple[str, str]]:
    """``(key, value)`` of each input as written: ``input`` or ``inputs[i]``."""
    if table.has("input") == table.has("inputs"):
        both = table.has("input")
        raise table.error(
            None,
            ("give input or inputs, not both" if both else "missing required key: input")
            + ' (input = "file.jsonl", or inputs = ["a.jsonl", "b.jsonl"])',
        )
    if table.has("input"):
        return [("input", table.string("input"))]
    return [(f"inputs[{i}]", v) for i, v in enumerate(table.strings("inputs"))]


def input_origins(table: Section) -> tuple[InputOrigin, ...]:
    """The origin of each input of a ``[[jobs]]`` table (already read by :func:`parse_job`)."""
    return tuple(
        InputOrigin(file=table.file, key=f"{table.path}.{key}" if table.path else key)
        for key, _ in _input_entries(table)
    )


def missing_inputs(spec: JobSpec, origins: Sequence[InputOrigin] = ()) -> tuple[ConfigError, ...]:
    """The inputs of ``spec`` that do not exist now, or are not files.

    Checked when it matters (intake, ``check-config``), not when the config is loaded: the
    file may be created after the daemon starts.

    Args:
        spec: The job.
        origins: Where each input is written, aligned with ``spec.inputs``; without them the
            errors name only the path.

    Returns:
        One :class:`ConfigError` per bad input, naming the file and key where it is written
        and the path, e.g. ``config.toml: jobs[0].input: input file /data/x.jsonl does not
        exist``; empty when every input is a file.
    """
    problems = []
    for index, path in enumerate(spec.inputs):
        origin = (
            origins[index] if len(origins) == len(spec.inputs) else InputOrigin(file=None, key=None)
        )
        try:
            is_file = Path(path).is_file()
            exists = is_file or Path(path).exists()
        except OSError as exc:  # e.g. a path through a file, or too long
            problems.append(
                ConfigError(
                    f"cannot use input {path}: {exc.strerror}", file=origin.file, key=origin.key
                )
            )
            continue
        if not exists:
            problem = f"input file {path} does not exist"
        elif not is_file:
            problem = f"input {path} is not a file"
        else:
            continue
        problems.append(ConfigError(problem, file=origin.file, key=origin.key))
    return tuple(problems)


def _metadata(table: Section, provider: str) -> dict[str, str]:
    if not table.has("metadata"):
        return {}
    section = table.table("metadata")
    max_key, max_value, max_pairs = _METADATA_LIMITS[provider]
    if max_pairs is not None and len(section.data) > max_pairs:
        raise table.error(
            "metadata", f"{len(section.data)} entries; {provider} allows at most {max_pairs}"
        )
    metadata = {}
    for key, value in section.data.items():
        if key == CLIENT_TOKEN_KEY:
            raise section.error(
                key,
                f"{key!r} is reserved: the orchestrator sets it to the ledger's job token "
                "(crash recovery finds the remote job by it); use another key",
            )
        if not 1 <= len(key) <= max_key:
            raise section.error(
                key, f"metadata keys must be 1-{max_key} characters for {provider}, got {len(key)}"
            )
        if not isinstance(value, str):
            raise section.error(key, f"expected a string, got {describe(value)}")
        if not 1 <= len(value) <= max_value:
            raise section.error(
                key,
                f"metadata values must be 1-{max_value} characters for {provider}, "
                f"got {len(value)}",
            )
        metadata[key] = value
    return metadata


def claim_name(spec: JobSpec, table: Section, origins: dict[str, str], here: str) -> None:
    """Record where ``spec`` is defined; a name defined twice names both places."""
    first = origins.setdefault(spec.name, here)
    if first != here:
        raise table.error(
            "name",
            f"job name {spec.name!r} is defined twice: at {first} and at {here}; "
            "job names must be unique (rename one)",
        )


SUBMIT = "orchestrator submit"
"""The ``file`` named in errors about ``submit``'s flags."""

_FLAGS = {
    "name": "--name",
    "workspace": "--workspace",
    "inputs": "--input",
    "model": "--model",
    "endpoint": "--endpoint",
    "metadata": "--metadata",
    "timeout_hours": "--timeout-hours",
    "priority": "--priority",
}


def job_from_flags(
    *,
    name: str,
    workspace: str | None,
    inputs: Sequence[str],
    model: str,
    endpoint: str,
    metadata: Sequence[str],
    timeout_hours: int,
    priority: int,
    base: Path,
    providers: Mapping[str, str],
) -> JobSpec:
    """The job ``orchestrator submit`` describes, checked exactly like a ``[[jobs]]`` table.

    Args:
        name, workspace, model, endpoint, timeout_hours, priority: The flags' values;
            ``workspace`` may be None when the config defines exactly one.
        inputs: The ``--input`` paths; relative ones resolve against ``base``.
        metadata: ``KEY=VALUE`` strings.
        base: The current directory.
        providers: Each workspace of the config and its provider.

    Raises:
        ConfigError: the first bad flag, named as ``orchestrator submit: --flag: ...``.
    """
    if workspace is None:
        if len(providers) != 1:
            raise ConfigError(
                "required: the config defines several workspaces ("
                + ", ".join(sorted(providers))
                + "): say which one runs the job",
                file=SUBMIT,
                key="--workspace",
            )
        workspace = next(iter(providers))
    labels: dict[str, str] = {}
    for item in metadata:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"expected KEY=VALUE, got {describe(item)}", file=SUBMIT, key="--metadata"
            )
        key = key.strip()
        if key in labels:
            raise ConfigError(
                f"key {key!r} is given twice; give each key once", file=SUBMIT, key="--metadata"
            )
        labels[key] = value
    table: dict[str, object] = {
        "name": name,
        "workspace": workspace,
        "inputs": list(inputs),
        "model": model,
        "endpoint": endpoint,
        "timeout_hours": timeout_hours,
        "priority": priority,
    }
    if labels:
        table["metadata"] = labels
    try:
        return parse_job(Section(table, file=SUBMIT), base, providers)
    except ConfigError as exc:
        raise _as_flag_error(exc) from None


def _as_flag_error(exc: ConfigError) -> ConfigError:
    """``exc`` with its TOML key replaced by the flag it came from."""
    key = exc.key or ""
    head = re.split(r"[.\[]", key, maxsplit=1)[0]
    flag = _FLAGS.get(head)
    if flag is None:
        return exc
    prefix = ": ".join(part for part in (exc.file, exc.key) if part) + ": "
    message = str(exc).removeprefix(prefix)
    if head == "metadata" and "." in key:
        message = f"{key.split('.', 1)[1]}: {message}"
    return ConfigError(message, file=SUBMIT, key=flag)


DEFINITION_KEYS = JOB_KEYS - {"input", "inputs"}
"""The keys of a job definition sent to ``POST /api/jobs`` (its inputs come as file parts)."""


def job_from_definition(
    definition: Mapping[str, object],
    inputs: Sequence[str],
    *,
    file: str,
    providers: Mapping[str, str],
    budgets: Mapping[str, int] | None = None,
) -> JobSpec:
    """The job a JSON definition describes, checked exactly like a ``[[jobs]]`` table.

    Args:
        definition: The keys of a ``[[jobs]]`` table but ``input``/``inputs``; ``workspace``
            may be left out when the config defines exactly one.
        inputs: The paths the uploaded inputs were stored at (absolute).
        file: What errors name as the file (e.g. ``POST /api/jobs: definition``).
        providers: Each workspace of the config and its provider.
        budgets: Each workspace's pending budget (``split_requests`` must not exceed it).

    Raises:
        ConfigError: the first problem, named by ``file`` and key.
    """
    table = Section(dict(definition), file=file)
    for key in ("input", "inputs"):
        if key in definition:
            raise table.error(
                key, "the inputs are sent as file parts named 'input', not in the definition"
            )
    table.only(DEFINITION_KEYS)
    data = dict(definition)
    if "workspace" not in data and len(providers) == 1:
        data["workspace"] = next(iter(providers))
    data["inputs"] = list(inputs)
    return parse_job(Section(data, file=file), Path("/"), providers, budgets)
