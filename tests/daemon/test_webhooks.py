"""Webhooks and hooks end to end: a real receiver on 127.0.0.1 verifying with standardwebhooks.

The daemon runs on a fake clock that starts at the real time (the reference library refuses a
``webhook-timestamp`` more than five minutes from its own clock), against the in-process
emulator; the receivers are real HTTP servers in threads.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.clock import FakeClock, SystemClock
from orchestrator.config import Config
from orchestrator.daemon import Daemon
from orchestrator.emulator import Emulator, EmulatorSettings
from orchestrator.ledger import SqlLedger
from orchestrator.ledger.outbox import Delivery
from orchestrator.service.metrics import DaemonCollector
from orchestrator.webhooks import JOB_DONE, JOB_SUBMITTED
from tests.daemon.conftest import CrashingTransport, contains_crash, load, write_config
from tests.webhook_receiver import SECRET, receiving

pytestmark = pytest.mark.anyio

ENV = {"ORCH_WEBHOOK_SECRET": SECRET}


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock at the real time: signatures stay within the receiver's tolerance."""
    # Real sockets, processes and a busy machine: a quiet period longer than a loopback
    # exchange or a ledger write, so simulated time rarely jumps while one is under way.
    return FakeClock(SystemClock().now(), autojump=True, quiet_period=0.05)


@pytest.fixture
def emulator(clock: FakeClock) -> Iterator[Emulator]:
    """A quick emulator: jobs finish within seconds of simulated time."""
    made = Emulator(
        EmulatorSettings(time_scale=1.0, throughput=100.0, validation_seconds=2.0, seed=5),
        clock=clock,
    )
    yield made
    made.close()


def webhook(url: str, **keys: str) -> str:
    """A ``[[webhooks]]`` table with the test secret."""
    lines = ["[[webhooks]]", f'url = "{url}"', 'secret_env = "ORCH_WEBHOOK_SECRET"']
    lines += [f"{key} = {value}" for key, value in keys.items()]
    return "\n".join(lines)


def dead_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/gone"


def make_config(tmp_path: Path, *tables: str, jobs: int = 1) -> Config:
    """One embedded workspace, ``jobs`` small jobs, and these endpoint tables."""
    path = write_config(
        tmp_path,
        [(f"job-{n}", 3) for n in range(jobs)],
        extra="\n".join(tables),
    )
    return load(path)


async def run(
    config: Config,
    clock: FakeClock,
    emulator: Emulator,
    *,
    environ: dict[str, str] | None = None,
    wrap: Callable[[httpx.AsyncBaseTransport], httpx.AsyncBaseTransport] | None = None,
) -> Daemon:
    daemon = Daemon(
        config,
        clock=clock,
        emulator=emulator,
        environ=ENV if environ is None else environ,
        wrap_transport=wrap,
    )
    await daemon.run(exit_when_idle=True, migrate=True)
    return daemon


async def run_until_crash(
    config: Config,
    clock: FakeClock,
    emulator: Emulator,
    wrap: Callable[[httpx.AsyncBaseTransport], httpx.AsyncBaseTransport],
) -> None:
    """Run until the transport's :class:`Crash` (like ``kill -9``: nothing catches it)."""
    try:
        await run(config, clock, emulator, wrap=wrap)
    except BaseException as exc:
        assert contains_crash(exc), exc
    else:
        pytest.fail("the daemon finished without crashing")


async def deliveries(config: Config, clock: FakeClock) -> list[Delivery]:
    async with await SqlLedger.connect(config.ledger.url, clock=clock) as ledger:
        return await ledger.deliveries()


