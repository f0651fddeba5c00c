"""The JSON API of a real daemon over a real local socket: reads, writes, the event stream."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import AsyncIterator
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
from tests.service.conftest import advance_until, all_final, running, settle, write_config

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
    async with running(config, clock, emulator, environ=ENV) as daemon, _client(daemon) as client:
        expected = json.loads(
            await _cli("status", "--config", str(config.path), "--json", clock=clock)
        )
        whole = await client.get("/api/jobs")
        assert whole.json() == expected
        assert whole.headers["x-total-count"] == "12"
        assert "link" not in whole.headers
        assert await _pages(client, "/api/jobs?limit=5") == expected
        unfinished = [r for r in expected if r["state"] in ("queued", "running")]
        assert await _pages(client, "/api/jobs?limit=2&state=queued&state=running") == unfinished
        queued = await client.get("/api/jobs", params={"state": "queued,admitted"})
        assert [r["name"] for r in queued.json()] == [
            r["name"] for r in expected if r["state"] in ("queued", "admitted")
        ]
        cli_running = json.loads(
            await _cli(
                "status", "--config", str(config.path), "--json", "--state", "running", clock=clock
            )
        )
        assert (await client.get("/api/jobs?state=running")).json() == cli_running
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
    """Budget, in flight, queued demand and a gauge per dimension, as `budget --json` sums."""
    config = _config(tmp_path, [("alpha", 20), ("beta", 30), ("gamma", 990)])
    async with running(config, clock, emulator, environ=ENV) as daemon, _client(daemon) as client:
        (workspace,) = (await client.get("/api/workspaces")).json()
        cli = json.loads(await _cli("budget", "--config", str(config.path), "--json", clock=clock))
        assert {k: workspace[k] for k in cli[0] if k != "external"} == {
            k: v for k, v in cli[0].items() if k != "external"
        }
        requests = workspace["dimensions"][0]
        assert requests["name"] == "requests"
        assert requests["limit"] == 1000
        assert requests["used"] == workspace["in_flight"] > 0
        assert workspace["queued_jobs"] == 1  # gamma waits: 990 does not fit beside the others
        assert workspace["provider"] == "mistral"


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


@pytest.fixture
async def api(tmp_path: Path, clock: FakeClock, emulator: Emulator) -> AsyncIterator[Daemon]:
    """A running daemon with a token, for the hostile-input tests."""
    async with running(_config(tmp_path), clock, emulator, environ=ENV) as daemon:
        yield daemon


def _huge_head(url: str) -> bytes:
    """The status line the server answers a request with 100 KB of headers."""
    import socket

    host, port = httpx.URL(url).host, httpx.URL(url).port
    assert port is not None
    with socket.create_connection((host, port), timeout=10) as sock:
        head = b"GET /api/jobs HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 100_000
        # Refused while still sending: the answer is already in the buffer.
        with contextlib.suppress(ConnectionResetError):
            sock.sendall(head + b"\r\n\r\n")
        return sock.recv(4096).split(b"\r\n")[0]


def _service(daemon: Daemon, *, host: str = "127.0.0.1", token: str | None = TOKEN, **kw):
    """Another endpoint on the running daemon's view and commands (not bound: ASGI only)."""
    from orchestrator.daemon.commands import DaemonCommands
    from orchestrator.service.http import HttpService

    assert daemon.view is not None and daemon.runtime is not None
    commands = DaemonCommands(
        config=daemon.config,
        ledger=daemon.runtime.ledger,
        on_new_job=lambda job: None,
        on_cancel=lambda job: None,
    )
    return HttpService(daemon.view, host=host, port=0, commands=commands, token=token, **kw)


def _asgi(service) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=service.app), base_url="http://test", timeout=10
    )


