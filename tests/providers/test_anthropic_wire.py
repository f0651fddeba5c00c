"""The Anthropic provider against the emulator's Anthropic wire (in-process ASGI) and, for
answers the emulator does not give, a scripted transport; cases from anthropic-batches.md."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from orchestrator.clock import FakeClock
from orchestrator.emulator import Emulator, EmulatorSettings
from orchestrator.errors import (
    CapacityRefused,
    DownloadIntegrityError,
    ForeignResults,
    PermanentProviderError,
    TransientProviderError,
)
from orchestrator.model import RemotePhase
from orchestrator.providers.anthropic import API_VERSION, AnthropicProvider, Intent, parse_job

MODEL = "claude-sonnet-4-5"
KEY = "sk-ant-k"


def write_lines(path: Path, n: int, prefix: str = "r", form: str = "body") -> Path:
    with path.open("w") as out:
        for i in range(n):
            params = {"max_tokens": 16, "messages": [{"role": "user", "content": f"q{i}"}]}
            out.write(json.dumps({"custom_id": f"{prefix}{i}", form: params}) + "\n")
    return path


@pytest.fixture
def emulator() -> Iterator[tuple[Emulator, FakeClock]]:
    clock = FakeClock()
    settings = EmulatorSettings(validation_seconds=1.0, throughput=10.0, failure_fraction=0.2)
    with Emulator(settings, clock=clock, dialect="anthropic") as emu:
        yield emu, clock


def provider_for(emu: Emulator, clock: FakeClock) -> AnthropicProvider:
    return AnthropicProvider(
        "http://emulator", KEY, transport=emu.transport(), clock=clock, attempts=2, max_wait=0
    )


async def submit(provider: AnthropicProvider, paths: list[Path]) -> tuple[str, Any]:
    uploaded = await provider.upload_input(
        paths, endpoint="/v1/messages", model=MODEL, filename="job"
    )
    job = await provider.create_job(
        input_file_ids=[uploaded.id],
        model=MODEL,
        endpoint="/v1/messages",
        metadata={"orchestrator_job_id": "t"},
        timeout_hours=24,
        inputs=paths,
    )
    return uploaded.id, job


@pytest.mark.anyio
async def test_create_streams_both_forms_and_results_split(
    tmp_path: Path, emulator: tuple[Emulator, FakeClock]
) -> None:
    """Two files (params and body forms) become one batch; at the end the results stream is
    split into output and errors, each line as sent, counts matching request_counts."""
    emu, clock = emulator
    paths = [
        write_lines(tmp_path / "a.jsonl", 7, "a", "params"),
        write_lines(tmp_path / "b.jsonl", 5, "b"),
    ]
    provider = provider_for(emu, clock)
    intent_id, job = await submit(provider, paths)
    intent = Intent.parse(intent_id)
    assert intent is not None and intent.requests == 12
    assert job.phase is RemotePhase.RUNNING and job.total == 12 and job.completed == 0
    clock.advance(5)
    ended = await provider.get_job(job.id)
    assert ended.phase is RemotePhase.SUCCEEDED and ended.completed == 12
    assert ended.output_file and ended.output_file.endswith(f"/{job.id}/results")
    out = tmp_path / "out"
    dests = {"output": out / "output.jsonl", "error": out / "errors.jsonl"}
    files = {k: v for k, v in (("output", ended.output_file), ("error", ended.error_file)) if v}
    got = await provider.download_results(job.id, files, dests, submitted=[intent_id])
    assert got["output"].lines == ended.succeeded and got["error"].lines == ended.failed
    ids = set()
    for kind, path in dests.items():
        prompt = completion = without = 0
        for line in path.read_text().splitlines():
            record = json.loads(line)
            ids.add(record["custom_id"])
            assert (record["result"]["type"] == "succeeded") == (kind == "output")
            usage = record["result"].get("message", {}).get("usage")
            if usage is None:
                without += 1
            else:
                prompt += usage["input_tokens"]
                completion += usage["output_tokens"]
        # Usage summed in the splitting pass: result.message.usage, none on an error line.
        summed = got[kind].usage
        assert (summed.prompt_tokens, summed.completion_tokens) == (prompt, completion)
        assert summed.total_tokens == prompt + completion
        assert (summed.lines, summed.lines_without_usage) == (got[kind].lines, without)
    assert got["output"].usage.prompt_tokens > 0 and got["output"].usage.completion_tokens > 0
    assert got["error"].usage.lines_without_usage == got["error"].lines
    assert ids == {f"a{i}" for i in range(7)} | {f"b{i}" for i in range(5)}
    assert not list(out.glob("*.part"))
    assert await provider.results_match(job.id, [intent_id])
    await provider.aclose()


@pytest.mark.anyio
async def test_foreign_results_are_refuted(
    tmp_path: Path, emulator: tuple[Emulator, FakeClock]
) -> None:
    """A batch of the same size with other custom_ids is not the job's: nothing is kept."""
    emu, clock = emulator
    provider = provider_for(emu, clock)
    ours = write_lines(tmp_path / "ours.jsonl", 4, "ours")
    theirs = write_lines(tmp_path / "theirs.jsonl", 4, "theirs")
    our_intent = (
        await provider.upload_input([ours], endpoint="/v1/messages", model=MODEL, filename="x")
    ).id
    _, job = await submit(provider, [theirs])
    clock.advance(5)
    dests = {"output": tmp_path / "o.jsonl", "error": tmp_path / "e.jsonl"}
    url = (await provider.get_job(job.id)).output_file
    assert url is not None
    with pytest.raises(ForeignResults) as info:
        await provider.download_results(job.id, {"output": url}, dests, submitted=[our_intent])
    assert info.value.remote_id == job.id
    assert list(tmp_path.glob("[oe].jsonl*")) == []
    assert not await provider.results_match(job.id, [our_intent])
    await provider.aclose()


