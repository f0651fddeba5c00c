"""`check-config` on the dashboard and API of ``[http]``: who may read and write."""

from __future__ import annotations

import pytest

from tests.cli.conftest import CliRunner, Project


@pytest.mark.parametrize(
    ("http", "env", "says", "warns"),
    [
        ('listen = "127.0.0.1:9464"', {}, "reads open, writes answer 403", []),
        (
            'listen = "127.0.0.1:9464"\ntoken_env = "ORCH_HTTP_TOKEN"',
            {"ORCH_HTTP_TOKEN": "a-long-token-value"},
            "reads open, writes need the token from $ORCH_HTTP_TOKEN",
            [],
        ),
        (
            'listen = "0.0.0.0:9464"\ntoken_env = "ORCH_HTTP_TOKEN"',
            {},
            "reads need the token, writes answer 403",
            ["$ORCH_HTTP_TOKEN is not set", "is not a loopback address and no token"],
        ),
        (
            'listen = "0.0.0.0:9464"\nallow_anonymous_reads = true',
            {},
            "reads open, writes answer 403",
            [],
        ),
    ],
)
def test_check_config_says_who_may_use_the_api(
    project: Project,
    cli: CliRunner,
    monkeypatch: pytest.MonkeyPatch,
    http: str,
    env: dict[str, str],
    says: str,
    warns: list[str],
) -> None:
    """One line on the endpoint, a warning for a token that is missing where it matters."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    project.extra = f"[http]\n{http}\n"
    project.write()
    result = cli("check-config", "--config", project.config)
    assert result.code == 0, result.out + result.err
    assert says in result.out
    for warning in warns:
        assert warning in result.out
    assert "a-long-token-value" not in result.out
    if not warns:
        assert "warning" not in result.out


def test_a_token_env_that_is_not_a_variable_name_is_refused(
    project: Project, cli: CliRunner
) -> None:
    """A pasted token in token_env is a config error that does not echo it."""
    project.extra = '[http]\nlisten = "127.0.0.1:0"\ntoken_env = "abc def-123 pasted"\n'
    project.write()
    result = cli("check-config", "--config", project.config)
    assert result.code == 2
    assert "http.token_env: must name an environment variable" in result.err
    assert "pasted" not in result.err
