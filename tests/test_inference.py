import io
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from ser_models import (
    EMOTIONS,
    MODELS,
    EmotionRecognizer,
    EmptyAudioError,
    InvalidSamplesError,
    SilentAudioError,
    TooLongError,
    TooShortError,
    TruncatedAudioError,
    UnreadableAudioError,
    UnsupportedAudioError,
    load_audio,
)


@pytest.fixture(scope="module", params=list(MODELS))
def recognizer(request):
    return EmotionRecognizer.from_pretrained(request.param)


def assert_distribution(probabilities):
    assert list(probabilities) == list(EMOTIONS)
    assert all(math.isfinite(p) and 0 <= p <= 1 for p in probabilities.values())
    assert math.isclose(sum(probabilities.values()), 1.0, abs_tol=1e-6)


def test_default_model_is_the_evaluated_whisper_layers_head():
    import json
    from pathlib import Path

    default = EmotionRecognizer.from_pretrained()
    assert default.name == "whisper-layers" and default.config.model_type == "whisper-head"
    evaluated = json.loads((Path(__file__).parents[1] / "reports" / "robustness_whisper-layers.json").read_text())
    config = default.config
    assert config.layers == evaluated["layers"] and config.temperature == pytest.approx(evaluated["temperature"])
    assert config.confidence_threshold == evaluated["confidence_threshold"]


def test_predict_file_and_waveform_agree(recognizer, angry_clip):
    from_file = recognizer.predict_file(angry_clip)
    samples, rate = sf.read(angry_clip, dtype="int16")
    from_waveform = recognizer.predict(samples, rate)
    assert_distribution(from_file)
    assert from_file == pytest.approx(from_waveform, abs=1e-5)


def test_batch_equals_one_by_one(recognizer, sample_clips):
    recordings = [(load_audio(c), 16000) for c in sample_clips]
    batched = recognizer.predict_batch(recordings)
    for (audio, rate), probabilities in zip(recordings, batched, strict=True):
        assert probabilities == pytest.approx(recognizer.predict(audio, rate), abs=1e-5)


def test_resampled_stereo_input_gives_a_close_answer(recognizer, angry_clip):
    import soxr

    mono = load_audio(angry_clip)
    stereo_44k = np.stack([soxr.resample(mono, 16000, 44100)] * 2, axis=1)
    assert recognizer.predict(stereo_44k, 44100) == pytest.approx(recognizer.predict(mono, 16000), abs=0.05)


def test_long_recording_uses_every_window(recognizer, sample_clips):
    long_take = np.concatenate([load_audio(c) for c in sample_clips[:4]])
    analysis = recognizer.analyze(long_take, 16000)
    assert analysis.speech.seconds > 4
    assert_distribution(analysis.probabilities)


@pytest.mark.parametrize("name", ["whisper-layers", "mel-cnn"])
def test_bundled_models_recognise_training_speech(sample_clips, name):
    # Actor 02 is in the bundled models' training set: a sanity check, not an accuracy figure.
    recognizer = EmotionRecognizer.from_pretrained(name)
    labels = [max(p, key=p.get) for p in recognizer.predict_batch([(load_audio(c), 16000) for c in sample_clips])]
    assert sum(label == emotion for label, emotion in zip(labels, EMOTIONS, strict=True)) >= 5


@pytest.mark.parametrize(
    ("samples", "rate", "error"),
    [
        (np.zeros(0, dtype=np.float32), 16000, EmptyAudioError),
        (np.zeros(32000, dtype=np.float32), 16000, SilentAudioError),
        (np.full(32000, np.nan, dtype=np.float32), 16000, InvalidSamplesError),
        (np.array(["a", "b"]), 16000, InvalidSamplesError),
        (np.zeros(32000, dtype=np.float32), 100, UnsupportedAudioError),
        (np.zeros((2, 3, 100), dtype=np.float32), 16000, UnsupportedAudioError),
        (np.ones(16000 * 61, dtype=np.float32) * 0.1, 16000, TooLongError),
    ],
)
def test_bad_waveforms_raise_documented_errors(samples, rate, error):
    with pytest.raises(error):
        EmotionRecognizer.from_pretrained("mfcc-mlp").predict(samples, rate)


