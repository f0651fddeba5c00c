"""Benchmark 1 on the Anthropic wire: the documented Message Batches loop, and reading the
emulator's batches (``shared/api/anthropic-batches.md``).

The guide's loop: create the batch with its requests inline, ``retrieve`` until
``processing_status`` is ``ended`` (sleeping between two polls; the guide gives no interval, so
``--naive-interval``, 1 s as the Mistral row), then stream the results from ``results_url``.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import httpx

from bench._clock import SettledClock

VERSION = {"anthropic-version": "2023-06-01"}
"""The header every call of the naive loop sends (the SDK sends its own)."""
MODEL = "claude-sonnet-4-5"
BATCHES = "/v1/messages/batches"


def epoch(stamp: str | None) -> float | None:
    """Epoch seconds of an RFC 3339 time (None stays None)."""
    return None if stamp is None else datetime.fromisoformat(stamp).timestamp()


def requests_of(data: bytes) -> list[dict[str, Any]]:
    """An input file's ``{custom_id, body}`` lines as Message Batches requests."""
    out = []
    for line in data.splitlines():
        record = json.loads(line)
        out.append({"custom_id": record["custom_id"], "params": {"model": MODEL, **record["body"]}})
    return out


async def naive_job(
    client: httpx.AsyncClient, clock: SettledClock, data: bytes, folder: Path, interval: float
) -> tuple[str, float, float]:
    """One job by the guide's loop; returns its batch id, when it was created and when the
    loop saw it ended (simulated seconds)."""
    created = await client.post(BATCHES, json={"requests": requests_of(data)}, headers=VERSION)
    created.raise_for_status()
    created_at = clock.now()
    batch_id = created.json()["id"]
    batch = (await client.get(f"{BATCHES}/{batch_id}", headers=VERSION)).json()
    while batch["processing_status"] != "ended":
        await clock.sleep(interval)
        batch = (await client.get(f"{BATCHES}/{batch_id}", headers=VERSION)).json()
    detected = clock.now()
    dest = anyio.Path(folder / f"{batch_id}-results.jsonl")
    async with (
        client.stream("GET", batch["results_url"], headers=VERSION) as response,
        await anyio.open_file(dest, "wb") as out,
    ):
        response.raise_for_status()
        async for chunk in response.aiter_bytes():
            await out.write(chunk)
    return batch_id, created_at, detected


async def seed_old(client: httpx.AsyncClient, count: int) -> None:
    """``count`` one-request batches (they finish while the benchmark waits)."""
    params = {"model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": "old"}]}
    request = {"custom_id": "old-0", "params": params}
    for _ in range(count):
        created = await client.post(BATCHES, json={"requests": [request]}, headers=VERSION)
        created.raise_for_status()


async def ended_at(client: httpx.AsyncClient) -> dict[str, float | None]:
    """Every batch of the client's workspace: its ``ended_at`` in epoch seconds."""
    found: dict[str, float | None] = {}
    params: dict[str, str | int] = {"limit": 1000}
    while True:
        page = (await client.get(BATCHES, params=params, headers=VERSION)).json()
        found |= {batch["id"]: epoch(batch["ended_at"]) for batch in page["data"]}
        if not page["data"] or not page["has_more"]:
            return found
        params = {"limit": 1000, "after_id": page["last_id"]}
