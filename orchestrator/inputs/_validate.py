"""Validating a job's input files against its provider's dialect. Pure.

A private module of :mod:`orchestrator.inputs`, which describes the scan.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from orchestrator.errors import InputError
from orchestrator.inputs._registry import ENDPOINTS, rules_of_endpoint
from orchestrator.inputs._scan import InputLimits, InputSummary, _Scan
from orchestrator.inputs.dialect import LineRules


def validate_input(
    path: str | os.PathLike[str],
    *,
    endpoint: str,
    limits: InputLimits | None = None,
    rules: LineRules | None = None,
    model: str | None = None,
) -> InputSummary:
    """Validate one JSONL input file in one streaming pass.

    Args:
        path: The file to read.
        endpoint: The batch endpoint the requests are for, e.g. ``/v1/chat/completions``; it
            decides which ``body`` keys are required.
        limits: File size, request count and how many problems to list (default: the
            dialect's, see :meth:`InputLimits.of`).
        rules: The provider's dialect (see :func:`rules_for`); default: the first registered
            dialect that accepts ``endpoint``.
        model: The job's model, for a dialect that checks a line's own (OpenAI's
            ``body.model``); None checks none.

    Returns:
        The file's request count, size, sha256 and prompt-token estimate.

    Raises:
        InputError: the endpoint is unknown, the file cannot be read, is empty, too large,
            holds too many requests, or has invalid lines. ``problems`` lists up to
            ``limits.max_problems`` entries ``file:line: what is wrong (field)``; the summary
            says how many there are in all.
    """
    return validate_inputs((path,), endpoint=endpoint, limits=limits, rules=rules, model=model)[0]


def validate_inputs(
    paths: Sequence[str | os.PathLike[str]],
    *,
    endpoint: str,
    limits: InputLimits | None = None,
    rules: LineRules | None = None,
    model: str | None = None,
) -> tuple[InputSummary, ...]:
    """Validate all the input files of one job; ``custom_id`` must be unique across them.

    Args:
        paths: The job's input files, in order.
        endpoint: The batch endpoint, as for :func:`validate_input`.
        limits: ``max_file_bytes`` applies per file, ``max_requests`` to the job's total
            (default: the dialect's).
        rules: The provider's dialect, as for :func:`validate_input`.
        model: The job's model, as for :func:`validate_input`.

    Returns:
        One summary per file, in the order given.

    Raises:
        InputError: as for :func:`validate_input`, over every file (the job is rejected as a
            whole); also when no file or the same file twice is given.
    """
    if rules is None:
        rules = rules_of_endpoint(endpoint)
        known = ENDPOINTS
    else:
        known = rules.endpoints
    if rules is None or endpoint not in rules.endpoints:
        raise InputError(
            f"unknown endpoint {endpoint!r}: use one of {', '.join(known)}",
        )
    files = [Path(p) for p in paths]
    if not files:
        raise InputError("a job needs at least one input file; none was given")
    seen_paths: dict[Path, int] = {}
    for index, file in enumerate(files):
        first = seen_paths.setdefault(Path(os.path.abspath(file)), index)
        if first != index:
            raise InputError(
                f"{file}: listed twice in the job's inputs (positions {first + 1} and "
                f"{index + 1}): every request would be a duplicate; list each file once",
            )
    limits = InputLimits.of(rules) if limits is None else limits
    scan = _Scan(files, endpoint=endpoint, rules=rules, limits=limits, model=model)
    return scan.run()
