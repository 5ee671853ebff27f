"""Quiet is not silent: speech is found by a voice detector, not by level; noise, tones and DC are refused."""

import numpy as np
import pytest
import torch

from ser_models import EmotionRecognizer, SilentAudioError, load_audio, speech
from ser_models.audio import SAMPLE_RATE
from ser_models.features import ShortSpeechWarning
from ser_models.inference import UNCERTAIN, find_speech
from train import corrupt


@pytest.fixture(scope="module")
def clip(angry_clip) -> np.ndarray:
    return load_audio(angry_clip)


def test_quiet_clean_speech_is_analysed_like_the_same_speech_at_normal_level(clip):
    recognizer = EmotionRecognizer.from_pretrained()
    loud = recognizer.predict(clip, SAMPLE_RATE)
    for db in (-30, -50):
        quiet = recognizer.predict(clip * np.float32(10 ** (db / 20)), SAMPLE_RATE)
        assert max(abs(loud[e] - quiet[e]) for e in loud) < 0.02
    assert speech.check(clip * 10 ** (-50 / 20)).snr_db == pytest.approx(speech.check(clip).snr_db, abs=0.5)


@pytest.mark.parametrize(
    "name",
    ["digital silence", "dither", "white noise", "pink noise", "brown noise", "tone", "hum", "dc"],
)
def test_recordings_without_speech_are_refused(name):
    rng = np.random.default_rng(0)
    t = np.arange(3 * SAMPLE_RATE) / SAMPLE_RATE
    audio = {
        "digital silence": np.zeros(t.size),
        "dither": 3e-5 * rng.standard_normal(t.size),
        "white noise": 0.1 * rng.standard_normal(t.size),
        "pink noise": 0.1 * corrupt.coloured_noise(t.size, "pink", rng),
        "brown noise": 0.1 * corrupt.coloured_noise(t.size, "brown", rng),
        "tone": 0.3 * np.sin(2 * np.pi * 440 * t),
        "hum": 0.2 * np.sin(2 * np.pi * 50 * t) + 0.05 * np.sin(2 * np.pi * 150 * t),
        "dc": np.full(t.size, 0.2),
    }[name].astype(np.float32)
    with pytest.raises(SilentAudioError, match="no speech"):
        find_speech(audio)
    with pytest.raises(SilentAudioError, match="no speech"):
        EmotionRecognizer.from_pretrained("mel-cnn").predict(audio, SAMPLE_RATE)


def test_every_ravdess_take_of_an_actor_is_speech(ravdess_dir):
    # Shouted takes are where Silero hesitates; the level swing keeps them.
    for path in sorted((ravdess_dir / "Actor_06").glob("03-01-0[356]-02-*")):
        find_speech(load_audio(path))


def test_the_snr_estimate_follows_the_noise(clip):
    rng = np.random.default_rng(0)
    for snr_db in (20, 10, 5, 0):
        noisy = corrupt.add_noise(clip, corrupt.coloured_noise(clip.size, "white", rng), snr_db)
        assert speech.check(noisy).snr_db == pytest.approx(snr_db, abs=2.5)


def test_speech_buried_in_noise_is_uncertain_not_refused(clip):
    recognizer = EmotionRecognizer.from_pretrained()
    noisy = corrupt.add_noise(clip, corrupt.coloured_noise(clip.size, "white", np.random.default_rng(0)), 0.0)
    analysis = recognizer.analyze(noisy, SAMPLE_RATE)
    assert analysis.verdict == UNCERTAIN and "noise" in analysis.uncertain_because
    assert sum(analysis.probabilities.values()) == pytest.approx(1.0)
    clean = recognizer.analyze(clip, SAMPLE_RATE)
    assert clean.verdict == clean.label == "angry"


def test_a_short_single_word_is_analysed_with_a_warning(clip):
    trimmed = find_speech(clip)[0].audio
    length, fade = int(0.3 * SAMPLE_RATE), int(0.01 * SAMPLE_RATE)
    envelope = np.ones(length, dtype=np.float32)
    envelope[:fade], envelope[-fade:] = np.linspace(0, 1, fade), np.linspace(1, 0, fade)
    word = np.zeros(SAMPLE_RATE, dtype=np.float32)
    word[2000 : 2000 + length] = trimmed[8000 : 8000 + length] * envelope  # trimming keeps ~0.4 s of it
    analysis = EmotionRecognizer.from_pretrained().analyze(word, SAMPLE_RATE)
    assert 0.3 <= analysis.speech.seconds < 0.5
    assert any("less reliable" in w for w in analysis.warnings)
    with pytest.warns(ShortSpeechWarning):
        EmotionRecognizer.from_pretrained("mel-cnn").predict(word, SAMPLE_RATE)


def test_bundled_silero_port_gives_silero_vads_own_probabilities_and_regions(sample_clips):
    """speech.py runs Silero's ONNX file without the silero-vad package (which needs torch); where that
    package is installed (requirements-dev.txt), both halves are checked against it."""
    silero = pytest.importorskip("silero_vad")
    from silero_vad.utils_vad import get_speech_timestamps_from_probs

    pause = np.zeros(16000, dtype=np.float32)
    audio = np.concatenate([pause, *[np.concatenate([load_audio(c), pause]) for c in sample_clips[:4]]])
    ours = speech.frame_probabilities(audio)
    model = silero.load_silero_vad(onnx=True)
    theirs = np.array([model(torch.from_numpy(chunk), 16000).item() for chunk in frames_of(audio)])
    assert ours.shape == theirs.shape and np.abs(ours - theirs).max() < 1e-4
    for threshold, silence, pad in [(0.5, 0.1, 0.03), (0.35, 0.6, 0.15)]:
        expected = get_speech_timestamps_from_probs(
            list(theirs),
            threshold=threshold,
            min_silence_duration_ms=int(silence * 1000),
            speech_pad_ms=int(pad * 1000),
            audio_length_samples=audio.size,
        )
        found = speech.speech_timestamps(ours, audio.size, threshold, min_silence_seconds=silence, pad_seconds=pad)
        assert found == [(r["start"], r["end"]) for r in expected]
        assert len(found) >= 4


def frames_of(audio: np.ndarray) -> list[np.ndarray]:
    padded = np.pad(audio, (0, -audio.size % speech.FRAME))
    return list(padded.reshape(-1, speech.FRAME))


def test_shipped_vad_graph_is_silero_cut_at_its_stft():
    """The shipped file is what train/silero_export.py makes from the silero-vad wheel, and numpy's STFT
    in front of it gives the whole original graph's probabilities (speech and noise)."""
    pytest.importorskip("silero_vad")
    from train import silero_export

    source = silero_export.original_model()
    cut = silero_export.cut_stft(source)
    assert cut.SerializeToString() == speech.SILERO_ONNX_PATH.read_bytes()
    assert silero_export.largest_difference(source, cut, silero_export.check_audio()) < silero_export.TOLERANCE