async def test_hostile_requests_get_a_json_4xx_and_the_daemon_stays_healthy(api: Daemon):
    """Bad JSON, junk multipart, wrong types, huge bodies and headers: 4xx, then /healthz 200."""
    async with _client(api) as client:
        cases = [
            ({"content": b"{}", "headers": {"content-type": "application/json"}}, 415),
            ({"data": {"definition": "{not json"}, "files": {"input": ("a", b"x")}}, 400),
            ({"data": {"definition": "[1, 2]"}, "files": {"input": ("a", b"x")}}, 422),
            ({"data": {"definition": _definition("x")}}, 415),  # urlencoded: no files
            ({"files": {"definition": ("d.json", _definition("x").encode())}}, 422),  # no input
            ({"data": {"definition": _definition("../etc")}, "files": {"input": ("a", b"")}}, 422),
            (
                {
                    "data": {"definition": _definition("x", input="a.jsonl")},
                    "files": {"input": ("a", b"")},
                },
                422,
            ),
            (
                {
                    "data": {"definition": _definition("x", colour="red")},
                    "files": {"input": ("a", b"")},
                },
                422,
            ),
            (
                {
                    "content": b"--xyz\r\ngarbage without headers",
                    "headers": {"content-type": "multipart/form-data; boundary=xyz"},
                },
                400,
            ),
        ]
        for request, status in cases:
            response = await client.post(
                "/api/jobs", headers=AUTH | request.pop("headers", {}), **request
            )
            assert response.status_code == status, (request, response.text)
            assert response.headers["content-type"] == "application/json"
            assert response.json()["error"]
        unknown_key = await client.post(
            "/api/jobs",
            headers=AUTH,
            data={"definition": _definition("x", colour="red")},
            files={"input": ("a", b"")},
        )
        assert "unknown key 'colour'" in unknown_key.json()["error"]
        assert (await client.get("/nowhere")).json()["error"].startswith("no such endpoint")
        assert (await client.delete("/api/jobs")).status_code == 405
        # A request head larger than the server takes: refused before the app, connection closed.
        assert api.http is not None
        status_line = await anyio.to_thread.run_sync(_huge_head, api.http.url)
        assert status_line.startswith(b"HTTP/1.1 4"), status_line
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/api/jobs")).status_code == 200


async def test_a_body_over_the_limit_is_a_413_naming_it(api: Daemon):
    """Announced (Content-Length) or streamed (chunked), past the limit is a 413, nothing kept."""
    service = _service(api, max_body=64 * 1024)
    big = b'{"custom_id": "x", "body": {}}\n' * 10_000
    async with _asgi(service) as client:
        response = await client.post(
            "/api/jobs",
            headers=AUTH,
            data={"definition": _definition("big")},
            files={"input": ("big.jsonl", big)},
        )
        assert response.status_code == 413
        assert "65,536 bytes" in response.json()["error"]

        async def chunks() -> AsyncIterator[bytes]:
            yield b'--b\r\nContent-Disposition: form-data; name="input"; filename="a"\r\n\r\n'
            for _ in range(100):
                yield b"x" * 4096

        streamed = await client.post(
            "/api/jobs",
            headers={**AUTH, "content-type": "multipart/form-data; boundary=b"},
            content=chunks(),
        )
        assert streamed.status_code == 413
    assert api.config.results.dir.joinpath("big").exists() is False


async def test_reads_off_loopback_need_the_token(api: Daemon):
    """On 0.0.0.0 reads need the token (unless allow_anonymous_reads); probes stay open."""
    guarded = _service(api, host="0.0.0.0")
    async with _asgi(guarded) as client:
        for path in (
            "/api/jobs",
            "/api/jobs/alpha",
            "/api/workspaces",
            "/api/events",
            "/api/openapi.json",
        ):
            assert (await client.get(path)).status_code == 401, path
        assert (await client.get("/api/jobs", headers=AUTH)).status_code == 200
        for path in ("/healthz", "/readyz", "/metrics", "/", "/static/app.js"):
            assert (await client.get(path)).status_code == 200, path
    nobody = _service(api, host="0.0.0.0", token=None)
    async with _asgi(nobody) as client:
        assert (await client.get("/api/jobs")).status_code == 403
    config = attrs_evolve_http(api, allow_anonymous_reads=True)
    open_reads = _service(config, host="0.0.0.0")
    async with _asgi(open_reads) as client:
        assert (await client.get("/api/jobs")).status_code == 200
        assert (await client.post("/api/jobs/alpha/cancel")).status_code == 401


