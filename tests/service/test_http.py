"""/healthz, /readyz and /metrics of a real daemon, over a real local socket."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from orchestrator.clock import FakeClock
from orchestrator.config import Config, load_config
from orchestrator.daemon import Daemon
from orchestrator.emulator import Emulator, EmulatorSettings
from orchestrator.errors import ConfigError
from orchestrator.ledger.migrate import downgrade, head_revision, upgrade
from orchestrator.model import JobState
from orchestrator.providers.mistral import MistralProvider
from orchestrator.service.health import STALL_ALLOWANCE
from orchestrator.service.view import CYCLE_BUCKETS
from tests.ledger.databases import postgres_url
from tests.service.conftest import (
    advance_until,
    all_final,
    quiesce,
    running,
    settle,
    write_config,
)

__all__ = ["postgres_url"]  # a fixture

pytestmark = pytest.mark.anyio

LOOPS = {"intake", "submit:main", "poll:main", "collect:main"}


def _samples(body: str) -> dict[str, list[Sample]]:
    """Samples by sample name (``orchestrator_jobs``, ``..._bucket`` ...), parsed strictly."""
    found: dict[str, list[Sample]] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            found.setdefault(sample.name, []).append(sample)
    return found


def _value(samples: dict[str, list[Sample]], name: str, **labels: str) -> float:
    matching = [
        s.value for s in samples[name] if all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(matching) == 1, (name, labels, samples.get(name))
    return matching[0]


async def test_a_running_daemon_is_healthy_ready_and_measured(
    config: Config, clock: FakeClock
) -> None:
    """Health lists every loop, readiness names the head, metrics follow the jobs to done."""
    # Slow enough (20-30 s a job) that several polls see the jobs running, however the loaded
    # machine interleaves the daemon's tasks with the clock's steps.
    settings = EmulatorSettings(
        time_scale=1.0, throughput=1.0, validation_seconds=2.0, failure_fraction=0.1, seed=3
    )
    with Emulator(settings, clock=clock) as emulator:
        await _healthy_ready_and_measured(config, clock, emulator)


async def _healthy_ready_and_measured(config: Config, clock: FakeClock, emulator: Emulator) -> None:
    async with running(config, clock, emulator) as daemon:
        assert daemon.http is not None
        async with httpx.AsyncClient(base_url=daemon.http.url, timeout=10) as client:
            health = await client.get("/healthz")
            assert health.status_code == 200
            assert health.headers["cache-control"] == "no-store"
            assert health.json()["status"] == "ok"
            assert set(health.json()["loops"]) == LOOPS

            ready = await client.get("/readyz")
            assert ready.status_code == 200
            assert ready.json() == {
                "status": "ready",
                "reason": "ledger reachable and at head",
                "revision": head_revision(),
                "head": head_revision(),
            }

            # While the jobs run, the budget in use is what the ledger says is pending.
            async def some_running() -> bool:
                assert daemon.runtime is not None
                jobs = await daemon.runtime.ledger.list_jobs(states=(JobState.RUNNING,))
                return bool(jobs) and all(job.total > 0 for job in jobs)

            await advance_until(clock, some_running)
            await quiesce(daemon)  # a poll cycle still settling would move pending under us
            assert daemon.runtime is not None
            jobs = await daemon.runtime.ledger.list_jobs()
            pending = sum(job.total - job.completed for job in jobs)
            running_now = sum(job.state is JobState.RUNNING for job in jobs)
            samples = _samples((await client.get("/metrics")).text)
            assert _value(samples, "orchestrator_jobs", state="running", outcome="") == running_now
            assert _value(samples, "orchestrator_workspace_pending_requests") == pending > 0
            assert _value(samples, "orchestrator_workspace_budget_requests") == 1000
            assert _value(
                samples, "orchestrator_workspace_budget_utilisation_ratio"
            ) == pytest.approx(pending / 1000)

            await advance_until(clock, all_final(daemon))
            response = await client.get("/metrics")
            assert response.headers["content-type"].startswith("text/plain")
            samples = _samples(response.text)

            jobs = await daemon.runtime.ledger.list_jobs()
            files = [f for job in jobs for f in await daemon.runtime.ledger.files(job.id)]
            done = {
                outcome: _value(samples, "orchestrator_jobs", state="done", outcome=outcome)
                for outcome in ("succeeded", "partial", "failed", "expired", "cancelled")
            }
            assert sum(done.values()) == 2
            assert done["partial"] == sum(1 for job in jobs if job.failed)
            assert _value(samples, "orchestrator_jobs", state="queued", outcome="") == 0
            assert _value(samples, "orchestrator_workspace_pending_requests") == 0
            assert _value(samples, "orchestrator_workspace_budget_utilisation_ratio") == 0
            assert _value(samples, "orchestrator_workspace_queued_jobs") == 0
            assert _value(samples, "orchestrator_downloaded_bytes_total") == sum(
                f.bytes for f in files
            )
            assert _value(samples, "orchestrator_ledger_up") == 1
            assert _value(samples, "orchestrator_daemon_stopping") == 0
            assert _value(samples, "orchestrator_build_info", version="0.1.0") == 1

            calls = {
                (s.labels["operation"], s.labels["status"]): s.value
                for s in samples["orchestrator_api_calls_total"]
            }
            provider = daemon.workspaces["main"].provider
            assert isinstance(provider, MistralProvider)
            assert calls == {(op, str(status)): n for (op, status), n in provider.calls.items()}
            assert calls[("upload_file", "200")] == 2
            assert calls[("create_job", "200")] == 2
            assert calls[("download_file", "200")] == len(files)

            poller = daemon.pollers["main"]
            assert poller.cycles > 0
            assert _value(samples, "orchestrator_poll_cycles_total") == poller.cycles
            assert _value(samples, "orchestrator_poll_cycle_duration_seconds_count") == (
                poller.cycles
            )
            buckets = samples["orchestrator_poll_cycle_duration_seconds_bucket"]
            assert [b.labels["le"] for b in buckets] == [
                *(repr(float(b)) for b in CYCLE_BUCKETS),
                "+Inf",
            ]
            assert _value(samples, "orchestrator_poll_consecutive_failures") == 0
            beats = {
                s.labels["loop"]: s.value
                for s in samples["orchestrator_loop_heartbeat_timestamp_seconds"]
            }
            assert set(beats) == LOOPS
            assert max(beats.values()) <= clock.now()
            assert "process_cpu_seconds_total" in samples


async def test_a_stalled_loop_fails_healthz(
    config: Config, clock: FakeClock, emulator: Emulator
) -> None:
    """A heartbeat older than its loop's limit turns /healthz into a 503 naming the loop."""
    async with running(config, clock, emulator) as daemon:
        assert daemon.http is not None and daemon.runtime is not None
        async with httpx.AsyncClient(base_url=daemon.http.url, timeout=10) as client:
            daemon.runtime.heartbeats["poll:main"] = clock.now() - 10_000
            response = await client.get("/healthz")
            assert response.status_code == 503
            body = response.json()
            assert body["status"] == "stale"
            assert body["loops"]["poll:main"]["fresh"] is False
            assert body["loops"]["poll:main"]["age_seconds"] == 10_000
            assert body["loops"]["submit:main"]["fresh"] is True

            # The loop cycles again: healthy again.
            daemon.runtime.heartbeats["poll:main"] = clock.now()
            assert (await client.get("/healthz")).status_code == 200


