"""The dialect seam: the registry, Mistral's rules, and a dialect's own line check."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from orchestrator.config import PROVIDERS
from orchestrator.errors import InputError
from orchestrator.inputs import (
    DIALECTS,
    ENDPOINTS_BY_PROVIDER,
    MISTRAL,
    MISTRAL_ENDPOINTS,
    InputLimits,
    LineCheck,
    LineRules,
    rules_for,
    validate_inputs,
)


def test_every_configurable_provider_has_rules() -> None:
    """Config accepts only providers the registry has input rules for."""
    assert set(PROVIDERS) == set(DIALECTS)
    for name, rules in DIALECTS.items():
        assert rules_for(name) is rules
        assert rules.name == name
        assert ENDPOINTS_BY_PROVIDER[name] == rules.endpoints


def test_unknown_provider_names_the_known_ones() -> None:
    """Asking for a provider without rules says which ones exist."""
    with pytest.raises(KeyError, match="known: mistral, openai"):
        rules_for("anthropic")


def test_mistral_limits_are_the_default_limits() -> None:
    """Mistral's per-batch limits are what InputLimits() has always meant."""
    assert InputLimits.of(MISTRAL) == InputLimits()
    assert MISTRAL.endpoints == MISTRAL_ENDPOINTS


def _params_check(endpoint: str) -> LineCheck:
    def check(request: Mapping[str, object]) -> Sequence[str]:
        return () if type(request.get("params")) is dict else ("missing (params)",)

    return check


PARAMS = LineRules(
    name="params",
    endpoints=("/v1/messages",),
    max_requests=2,
    max_bytes=1000,
    line_check=_params_check,
)


def test_a_dialect_brings_its_line_rules_endpoints_and_limits(tmp_path: Path) -> None:
    """Another dialect's lines, endpoints and limits replace Mistral's, the scan stays."""
    path = tmp_path / "in.jsonl"
    path.write_text('{"custom_id": "a", "params": {}}\n{"custom_id": "b", "body": {}}\n')
    with pytest.raises(InputError) as info:
        validate_inputs([path], endpoint="/v1/messages", rules=PARAMS)
    assert info.value.problems == (f"{path}:2: missing (params)",)
    with pytest.raises(InputError, match=r"use one of /v1/messages$"):
        validate_inputs([path], endpoint="/v1/chat/completions", rules=PARAMS)
    path.write_text('{"custom_id": "a", "params": {}}\n' * 3)
    with pytest.raises(InputError) as info:
        validate_inputs([path], endpoint="/v1/messages", rules=PARAMS)
    assert "more than the limit of 2 per job" in info.value.problems[0]
