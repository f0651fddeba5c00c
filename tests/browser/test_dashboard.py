"""The dashboard in a real browser (headless Chromium) against a real running daemon."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from orchestrator.cli import main
from orchestrator.cli._render import Output
from tests.browser.conftest import TOKEN, requires_browser
from tests.service.conftest import write_input

pytestmark = [pytest.mark.anyio, pytest.mark.slow, requires_browser]

REPO = Path(__file__).resolve().parents[2]
SCREENSHOT = REPO / "docs" / "dashboard.png"
UPDATE_SCREENSHOT = bool(os.environ.get("ORCH_UPDATE_SCREENSHOT"))
"""Read at import: the suite's fixtures clear ORCH_* variables before each test."""
LIVE = 60_000
"""Milliseconds a live change may take to reach the page (the daemon runs at 2x real time)."""


def _row(page: Any, name: str, state: str | None = None) -> Any:
    selector = f'#job-rows tr[data-name="{name}"]'
    return page.locator(selector + (f'[data-state="{state}"]' if state else ""))


async def _ledger(config: Path) -> dict[str, dict[str, Any]]:
    """``status --json`` of the daemon's ledger, by job name."""
    out = io.StringIO()

    def status() -> int:
        return main(["status", "--config", str(config), "--json"], stdout=Output(out))

    assert await anyio.to_thread.run_sync(status) == 0
    return {row["name"]: row for row in json.loads(out.getvalue())}


async def test_the_page_follows_the_daemon_live_and_cancels(
    daemon: tuple[str, Path], browser: Any, tmp_path: Path
) -> None:
    """Jobs listed; a job submitted later appears and completes live; a cancel reaches the
    ledger; markup in an error is shown as text."""
    from playwright.async_api import expect

    url, config = daemon
    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(f"{url}/")
    for name in ("quick-a", "quick-b", "long-haul", "hostile"):
        await expect(_row(page, name)).to_have_count(1)
    await expect(page.locator("#connection")).to_have_text("live", timeout=LIVE)
    await expect(page.get_by_label("requests pending in main")).to_be_visible()
    await page.evaluate("window.sameDocument = true")

    # A job submitted after the page loaded: it appears, runs and finishes without a reload.
    source = write_input(tmp_path / "late.jsonl", 5, prefix="late")
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        response = await client.post(
            "/api/jobs",
            headers={"Authorization": f"Bearer {TOKEN}"},
            data={
                "definition": json.dumps(
                    {
                        "name": "late-comer",
                        "workspace": "main",
                        "model": "mistral-small-latest",
                        "endpoint": "/v1/chat/completions",
                    }
                )
            },
            files={"input": ("late.jsonl", source.read_bytes())},
        )
        assert response.status_code == 201, response.text
    await expect(_row(page, "late-comer")).to_have_count(1, timeout=LIVE)
    await expect(_row(page, "late-comer", "done")).to_have_count(1, timeout=LIVE)
    await expect(_row(page, "quick-a", "done")).to_have_count(1, timeout=LIVE)
    await expect(_row(page, "quick-b", "done")).to_have_count(1, timeout=LIVE)
    await expect(page.locator("#events li").first).to_be_visible()
    assert await page.evaluate("window.sameDocument") is True  # no reload happened
    progress = await _row(page, "late-comer").locator("progress").get_attribute("value")
    assert progress == "1"

    shot = tmp_path / "dashboard.png"
    # Small on purpose (the README's picture): a narrow window, the workspaces and the jobs.
    await page.set_viewport_size({"width": 900, "height": 560})
    await page.screenshot(path=str(shot), full_page=False)
    await page.set_viewport_size({"width": 1180, "height": 760})
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if UPDATE_SCREENSHOT:  # ORCH_UPDATE_SCREENSHOT=1 pytest tests/browser: the README's picture
        shutil.copyfile(shot, SCREENSHOT)

    # Cancel from the page: refused without a token, then done with it.
    await expect(_row(page, "long-haul", "running")).to_have_count(1, timeout=LIVE)
    await page.get_by_role("button", name="cancel long-haul").click()
    await expect(page.locator("#notice")).to_contain_text("Enter the API token")
    await page.get_by_label("API token").fill(TOKEN)
    await page.get_by_role("button", name="Use token").click()
    await page.get_by_role("button", name="cancel long-haul").click()
    await expect(page.locator("#notice")).to_contain_text("cancel requested for 'long-haul'")
    ledger = await _ledger(config)
    assert ledger["long-haul"]["cancel_requested"] is True
    cancelled = _row(page, "long-haul", "done")
    await expect(cancelled).to_have_count(1, timeout=LIVE)
    await expect(cancelled.locator("td").nth(3)).to_have_text("cancelled")
    assert (await _ledger(config))["long-haul"]["outcome"] == "cancelled"

    # The job page: history and result files; a hostile error is text, not markup.
    await _row(page, "late-comer").get_by_role("link", name="late-comer").click()
    await expect(page.locator("#job-title")).to_have_text("late-comer")
    await expect(page.locator("#job-history tr").last).to_contain_text("done")
    output = page.locator("#job-files a", has_text="output")
    href = await output.get_attribute("href")
    assert href == "/api/jobs/late-comer/files/output"
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        served = await client.get(href)
    assert served.status_code == 200 and served.content.count(b"\n") >= 4
    await page.goto(f"{url}/#/jobs/hostile")
    summary = page.locator("#job-summary")
    await expect(summary).to_contain_text('<img src=x onerror="window.pwned=1"><b>bold</b>')
    assert await page.locator("#job-page img, #job-page b").count() == 0
    assert await page.evaluate("window.pwned") is None
    assert await page.get_by_role("button", name="Cancel job").is_disabled()
    assert errors == []


async def test_the_page_reads_on_a_phone_and_names_its_controls(
    daemon: tuple[str, Path], browser: Any
) -> None:
    """At 390 px nothing overflows sideways, and every control has an accessible name."""
    from playwright.async_api import expect

    url, _ = daemon
    page = await browser.new_page()
    await page.set_viewport_size({"width": 390, "height": 844})
    await page.goto(f"{url}/")
    await expect(_row(page, "long-haul")).to_have_count(1)
    assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    unnamed = await page.evaluate(
        """() => [...document.querySelectorAll(
                 'button, input, select, progress, meter, a')]
             .filter((el) => el.offsetParent !== null || el.closest('[hidden]') === null)
             .filter((el) => !(el.getAttribute('aria-label')
                 || (el.labels && el.labels.length && el.labels[0].textContent.trim())
                 || el.textContent.trim()))
             .map((el) => el.outerHTML)"""
    )
    assert unnamed == []
    for role, name in (("button", "Use token"), ("combobox", "State"), ("textbox", "API token")):
        await expect(page.get_by_role(role, name=name)).to_be_visible()