async def test_a_ledger_behind_the_head_is_not_ready(
    config: Config, clock: FakeClock, emulator: Emulator
) -> None:
    """Downgraded under the daemon: /readyz says to migrate, /metrics drops the job series."""
    async with running(config, clock, emulator) as daemon:
        assert daemon.http is not None
        async with httpx.AsyncClient(base_url=daemon.http.url, timeout=10) as client:
            await downgrade(config.ledger.url)
            response = await client.get("/readyz")
            assert response.status_code == 503
            body = response.json()
            assert body["revision"] is None
            assert body["head"] == head_revision()
            assert "run `orchestrator migrate`" in body["reason"]

            samples = _samples((await client.get("/metrics")).text)
            assert _value(samples, "orchestrator_ledger_up") == 0
            assert "orchestrator_jobs" not in samples
            assert "orchestrator_poll_cycles_total" in samples  # in-memory metrics stay

            await upgrade(config.ledger.url)
            assert (await client.get("/readyz")).status_code == 200
            samples = _samples((await client.get("/metrics")).text)
            assert _value(samples, "orchestrator_ledger_up") == 1


async def test_a_draining_daemon_is_alive_but_not_ready(
    config: Config, clock: FakeClock, emulator: Emulator
) -> None:
    """Once stopping: /healthz 200 "stopping", /readyz 503, metrics flag it."""
    async with running(config, clock, emulator) as daemon:
        assert daemon.http is not None and daemon.runtime is not None
        async with httpx.AsyncClient(base_url=daemon.http.url, timeout=10) as client:
            daemon.runtime.stopping.set()  # what SIGTERM sets; the loops have not noticed yet
            health = await client.get("/healthz")
            assert (health.status_code, health.json()["status"]) == (200, "stopping")
            ready = await client.get("/readyz")
            assert (ready.status_code, ready.json()["reason"]) == (503, "the daemon is stopping")
            samples = _samples((await client.get("/metrics")).text)
            assert _value(samples, "orchestrator_daemon_stopping") == 1