async def test_signed_events_reach_a_live_receiver_while_another_is_dead(
    tmp_path: Path, clock: FakeClock, emulator: Emulator
) -> None:
    """submitted and done arrive verified, done carries job.json; the dead one ends dead."""
    gone = dead_url()
    with receiving() as receiver:
        config = make_config(
            tmp_path,
            webhook(receiver.url),
            webhook(gone, backoff='"1s"', max_age='"20s"', events='["job.done"]'),
        )
        daemon = await run(config, clock, emulator)
    assert all(r["verified"] for r in receiver.requests), receiver.requests
    types = [r["payload"]["type"] for r in receiver.requests]
    assert types == [JOB_SUBMITTED, JOB_DONE]
    done = receiver.requests[1]["payload"]
    summary = json.loads((config.results.dir / "job-0" / "job.json").read_text())
    assert done["data"] == summary
    assert done["data"]["outcome"] == "succeeded"
    assert done["timestamp"].endswith("Z")
    by_endpoint = {(d.endpoint, d.type): d for d in await deliveries(config, clock)}
    live = by_endpoint[(receiver.url, JOB_DONE)]
    assert (live.state, live.attempts, live.last_status) == ("delivered", 1, "HTTP 204")
    assert receiver.requests[1]["headers"]["webhook-id"] == live.webhook_id
    dead = by_endpoint[(gone, JOB_DONE)]
    # How many retries fit in max_age depends on how far simulated time runs while a
    # connection attempt is on the wire (the schedule itself is tested in tests/unit).
    assert dead.state == "dead" and dead.attempts >= 1
    assert (dead.last_status, dead.webhook_id) == ("connection refused", live.webhook_id)
    assert dead.last_error
    stats = daemon.deliverer.stats() if daemon.deliverer else {}
    assert (stats[receiver.url].delivered, stats[receiver.url].failed) == (2, 0)
    assert (stats[gone].delivered, stats[gone].dead) == (0, 1)
    assert stats[gone].failed == dead.attempts
    # The same numbers on /metrics, by endpoint; the ledger's rows too.
    assert daemon.view is not None
    collector = DaemonCollector(daemon.view)
    try:
        await collector.refresh()  # reads the stopped daemon's ledger once more
    finally:
        assert daemon.runtime is not None
        await daemon.runtime.ledger.close()  # and closes what that opened
    registry = CollectorRegistry()
    registry.register(collector)
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for sample in family.samples
    }
    assert samples[("orchestrator_webhook_delivered_total", (("endpoint", receiver.url),))] == 2
    assert samples[("orchestrator_webhook_dead_total", (("endpoint", gone),))] == 1
    assert samples[("orchestrator_webhook_failed_attempts_total", (("endpoint", gone),))] == (
        dead.attempts
    )
    latency = ("orchestrator_webhook_attempt_duration_seconds_count", (("endpoint", gone),))
    assert samples[latency] == dead.attempts
    assert (
        samples[("orchestrator_webhook_deliveries", (("endpoint", gone), ("state", "dead")))] == 1
    )


async def test_a_slow_receiver_delays_neither_the_job_nor_another_receiver(
    tmp_path: Path, clock: FakeClock, emulator: Emulator
) -> None:
    """While the slow one still holds job.submitted, the job is done and the fast one told."""
    with receiving(delay=1.5) as slow, receiving() as fast:
        config = make_config(tmp_path, webhook(slow.url), webhook(fast.url))
        await run(config, clock, emulator)
    fast_done = next(r for r in fast.requests if r["payload"]["type"] == JOB_DONE)
    slow_submitted = next(r for r in slow.requests if r["payload"]["type"] == JOB_SUBMITTED)
    assert fast_done["arrived"] < slow_submitted["answered"]
    assert all(r["verified"] for r in slow.requests + fast.requests)


async def test_failures_are_retried_with_the_same_id_and_body(
    tmp_path: Path, clock: FakeClock, emulator: Emulator
) -> None:
    """A 500 and a 503 are retried after backoff; each attempt is signed anew, same id/body."""
    with receiving(statuses=[500, 503]) as receiver:
        config = make_config(tmp_path, webhook(receiver.url, events='["job.done"]', backoff='"2s"'))
        await run(config, clock, emulator)
    assert [r["status"] for r in receiver.requests] == [500, 503, 204]
    assert all(r["verified"] for r in receiver.requests)
    assert len({r["headers"]["webhook-id"] for r in receiver.requests}) == 1
    assert len({r["body"] for r in receiver.requests}) == 1
    # Each attempt is stamped anew (the schedule itself is tested in tests/unit).
    stamps = [int(r["headers"]["webhook-timestamp"]) for r in receiver.requests]
    assert stamps[0] < stamps[1] < stamps[2]
    (delivery,) = await deliveries(config, clock)
    assert (delivery.state, delivery.attempts, delivery.last_error) == ("delivered", 3, None)