@pytest.mark.anyio
async def test_changed_input_creates_nothing(
    tmp_path: Path, emulator: tuple[Emulator, FakeClock]
) -> None:
    """An input edited between the intent and the create: refused, no batch made."""
    emu, clock = emulator
    provider = provider_for(emu, clock)
    path = write_lines(tmp_path / "in.jsonl", 3)
    uploaded = await provider.upload_input(
        [path], endpoint="/v1/messages", model=MODEL, filename="x"
    )
    write_lines(path, 3, prefix="s")  # same size, other bytes
    with pytest.raises(PermanentProviderError, match="changed since they were validated"):
        await provider.create_job(
            input_file_ids=[uploaded.id], model=MODEL, endpoint="/v1/messages",
            metadata={}, timeout_hours=24, inputs=[path],
        )  # fmt: skip
    assert emu.workspace_stats(KEY)["jobs_created"] == 0
    await provider.aclose()


@pytest.mark.anyio
async def test_list_newest_first_stops_at_the_horizon(emulator: tuple[Emulator, FakeClock]) -> None:
    """after_id paging, newest first, bounded by created_after; no metadata filter matches."""
    emu, clock = emulator
    provider = provider_for(emu, clock)
    client = emu.client(KEY, headers={"anthropic-version": "2023-06-01"})
    ids = []
    for i in range(5):
        body = {
            "requests": [
                {
                    "custom_id": f"x{i}",
                    "params": {
                        "model": MODEL,
                        "max_tokens": 5,
                        "messages": [{"role": "user", "content": "hi"}],
                    },
                }
            ]
        }
        ids.append((await client.post("/v1/messages/batches", json=body)).json()["id"])
        clock.advance(100)
    listed = [job.id async for job in provider.list_jobs(page_size=2)]
    assert listed == ids[::-1]
    since = clock.now() - 250
    assert [job.id async for job in provider.list_jobs(page_size=2, created_after=since)] == ids[
        :-3:-1
    ]
    assert [j async for j in provider.list_jobs(metadata={"orchestrator_job_id": "x"})] == []
    await client.aclose()
    await provider.aclose()


def scripted(handler: Callable[[httpx.Request], httpx.Response]) -> AnthropicProvider:
    return AnthropicProvider(
        "https://api.anthropic.test", KEY, transport=httpx.MockTransport(handler), attempts=1
    )