async def test_the_server_stops_with_the_daemon(
    config: Config, clock: FakeClock, emulator: Emulator
) -> None:
    """When run() returns, nothing listens on the endpoint's port any more."""
    async with running(config, clock, emulator) as daemon:
        assert daemon.http is not None
        url = daemon.http.url
    await settle()
    async with httpx.AsyncClient(base_url=url, timeout=5) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get("/healthz")


async def test_openmetrics_when_the_scraper_asks(
    config: Config, clock: FakeClock, emulator: Emulator
) -> None:
    """An OpenMetrics Accept header gets the OpenMetrics format, ending in # EOF."""
    async with running(config, clock, emulator) as daemon:
        assert daemon.http is not None
        async with httpx.AsyncClient(base_url=daemon.http.url, timeout=10) as client:
            response = await client.get(
                "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
            )
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n")
    assert "orchestrator_jobs{" in response.text


async def test_a_taken_port_is_a_config_error(
    tmp_path: Path, clock: FakeClock, emulator: Emulator
) -> None:
    """A port in use fails the start with a message naming http.listen; nothing is left open."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = load_config(write_config(tmp_path, listen=f"127.0.0.1:{port}"), environ={})
        daemon = Daemon(config, clock=clock, emulator=emulator, environ={})
        with pytest.raises(ConfigError) as caught:
            await daemon.run(migrate=True)
    message = str(caught.value)
    assert "http.listen" in message
    assert f"cannot listen on 127.0.0.1:{port}" in message
    assert str(config.path) in message
    # The ledger and its lock were released: the same config runs once the port is free.
    config = load_config(write_config(tmp_path, listen=None), environ={})
    async with running(config, clock, emulator) as again:
        assert again.http is None


@pytest.mark.postgres
async def test_a_replicas_lease_heartbeat_has_its_own_limit(
    postgres_url: str, tmp_path: Path, clock: FakeClock, emulator: Emulator
) -> None:
    """On a shared ledger the lease loop must beat every lease_ttl/3 (plus the allowance)."""
    path = write_config(tmp_path, extra="[daemon]\nlease_ttl = 30000\n")
    config = load_config(path, environ={"ORCH_LEDGER_URL": postgres_url})
    async with running(config, clock, emulator) as daemon:
        assert daemon.http is not None and daemon.runtime is not None
        async with httpx.AsyncClient(base_url=daemon.http.url, timeout=10) as client:
            body = (await client.get("/healthz")).json()
            limit = body["loops"]["leases"]["limit_seconds"]
            assert limit == pytest.approx(10_000 + STALL_ALLOWANCE)
            daemon.runtime.heartbeats["leases"] = clock.now() - limit - 1
            response = await client.get("/healthz")
            assert response.status_code == 503
            assert response.json()["loops"]["leases"]["fresh"] is False


async def test_metrics_name_each_workspaces_provider_and_token_budgets(
    tmp_path: Path, clock: FakeClock, emulator: Emulator
) -> None:
    """workspace_info carries the provider; token budgets per model; tokens of running jobs."""
    extra = (
        '[workspaces.oai]\nprovider = "openai"\nbase_url = "embedded"\npending_budget = 100\n'
        'token_budget = 5000\n[workspaces.oai.token_budgets]\n"gpt-4o" = 900\n'
    )
    config = load_config(write_config(tmp_path, extra=extra), environ={})
    async with running(config, clock, emulator) as daemon:
        assert daemon.http is not None and daemon.runtime is not None
        async with httpx.AsyncClient(base_url=daemon.http.url, timeout=10) as client:
            samples = _samples((await client.get("/metrics")).text)
            info = {
                (s.labels["workspace"], s.labels["provider"])
                for s in samples["orchestrator_workspace_info"]
            }
            assert info == {("main", "mistral"), ("oai", "openai")}
            budgets = {
                (s.labels["workspace"], s.labels["model"]): s.value
                for s in samples["orchestrator_workspace_token_budget"]
            }
            assert budgets == {("oai", ""): 5000, ("oai", "gpt-4o"): 900}
            ledger = daemon.runtime.ledger
            in_flight = [
                job
                for job in await ledger.list_jobs(states=(JobState.ADMITTED, JobState.RUNNING))
                if job.workspace == "main"
            ]
            held = {
                s.labels["model"]: s.value
                for s in samples.get("orchestrator_workspace_prompt_tokens", [])
                if s.labels["workspace"] == "main"
            }
            assert held == (
                {"mistral-small-latest": sum(job.prompt_tokens for job in in_flight)}
                if in_flight
                else {}
            )
