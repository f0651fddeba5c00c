"""Config of an OpenAI workspace: base_url with or without /v1, completion_window, headers."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.config import Config, load_config
from orchestrator.errors import ConfigError


def load(tmp_path: Path, workspace: str) -> Config:
    """Load a config with one workspace table ``main`` holding ``workspace``."""
    path = tmp_path / "config.toml"
    path.write_text(f"[workspaces.main]\n{workspace}\n")
    return load_config(path, environ={})


def test_openai_defaults(tmp_path: Path) -> None:
    """provider = openai alone: api.openai.com, a 24h window, no organization or project."""
    ws = load(tmp_path, 'provider = "openai"\napi_key_env = "OPENAI_API_KEY"').workspaces["main"]
    assert ws.base_url == "https://api.openai.com"
    assert (ws.completion_window, ws.organization, ws.project) == ("24h", None, None)


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("https://api.openai.com/v1", "https://api.openai.com"),
        ("https://api.openai.com/v1/", "https://api.openai.com"),
        ("https://gateway.example/openai/v1", "https://gateway.example/openai"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("embedded", "embedded"),
    ],
)
def test_a_trailing_v1_is_accepted_and_stripped(tmp_path: Path, given: str, stored: str) -> None:
    """The SDK's /v1 root is accepted for OpenAI and stored as the server root."""
    text = f'provider = "openai"\nbase_url = "{given}"\napi_key_env = "OPENAI_API_KEY"'
    assert load(tmp_path, text).workspaces["main"].base_url == stored


def test_organization_project_and_window_are_read(tmp_path: Path) -> None:
    """The optional header ids and the window land in the workspace."""
    text = (
        'provider = "openai"\napi_key_env = "K"\ncompletion_window = "24h"\n'
        'organization = "org-AbC123"\nproject = "proj_abc-1"'
    )
    ws = load(tmp_path, text).workspaces["main"]
    assert (ws.completion_window, ws.organization, ws.project) == (
        "24h",
        "org-AbC123",
        "proj_abc-1",
    )


@pytest.mark.parametrize(
    ("line", "key", "message"),
    [
        ('completion_window = "48h"', "completion_window", "OpenAI accepts only '24h', got '48h'"),
        ("completion_window = 24", "completion_window", "string"),
        ('organization = "org x"', "organization", "must be an OpenAI organization id"),
        ('project = ""', "project", "must not be empty"),
    ],
)
def test_bad_openai_values_name_file_and_key(
    tmp_path: Path, line: str, key: str, message: str
) -> None:
    """Each refusal names the file and the dotted key."""
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, f'provider = "openai"\napi_key_env = "K"\n{line}')
    assert caught.value.file == str(tmp_path / "config.toml")
    assert caught.value.key == f"workspaces.main.{key}"
    assert message in str(caught.value)


@pytest.mark.parametrize("key", ["completion_window", "organization", "project"])
def test_openai_keys_are_refused_for_mistral(tmp_path: Path, key: str) -> None:
    """A Mistral workspace does not take OpenAI's keys (they would be silently ignored)."""
    with pytest.raises(ConfigError, match="only an OpenAI workspace takes it") as caught:
        load(tmp_path, f'api_key_env = "K"\n{key} = "24h"')
    assert caught.value.key == f"workspaces.main.{key}"


def test_mistral_still_refuses_a_trailing_v1(tmp_path: Path) -> None:
    """Mistral's base_url rule is unchanged."""
    with pytest.raises(ConfigError, match="without /v1"):
        load(tmp_path, 'api_key_env = "K"\nbase_url = "https://api.mistral.ai/v1"')
