"""The app: its logic without a browser, then the real server through gradio_client."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from ser_models import EMOTIONS, MODEL_DESCRIPTIONS, AudioError
from ser_models.demo import Reading, analyze, default_model, load_recognizers, spectrogram_image


def test_unreachable_hub_model_falls_back_to_bundled_weights(caplog):
    with caplog.at_level(logging.WARNING):
        recognizers = load_recognizers({"SER_CNN_MODEL": "nobody/offline-model"})
    assert set(recognizers) == set(MODEL_DESCRIPTIONS)
    assert recognizers["mel-cnn"].model.model_type == "mel-cnn"
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
    assert any(m.startswith("whisper-base: not available") and "ctranslate2" in m for m in messages)
    assert any(m.startswith("whisper-cnn: not available") for m in messages)


def test_configured_folder_replaces_bundled_model(tmp_path):
    from ser_models import MelCNN
    from ser_models.models import MelCNNConfig

    MelCNN(MelCNNConfig(hidden=16)).save_pretrained(tmp_path / "cnn")
    recognizers = load_recognizers({"SER_CNN_MODEL": str(tmp_path / "cnn")})
    assert recognizers["mel-cnn"].model.config.hidden == 16


def test_reading_verdict_and_details(angry_clip):
    recognizers = load_recognizers({})
    reading = analyze(recognizers["mel-cnn"], str(angry_clip), "angry")
    probabilities = reading.analysis.probabilities
    assert list(probabilities) == list(EMOTIONS) and abs(sum(probabilities.values()) - 1) < 1e-6
    heard = reading.analysis.label
    assert ("Match" in reading.verdict) == (heard == "angry")
    assert "trimming silence" in reading.details
    image = spectrogram_image(reading.analysis.speech.audio)
    assert image.dtype == np.uint8 and image.shape[0] == 64 * 3 and image.shape[2] == 3


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
    assert "model heard" in verdict and Path(spectrogram).is_file() and "trimming" in details


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


def test_image_folder_writes_each_image_once_and_whole(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    from ser_models.demo import ImageFolder

    images = ImageFolder(tmp_path)
    rgb = np.zeros((30, 40, 3), np.uint8)
    rgb[10:20] = 200
    with ThreadPoolExecutor(16) as pool:
        paths = set(pool.map(lambda _: images.save(rgb), range(64)))
    (path,) = paths
    assert np.array_equal(np.asarray(Image.open(path)), rgb)
    assert [p.name for p in tmp_path.iterdir()] == [Path(path).name]  # no partial files left


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
    assert "3 speech segment(s)" in summary and "adapted to the voice" in summary and plot["type"] == "matplotlib"
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
