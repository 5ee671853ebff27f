"""The app: its logic without a browser, then the real server through gradio_client."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ser_models import EMOTIONS, AudioError, parse_ravdess_name
from ser_models.demo import Reading, analyze, default_model, load_recognizers
from ser_models.registry import DEFAULT_MODEL, MODELS


def test_unreachable_hub_model_falls_back_to_bundled_weights(caplog):
    with caplog.at_level(logging.WARNING):
        recognizers = load_recognizers({"SER_CNN_MODEL": "nobody/offline-model"})
    assert set(recognizers) == set(MODELS)
    assert recognizers["mel-cnn"].config.model_type == "mel-cnn"
    [record] = [r for r in caplog.records if "SER_CNN_MODEL" in r.getMessage()]
    assert "nobody/offline-model" in record.getMessage() and "bundled weights instead" in record.getMessage()


def test_without_the_whisper_packages_the_app_serves_the_other_models(monkeypatch, caplog):
    from ser_models import whisper

    def unavailable(*args):
        raise whisper.EncoderUnavailableError("the Whisper encoder needs ctranslate2")

    monkeypatch.setattr(whisper, "encoder_for", unavailable)
    with caplog.at_level(logging.WARNING):
        recognizers = load_recognizers({})
    assert set(recognizers) == {"mel-cnn", "mfcc-mlp"}
    assert default_model(recognizers) == "mel-cnn"
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("whisper-layers: not available") and "ctranslate2" in m for m in messages)


def test_configured_folder_replaces_bundled_model(tmp_path):
    pytest.importorskip("torch", reason="writing a model folder needs the training extra")
    from ser_models.models import MelCNN, MelCNNConfig

    MelCNN(MelCNNConfig(hidden=16)).save_pretrained(tmp_path / "cnn")
    sources = {}
    recognizers = load_recognizers({"SER_CNN_MODEL": str(tmp_path / "cnn")}, sources)
    assert recognizers["mel-cnn"].config.hidden == 16
    assert sources["mel-cnn"] == str(tmp_path / "cnn") and sources["mfcc-mlp"] == str(MODELS["mfcc-mlp"].folder)


def test_reading_verdict_and_details(angry_clip):
    recognizers = load_recognizers({})
    reading = analyze(recognizers["mel-cnn"], str(angry_clip), "angry")
    probabilities = reading.analysis.probabilities
    assert list(probabilities) == list(EMOTIONS) and abs(sum(probabilities.values()) - 1) < 1e-6
    heard = reading.analysis.label
    assert ("Match" in reading.verdict) == (heard == "angry")
    assert "trimming silence" in reading.details
    html = reading.spectrogram()
    assert html.startswith('<img src="data:image/png;base64,') and 'alt="Log-mel spectrogram' in html


def test_spectrogram_has_time_and_frequency_axes():
    import base64
    import io

    from PIL import Image

    from ser_models import plots

    rate = 16000
    t = np.arange(2 * rate) / rate
    tone = (0.3 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)  # 1 kHz for 2 s
    image = np.asarray(Image.open(io.BytesIO(plots.spectrogram_png(tone, start_seconds=0.5))).convert("L"))
    assert image.shape == (plots.HEIGHT, plots.WIDTH)
    assert plots.time_ticks(0.5, 2.5) == pytest.approx([0.5, 1.0, 1.5, 2.0, 2.5])
    ticks = dict(plots.frequency_ticks())
    assert set(ticks) == {250, 500, 1000, 2000, 4000, 8000}
    plot = image[plots.TOP : plots.HEIGHT - plots.BOTTOM, plots.LEFT : plots.WIDTH - plots.RIGHT]
    brightest_row = plots.TOP + int(np.argmax(plot.mean(axis=1)))
    band_height = (plots.HEIGHT - plots.TOP - plots.BOTTOM) / 64
    assert abs(brightest_row - ticks[1000]) <= 1.5 * band_height  # the tone sits at the "1" kHz tick
    centres = plots.mel_band_centres()
    assert centres.size == 64 and np.all(np.diff(centres) > 0) and 20 < centres[0] < 100 and centres[-1] < 8000
    html = plots.spectrogram_html(tone)
    png = base64.b64decode(html.split("base64,")[1].split('"')[0])
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) < 30_000  # indexed colours: the page gets a small image


def test_timeline_points_are_one_row_per_window_and_emotion():
    from ser_models.plots import timeline_points
    from ser_models.segments import Segment, Timeline

    probabilities = dict(zip(EMOTIONS, [0.3, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1], strict=True))
    windows = [Segment(0, 0.0, 4.0, probabilities), Segment(0, 2.0, 6.0, probabilities)]
    rows = timeline_points(Timeline(windows, [(0.0, 6.0)], 6.0, "silero"))
    assert len(rows) == 16 and rows[0] == {"time (s)": 2.0, "probability": 0.3, "emotion": "neutral"}


def test_verdict_names_rank_of_missed_target():
    from ser_models.demo import Analysis
    from ser_models.features import Trimmed

    probabilities = dict(zip(EMOTIONS, [0.05, 0.4, 0.1, 0.2, 0.05, 0.1, 0.05, 0.05], strict=True))
    reading = Reading(Analysis(probabilities, Trimmed(np.zeros(16000, np.float32), 0, 16000), 1.0), "sad")
    assert "No match" in reading.verdict and "calm" in reading.verdict and "2nd of 8" in reading.verdict


def test_verdict_says_uncertain_when_the_speech_is_buried_or_the_model_unsure():
    from ser_models.demo import Analysis
    from ser_models.features import Trimmed

    probabilities = dict(zip(EMOTIONS, [0.05, 0.05, 0.1, 0.2, 0.45, 0.05, 0.05, 0.05], strict=True))
    speech = Trimmed(np.zeros(16000, np.float32), 0, 16000)
    buried = Reading(Analysis(probabilities, speech, 1.0, snr_db=0.5), "angry")
    assert "Uncertain" in buried.verdict and "noise" in buried.verdict and "Match" not in buried.verdict
    unsure = Reading(Analysis(probabilities, speech, 1.0, snr_db=30.0, confidence_threshold=0.6), None)
    assert "Uncertain" in unsure.verdict and "unsure" in unsure.verdict
    sure = Reading(Analysis(probabilities, speech, 1.0, snr_db=30.0, confidence_threshold=0.4), "angry")
    assert "Match" in sure.verdict


def test_no_audio_is_a_clear_error():
    with pytest.raises(AudioError, match="record the sentence"):
        analyze(load_recognizers({})["mfcc-mlp"], None, "happy")


@pytest.mark.slow
@pytest.mark.parametrize("model", ["mel-cnn", "mfcc-mlp"])
def test_gradio_client_round_trip(server_url, angry_clip, model):
    from gradio_client import Client, handle_file

    client = Client(server_url, verbose=False)
    label, verdict, spectrogram, details = client.predict(
        handle_file(str(angry_clip)), model, "angry", api_name="/predict"
    )
    confidences = {c["label"]: c["confidence"] for c in label["confidences"]}
    assert set(confidences) == set(EMOTIONS)
    assert abs(sum(confidences.values()) - 1) < 1e-4
    assert label["label"] == max(confidences, key=confidences.get)
    assert "model heard" in verdict and "trimming" in details
    assert spectrogram.startswith('<img src="data:image/png;base64,')


@pytest.mark.slow
def test_gradio_client_gets_a_clear_message_for_a_non_audio_file(server_url, tmp_path):
    from gradio_client import Client, handle_file

    fake = tmp_path / "photo.wav"
    fake.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(2000))
    client = Client(server_url, verbose=False)
    with pytest.raises(Exception, match="could not be decoded as audio"):
        client.predict(handle_file(str(fake)), "mel-cnn", "angry", api_name="/predict")


@pytest.mark.slow
def test_feedback_through_the_api_is_stored_only_with_consent(server_url, angry_clip, app_feedback_dir):
    from gradio_client import Client, handle_file

    from ser_models.feedback import FeedbackStore

    client = Client(server_url, verbose=False)  # one client is one browser session
    assert "Analyze a recording first" in client.predict("angry", True, None, api_name="/feedback")
    client.predict(handle_file(str(angry_clip)), "mel-cnn", "angry", api_name="/predict")
    before = FeedbackStore(app_feedback_dir).records()
    message = client.predict("angry", False, "Kids are talking by the door", api_name="/feedback")
    assert "Nothing was stored" in message
    assert FeedbackStore(app_feedback_dir).records() == before
    message = client.predict("sad", True, "Kids are talking by the door", api_name="/feedback")
    assert "Thank you" in message
    (record,) = [r for r in FeedbackStore(app_feedback_dir).records() if r not in before]
    assert (record.true_label, record.target, record.model) == ("sad", "angry", "mel-cnn")
    assert abs(sum(record.probabilities.values()) - 1) < 1e-6 and record.prediction in EMOTIONS


@pytest.mark.slow
def test_server_refuses_uploads_over_the_size_limit(server_url):
    import httpx

    too_big = bytes(21 * 2**20)  # the app's limit is 20 MB; the server itself must refuse, not just the client
    response = httpx.post(
        f"{server_url}gradio_api/upload", files={"files": ("big.wav", too_big, "audio/wav")}, timeout=60
    )
    assert response.status_code == 413, response.text[:200]
    small = httpx.post(f"{server_url}gradio_api/upload", files={"files": ("ok.wav", bytes(1000), "audio/wav")})
    assert small.status_code == 200


def test_live_stream_of_chunks_gives_valid_probabilities(angry_clip):
    import soundfile as sf

    from ser_models.demo import LIVE_UPDATE_SECONDS, live_step

    recognizer = load_recognizers({})["mel-cnn"]
    samples, rate = sf.read(angry_clip, dtype="int16")  # the browser sends int16 chunks
    step = int(0.25 * rate)
    state, updates, last = None, 0, None
    silence = (rate, np.zeros(step * 4, np.int16))
    state = live_step(recognizer, state, silence)
    assert state.probabilities is None and "no speech" in state.status
    for start in range(0, samples.size, step):
        state = live_step(recognizer, state, (rate, samples[start : start + step]))
        if state.probabilities is not last and state.probabilities is not None:
            updates += 1
            last = state.probabilities
            assert list(last) == list(EMOTIONS) and abs(sum(last.values()) - 1) < 1e-6
    seconds = samples.size / rate
    assert 1 <= updates <= seconds / LIVE_UPDATE_SECONDS + 1  # about two a second, never one per chunk
    assert state.buffer.size <= 4 * 16000
    assert live_step(recognizer, state, (rate, np.zeros(0, np.int16))).status.startswith("Skipped a chunk")


@pytest.mark.slow
def test_timeline_endpoint(server_url, sample_clips, tmp_path):
    import soundfile as sf
    from gradio_client import Client, handle_file

    from ser_models import load_audio

    recording = tmp_path / "long.wav"
    parts = [np.concatenate([load_audio(p), np.zeros(16000, np.float32)]) for p in sample_clips[:3]]
    sf.write(recording, np.concatenate(parts), 16000)
    summary, plot, rows = Client(server_url, verbose=False).predict(
        handle_file(str(recording)), "mel-cnn", True, api_name="/timeline"
    )
    assert "3 speech segment(s)" in summary and "adapted to the voice" in summary
    assert plot["columns"] == ["time (s)", "probability", "emotion"] and len(plot["data"]) == 8 * len(rows["data"])
    assert len(rows["data"]) == 3 and rows["headers"][4:] == list(EMOTIONS)
    assert all(abs(sum(row[4:]) - 1) < 0.01 for row in rows["data"])


@pytest.mark.slow
def test_my_voice_sessions_belong_to_one_browser_session_each(server_url, sample_clips):
    from gradio_client import Client, handle_file

    first, second = Client(server_url, verbose=False), Client(server_url, verbose=False)
    for clip in sample_clips[:2]:
        *_, details = first.predict(handle_file(str(clip)), "mel-cnn", "angry", True, False, api_name="/predict")
    assert "adapted to your 2 take(s)" in details
    *_, details = second.predict(handle_file(str(sample_clips[2])), "mel-cnn", "angry", True, True, api_name="/predict")
    assert "adapted to your 1 take(s)" in details and "Background noise was reduced" in details
    *_, details = first.predict(handle_file(str(sample_clips[3])), "mel-cnn", "angry", api_name="/predict")
    assert "My voice" not in details  # off unless asked for


def test_the_examples_are_one_short_ravdess_clip_per_emotion_from_actors_01_to_20(ravdess_dir):
    import soundfile as sf

    from ser_models.demo import EXAMPLE_SOURCES, EXAMPLES_DIR, examples

    clips = examples()
    assert [clip.emotion for clip in clips] == list(EMOTIONS)
    assert sorted(p.name for p in EXAMPLES_DIR.iterdir()) == sorted(EXAMPLE_SOURCES)
    for clip in clips:
        source = parse_ravdess_name(clip.ravdess_name)
        assert clip.path.name == f"{source.emotion}_actor{source.actor:02d}.flac"  # the name says the emotion
        assert 1 <= source.actor <= 20 and clip.label.startswith(source.emotion)
        assert clip.path.stat().st_size <= 150_000 and sf.info(clip.path).samplerate == 16000
        original = ravdess_dir / f"Actor_{source.actor:02d}" / clip.ravdess_name
        assert clip.path.read_bytes() == original.read_bytes()  # the corpus's file as it is


def test_model_descriptions_and_card_links():
    from ser_models.demo import card_url, models_markdown

    text = models_markdown(MODELS, {name: str(model.folder) for name, model in MODELS.items()}, environ={})
    for name, model in MODELS.items():
        assert f"**{name}**" in text and model.description in text
    assert f"**{DEFAULT_MODEL}** (default)" in text and "replaced" not in text
    assert "[model card](gradio_api/file=" in text and text.count(".md)") == 2
    replaced = models_markdown(["mel-cnn"], {"mel-cnn": "someone/their-cnn"}, environ={})
    assert "replaced by `someone/their-cnn`" in replaced
    space = {"SPACE_ID": "user/ser-demo"}
    assert card_url("model_card.md", space) == "https://huggingface.co/spaces/user/ser-demo/blob/main/model_card.md"


def test_examples_cache_is_named_after_the_weights_that_compute_it(tmp_path):
    from ser_models.demo import examples_cache_folder

    bundled = {"mel-cnn": str(MODELS["mel-cnn"].folder)}
    folder = examples_cache_folder("mel-cnn", bundled, environ={"GRADIO_EXAMPLES_CACHE": str(tmp_path)})
    assert folder.parent == tmp_path and folder.name.startswith("mel-cnn-")
    assert examples_cache_folder("mel-cnn", bundled, environ={"GRADIO_EXAMPLES_CACHE": str(tmp_path)}) == folder
    other = examples_cache_folder("mel-cnn", {"mel-cnn": "someone/their-cnn"}, {"GRADIO_EXAMPLES_CACHE": str(tmp_path)})
    assert other != folder
    assert examples_cache_folder("mel-cnn", bundled, environ={}).parent == Path(".gradio/cached_examples")


def test_the_bundled_examples_are_known_playable_without_running_ffprobe(tmp_path, monkeypatch):
    from gradio import processing_utils

    from ser_models.demo import EXAMPLES_DIR, examples, examples_known_playable

    probed = []
    original = processing_utils.audio_is_playable
    monkeypatch.setattr(processing_utils, "FFprobe", lambda **kwargs: probed.append(kwargs) or 1 / 0)
    other = tmp_path / examples()[0].path.name
    other.write_bytes(examples()[0].path.read_bytes())
    with examples_known_playable():
        assert all(processing_utils.audio_is_playable(str(clip.path)) for clip in examples())
        assert probed == []
        with pytest.raises(ZeroDivisionError):  # any other file, even a copy of an example, is still probed
            processing_utils.audio_is_playable(str(other))
        assert len(probed) == 1 and EXAMPLES_DIR != other.parent
    assert processing_utils.audio_is_playable is original


@pytest.mark.slow
def test_every_endpoint_names_its_inputs_and_outputs(server_url):
    from gradio_client import Client

    api = Client(server_url, verbose=False).view_api(print_info=False, return_format="dict")
    endpoints = api["named_endpoints"]
    assert set(endpoints) == {"/predict", "/feedback", "/timeline"}
    for name, endpoint in endpoints.items():
        for parameter in endpoint["parameters"]:
            assert not parameter["parameter_name"].startswith("param_"), (name, parameter)
            assert not parameter["label"].startswith("parameter_"), (name, parameter)
        for value in endpoint["returns"]:
            assert not value["label"].startswith("value_"), (name, value)
    assert [p["parameter_name"] for p in endpoints["/predict"]["parameters"]] == [
        "audio",
        "model",
        "target",
        "my_voice",
        "denoise",
    ]
    assert [r["label"] for r in endpoints["/predict"]["returns"]] == [
        "What the model heard",
        "Verdict",
        "Spectrogram of the speech the model analyzed",
        "Details",
    ]


@pytest.mark.slow
def test_mcp_server_offers_the_prediction_and_the_timeline_as_described_tools(server_url):
    import httpx

    response = httpx.get(f"{server_url}gradio_api/mcp/schema", timeout=30)
    assert response.status_code == 200, response.text[:200]
    tools = {tool["name"]: tool for tool in response.json()}
    assert {"predict", "long_recording"} <= set(tools)
    predict = tools["predict"]
    assert "eight RAVDESS emotions" in predict["description"] and "probabilities" in predict["description"]
    properties = predict["inputSchema"]["properties"]
    assert predict["inputSchema"]["required"] == ["audio"]
    for name in ("audio", "model", "target", "my_voice", "denoise"):
        assert len(properties[name].get("description", "")) > 20, (name, properties[name])
    assert properties["model"]["enum"] == list(MODELS)
    timeline = tools["long_recording"]["inputSchema"]["properties"]
    assert all(timeline[name]["description"] for name in ("audio", "model", "one_speaker"))
    assert "live" not in tools and "example" not in tools  # the microphone stream and the cached examples


@pytest.mark.slow
def test_a_refusal_names_what_went_wrong_in_its_first_words(server_url):
    from gradio_client import Client

    with pytest.raises(Exception, match=r"^Cannot analyze this audio\. No audio: record the sentence"):
        Client(server_url, verbose=False).predict(None, "mel-cnn", "angry", api_name="/predict")


def test_noise_reduction_without_its_extra_analyzes_as_recorded(monkeypatch, angry_clip):
    from ser_models import denoise

    monkeypatch.setattr(denoise, "available", lambda: False)
    reading = analyze(load_recognizers({})["mel-cnn"], str(angry_clip), "angry", denoise=True)
    assert "Noise reduction is not installed on this server" in reading.details


def test_gradio_is_imported_without_rewriting_its_type_stubs():
    """app.py turns off Gradio's per-import rewriting of its components' .pyi stubs (a second of start-up);
    Gradio itself must still load and define its components."""
    code = (
        "from ser_models.demo import skip_gradio_stub_writing; skip_gradio_stub_writing()\n"
        "import gradio, gradio.component_meta as meta\n"
        "print(meta.create_or_modify_pyi.__name__, gradio.Audio().__class__.__name__)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.split() == ["<lambda>", "Audio"]
