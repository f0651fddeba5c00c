"""How a wire judges a job's input: the seam between the core's passes and a vendor's rules.

The core reads a job's input in up to three places, and asks the wire's :class:`InputRules`
each time:

- at create, :meth:`InputRules.scan` may read the input once to learn its model, its prompt
  tokens (for an enqueued-token limit) and the problems that refuse it as a whole (OpenAI fails
  such a batch at validation; Mistral has no such pass);
- once the validation delay has passed, :func:`~orchestrator.emulator.results.validate_input`
  runs :meth:`InputRules.classify` over every line and :meth:`InputRules.verdict` says whether
  what it found makes the input unusable;
- when the job is terminal, :func:`~orchestrator.emulator.results.write_results` runs
  :meth:`InputRules.classify` again, so both passes agree line for line.

:class:`BodyRules` is the neutral ``{custom_id?, body}`` form (Mistral's).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import attrs

from orchestrator.emulator.lines import Line, classify
from orchestrator.emulator.rows import JobRow


@attrs.frozen(kw_only=True)
class Scan:
    """What reading an input at create time found."""

    model: str | None = None
    """The model every line names (``None``: none, or not known)."""
    prompt_tokens: int = 0
    """The input's prompt tokens by the wire's estimate."""
    errors: list[dict[str, Any]] = attrs.field(factory=list)
    """Problems that refuse the input as a whole, in the wire's shape (empty: none)."""


class InputRules(Protocol):
    """A wire's rules for the lines of a job's input (see the module docstring)."""

    def scan(self, paths: Sequence[Path], *, endpoint: str, requests: int) -> Scan | None:
        """Read the input at create time; ``None`` when the wire has no such pass."""
        ...

    def classify(self, paths: Sequence[Path], job: JobRow) -> Iterator[Line]:
        """Judge every non-blank line of the input, in order."""
        ...

    def verdict(self, *, count: int, invalid: int, problems: Counter[str]) -> list[dict[str, Any]]:
        """The job-level errors that make the input unusable (empty: it is usable).

        Args:
            count: lines read.
            invalid: lines that failed for a reason other than a simulated failure.
            problems: how many lines failed with each :attr:`LineError.code
                <orchestrator.emulator.lines.LineError.code>`.
        """
        ...

    def token_limit_error(
        self, *, workspace: str, model: str, tokens: int, enqueued: int, limit: int
    ) -> dict[str, Any]:
        """The job-level error of a batch refused by the enqueued-token limit."""
        ...


_PROBLEMS = {
    "invalid_json_line": "lines that are not a JSON object",
    "invalid_custom_id": "lines whose custom_id is not a non-empty string",
    "duplicate_custom_id": "lines that repeat an earlier custom_id",
    "invalid_body": "lines without an object `body`",
    "missing_model": "lines without a model (set `model` on the job or in each body)",
    "invalid_request_body": "lines whose body lacks what the endpoint needs",
}


class BodyRules:
    """``{custom_id?, body}`` lines judged one by one (Mistral): no scan at create; the input is
    unusable when it is empty or every line is invalid, and ``errors`` are ``[{message, count}]``.
    """

    def scan(self, paths: Sequence[Path], *, endpoint: str, requests: int) -> Scan | None:
        """No pass at create time."""
        return None

    def classify(self, paths: Sequence[Path], job: JobRow) -> Iterator[Line]:
        """:func:`orchestrator.emulator.lines.classify` with the job's knobs."""
        return classify(
            paths,
            endpoint=job.endpoint,
            model=job.model,
            seed=job.params.seed,
            failure_fraction=job.params.failure_fraction,
        )

    def verdict(self, *, count: int, invalid: int, problems: Counter[str]) -> list[dict[str, Any]]:
        """Unusable when empty or when every line is invalid; say why per problem."""
        if count == 0:
            return [{"message": "The input contains no request lines.", "count": 1}]
        if invalid < count:
            return []
        return [
            {"message": f"Invalid input: {_PROBLEMS.get(code, code)}", "count": n}
            for code, n in sorted(problems.items())
        ]

    def token_limit_error(
        self, *, workspace: str, model: str, tokens: int, enqueued: int, limit: int
    ) -> dict[str, Any]:
        """Mistral has no token limit; worded for completeness."""
        return {
            "message": f"Enqueued token limit of {limit:,} reached for {model}.",
            "count": 1,
        }
