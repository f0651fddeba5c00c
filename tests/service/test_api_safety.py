"""The JSON API under attack and on the record: hostile input, limits, access off loopback,
secrets, and the OpenAPI document checked against real answers."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import pytest

from orchestrator.clock import FakeClock
from orchestrator.daemon import Daemon
from orchestrator.emulator import Emulator
from tests.service.conftest import running
from tests.service.test_api import AUTH, ENV, TOKEN, _client, _config, _definition

pytestmark = pytest.mark.anyio


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
