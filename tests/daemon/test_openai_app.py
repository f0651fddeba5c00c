"""The composition root for provider = "openai": the adapter, its headers, the emulator."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

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


async def test_embedded_openai_needs_the_emulator_wire(tmp_path: Path) -> None:
    """Until the emulator speaks openai, base_url = embedded is a config error naming it."""
    cfg = config(tmp_path, 'base_url = "embedded"')
    daemon = Daemon(cfg)
    if "openai" in app.EMULATOR_DIALECTS:
        pytest.skip("the emulator speaks openai: see the next test")
    async with AsyncExitStack() as stack:
        with pytest.raises(ConfigError, match="emulator's openai wire") as caught:
            daemon._provider(cfg.workspaces["oai"], stack)
    assert caught.value.key == "workspaces.oai.base_url"


async def test_embedded_openai_builds_the_emulator_with_its_dialect(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """base_url = embedded constructs Emulator(..., dialect="openai"), one per dialect."""
    made: list[dict[str, Any]] = []

    class Recorder:
        app = object()

        def __init__(self, settings: Any, **kwargs: Any) -> None:
            made.append(kwargs)
            self.dialect = type("D", (), {"name": kwargs["dialect"]})()

        def close(self) -> None:
            pass

    monkeypatch.setattr(app, "Emulator", Recorder)
    monkeypatch.setattr(app, "EMULATOR_DIALECTS", {"mistral": object, "openai": object})
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
    assert isinstance(providers["mis"], MistralProvider)
    assert sorted(kwargs["dialect"] for kwargs in made) == ["mistral", "openai"]
