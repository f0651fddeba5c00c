"""Routes, validation and error shapes, in-process."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from orchestrator.clock import FakeClock
from orchestrator.emulator import Emulator
from tests.emulator.conftest import MakeEmulator, create, jsonl, upload

pytestmark = pytest.mark.anyio

CHAT = "/v1/chat/completions"


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer   ", "Basic abc"])
async def test_missing_or_empty_key_is_401(emulator: Emulator, header: str | None) -> None:
    """No usable bearer key: 401 with Mistral's body."""
    headers = {} if header is None else {"Authorization": header}
    async with httpx.AsyncClient(transport=emulator.transport(), base_url="http://e") as c:
        response = await c.get("/v1/batch/jobs", headers=headers)
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["message"] == "Unauthorized"


async def test_restricted_keys(make_emulator: MakeEmulator) -> None:
    """With api_keys set, other keys are refused."""
    emu = make_emulator(api_keys={"good"})
    async with emu.client("good") as good, emu.client("bad") as bad:
        assert (await good.get("/v1/files")).status_code == 200
        assert (await bad.get("/v1/files")).status_code == 401


async def test_workspaces_are_isolated(emulator: Emulator) -> None:
    """Jobs and files of one key are invisible to another."""
    async with emulator.client("alice") as alice, emulator.client("bob") as bob:
        file_id = await upload(alice, jsonl(3))
        job = await create(alice, file_id)
        assert (await bob.get(f"/v1/files/{file_id}")).status_code == 404
        assert (await bob.get(f"/v1/batch/jobs/{job['id']}")).status_code == 404
        assert (await bob.get("/v1/batch/jobs")).json()["total"] == 0
        assert (await bob.get("/v1/files")).json()["data"] == []
        response = await bob.post(
            "/v1/batch/jobs", json={"input_files": [file_id], "endpoint": CHAT, "model": "m"}
        )
        assert response.status_code == 404
        assert (await alice.get("/v1/batch/jobs")).json()["total"] == 1


async def test_unknown_ids_are_404_error_objects(client: httpx.AsyncClient) -> None:
    """Unknown job and file ids get the error object with a code."""
    unknown = str(uuid.uuid4())
    for path in (
        f"/v1/batch/jobs/{unknown}",
        f"/v1/files/{unknown}",
        f"/v1/files/{unknown}/content",
        f"/v1/files/{unknown}/url",
    ):
        response = await client.get(path)
        assert response.status_code == 404, path
        body = response.json()
        assert body["object"] == "error" and body["type"] == "invalid_request_error"
        assert body["param"] is None or isinstance(body["param"], str)
        assert body["code"] in {"job_not_found", "file_not_found"}
        assert unknown in body["message"]
    assert (await client.post(f"/v1/batch/jobs/{unknown}/cancel")).status_code == 404
    assert (await client.delete(f"/v1/files/{unknown}")).status_code == 404


async def test_non_uuid_path_is_422(client: httpx.AsyncClient) -> None:
    """A malformed id is a validation error, as FastAPI gives it."""
    response = await client.get("/v1/batch/jobs/not-a-uuid")
    assert response.status_code == 422
    (detail,) = response.json()["detail"]
    assert detail["loc"] == ["path", "job_id"] and detail["type"] == "uuid_parsing"


