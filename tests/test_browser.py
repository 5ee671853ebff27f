"""A person's path through the page, in headless Debian Chromium driven by Playwright."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOT = Path(__file__).resolve().parents[1] / "reports" / "app_screenshot.png"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (.ci/run installs it)"),
]


def test_upload_pick_model_analyze_and_see_the_bars(server_url, angry_clip, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        page.goto(server_url)
        expect(page.get_by_text("Kids are talking by the door").first).to_be_visible(timeout=30_000)
        page.get_by_role("button", name="Upload file").click()  # the microphone is the default source
        page.locator("input[type=file]").set_input_files(str(angry_clip))
        page.get_by_label("Step B — the emotion to act").click()
        page.get_by_role("option", name="angry").click()
        page.get_by_label("mfcc-mlp", exact=False).check()
        page.get_by_role("button", name="Analyze").click()
        verdict = page.locator("#verdict")
        expect(verdict).to_contain_text("model heard", timeout=30_000)
        bars = page.locator("[data-testid='label-output-value'] .confidence-set, .confidence-set")
        expect(bars.first).to_be_visible()
        assert bars.count() >= 8
        text = page.locator("body").inner_text()
        assert "angry" in text and "%" in text
        page.screenshot(path=str(tmp_path / "app.png"), full_page=True)
        SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copy(tmp_path / "app.png", SCREENSHOT)
        browser.close()