def error(status: int, kind: str, message: str = "nope") -> httpx.Response:
    body = {"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_1"}
    return httpx.Response(status, json=body)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("status", "kind", "expected"),
    [
        (429, "rate_limit_error", CapacityRefused),
        (409, "conflict_error", CapacityRefused),
        (400, "invalid_request_error", PermanentProviderError),
        (413, "request_too_large", PermanentProviderError),
        (500, "api_error", TransientProviderError),
        (529, "overloaded_error", TransientProviderError),
    ],
)
async def test_create_refusals_are_classified(
    tmp_path: Path, status: int, kind: str, expected: type[Exception]
) -> None:
    """429/409 created nothing and pass (back to the queue); other 4xx created nothing and
    refuse the job; 5xx and 529 leave the outcome unknown. Auth as the current SDK sends it."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        request.read()
        return error(status, kind)

    provider = scripted(handler)
    path = write_lines(tmp_path / "in.jsonl", 2)
    with pytest.raises(expected) as info:
        await submit(provider, [path])
    if expected is PermanentProviderError:
        assert not isinstance(info.value, CapacityRefused)
    if status == 413:
        assert "256 MB" in str(info.value)
    (request,) = seen
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["anthropic-version"] == API_VERSION
    sent = json.loads(request.content)
    assert [r["params"]["model"] for r in sent["requests"]] == [MODEL, MODEL]
    assert list(sent) == ["requests"]
    await provider.aclose()


def batch(status: str, **counts: int) -> dict[str, Any]:
    full = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0, **counts}
    return {
        "id": "msgbatch_01x",
        "type": "message_batch",
        "processing_status": status,
        "request_counts": full,
        "created_at": "2026-01-01T00:00:00.123456Z",
        "ended_at": "2026-01-01T01:00:00Z" if status == "ended" else None,
        "expires_at": "2026-01-02T00:00:00Z",
        "archived_at": None,
        "cancel_initiated_at": None,
        "results_url": "https://api.anthropic.test/r/x" if status == "ended" else None,
    }


def test_counts_frozen_or_moving_and_how_a_batch_ended() -> None:
    """Frozen counts read as no progress; moving counts as progress; ended maps by counts."""
    frozen = parse_job(batch("in_progress", processing=10))
    assert (frozen.total, frozen.completed, frozen.phase) == (10, 0, RemotePhase.RUNNING)
    moving = parse_job(batch("in_progress", processing=6, succeeded=3, errored=1))
    assert (moving.total, moving.completed, moving.succeeded, moving.failed) == (10, 4, 3, 1)
    assert moving.output_file is None
    assert parse_job(batch("ended", succeeded=9, errored=1)).phase is RemotePhase.SUCCEEDED
    assert parse_job(batch("ended", errored=10)).phase is RemotePhase.FAILED
    assert parse_job(batch("ended", succeeded=5, expired=5)).phase is RemotePhase.EXPIRED
    cancelled = batch("ended", succeeded=2, canceled=8)
    cancelled["cancel_initiated_at"] = "2026-01-01T00:10:00Z"
    job = parse_job(cancelled)
    assert job.phase is RemotePhase.CANCELLED and job.failed == 8
    assert job.created_at == 1767225600
    with pytest.raises(PermanentProviderError, match="unknown processing_status"):
        parse_job(batch("archived"))


@pytest.mark.anyio
async def test_results_checked_against_counts_and_origin(tmp_path: Path) -> None:
    """A stream short of its counts leaves nothing; a results_url on another host is refused."""
    body = b'{"custom_id":"a","result":{"type":"succeeded","message":{}}}\n'
    where = {"url": "https://api.anthropic.test/r/x"}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/v1/messages/batches/"):
            data = batch("ended", succeeded=2)
            data["results_url"] = where["url"]
            return httpx.Response(200, json=data)
        return httpx.Response(200, content=body, headers={"content-type": "application/x-jsonl"})

    provider = scripted(handler)
    dests = {"output": tmp_path / "o.jsonl", "error": tmp_path / "e.jsonl"}
    with pytest.raises(DownloadIntegrityError, match="request_counts"):
        await provider.download_results("msgbatch_01x", {"output": where["url"]}, dests)
    assert list(tmp_path.iterdir()) == []
    where["url"] = "https://elsewhere.test/r/x"
    with pytest.raises(PermanentProviderError, match="not sending the API key"):
        await provider.download_results("msgbatch_01x", {"output": where["url"]}, dests)
    await provider.aclose()


def test_intent_round_trips() -> None:
    intent = Intent(requests=3, bytes=10, sha256="ab", custom_ids_sha256="cd")
    assert Intent.parse(intent.file_id()) == intent
    assert Intent.parse("file-123") is None


@pytest.mark.anyio
async def test_an_empty_workspace_lists_nothing(emulator: tuple[Emulator, FakeClock]) -> None:
    """An empty first page ends the list (regression: it used to index its last job)."""
    emu, clock = emulator
    provider = provider_for(emu, clock)
    assert [job async for job in provider.list_jobs(created_after=clock.now() - 60)] == []
    assert [job async for job in provider.list_jobs(active_only=True)] == []
    await provider.aclose()


def test_prompt_cache_tokens_count_as_prompt_tokens(tmp_path: Path) -> None:
    """input_tokens plus both prompt-cache counts are the prompt; a malformed count is 0."""
    from orchestrator.providers._anthropic_results import ResultSplit

    dests = {"output": tmp_path / "output.jsonl", "error": tmp_path / "errors.jsonl"}
    split = ResultSplit(dests, source="test", writer=None)
    usage = {
        "input_tokens": 10,
        "cache_creation_input_tokens": 100,
        "cache_read_input_tokens": 1000,
        "output_tokens": 7,
    }
    bad = {"input_tokens": -3, "output_tokens": "9"}
    lines = [
        {"custom_id": "a", "result": {"type": "succeeded", "message": {"usage": usage}}},
        {"custom_id": "b", "result": {"type": "succeeded", "message": {"usage": bad}}},
        {"custom_id": "c", "result": {"type": "expired"}},
    ]
    split.feed(b"".join(json.dumps(line).encode() + b"\n" for line in lines))
    split.verify(None)
    files = split.publish(("output", "error"))
    out, err = files["output"].usage, files["error"].usage
    assert (out.prompt_tokens, out.completion_tokens, out.total_tokens) == (1110, 7, 1117)
    assert (out.lines, out.lines_without_usage) == (2, 0)
    assert (err.lines, err.lines_without_usage, err.total_tokens) == (1, 1, 0)
