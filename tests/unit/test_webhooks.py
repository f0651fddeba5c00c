"""The webhook core (events, signatures, secrets, retry schedule) and the endpoint config."""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime
from pathlib import Path

import attrs
import pytest
from standardwebhooks.webhooks import Webhook

from orchestrator.config import load_config
from orchestrator.daemon.deliver import build_senders
from orchestrator.errors import ConfigError
from orchestrator.model import JobState, Outcome
from orchestrator.webhooks import (
    JOB_DONE,
    JOB_REJECTED,
    JOB_SUBMITTED,
    event_body,
    events_for,
    headers,
    next_attempt,
    parse_secret,
    sign,
)
from tests.unit.jobs import make_job

SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()


def test_signature_is_what_the_reference_library_computes() -> None:
    """Our v1 signature equals standardwebhooks' own, and its verify() accepts our headers."""
    body = event_body(JOB_DONE, 1_767_225_600.0, {"name": "cheese", "outcome": "succeeded"})
    at = 1_767_225_700
    ours = sign(parse_secret(SECRET), "msg_1", at, body)
    theirs = Webhook(SECRET).sign("msg_1", datetime.fromtimestamp(at, tz=UTC), body)
    assert ours == theirs
    now = int(datetime.now(tz=UTC).timestamp())
    sent = headers(parse_secret(SECRET), "msg_2", now, body)
    assert Webhook(SECRET).verify(body, sent) == json.loads(body)
    assert json.loads(body) == {
        "type": "job.done",
        "timestamp": "2026-01-01T00:00:00.000Z",
        "data": {"name": "cheese", "outcome": "succeeded"},
    }


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("c2VjcmV0", "starts with 'whsec_'"),
        ("whsec_not base64!", "not valid base64"),
        ("whsec_" + base64.b64encode(b"short").decode(), "24 to 64 random bytes, this one 5"),
    ],
)
def test_bad_secrets_are_refused_without_echo(value: str, message: str) -> None:
    """A secret that is not whsec_ + base64 of 24-64 bytes is refused; the value is not shown."""
    with pytest.raises(ValueError, match=message) as caught:
        parse_secret(value)
    assert value not in str(caught.value)


@pytest.mark.parametrize(
    ("attempts", "now", "draw", "expected"),
    [
        (1, 100.0, 0.5, 130.0),  # the first retry waits backoff (30 s), jitter centred
        (2, 100.0, 0.5, 160.0),  # then twice that
        (4, 100.0, 0.5, 340.0),  # 30 * 2**3
        (1, 100.0, 0.0, 124.0),  # jitter: -20 %
        (1, 100.0, 1.0, 136.0),  # +20 %
        (10, 1000.0, 0.5, 3600.0),  # capped at the deadline (since 0 + max_age 3600)
        (10, 3600.0, 0.5, None),  # a failure at the deadline is final: dead
        (3, 4000.0, 0.5, None),
    ],
)
def test_retry_schedule(attempts: int, now: float, draw: float, expected: float | None) -> None:
    """Exponential from backoff, jittered, for max_age after the event, then dead."""
    got = next_attempt(
        attempts=attempts, since=0.0, now=now, backoff=30.0, max_age=3600.0, draw=draw
    )
    assert got == (None if expected is None else pytest.approx(expected))


def test_events_of_each_move() -> None:
    """running is a submission, done and rejected an end; parts, attempts and updates say
    nothing (the job they serve tells)."""
    job = make_job(state=JobState.RUNNING)
    assert events_for(JobState.SUBMITTING, job) == (JOB_SUBMITTED,)
    assert events_for(JobState.RUNNING, job) == ()  # an update within a state
    done = attrs.evolve(job, state=JobState.DONE, outcome=Outcome.CANCELLED)
    assert events_for(JobState.QUEUED, done) == (JOB_DONE,)
    assert events_for(None, attrs.evolve(job, state=JobState.REJECTED)) == (JOB_REJECTED,)
    assert events_for(JobState.SUBMITTING, attrs.evolve(job, parent_id=3)) == ()
    assert events_for(JobState.SUBMITTING, attrs.evolve(job, retry_of=3)) == ()
    assert events_for(JobState.COLLECTING, attrs.evolve(done, retry_of=3)) == ()
    assert events_for(JobState.QUEUED, attrs.evolve(job, state=JobState.ADMITTED)) == ()


WORKSPACE = '[workspaces.main]\nbase_url = "embedded"\n'


def _load(tmp_path: Path, text: str) -> object:
    return load_config(_write(tmp_path, text), environ={})