def test_a_fifth_of_a_second_of_speech_is_too_short(angry_clip):
    from ser_models import features

    speech = features.trim_silence(load_audio(angry_clip)).audio
    blip = np.zeros(32000, dtype=np.float32)
    blip[8000:11200] = speech[8000:11200] * np.hanning(3200)  # 0.2 s: a syllable, not a word
    with pytest.raises((TooShortError, SilentAudioError)):
        EmotionRecognizer.from_pretrained("mfcc-mlp").predict(blip, 16000)


def test_files_that_are_not_audio(tmp_path):
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio")
    with pytest.raises(UnreadableAudioError, match="could not be decoded"):
        load_audio(text)
    with pytest.raises(UnreadableAudioError, match="does not exist"):
        load_audio(tmp_path / "missing.wav")
    with pytest.raises(UnreadableAudioError):
        load_audio(b"\x00" * 100)


def encoded(fmt: str, seconds: float = 3.0) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, 0.3 * np.sin(np.arange(int(seconds * 16000)) / 7), 16000, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["WAV", "MP3"])
def test_cut_off_file_is_reported_as_truncated(fmt, tmp_path):
    whole = encoded(fmt)
    assert load_audio(whole).size == 48000
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(TruncatedAudioError, match="truncated: its header promises 3.00 s"):
        load_audio(path)


@pytest.mark.parametrize("fmt", ["FLAC", "OGG"])
def test_corrupt_compressed_file_is_unreadable_with_a_clean_message(fmt):
    whole = encoded(fmt)
    with pytest.raises(UnreadableAudioError, match="could not be decoded") as caught:
        load_audio(whole[: len(whole) // 2])
    assert "BytesIO" not in str(caught.value)  # no Python object reprs in a message for users


def test_length_limit_is_configurable(tmp_path):
    path = tmp_path / "long.wav"
    sf.write(path, 0.1 * np.sin(np.arange(16000 * 70) / 9), 16000)
    with pytest.raises(TooLongError, match="limit is 60 s"):
        load_audio(path)
    script = "import sys; from ser_models import load_audio; print(load_audio(sys.argv[1]).size)"
    done = subprocess.run(
        [sys.executable, "-c", script, str(path)],
        env={**os.environ, "SER_MAX_SECONDS": "120"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == str(16000 * 70)


def test_served_cnn_sees_the_full_4_s_input_that_cross_validation_scored(sample_clips):
    """Cropping a clip's input to its own length changes the CNN's output (BatchNorm makes the
    padding non-zero); serving must give what the evaluation, on full 4 s inputs, measured."""
    import torch

    from ser_models import features

    recognizer = EmotionRecognizer.from_pretrained("mel-cnn", backend="torch")
    speech = [recognizer.trim(load_audio(clip)) for clip in sample_clips]
    assert min(s.size for s in speech) < features.N_SAMPLES / 2  # short clips, where a crop would bite
    audio, lengths = features.batch_inputs(speech)
    model = recognizer.scorer.network.model  # the eager torch network (export.TorchNetwork)
    inputs = model.from_log_mel(torch.from_numpy(features.log_mel_spectrogram(audio)), torch.from_numpy(lengths))
    assert inputs.shape[-1] == features.N_FRAMES  # as train/ does
    with torch.inference_mode():
        logits = model(inputs).double() / recognizer.config.temperature
    expected = torch.softmax(logits, dim=-1).numpy()
    served = [list(recognizer.predict_speech([s])[0].values()) for s in speech]  # one at a time
    assert np.abs(np.array(served) - expected).max() < 1e-5