def attrs_evolve_http(daemon: Daemon, **changes: object) -> Daemon:
    """A stand-in daemon whose view reports an ``[http]`` table with ``changes``."""
    import attrs

    assert daemon.view is not None
    config = attrs.evolve(daemon.config, http=attrs.evolve(daemon.config.http, **changes))
    view = attrs.evolve(daemon.view, config=config)
    stand_in = Daemon(config)
    stand_in.view = view
    stand_in.runtime = daemon.runtime
    return stand_in


async def test_secrets_never_leave_the_api(api: Daemon):
    """A key that reached a job's error text is redacted; the token is never echoed."""
    import attrs

    from orchestrator.logging import redactor

    assert api.runtime is not None and api.view is not None
    leaked = "sk-live-0123456789abcdef"
    redactor.add([leaked])
    # An endpoint on a ledger URL with a password: the password joins the redacted values.
    password = "ledger-pass-12345"
    url = f"postgresql://orch:{password}@db.internal/orch"
    config = attrs.evolve(api.config, ledger=attrs.evolve(api.config.ledger, url=url))
    stand_in = Daemon(config)
    stand_in.view, stand_in.runtime = attrs.evolve(api.view, config=config), api.runtime
    _service(stand_in)
    job = await api.runtime.ledger.get_by_name("alpha")
    await api.runtime.ledger.update(
        job.id, job.state, error=f"provider said: bad key {leaked} (ledger {url})"
    )
    async with _client(api) as client:
        for path in ("/api/jobs", "/api/jobs/alpha", "/api/openapi.json", "/api/workspaces"):
            body = (await client.get(path, headers=AUTH)).text
            assert leaked not in body and TOKEN not in body and password not in body, path
        assert "[REDACTED]" in (await client.get("/api/jobs/alpha")).json()["error"]
        page = await client.get("/")
        assert "default-src 'none'" in page.headers["content-security-policy"]
        assert "innerHTML" not in (await client.get("/static/app.js")).text


async def test_the_openapi_document_describes_the_real_responses(api: Daemon):
    """The document is valid OpenAPI 3.1, lists every /api route, and real answers match it."""
    from openapi_core import OpenAPI
    from openapi_core.testing import MockRequest, MockResponse
    from starlette.routing import Route

    assert api.http is not None
    async with _client(api) as client:
        document = (await client.get("/api/openapi.json")).json()
        openapi = OpenAPI.from_dict(document)  # validates the document itself
        served = {
            (method, route.path.replace("{name:path}", "{name}"))
            for route in api.http.app.routes
            if isinstance(route, Route) and route.path.startswith("/api/")
            for method in route.methods or ()
            if method != "HEAD"
        }
        described = {
            (method.upper(), path) for path, ops in document["paths"].items() for method in ops
        }
        assert served == described

        good = (tmp := api.config.results.dir.parent.parent / "data" / "alpha.jsonl").read_bytes()
        assert tmp.is_file()
        exchanges = [
            ("get", "/api/jobs", {"limit": "1"}, {}, None),
            ("get", "/api/jobs", {"state": "bogus"}, {}, None),
            ("get", "/api/jobs/alpha", {}, {}, None),
            ("get", "/api/jobs/nobody", {}, {}, None),
            ("get", "/api/workspaces", {}, {}, None),
            ("get", "/api/openapi.json", {}, {}, None),
            ("post", "/api/jobs/alpha/cancel", {}, {}, None),
            ("post", "/api/jobs/alpha/cancel", {}, AUTH, None),
            ("post", "/api/jobs/nobody/cancel", {}, AUTH, None),
            ("post", "/api/jobs", {}, AUTH, ("fresh", good)),
            ("post", "/api/jobs", {}, AUTH, ("broken", b"not json\n")),
        ]
        statuses = set()
        for method, path, params, headers, upload in exchanges:
            extra = {}
            if upload is not None:
                extra = {
                    "data": {"definition": _definition(upload[0])},
                    "files": {"input": ("in.jsonl", upload[1])},
                }
            response = await client.request(method, path, params=params, headers=headers, **extra)
            statuses.add(response.status_code)
            request = MockRequest(
                "http://localhost", method, path, args=params, headers=dict(headers)
            )
            openapi.validate_response(
                request,
                MockResponse(
                    response.content,
                    status_code=response.status_code,
                    content_type=response.headers["content-type"],
                    headers=dict(response.headers),
                ),
            )
        assert statuses >= {200, 201, 202, 400, 401, 404, 422}