@pytest.mark.parametrize(
    ("body", "loc", "kind"),
    [
        ({"input_files": [], "model": "m"}, ["body", "endpoint"], "missing"),
        ({"endpoint": "/v1/nope"}, ["body", "endpoint"], "enum"),
        ({"endpoint": CHAT, "timeout_hours": 0}, ["body", "timeout_hours"], "greater_than_equal"),
        ({"endpoint": CHAT, "timeout_hours": 169}, ["body", "timeout_hours"], "less_than_equal"),
        ({"endpoint": CHAT, "timeout_hours": "x"}, ["body", "timeout_hours"], "int_parsing"),
        (
            {"endpoint": CHAT, "metadata": {"k" * 33: "v"}},
            ["body", "metadata", "k" * 33, "[key]"],
            "string_too_long",
        ),
        (
            {"endpoint": CHAT, "metadata": {"": "v"}},
            ["body", "metadata", "", "[key]"],
            "string_too_short",
        ),
        (
            {"endpoint": CHAT, "metadata": {"k": "v" * 513}},
            ["body", "metadata", "k"],
            "string_too_long",
        ),
        ({"endpoint": CHAT, "metadata": {"k": ""}}, ["body", "metadata", "k"], "string_too_short"),
        ({"endpoint": CHAT, "input_files": ["nope"]}, ["body", "input_files", 0], "uuid_parsing"),
        (
            {"endpoint": CHAT, "requests": [{"custom_id": "a"}]},
            ["body", "requests", 0, "body"],
            "missing",
        ),
        ({"endpoint": CHAT, "surprise": 1}, ["body", "surprise"], "extra_forbidden"),
    ],
)
async def test_create_validation(
    client: httpx.AsyncClient, body: dict[str, Any], loc: list[Any], kind: str
) -> None:
    """Malformed create bodies get 422 with pydantic-shaped details."""
    response = await client.post("/v1/batch/jobs", json=body)
    assert response.status_code == 422, response.text
    details = response.json()["detail"]
    assert any(d["loc"] == loc and d["type"] == kind for d in details), details
    for d in details:
        assert {"type", "loc", "msg", "input"} <= set(d)


async def test_create_with_malformed_json(client: httpx.AsyncClient) -> None:
    """A body that is not JSON is a 422 json_invalid."""
    response = await client.post(
        "/v1/batch/jobs", content=b"{oops", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "json_invalid"


async def test_too_many_inline_requests(make_emulator: MakeEmulator) -> None:
    """More than max_inline_requests inline requests is refused."""
    emu = make_emulator(max_inline_requests=5)
    async with emu.client("k") as client:
        requests = [{"custom_id": str(i), "body": {"messages": []}} for i in range(6)]
        response = await client.post(
            "/v1/batch/jobs", json={"endpoint": CHAT, "requests": requests}
        )
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "too_long"


async def test_inputs_both_or_neither_is_400(client: httpx.AsyncClient) -> None:
    """Exactly one of input_files and requests must be given."""
    response = await client.post("/v1/batch/jobs", json={"endpoint": CHAT, "model": "m"})
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_batch_input"


async def test_list_query_validation(client: httpx.AsyncClient) -> None:
    """Bad list parameters are 422s naming the parameter."""
    for params, loc in (
        ({"status": "running"}, ["query", "status", 0]),
        ({"page": "x"}, ["query", "page"]),
        ({"page_size": "0"}, ["query", "page_size"]),
        ({"order_by": "name"}, ["query", "order_by"]),
        ({"created_after": "yesterday"}, ["query", "created_after"]),
        ({"created_by_me": "maybe"}, ["query", "created_by_me"]),
    ):
        response = await client.get("/v1/batch/jobs", params=params)
        assert response.status_code == 422, params
        assert response.json()["detail"][0]["loc"] == loc


async def test_files_routes(client: httpx.AsyncClient, clock: FakeClock) -> None:
    """Upload, list (filters, total), retrieve (deleted flag), delete."""
    content = jsonl(7) + b"\n\n"
    file_id = await upload(client, content, name="survey.jsonl")
    other = await upload(client, jsonl(2), name="other.jsonl")
    meta = (await client.get(f"/v1/files/{file_id}")).json()
    assert meta["bytes"] == len(content) and meta["num_lines"] == 7
    assert (meta["object"], meta["purpose"], meta["sample_type"], meta["source"]) == (
        "file",
        "batch",
        "batch_request",
        "upload",
    )
    assert meta["deleted"] is False and meta["mimetype"] == "application/jsonl"
    listing = (await client.get("/v1/files", params={"search": "SURV"})).json()
    assert [f["id"] for f in listing["data"]] == [file_id] and listing["total"] == 1
    listing = (await client.get("/v1/files", params={"page_size": 1, "page": 0})).json()
    assert listing["total"] == 2 and len(listing["data"]) == 1
    listing = (await client.get("/v1/files", params={"include_total": "false"})).json()
    assert listing["total"] is None
    params = httpx.QueryParams([("sample_type", "batch_result"), ("sample_type", "batch_error")])
    assert (await client.get("/v1/files", params=params)).json()["data"] == []
    deleted = (await client.delete(f"/v1/files/{other}")).json()
    assert deleted == {"id": other, "object": "file", "deleted": True}
    assert (await client.get(f"/v1/files/{other}")).json()["deleted"] is True
    assert (await client.get(f"/v1/files/{other}/content")).status_code == 404
    assert [f["id"] for f in (await client.get("/v1/files")).json()["data"]] == [file_id]


async def test_upload_validation(client: httpx.AsyncClient) -> None:
    """An upload without a file part, or with a bad purpose, is a 422."""
    response = await client.post("/v1/files", data={"purpose": "batch"}, files={"x": ("a", b"1")})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "file"]
    response = await client.post(
        "/v1/files", data={"purpose": "party"}, files={"file": ("a.jsonl", b"{}\n")}
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "purpose"]
    response = await client.post("/v1/files", json={"file": "x"})
    assert response.status_code == 422