@pytest.mark.parametrize(
    ("toml", "key", "message"),
    [
        ('[[webhooks]]\nurl = "ftp://x/y"\nsecret_env = "S"\n', "webhooks[0].url", "http://"),
        ('[[webhooks]]\nurl = "https://"\nsecret_env = "S"\n', "webhooks[0].url", "with a host"),
        (
            '[[webhooks]]\nurl = "https://u:p@x.org/h"\nsecret_env = "S"\n',
            "webhooks[0].url",
            "credentials",
        ),
        ('[[webhooks]]\nurl = "https://x.org/h"\n', "webhooks[0].secret_env", "missing"),
        (
            '[[webhooks]]\nurl = "https://x.org/h"\nsecret_env = "whsec_abc"\n',
            "webhooks[0].secret_env",
            "looks like the secret itself",
        ),
        (
            '[[webhooks]]\nurl = "https://x.org/h"\nsecret_env = "MY-SECRET"\n',
            "webhooks[0].secret_env",
            "name of an environment variable",
        ),
        (
            '[[webhooks]]\nurl = "https://x.org/h"\nsecret_env = "S"\nevents = ["job.finished"]\n',
            "webhooks[0].events[0]",
            "unknown event 'job.finished'",
        ),
        (
            '[[webhooks]]\nurl = "https://x.org/h"\nsecret_env = "S"\nbackoff = "-1s"\n',
            "webhooks[0].backoff",
            "expected a duration",
        ),
        (
            '[[webhooks]]\nurl = "https://x.org/h"\nsecret_env = "S"\nretries = 3\n',
            "webhooks[0].retries",
            "unknown key",
        ),
        (
            '[[webhooks]]\nurl = "https://x.org/h"\nsecret_env = "S"\n'
            '[[webhooks]]\nurl = "https://x.org/h"\nsecret_env = "T"\n',
            "webhooks[1].url",
            "already a webhook",
        ),
        ('[[hooks]]\ncommand = "/bin/notify {job_json}"\n', "hooks[0].command", "an array"),
        ('[[hooks]]\ncommand = ["notify", "{job_json}"]\n', "hooks[0].command[0]", "absolute"),
        ("[[hooks]]\ncommand = []\n", "hooks[0].command", "empty array"),
        ('[[hooks]]\nevents = ["job.done"]\n', "hooks[0].command", "missing required key"),
        (
            '[[hooks]]\ncommand = ["/bin/true"]\nevents = ["done"]\n',
            "hooks[0].events[0]",
            "did you mean 'job.done'",
        ),
    ],
)
def test_endpoint_config_errors_name_the_key(
    tmp_path: Path, toml: str, key: str, message: str
) -> None:
    """Each bad [[webhooks]]/[[hooks]] value is a config error naming file and key."""
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, toml)
    assert caught.value.key == key
    assert message in str(caught.value)
    assert str(tmp_path / "config.toml") in str(caught.value)


def test_endpoints_load_with_defaults(tmp_path: Path) -> None:
    """Defaults: every event, backoff 30 s, timeout 10 s, max_age 24 h."""
    config = load_config(
        _write(
            tmp_path,
            '[[webhooks]]\nurl = "https://x.org/h"\nsecret_env = "S"\n'
            '[[hooks]]\ncommand = ["/bin/echo", "{job_json}"]\nevents = ["job.done"]\n'
            'timeout = "1m"\n',
        ),
        environ={},
    )
    (webhook,) = config.webhooks
    assert (webhook.backoff, webhook.timeout, webhook.max_age) == (30.0, 10.0, 86400.0)
    assert webhook.events == {"job.done", "job.rejected", "job.submitted"}
    (hook,) = config.hooks
    assert (hook.command, hook.events, hook.timeout) == (
        ("/bin/echo", "{job_json}"),
        frozenset({"job.done"}),
        60.0,
    )


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(WORKSPACE + text)
    return path


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({}, "ORCH_WEBHOOK_SECRET is not set"),
        ({"ORCH_WEBHOOK_SECRET": "whsec_" + "A" * 8}, "24 to 64 random bytes"),
    ],
)
def test_daemon_wiring_refuses_a_missing_or_bad_secret(
    tmp_path: Path, environ: dict[str, str], message: str
) -> None:
    """The secret is read when the daemon wires its senders: a clear error naming the key."""
    config = load_config(
        _write(
            tmp_path,
            '[[webhooks]]\nurl = "https://x.org/h"\nsecret_env = "ORCH_WEBHOOK_SECRET"\n',
        ),
        environ={},
    )
    with pytest.raises(ConfigError) as caught:
        build_senders(config, environ)
    assert caught.value.key == "webhooks[0].secret_env"
    assert message in str(caught.value)
    for value in environ.values():
        assert value not in str(caught.value)


def test_daemon_wiring_refuses_a_hook_that_cannot_run(tmp_path: Path) -> None:
    """A hook program that does not exist (or is not executable) is a config error too."""
    script = tmp_path / "notify.sh"
    script.write_text("#!/bin/sh\n")  # not executable
    config = load_config(_write(tmp_path, f'[[hooks]]\ncommand = ["{script}"]\n'), environ={})
    with pytest.raises(ConfigError) as caught:
        build_senders(config, {})
    assert caught.value.key == "hooks[0].command[0]"
    assert "not an executable file" in str(caught.value)


def test_example_config_documents_webhooks_and_hooks(tmp_path: Path) -> None:
    """The commented [[webhooks]] and [[hooks]] of config/example.toml load once uncommented."""
    text = (Path(__file__).resolve().parents[2] / "config" / "example.toml").read_text()
    start = text.index("# [[webhooks]]:")
    block = text[start : text.index("\n[[jobs]]", start)]
    tables = [
        line[2:] for line in block.splitlines() if re.fullmatch(r"# (\[\[\w+\]\]|\w+ = .*)", line)
    ]
    config = load_config(_write(tmp_path, "\n".join(tables) + "\n"), environ={})
    (webhook,) = config.webhooks
    assert (webhook.url, webhook.secret_env, webhook.events) == (
        "https://example.com/hooks/batches",
        "ORCH_WEBHOOK_SECRET",
        frozenset({"job.done", "job.rejected"}),
    )
    (hook,) = config.hooks
    assert hook.command == ("/usr/local/bin/notify-team", "{job_json}")
