"""The composition root for provider = "openai": the adapter, its headers, the emulator."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

import pytest

import orchestrator.daemon.app as app
from orchestrator.config import Config, load_config
from orchestrator.daemon import Daemon
from orchestrator.errors import ConfigError
from orchestrator.providers.mistral import MistralProvider
from orchestrator.providers.openai import OpenAIProvider

pytestmark = pytest.mark.anyio


def config(tmp_path: Path, workspace: str) -> Config:
    """A config whose workspace ``oai`` holds ``workspace``."""
    path = tmp_path / "config.toml"
    path.write_text(f'[workspaces.oai]\nprovider = "openai"\n{workspace}\n')
    return load_config(path, environ={})


async def test_openai_workspace_gets_the_openai_adapter(tmp_path: Path) -> None:
    """provider = openai builds an OpenAIProvider with its window and header ids."""
    cfg = config(
        tmp_path,
        'base_url = "https://api.openai.com/v1"\napi_key_env = "OPENAI_API_KEY"\n'
        'organization = "org-1"\nproject = "proj_1"',
    )
    daemon = Daemon(cfg, environ={"OPENAI_API_KEY": "sk-app-test"})
    async with AsyncExitStack() as stack:
        provider = daemon._provider(cfg.workspaces["oai"], stack)
        stack.push_async_callback(provider.aclose)
        assert isinstance(provider, OpenAIProvider)
        assert provider.base_url == "https://api.openai.com"
        assert provider.completion_window == "24h"
        headers = provider.auth_headers("k")
        assert (headers["OpenAI-Organization"], headers["OpenAI-Project"]) == ("org-1", "proj_1")


async def test_embedded_needs_a_wire_the_emulator_speaks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dialect the bundled emulator has no wire for: a config error naming the key."""
    monkeypatch.setattr(
        app, "EMULATOR_DIALECTS", {k: v for k, v in app.EMULATOR_DIALECTS.items() if k != "openai"}
    )
    cfg = config(tmp_path, 'base_url = "embedded"')
    daemon = Daemon(cfg)
    async with AsyncExitStack() as stack:
        with pytest.raises(ConfigError, match="emulator's openai wire") as caught:
            daemon._provider(cfg.workspaces["oai"], stack)
    assert caught.value.key == "workspaces.oai.base_url"


async def test_embedded_workspaces_share_one_emulator_per_dialect(tmp_path: Path) -> None:
    """base_url = embedded: each dialect's wire once, shared by its workspaces."""
    path = tmp_path / "config.toml"
    path.write_text(
        '[workspaces.oai]\nprovider = "openai"\nbase_url = "embedded"\n'
        '[workspaces.oai2]\nprovider = "openai"\nbase_url = "embedded"\n'
        '[workspaces.mis]\nbase_url = "embedded"\n'
    )
    cfg = load_config(path, environ={})
    daemon = Daemon(cfg)
    async with AsyncExitStack() as stack:
        providers = {name: daemon._provider(ws, stack) for name, ws in cfg.workspaces.items()}
        for provider in providers.values():
            stack.push_async_callback(provider.aclose)
        assert isinstance(providers["oai"], OpenAIProvider)
        assert isinstance(providers["oai2"], OpenAIProvider)
        assert isinstance(providers["mis"], MistralProvider)
        emulators = daemon._emulators
        assert sorted(emulators) == ["mistral", "openai"]
        assert {name: e.dialect.name for name, e in emulators.items()} == {
            "mistral": "mistral",
            "openai": "openai",
        }
        # The OpenAI workspaces really talk to the OpenAI wire.
        batches = [job async for job in providers["oai"].list_jobs()]
        assert batches == []
