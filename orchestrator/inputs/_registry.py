"""The dialect registry: which :class:`~orchestrator.inputs.dialect.LineRules` each provider has.

Config (a job's endpoint must be its workspace's provider's) and intake (the lines and limits
its inputs must meet) both look the rules up here. A new dialect is one module under
:mod:`orchestrator.inputs` and one line in :data:`DIALECTS`.
"""

from __future__ import annotations

from collections.abc import Mapping

from orchestrator.inputs.anthropic import ANTHROPIC
from orchestrator.inputs.dialect import LineRules
from orchestrator.inputs.mistral import MISTRAL
from orchestrator.inputs.openai import OPENAI

DIALECTS: Mapping[str, LineRules] = {
    "mistral": MISTRAL,
    "openai": OPENAI,
    "anthropic": ANTHROPIC,
}
"""Each provider's input rules, by provider name."""

ENDPOINTS_BY_PROVIDER: Mapping[str, tuple[str, ...]] = {
    name: rules.endpoints for name, rules in DIALECTS.items()
}
"""The endpoints each provider's batch API accepts (from :data:`DIALECTS`)."""

ENDPOINTS: tuple[str, ...] = tuple(
    dict.fromkeys(endpoint for rules in DIALECTS.values() for endpoint in rules.endpoints)
)
"""Every endpoint some dialect accepts (the union, in registry order)."""


def rules_for(provider: str) -> LineRules:
    """The input rules of ``provider`` (a workspace's ``provider``).

    Raises:
        KeyError: no dialect is registered under that name (config refuses such a provider).
    """
    try:
        return DIALECTS[provider]
    except KeyError:
        raise KeyError(
            f"no input rules for provider {provider!r}; known: {', '.join(DIALECTS)}"
        ) from None


def rules_of_endpoint(endpoint: str) -> LineRules | None:
    """The first registered dialect that accepts ``endpoint``, or None."""
    return next((rules for rules in DIALECTS.values() if endpoint in rules.endpoints), None)