async def test_a_slow_receiver_times_out_and_ends_dead(
    tmp_path: Path, clock: FakeClock, emulator: Emulator
) -> None:
    """An answer slower than ``timeout`` is a failed attempt; after max_age the delivery dies."""
    with receiving(delay=1.0) as receiver:
        config = make_config(
            tmp_path,
            webhook(
                receiver.url,
                events='["job.done"]',
                timeout='"200ms"',
                backoff='"1s"',
                max_age='"1s"',
            ),
        )
        await run(config, clock, emulator)
    (delivery,) = await deliveries(config, clock)
    assert (delivery.state, delivery.last_status) == ("dead", "timeout")
    assert "0.2s" in (delivery.last_error or "")
    # Simulated time runs on while a request waits on the wire: how many attempts fit is
    # not the point; each one reached the receiver and timed out.
    assert len(receiver.requests) == delivery.attempts >= 1


async def test_kill_between_the_state_change_and_the_delivery_loses_nothing(
    tmp_path: Path, clock: FakeClock, emulator: Emulator
) -> None:
    """The daemon dies as it starts the POST of job.done; the restart delivers it."""
    with receiving() as receiver:
        config = make_config(tmp_path, webhook(receiver.url, events='["job.done"]'))

        def crash(inner: httpx.AsyncBaseTransport) -> httpx.AsyncBaseTransport:
            return CrashingTransport(inner, when=lambda r: str(r.url) == receiver.url, after=False)

        await run_until_crash(config, clock, emulator, crash)
        assert receiver.requests == []
        (pending,) = await deliveries(config, clock)
        assert (pending.state, pending.attempts) == ("pending", 0)
        await run(config, clock, emulator)
    (delivery,) = await deliveries(config, clock)
    assert delivery.state == "delivered"
    assert [r["headers"]["webhook-id"] for r in receiver.requests] == [pending.webhook_id]


async def test_kill_mid_delivery_redelivers_the_same_message(
    tmp_path: Path, clock: FakeClock, emulator: Emulator
) -> None:
    """The receiver got job.done but the daemon died before recording it: sent again, same id."""
    with receiving() as receiver:
        config = make_config(tmp_path, webhook(receiver.url, events='["job.done"]'))

        def crash(inner: httpx.AsyncBaseTransport) -> httpx.AsyncBaseTransport:
            return CrashingTransport(inner, when=lambda r: str(r.url) == receiver.url)

        await run_until_crash(config, clock, emulator, crash)
        assert len(receiver.requests) == 1
        await run(config, clock, emulator)
    first, second = receiver.requests
    assert first["headers"]["webhook-id"] == second["headers"]["webhook-id"]
    assert first["body"] == second["body"]
    assert second["verified"]
    (delivery,) = await deliveries(config, clock)
    assert (delivery.state, delivery.attempts) == ("delivered", 1)


def write_hook(tmp_path: Path, script: str) -> Path:
    path = tmp_path / "hook.sh"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)
    return path


async def test_a_command_hook_gets_the_job_json_without_a_shell(
    tmp_path: Path, clock: FakeClock, emulator: Emulator
) -> None:
    """The hook gets {job_json} as an argument and the body on stdin; its output is kept."""
    out = tmp_path / "out"
    out.mkdir()
    script = write_hook(
        tmp_path,
        f'printf %s "$1" > {out}/"$2".arg\ncat > {out}/"$2".stdin\n'
        f'env > {out}/"$2".env\necho "notified $2 for $ORCH_JOB"\n',
    )
    hook = f'[[hooks]]\ncommand = ["{script}", "{{job_json}}", "{{event}}"]\n'
    with receiving() as receiver:  # a webhook beside it: its secret must not reach the hook
        config = make_config(tmp_path, hook, webhook(receiver.url, events='["job.done"]'))
        await run(config, clock, emulator, environ=ENV | {"PATH": "/usr/bin:/bin"})
    summary = json.loads((config.results.dir / "job-0" / "job.json").read_text())
    assert json.loads((out / "job.done.arg").read_text()) == summary
    body = json.loads((out / "job.done.stdin").read_text())
    assert (body["type"], body["data"]) == ("job.done", summary)
    assert json.loads((out / "job.submitted.arg").read_text())["name"] == "job-0"
    env = (out / "job.done.env").read_text()
    assert "ORCH_EVENT=job.done" in env and "ORCH_WEBHOOK_SECRET" not in env
    assert SECRET not in env
    hooked = [d for d in await deliveries(config, clock) if d.endpoint.startswith("hook:")]
    assert {(d.type, d.state, d.last_status) for d in hooked} == {
        (JOB_SUBMITTED, "delivered", "exit 0"),
        (JOB_DONE, "delivered", "exit 0"),
    }
    assert {d.last_output for d in hooked} == {
        "notified job.done for job-0\n",
        "notified job.submitted for job-0\n",
    }


