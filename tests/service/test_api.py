"""The JSON API of a real daemon over a real local socket: reads, writes, the event stream."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import anyio
import httpx
import pytest

from orchestrator.cli import main
from orchestrator.cli._render import Output
from orchestrator.clock import FakeClock
from orchestrator.config import load_config
from orchestrator.daemon import Daemon
from orchestrator.emulator import Emulator
from orchestrator.model import JobState
from tests.service.conftest import (
    advance_until,
    all_final,
    quiesce,
    running,
    settle,
    write_config,
)

pytestmark = pytest.mark.anyio

TOKEN = "t0ken-for-the-api-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ENV = {"ORCH_HTTP_TOKEN": TOKEN}


def _config(folder: Path, jobs: list[tuple[str, int]] | None = None, extra: str = ""):
    path = write_config(
        folder,
        jobs=jobs or [("alpha", 20), ("beta", 30)],
        extra='token_env = "ORCH_HTTP_TOKEN"\n' + extra,
    )
    return load_config(path, environ={})


async def _cli(*argv: str, clock: FakeClock) -> str:
    """Run a CLI command in a worker thread (it runs its own event loop); return its stdout."""
    out = io.StringIO()
    code = await anyio.to_thread.run_sync(lambda: main(list(argv), clock=clock, stdout=Output(out)))
    assert code == 0, out.getvalue()
    return out.getvalue()


def _client(daemon: Daemon) -> httpx.AsyncClient:
    assert daemon.http is not None
    return httpx.AsyncClient(base_url=daemon.http.url, timeout=10)


async def _pages(client: httpx.AsyncClient, path: str) -> list[dict[str, object]]:
    """Every row of a paged listing, following the Link headers."""
    rows: list[dict[str, object]] = []
    url: str | None = path
    while url is not None:
        response = await client.get(url)
        assert response.status_code == 200, response.text
        rows += response.json()
        link = response.headers.get("link")
        url = link.split(">")[0].lstrip("<") if link else None
    return rows


async def test_jobs_are_the_status_json_rows(tmp_path: Path, clock: FakeClock, emulator: Emulator):
    """GET /api/jobs answers exactly what `status --json` prints, filters and pages alike."""
    jobs = [(f"job-{i:02d}", 3 + i) for i in range(12)]
    config = _config(tmp_path, jobs)
    status = ("status", "--config", str(config.path), "--json")
    async with running(config, clock, emulator, environ=ENV) as daemon, _client(daemon) as client:
        # The loops may still be moving a job on a loaded machine: compare one stable moment.
        for _ in range(20):
            expected = json.loads(await _cli(*status, clock=clock))
            cli_running = json.loads(await _cli(*status, "--state", "running", clock=clock))
            whole = await client.get("/api/jobs")
            paged = await _pages(client, "/api/jobs?limit=5")
            filtered = await _pages(client, "/api/jobs?limit=2&state=queued&state=running")
            queued = (await client.get("/api/jobs", params={"state": "queued,admitted"})).json()
            api_running = (await client.get("/api/jobs?state=running")).json()
            if json.loads(await _cli(*status, clock=clock)) == expected:
                break
            await quiesce(daemon)
        assert whole.json() == expected
        assert whole.headers["x-total-count"] == "12"
        assert "link" not in whole.headers
        assert paged == expected
        assert filtered == [r for r in expected if r["state"] in ("queued", "running")]
        assert queued == [r for r in expected if r["state"] in ("queued", "admitted")]
        assert api_running == cli_running
        assert (await client.get("/api/jobs?workspace=elsewhere")).json() == []
        for bad in ("state=sleeping", "limit=0", "limit=x", "cursor=abc", "parts=maybe"):
            refused = await client.get(f"/api/jobs?{bad}")
            assert refused.status_code == 400, bad
            assert refused.json()["error"].split(":")[0] == bad.split("=")[0]


async def test_a_job_page_lists_history_files_and_serves_them(
    tmp_path: Path, clock: FakeClock, emulator: Emulator
):
    """The job detail carries events and file links; the files are the bytes on disk."""
    config = _config(tmp_path)
    async with running(config, clock, emulator, environ=ENV) as daemon, _client(daemon) as client:
        await advance_until(clock, all_final(daemon))
        detail = (await client.get("/api/jobs/alpha")).json()
        assert detail["state"] == "done"
        assert detail["events"][0]["to"] == "queued"
        assert detail["events"][-1]["to"] == "done"
        kinds = {f["kind"]: f for f in detail["files"]}
        assert "output" in kinds
        output = await client.get(kinds["output"]["url"])
        assert output.status_code == 200
        assert output.content == Path(kinds["output"]["path"]).read_bytes()
        summary = await client.get(detail["links"]["summary"])
        assert summary.json()["name"] == "alpha"
        for path in (
            "/api/jobs/nobody",
            "/api/jobs/..%2F..%2Fetc%2Fpasswd",
            "/api/jobs/alpha/files/..%2F..%2Fledger.db",
            "/api/jobs/alpha/files/secrets",
            "/api/jobs/%2e%2e/files/output",
        ):
            missing = await client.get(path)
            assert missing.status_code == 404, path
            assert missing.headers["content-type"] == "application/json"
            assert "error" in missing.json()


async def test_workspaces_report_each_budget_dimension(
    tmp_path: Path, clock: FakeClock, emulator: Emulator
):
    """Budget, in flight, queued demand, spend and a gauge per dimension, as `budget --json`."""
    config = _config(
        tmp_path,
        [("alpha", 20), ("beta", 30), ("gamma", 990)],
        extra='[pricing.models."mistral-small-latest"]\ninput = 0.1\noutput = 0.3\n',
    )
    text = config.path.read_text(encoding="utf-8")
    config.path.write_text(
        text.replace("pending_budget = 1000", "pending_budget = 1000\nspend_limit = 5.0"),
        encoding="utf-8",
    )
    config = load_config(config.path, environ={})
    async with running(config, clock, emulator, environ=ENV) as daemon, _client(daemon) as client:
        budget = ("budget", "--config", str(config.path), "--json")
        for _ in range(20):  # one stable moment, as above
            cli = json.loads(await _cli(*budget, clock=clock))
            (workspace,) = (await client.get("/api/workspaces")).json()
            if json.loads(await _cli(*budget, clock=clock)) == cli:
                break
            await quiesce(daemon)
        assert {k: workspace[k] for k in cli[0] if k != "external"} == {
            k: v for k, v in cli[0].items() if k != "external"
        }
        requests = workspace["dimensions"][0]
        assert requests["name"] == "requests"
        assert requests["limit"] == 1000
        assert requests["used"] == workspace["in_flight"] > 0
        assert workspace["queued_jobs"] == 1  # gamma waits: 990 does not fit beside the others
        assert workspace["provider"] == "mistral"
        spend = workspace["dimensions"][-1]
        assert spend["name"] == "spend" and spend["limit"] == 5.0
        assert spend["used"] == round(
            workspace["spend"]["spent"] + workspace["spend"]["in_flight"], 6
        )
        status = ("status", "--config", str(config.path), "--json")
        for _ in range(20):
            rows = json.loads(await _cli(*status, clock=clock))
            api_rows = (await client.get("/api/jobs")).json()
            if json.loads(await _cli(*status, clock=clock)) == rows:
                break
            await quiesce(daemon)
        assert api_rows == rows
        assert {"usage", "cost", "cost_estimate"} <= set(api_rows[0])
        assert any(row["cost_estimate"] for row in api_rows)


async def _events(client: httpx.AsyncClient, headers: dict[str, str], count: int):
    """The first ``count`` job events of a fresh /api/events stream: (id, data)."""
    found: list[tuple[int, dict[str, object]]] = []
    async with client.stream("GET", "/api/events", headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        block: dict[str, str] = {}
        async for line in response.aiter_lines():
            if line:
                key, _, value = line.partition(": ")
                block[key] = value
                continue
            if block.get("event") == "job":
                found.append((int(block["id"]), json.loads(block["data"])))
                if len(found) == count:
                    return found
            block = {}
    raise AssertionError(f"the stream ended after {len(found)} events")


async def test_the_event_stream_resumes_after_the_last_event_id(
    tmp_path: Path, clock: FakeClock, emulator: Emulator
):
    """A reconnect with Last-Event-ID gets exactly the events after it, new ones included."""
    config = _config(tmp_path)
    async with running(config, clock, emulator, environ=ENV) as daemon, _client(daemon) as client:
        assert daemon.runtime is not None
        ledger = daemon.runtime.ledger
        history = await ledger.events_after(0)
        assert len(history) >= 4
        backlog = await _events(client, {}, len(history))
        assert [ident for ident, _ in backlog] == [e.id for e in history]
        first = backlog[0][1]
        assert first["event"]["to"] == "queued" and first["job"]["name"] in ("alpha", "beta")
        middle = history[1].id
        cancelled = await client.post("/api/jobs/beta/cancel", headers=AUTH)
        assert cancelled.status_code == 202
        after = await ledger.events_after(middle)
        assert after[-1].detail == "cancel requested"
        resumed = await _events(client, {"Last-Event-ID": str(middle)}, len(after))
        assert [ident for ident, _ in resumed] == [e.id for e in after]
        assert resumed[-1][1]["job"]["cancel_requested"] is True
        bad = await client.get("/api/events", headers={"Last-Event-ID": "latest"})
        assert bad.status_code == 400


async def test_progress_reaches_an_open_stream(
    tmp_path: Path, clock: FakeClock, emulator: Emulator
):
    """A job that finishes while the stream is open is announced on it (no reconnect)."""
    config = _config(tmp_path, [("alpha", 20)])
    async with running(config, clock, emulator, environ=ENV) as daemon, _client(daemon) as client:
        assert daemon.runtime is not None
        start = max(e.id for e in await daemon.runtime.ledger.events_after(0))
        seen: list[str] = []
        async with client.stream(
            "GET", "/api/events", headers={"Last-Event-ID": str(start)}
        ) as response:
            lines = response.aiter_lines()

            async def read_until_done() -> None:
                async for line in lines:
                    if line.startswith("data: "):
                        data = json.loads(line[6:])
                        row = data.get("job", data)
                        seen.append(row["state"])
                        if row["state"] == "done":
                            return

            async with anyio.create_task_group() as tg:
                tg.start_soon(read_until_done)
                await advance_until(clock, all_final(daemon))
                with anyio.fail_after(20):
                    while "done" not in seen:
                        clock.advance(1.0)
                        await settle()
        assert "done" in seen


async def test_writes_need_the_token(tmp_path: Path, clock: FakeClock, emulator: Emulator):
    """Missing or wrong token: 401; right token: accepted; no token configured: 403."""
    config = _config(tmp_path)
    async with running(config, clock, emulator, environ=ENV) as daemon, _client(daemon) as client:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            refused = await client.post("/api/jobs/alpha/cancel", headers=headers)
            assert refused.status_code == 401, headers
            assert refused.headers["www-authenticate"] == "Bearer"
        assert (await client.get("/api/jobs")).status_code == 200  # loopback: reads are open
        missing = await client.post("/api/jobs/nobody/cancel", headers=AUTH)
        assert missing.status_code == 404
        accepted = await client.post("/api/jobs/alpha/cancel", headers=AUTH)
        assert accepted.status_code == 202
        assert "cancel requested for 'alpha'" in accepted.json()["message"]
        assert daemon.runtime is not None
        assert (await daemon.runtime.ledger.get_by_name("alpha")).cancel_requested
        await advance_until(clock, all_final(daemon))
        job = await daemon.runtime.ledger.get_by_name("alpha")
        assert job.state is JobState.DONE and job.outcome is not None
        assert job.outcome.value == "cancelled"
    unconfigured = _config(tmp_path / "other")
    async with (
        running(unconfigured, clock, emulator, environ={}) as daemon,
        _client(daemon) as client,
    ):
        refused = await client.post("/api/jobs/alpha/cancel", headers=AUTH)
        assert refused.status_code == 403
        assert "ORCH_HTTP_TOKEN is not set" in refused.json()["error"]
        assert TOKEN not in refused.text


def _definition(name: str, **more: object) -> str:
    return json.dumps(
        {"name": name, "model": "mistral-small-latest", "endpoint": "/v1/chat/completions", **more}
    )


async def test_submit_validates_exactly_as_the_cli(
    tmp_path: Path, clock: FakeClock, emulator: Emulator
):
    """Bad lines: a 422 with the CLI's file:line problems; a good job is queued, then a no-op."""
    config = _config(tmp_path)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"custom_id": "a", "body": {"messages": [{"role": "user", "content": "hi"}]}}\n'
        '{"custom_id": "a", "body": {}}\nnot json\n',
        encoding="utf-8",
    )
    good = tmp_path / "data" / "alpha.jsonl"  # the 20 valid lines of job alpha
    async with running(config, clock, emulator, environ=ENV) as daemon, _client(daemon) as client:
        refused = await client.post(
            "/api/jobs",
            headers=AUTH,
            data={"definition": _definition("uploaded")},
            files={"input": ("bad.jsonl", bad.read_bytes(), "application/x-ndjson")},
        )
        assert refused.status_code == 422
        problems = refused.json()["problems"]
        assert problems[0].startswith("bad.jsonl:2: ")
        assert any(p.startswith("bad.jsonl:3: not valid JSON") for p in problems)
        assert not (config.results.dir / "uploaded").exists()  # nothing kept
        cli = await anyio.to_thread.run_sync(
            lambda: _cli_errors(config.path, bad, "uploaded", clock)
        )
        assert [p.replace(str(bad), "bad.jsonl") for p in cli] == problems

        for status, created in ((201, True), (200, False)):
            response = await client.post(
                "/api/jobs",
                headers=AUTH,
                data={"definition": _definition("uploaded", priority=5)},
                files={"input": ("alpha.jsonl", good.read_bytes())},
            )
            assert response.status_code == status, response.text
            assert response.json()["created"] is created
            assert response.json()["requests"] == 20
        assert daemon.runtime is not None
        job = await daemon.runtime.ledger.get_by_name("uploaded")
        assert Path(job.inputs[0]).read_bytes() == good.read_bytes()
        assert Path(job.inputs[0]).parent == config.results.dir / "uploaded" / "inputs"

        conflict = await client.post(
            "/api/jobs",
            headers=AUTH,
            data={"definition": _definition("uploaded")},
            files={"input": ("other.jsonl", (tmp_path / "data" / "beta.jsonl").read_bytes())},
        )
        assert conflict.status_code == 409
        assert "different definition" in conflict.json()["error"]
        assert Path(job.inputs[0]).read_bytes() == good.read_bytes()  # untouched
        assert len(list(Path(job.inputs[0]).parent.iterdir())) == 1

        clash = await client.post(
            "/api/jobs",
            headers=AUTH,
            data={"definition": _definition("beta")},
            files={"input": ("alpha.jsonl", good.read_bytes())},
        )
        assert clash.status_code == 409
        assert "is defined in" in clash.json()["error"]
        await advance_until(clock, all_final(daemon))
        assert (await daemon.runtime.ledger.get_by_name("uploaded")).state is JobState.DONE


def _cli_errors(config: Path, path: Path, name: str, clock: FakeClock) -> list[str]:
    """The problem lines `orchestrator submit` prints to stderr for an invalid input."""
    import sys

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        saved, sys.stderr = sys.stderr, err
        try:
            code = main(
                [
                    "submit",
                    "--config",
                    str(config),
                    "--name",
                    name,
                    "--input",
                    str(path),
                    "--model",
                    "mistral-small-latest",
                    "--endpoint",
                    "/v1/chat/completions",
                ],
                clock=clock,
                stdout=Output(io.StringIO()),
            )
        finally:
            sys.stderr = saved
    assert code == 2
    return [line.strip() for line in err.getvalue().splitlines() if line.startswith("  ")]
