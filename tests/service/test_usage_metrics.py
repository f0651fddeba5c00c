"""/metrics reports the results' tokens and cost by workspace and model, and the spend."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.clock import FakeClock
from orchestrator.config import load_config
from orchestrator.emulator import Emulator
from tests.service.conftest import advance_until, all_final, running, write_config

pytestmark = pytest.mark.anyio

PRICES = """
spend_limit = 10.0
[pricing]
currency = "EUR"
[pricing.models."mistral-small-latest"]
input = 1.0
output = 3.0
"""


async def test_tokens_and_cost_counters_follow_the_results(
    tmp_path: Path, clock: FakeClock, emulator: Emulator
) -> None:
    """Once the jobs are done, the counters equal the ledger's usage priced by the config."""
    path = write_config(
        tmp_path, listen=None, extra=PRICES
    )  # PRICES opens with the workspace's key
    path.write_text(path.read_text(encoding="utf-8") + '[http]\nlisten = "127.0.0.1:0"\n')
    config = load_config(path)
    async with running(config, clock, emulator) as daemon:
        assert daemon.http is not None and daemon.runtime is not None
        await advance_until(clock, all_final(daemon))
        jobs = await daemon.runtime.ledger.list_jobs()
        prompt = sum(job.usage.prompt_tokens for job in jobs if job.usage)
        completion = sum(job.usage.completion_tokens for job in jobs if job.usage)
        assert prompt > 0 and completion > 0
        async with httpx.AsyncClient(base_url=daemon.http.url, timeout=10) as client:
            body = (await client.get("/metrics")).text
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }
    labels = (("kind", "prompt"), ("model", "mistral-small-latest"), ("workspace", "main"))
    assert samples[("orchestrator_result_tokens_total", labels)] == prompt
    labels = (("kind", "completion"), ("model", "mistral-small-latest"), ("workspace", "main"))
    assert samples[("orchestrator_result_tokens_total", labels)] == completion
    cost = samples[
        (
            "orchestrator_result_cost_total",
            (("model", "mistral-small-latest"), ("workspace", "main")),
        )
    ]
    assert cost == pytest.approx((prompt * 1.0 + completion * 3.0) / 1e6 * 0.5)
    assert samples[("orchestrator_workspace_spend_limit", (("workspace", "main"),))] == 10.0
    assert ("orchestrator_workspace_spend_used", (("workspace", "main"),)) in samples
