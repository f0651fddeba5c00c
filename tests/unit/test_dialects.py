"""The dialect seam: the registry, Mistral's rules, and a dialect's own line check."""

from __future__ import annotations

import json
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
    OPENAI,
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
    with pytest.raises(KeyError, match="known: mistral, openai, anthropic"):
        rules_for("bedrock")


def test_mistral_limits_are_the_default_limits() -> None:
    """Mistral's per-batch limits are what InputLimits() has always meant."""
    assert InputLimits.of(MISTRAL) == InputLimits()
    assert MISTRAL.endpoints == MISTRAL_ENDPOINTS


def _params_check(endpoint: str, model: str | None) -> LineCheck:
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
    assert "more than the limit of 2 per batch" in info.value.problems[0]


BAD = Path(__file__).resolve().parents[1] / "data" / "bad"
CHAT = "/v1/chat/completions"


def test_openai_lines_in_either_form_and_their_mistakes() -> None:
    """Both forms pass; method, url, body and body.model mistakes name file:line (field)."""
    path = BAD / "openai-lines.jsonl"
    with pytest.raises(InputError) as info:
        validate_inputs([path], endpoint=CHAT, rules=OPENAI, model="gpt-4o-mini")
    assert info.value.problems == (
        f"{path}:3: must be \"POST\", got 'GET' (method)",
        f"{path}:4: must be the job's endpoint '/v1/chat/completions', got '/v1/embeddings': "
        "a batch holds requests to one endpoint (url)",
        f"{path}:5: missing: a line with a method needs url '/v1/chat/completions' (url)",
        f'{path}:6: missing: a line with a url needs method "POST" (method)',
        f"{path}:7: names model 'gpt-4o', but the job's model is 'gpt-4o-mini': a batch "
        "holds requests to one model (body.model)",
        f"{path}:8: missing (body)",
        f"{path}:9: must not be an empty list (body.messages)",
    )
    assert info.value.summary.startswith(f"invalid batch input for {CHAT} in {path}: 7 problems")


def test_openai_model_is_checked_only_when_known(tmp_path: Path) -> None:
    """Without the job's model (a file checked on its own) body.model is not compared."""
    path = tmp_path / "in.jsonl"
    path.write_text('{"custom_id": "a", "body": {"model": "x", "input": "hi"}}\n')
    (summary,) = validate_inputs([path], endpoint="/v1/embeddings", rules=OPENAI)
    assert summary.requests == 1
    with pytest.raises(InputError, match=r"names model 'x', but the job's model is 'y'"):
        validate_inputs([path], endpoint="/v1/embeddings", rules=OPENAI, model="y")


@pytest.mark.parametrize(
    ("endpoint", "body", "expected"),
    [
        ("/v1/embeddings", {"model": "m"}, "missing: required by /v1/embeddings (body.input)"),
        ("/v1/completions", {"prompt": ""}, "must not be empty, got '' (body.prompt)"),
        (
            "/v1/responses",
            {"model": "m"},
            "missing: /v1/responses requires input or prompt (body.input, body.prompt)",
        ),
        ("/v1/moderations", {"input": []}, "must not be empty, got an array (body.input)"),
    ],
)
def test_openai_body_keys_per_endpoint(
    tmp_path: Path, endpoint: str, body: dict[str, object], expected: str
) -> None:
    """Each OpenAI endpoint needs its own body key."""
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps({"custom_id": "a", "body": body}) + "\n")
    with pytest.raises(InputError) as info:
        validate_inputs([path], endpoint=endpoint, rules=OPENAI, model="m")
    assert info.value.problems == (f"{path}:1: {expected}",)


def test_openai_endpoints_and_per_batch_limits() -> None:
    """Five endpoints; 50,000 requests and 200 MB per batch; another endpoint is refused."""
    assert rules_for("openai") is OPENAI
    assert OPENAI.endpoints == (
        "/v1/chat/completions",
        "/v1/embeddings",
        "/v1/completions",
        "/v1/responses",
        "/v1/moderations",
    )
    assert (OPENAI.max_requests, OPENAI.max_bytes) == (50_000, 200_000_000)
    with pytest.raises(InputError, match=r"unknown endpoint '/v1/fim/completions': use one of"):
        validate_inputs([BAD / "openai-lines.jsonl"], endpoint="/v1/fim/completions", rules=OPENAI)


def test_openai_over_the_request_limit_says_how_to_split(tmp_path: Path) -> None:
    """More than 50,000 requests without splitting: one problem naming the limit and the fix."""
    path = tmp_path / "in.jsonl"
    line = '{"custom_id": "r%d", "body": {"input": "x"}}\n'
    path.write_text("".join(line % i for i in range(50_001)))
    with pytest.raises(InputError) as info:
        validate_inputs([path], endpoint="/v1/embeddings", rules=OPENAI)
    assert info.value.problems == (
        f"{path}: 50,001 requests, more than the limit of 50,000 per batch (max_requests): "
        "split the input into several jobs, or let the orchestrator split it (split_requests)",
    )
