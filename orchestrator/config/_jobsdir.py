"""Reading ``intake.jobs_dir``: job files of ``[[jobs]]`` tables, next to the main config.

A private helper of :mod:`orchestrator.config` (which re-exports its public names).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import attrs

from orchestrator.config._jobs import claim_name, input_origins, parse_job
from orchestrator.config._model import TOP_KEYS, Config, InputOrigin
from orchestrator.config._read import Section, read_toml
from orchestrator.errors import ConfigError
from orchestrator.model import JobSpec


def load_jobs_file(path: Path, config: Config) -> tuple[JobSpec, ...]:
    """Read one ``jobs_dir/*.toml`` file: ``[[jobs]]`` tables and nothing else.

    Relative input paths resolve against this file's folder. Names must be unique within the
    file and must not repeat a job of the main config.

    Args:
        path: The jobs file.
        config: The loaded configuration (its workspaces and jobs).

    Returns:
        The file's jobs, in order (possibly none).

    Raises:
        ConfigError: as for :func:`load_config`, named by this file and ``jobs[i]`` keys.
    """
    path = Path(os.path.abspath(Path(path).expanduser()))
    file = str(path)
    root = Section(read_toml(path), file=file)
    origins = {
        spec.name: config.job_origins.get(spec.name, f"{config.path}: [[jobs]]")
        for spec in config.jobs
    }
    return _jobs_of(root, config, origins, {})


@attrs.frozen(kw_only=True)
class JobsDirScan:
    """What :func:`load_jobs_dir` found: the good files' jobs and the bad files' errors."""

    jobs: tuple[JobSpec, ...] = ()
    errors: tuple[ConfigError, ...] = ()
    files: tuple[Path, ...] = ()
    """The files read, in order (including those with errors)."""
    input_origins: Mapping[str, tuple[InputOrigin, ...]] = attrs.field(factory=dict)
    """Job name -> where each of its inputs is written."""


def load_jobs_dir(config: Config) -> JobsDirScan:
    """Read every ``intake.jobs_dir/*.toml`` file, in name order.

    Hidden files (``.name.toml``, e.g. editor locks) are skipped. A file with any error adds
    no job, so a half-edited file never submits half its jobs; its error is listed and the
    other files still count. Names must be unique over the main config and all the files: a
    file that repeats a name is an error naming both places.

    Returns:
        The jobs and errors; empty when ``jobs_dir`` is not set, one error when the folder
        does not exist or cannot be listed.
    """
    folder = config.intake.jobs_dir
    if folder is None:
        return JobsDirScan()
    if not folder.is_dir():
        error = ConfigError(
            f"jobs folder {folder} does not exist (or is not a folder): create it",
            file=str(config.path),
            key="intake.jobs_dir",
        )
        return JobsDirScan(errors=(error,))
    try:
        files = sorted(p for p in folder.glob("*.toml") if not p.name.startswith("."))
    except OSError as exc:
        error = ConfigError(
            f"cannot list {folder}: {exc.strerror}", file=str(config.path), key="intake.jobs_dir"
        )
        return JobsDirScan(errors=(error,))
    origins = {
        spec.name: config.job_origins.get(spec.name, f"{config.path}: [[jobs]]")
        for spec in config.jobs
    }
    jobs: list[JobSpec] = []
    errors: list[ConfigError] = []
    inputs: dict[str, tuple[InputOrigin, ...]] = {}
    for path in files:
        claimed = dict(origins)
        try:
            root = Section(read_toml(path), file=str(path))
            jobs.extend(_jobs_of(root, config, claimed, inputs))
        except ConfigError as exc:
            errors.append(exc)
        else:
            origins = claimed
    return JobsDirScan(
        jobs=tuple(jobs), errors=tuple(errors), files=tuple(files), input_origins=inputs
    )


def _jobs_of(
    root: Section,
    config: Config,
    origins: dict[str, str],
    inputs: dict[str, tuple[InputOrigin, ...]],
) -> tuple[JobSpec, ...]:
    """The ``[[jobs]]`` of a jobs file, claiming their names in ``origins``.

    ``inputs`` receives where each job's inputs are written, once the whole file is good.
    """
    for name in root.data:
        if name != "jobs":
            where = (
                f"it belongs in the main config {config.path}"
                if name in TOP_KEYS
                else "a jobs file holds only [[jobs]] tables"
            )
            raise root.error(name, f"unknown key {name!r}: {where}")
    providers = {name: ws.provider for name, ws in config.workspaces.items()}
    budgets = {name: ws.pending_budget for name, ws in config.workspaces.items()}
    base = Path(root.file).parent
    jobs = []
    found: dict[str, tuple[InputOrigin, ...]] = {}
    for index, table in root.tables("jobs"):
        spec = parse_job(table, base, providers, budgets)
        claim_name(spec, table, origins, f"{root.file}: jobs[{index}]")
        jobs.append(spec)
        found[spec.name] = input_origins(table)
    inputs.update(found)
    return tuple(jobs)