async def test_upload_size_limit(make_emulator: MakeEmulator) -> None:
    """A file over max_file_bytes is refused with 400 and nothing is stored."""
    emu = make_emulator(max_file_bytes=1000)
    async with emu.client("k") as client:
        response = await client.post("/v1/files", files={"file": ("big.jsonl", b"x" * 5000)})
        assert response.status_code == 400
        assert response.json()["code"] == "file_too_large"
        assert (await client.get("/v1/files")).json()["total"] == 0
        assert await upload(client, b"y" * 1000)
    assert not list((emu.state_dir / "files").glob("*.tmp"))


async def test_deleting_an_input_file_does_not_break_its_job(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    """A job keeps its own link to its inputs."""
    file_id = await upload(client, jsonl(5))
    job = await create(client, file_id)
    await client.delete(f"/v1/files/{file_id}")
    clock.advance(60)
    job = (await client.get(f"/v1/batch/jobs/{job['id']}")).json()
    assert (job["status"], job["succeeded_requests"]) == ("SUCCESS", 5)


async def test_unknown_route_and_method(client: httpx.AsyncClient) -> None:
    """Unknown paths are 404 and wrong methods 405, FastAPI style."""
    assert (await client.get("/v1/nothing")).json() == {"detail": "Not Found"}
    response = await client.put("/v1/batch/jobs")
    assert response.status_code == 405
    assert "GET" in response.headers["allow"]


async def test_missing_model_fails_lines(client: httpx.AsyncClient, clock: FakeClock) -> None:
    """Without a job model, lines without a body model fail; lines with one succeed."""
    content = (
        b'{"custom_id": "a", "body": {"model": "m1", "messages": [{"role": "user"}]}}\n'
        b'{"custom_id": "b", "body": {"messages": [{"role": "user"}]}}\n'
    )
    file_id = await upload(client, content)
    response = await client.post(
        "/v1/batch/jobs", json={"input_files": [file_id], "endpoint": CHAT}
    )
    job = response.json()
    clock.advance(60)
    job = (await client.get(f"/v1/batch/jobs/{job['id']}", params={"inline": True})).json()
    assert (job["succeeded_requests"], job["failed_requests"]) == (1, 1)
    by_id = {o["custom_id"]: o for o in job["outputs"]}
    assert by_id["a"]["response"]["body"]["model"] == "m1"
    assert by_id["b"]["response"]["body"]["code"] == "missing_model"


async def test_job_shape(client: httpx.AsyncClient) -> None:
    """A job carries every field the SDK needs, with integer timestamps."""
    job = await create(client, await upload(client, jsonl(1)), metadata={"a": "b"})
    assert job["object"] == "batch"
    assert isinstance(job["created_at"], int)
    assert job["metadata"] == {"a": "b"} and job["errors"] == []
    for key in ("total_requests", "completed_requests", "succeeded_requests", "failed_requests"):
        assert job[key] == 0