async def test_a_failing_hook_is_retried_then_dead_and_a_hung_one_killed(
    tmp_path: Path, clock: FakeClock, emulator: Emulator
) -> None:
    """Exit 3 is retried until max_age; a hook past its timeout is killed and retried."""
    failing = write_hook(tmp_path, 'echo "quota exceeded" >&2\nexit 3\n')
    hung = tmp_path / "hung.sh"
    hung.write_text("#!/bin/sh\necho started\nexec sleep 30\n")
    hung.chmod(0o755)
    config = make_config(
        tmp_path,
        f'[[hooks]]\ncommand = ["{failing}"]\nevents = ["job.done"]\nbackoff = "1s"\n'
        'max_age = "3s"\n',
        f'[[hooks]]\ncommand = ["{hung}"]\nevents = ["job.done"]\ntimeout = "300ms"\n'
        'max_age = "1s"\n',
    )
    await run(config, clock, emulator)
    by_program = {d.endpoint: d for d in await deliveries(config, clock)}
    failed = by_program[config.hooks[0].endpoint]
    assert (failed.state, failed.last_status, failed.last_output) == (
        "dead",
        "exit 3",
        "quota exceeded\n",
    )
    assert failed.attempts >= 1  # retried until max_age: how often depends on the clock's jumps
    killed = by_program[config.hooks[1].endpoint]
    assert (killed.state, killed.last_status, killed.last_output) == (
        "dead",
        "timeout",
        "started\n",
    )


async def test_redeliver_sends_the_same_message_again(
    tmp_path: Path, clock: FakeClock, emulator: Emulator
) -> None:
    """A redelivery (`orchestrator webhooks --redeliver ID`) sends a delivered message again."""
    with receiving() as receiver:
        config = make_config(tmp_path, webhook(receiver.url, events='["job.done"]'))
        await run(config, clock, emulator)
        (delivery,) = await deliveries(config, clock)
        async with await SqlLedger.connect(config.ledger.url, clock=clock) as ledger:
            assert [d.id for d in await ledger.redeliver(str(delivery.id))] == [delivery.id]
        await run(config, clock, emulator)
    assert [r["headers"]["webhook-id"] for r in receiver.requests] == [delivery.webhook_id] * 2
    assert receiver.requests[0]["body"] == receiver.requests[1]["body"]


async def test_a_retried_job_tells_once_when_its_last_attempt_is_in(
    tmp_path: Path, clock: FakeClock
) -> None:
    """Follow-up attempts are ordinary ledger jobs, yet only the job they serve is announced:
    one job.submitted, one job.done whose data lists every attempt."""
    settings = EmulatorSettings(
        time_scale=1.0, throughput=100.0, validation_seconds=2.0, seed=5, transient_fraction=0.5
    )
    with receiving() as receiver, Emulator(settings, clock=clock) as flaky:
        path = write_config(
            tmp_path,
            [("job-0", 12)],
            extra="\n".join(["max_attempts = 6", 'retry_delay = "5s"', webhook(receiver.url)]),
        )
        config = load(path)
        await run(config, clock, flaky)
    summary = json.loads((config.results.dir / "job-0" / "job.json").read_text())
    assert len(summary["attempts"]) >= 2, summary["attempts"]
    assert all(r["verified"] for r in receiver.requests), receiver.requests
    payloads = [r["payload"] for r in receiver.requests]
    assert [p["type"] for p in payloads] == [JOB_SUBMITTED, JOB_DONE]
    assert {p["data"]["name"] for p in payloads} == {"job-0"}
    assert payloads[1]["data"] == summary
