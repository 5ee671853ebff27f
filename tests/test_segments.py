"""Long recordings: speech regions found where they are, every window classified, long input handled."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ser_models import EMOTIONS, EmotionRecognizer, SilentAudioError, features, load_audio
from ser_models.segments import speech_regions, timeline

RATE = features.SAMPLE_RATE


def spoken_sequence(ravdess_dir, actor: str = "02", clips: int = 8, seed: int = 1):
    """Trimmed real sentences separated by 1–2 s of near-silence, and where each sentence really is."""
    files = sorted((ravdess_dir / f"Actor_{actor}").glob("*.flac"))[::7][:clips]
    rng = np.random.default_rng(seed)
    parts, truth, position = [], [], 0
    for path in files:
        gap = np.zeros(int(rng.uniform(1.0, 2.0) * RATE), np.float32)
        speech = features.trim_silence(load_audio(path)).audio
        parts += [gap, speech]
        truth.append((position + gap.size, position + gap.size + speech.size))
        position += gap.size + speech.size
    parts.append(np.zeros(RATE, np.float32))
    audio = np.concatenate(parts)
    audio += 3e-4 * rng.standard_normal(audio.size).astype(np.float32)  # a microphone's noise floor
    return audio, [(start / RATE, end / RATE) for start, end in truth]


@pytest.mark.parametrize("method", ["silero", "energy"])
def test_segmentation_finds_each_sentence_within_0_3_s(ravdess_dir, method):
    if method == "silero":
        pytest.importorskip("silero_vad")
    audio, truth = spoken_sequence(ravdess_dir)
    regions, used = speech_regions(audio, method)
    assert used == method
    found = [(start / RATE, end / RATE) for start, end in regions]
    assert len(found) == len(truth)
    for (start, end), (true_start, true_end) in zip(found, truth, strict=True):
        assert abs(start - true_start) <= 0.3 and abs(end - true_end) <= 0.3


def test_timeline_gives_every_window_a_distribution(ravdess_dir):
    audio, truth = spoken_sequence(ravdess_dir, clips=4)
    long_turn = np.concatenate(
        [features.trim_silence(load_audio(p)).audio for p in sorted((ravdess_dir / "Actor_03").glob("*.flac"))[:3]]
    )  # ~6 s without a pause: more than one window
    audio = np.concatenate([audio, long_turn, np.zeros(RATE, np.float32)])
    fractions = []
    result = timeline(EmotionRecognizer.from_pretrained("mfcc-mlp"), audio, progress=lambda f, _: fractions.append(f))
    assert len(result.speech_regions) == len(truth) + 1
    assert max(s.segment for s in result.segments) == len(truth)
    assert sum(s.segment == len(truth) for s in result.segments) >= 2
    for segment in result.segments:
        assert list(segment.probabilities) == list(EMOTIONS)
        assert math.isclose(sum(segment.probabilities.values()), 1, abs_tol=1e-6)
        assert 0 <= segment.start < segment.end <= result.seconds
        assert segment.end - segment.start <= features.CHUNK_SECONDS + 1e-9
    assert math.isclose(sum(result.overall().values()), 1, abs_tol=1e-6)
    assert fractions[0] == 0 and fractions[-1] == 1 and fractions == sorted(fractions)


def test_silence_has_no_timeline():
    quiet = 1e-5 * np.random.default_rng(0).standard_normal(10 * RATE).astype(np.float32)
    with pytest.raises(SilentAudioError):
        timeline(EmotionRecognizer.from_pretrained("mfcc-mlp"), quiet, vad="energy")


@pytest.mark.slow
def test_ten_minute_recording(ravdess_dir):
    audio, truth = spoken_sequence(ravdess_dir, clips=40, actor="04")
    repeats = math.ceil(600 * RATE / audio.size)
    long = np.tile(audio, repeats)[: 600 * RATE]
    result = timeline(EmotionRecognizer.from_pretrained("mel-cnn"), long)
    assert result.seconds == 600
    assert len(result.speech_regions) >= len(truth) * (repeats - 1)
    assert all(math.isclose(sum(s.probabilities.values()), 1, abs_tol=1e-6) for s in result.segments)


def test_one_speaker_timeline_adapts_its_windows_to_the_recording(ravdess_dir):
    from ser_models.session import adapt_all

    audio, _ = spoken_sequence(ravdess_dir, clips=6)
    recognizer = EmotionRecognizer.from_pretrained("mfcc-mlp")
    plain = timeline(recognizer, audio, vad="energy")
    adapted = timeline(recognizer, audio, vad="energy", one_speaker=True)
    expected = adapt_all([s.probabilities for s in plain.segments])
    assert [(s.start, s.end) for s in adapted.segments] == [(s.start, s.end) for s in plain.segments]
    for segment, probabilities in zip(adapted.segments, expected, strict=True):
        assert all(abs(segment.probabilities[e] - probabilities[e]) < 1e-9 for e in EMOTIONS)
