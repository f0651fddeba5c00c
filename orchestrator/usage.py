"""Token usage: what a job's (or a file's) result lines report, summed. Pure.

A job's usage is summed from its result files while they are downloaded (see
``providers/_transport/usage.py``); prices and costs are :mod:`orchestrator.pricing`'s.
"""

from __future__ import annotations

from typing import Final

import attrs


@attrs.frozen(kw_only=True)
class Usage:
    """Tokens a job's (or a file's) result lines report, summed."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    lines: int = 0
    """Result lines read."""
    lines_without_usage: int = 0
    """Of those, lines that carried no usage (each counted as zero tokens)."""

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            total_tokens=self.total_tokens + other.total_tokens,
            lines=self.lines + other.lines,
            lines_without_usage=self.lines_without_usage + other.lines_without_usage,
        )

    def tokens(self) -> dict[str, int]:
        """The three token counts, as ``status --json`` and ``job.json`` show them."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


ZERO_USAGE: Final = Usage()
