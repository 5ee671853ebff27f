"""A person's path through the page, in headless Debian Chromium driven by Playwright."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Where to keep the screenshot (the README's is made with SER_SCREENSHOT=reports/app_screenshot.png).
SCREENSHOT = os.environ.get("SER_SCREENSHOT")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (.ci/run installs it)"),
]


def launch(p):
    return p.chromium.launch(
        executable_path=CHROMIUM,
        args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
    )


def expect_probabilities(page, expect, timeout=30_000):
    """The verdict and the eight bars of the Label."""
    expect(page.locator("#verdict")).to_contain_text("model heard", timeout=timeout)
    bars = page.locator("[data-testid='label-output-value'] .confidence-set, .confidence-set")
    expect(bars.first).to_be_visible()
    assert bars.count() >= 8


def test_analyze_without_audio_then_upload_pick_model_and_see_the_bars(server_url, angry_clip):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        page.goto(server_url)
        expect(page.get_by_text("Kids are talking by the door").first).to_be_visible(timeout=30_000)
        page.get_by_role("button", name="Analyze", exact=True).click()  # nothing yet: a message, not a trace
        message = page.get_by_text("record the sentence with the microphone or upload a file first")
        expect(message).to_be_visible(timeout=15_000)
        expect(page.get_by_text("Cannot analyze this audio. No audio")).to_be_visible()  # the title, first
        assert "Traceback" not in page.locator("body").inner_text()
        expect(message).to_be_hidden(timeout=20_000)  # the notice closes by itself
        page.locator("input[type=file]").first.set_input_files(str(angry_clip))  # upload is the first source
        page.get_by_label("Step B — the emotion to act").click()
        page.get_by_role("option", name="angry").click()
        page.get_by_label("mfcc-mlp", exact=False).check()
        page.get_by_role("button", name="Analyze", exact=True).click()
        expect_probabilities(page, expect)
        text = page.locator("body").inner_text()
        assert "angry" in text and "%" in text
        # The upload was deleted once analyzed; another model still analyzes the take (held in memory).
        bars = page.locator(".confidence-set")
        before = bars.all_inner_texts()
        page.get_by_label("mel-cnn", exact=False).check()
        page.get_by_role("button", name="Analyze", exact=True).click()
        page.wait_for_function(
            "before => [...document.querySelectorAll('.confidence-set')].map(e => e.innerText).join() != before",
            arg=",".join(before),
            timeout=30_000,
        )
        assert "no longer on the server" not in page.locator("body").inner_text()
        browser.close()


def test_a_cached_example_shows_the_probabilities_of_the_default_model(server_url, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        page.goto(server_url)
        expect(page.get_by_text("Livingstone & Russo (2018)").first).to_be_visible(timeout=30_000)  # attribution
        page.get_by_text("angry (actor 05, male)").click()
        expect_probabilities(page, expect, timeout=15_000)  # cached: no wait for the model
        expect(page.get_by_label("whisper-layers (default)")).to_be_checked()
        expect(page.get_by_label("Step B — the emotion to act")).to_have_value("angry")
        assert "angry" in page.locator(".confidence-set").first.inner_text()
        expect(page.locator("img[src^='data:image']:visible").first).to_be_visible()  # the spectrogram
        page.screenshot(path=str(tmp_path / "app.png"), full_page=True)
        assert (tmp_path / "app.png").stat().st_size > 10_000
        if SCREENSHOT:
            shutil.copy(tmp_path / "app.png", SCREENSHOT)
        browser.close()


def test_an_m4a_upload_is_analyzed(server_url, angry_clip, tmp_path):
    import av
    import numpy as np
    from playwright.sync_api import expect, sync_playwright

    from ser_models import load_audio

    clip = tmp_path / "phone memo.m4a"  # AAC in an MP4 container, as phones record
    samples = load_audio(angry_clip)
    with av.open(str(clip), "w", format="ipod") as container:
        stream = container.add_stream("aac", rate=16000, layout="mono")
        frame = av.AudioFrame.from_ndarray(samples[None].astype(np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    with sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        page.goto(server_url)
        expect(page.get_by_text("Kids are talking by the door").first).to_be_visible(timeout=30_000)
        page.locator("input[type=file]").first.set_input_files(str(clip))
        page.get_by_label("mel-cnn", exact=False).check()
        page.get_by_role("button", name="Analyze", exact=True).click()
        expect_probabilities(page, expect)
        assert "Cannot analyze" not in page.locator("body").inner_text()
        browser.close()


def test_feedback_without_consent_and_the_long_recording_tab(server_url, sample_clips, tmp_path):
    import numpy as np
    import soundfile as sf
    from playwright.sync_api import expect, sync_playwright

    from ser_models import load_audio

    recording = tmp_path / "three_sentences.wav"
    pause = np.zeros(16000, np.float32)
    sf.write(recording, np.concatenate([np.concatenate([pause, load_audio(c)]) for c in sample_clips[:3]]), 16000)
    with sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        page.goto(server_url)
        page.locator("input[type=file]").first.set_input_files(str(sample_clips[0]))
        page.get_by_role("button", name="Analyze", exact=True).click()
        expect(page.locator("#verdict")).to_contain_text("model heard", timeout=30_000)
        page.get_by_text("Was the model right? Help it improve").click()
        page.get_by_role("button", name="Send feedback").click()  # the consent box is off by default
        expect(page.get_by_text("Nothing was stored")).to_be_visible(timeout=15_000)

        page.get_by_role("tab", name="Long recording").click()
        page.get_by_test_id("waveform-Long recording").get_by_test_id("file-upload").set_input_files(str(recording))
        page.get_by_role("button", name="Analyze timeline").click()
        expect(page.get_by_text("3 speech segment(s)")).to_be_visible(timeout=60_000)
        expect(page.locator("canvas:visible, svg.marks:visible").first).to_be_visible()  # the timeline plot (Vega)
        if SCREENSHOT:
            page.screenshot(path=str(Path(SCREENSHOT).with_name("app_timeline.png")), full_page=True)
        browser.close()
