"""The robustness benchmark scores what is served, and its pieces behave."""

import numpy as np
import pytest

from ser_models import EmotionRecognizer, load_audio
from ser_models.models import EmotionModel
from ser_models.registry import WEIGHTS_DIR
from train import corrupt, robustness


def test_served_default_equals_what_the_benchmark_evaluates(sample_clips, tmp_path):
    recognizer = EmotionRecognizer.from_pretrained("whisper-layers")
    clean = [load_audio(path) for path in sample_clips[:4]]
    noisy = [
        corrupt.EVALUATION_GRID[3].apply(clip, np.random.default_rng([42, 3, i]), clean) for i, clip in enumerate(clean)
    ]
    audio = clean + noisy
    windows = robustness.window_features(lambda: audio, tmp_path / "windows.npz", "test")
    head = EmotionModel.from_pretrained(WEIGHTS_DIR / "whisper-layers")
    evaluated = robustness.clip_probabilities(head, windows, len(audio), recognizer.temperature)
    served = np.array([list(recognizer.predict(clip, 16000).values()) for clip in audio])
    assert np.abs(evaluated - served).max() < 1e-5
    cached = robustness.window_features(lambda: pytest.fail("the cache was not used"), tmp_path / "windows.npz", "")
    assert np.array_equal(cached.features, windows.features)


def test_accuracy_counts_refusals_as_wrong_and_restricts_to_shared_classes():
    probabilities = np.array([[0.1, 0.0, 0.2, 0.7, 0, 0, 0, 0], [np.nan] * 8, [0, 0, 0.6, 0.4, 0, 0, 0, 0]])
    labels = np.array([3, 3, 3])
    assert robustness.accuracy(probabilities, labels) == pytest.approx(1 / 3)
    assert robustness.accuracy(probabilities, labels, classes=[0, 3]) == pytest.approx(2 / 3)


def test_a_corpus_never_chooses_the_penalty_it_is_scored_with():
    """The head's L2 is chosen on validation actors and leave-one-corpus-out; each corpus's own figure is left
    out of the choice for that corpus, so a corpus that alone favours a penalty cannot pick it for itself."""
    rows = [
        {"l2": 1.0, "clean": 0.80, "degraded": 0.70, "out_of_corpus": {"a": 0.40, "b": 0.30, "c": 0.50}},
        {"l2": 10.0, "clean": 0.78, "degraded": 0.68, "out_of_corpus": {"a": 0.40, "b": 0.30, "c": 0.70}},
    ]
    assert robustness.penalty_criterion(rows[0]) == pytest.approx(np.mean([0.80, 0.70, 0.40]))
    assert robustness.choose_penalty(rows) == 10.0  # c's gain outweighs two points on the validation actors
    assert robustness.choose_penalty(rows, leave_out="c") == 1.0  # but c's figure cannot choose c's head
    assert robustness.choose_penalty(rows, leave_out="a") == 10.0
    without_corpora = [{k: v for k, v in row.items() if k != "out_of_corpus"} for row in rows]
    assert robustness.choose_penalty(without_corpora) == 1.0
    tie = [dict(rows[0], l2=0.1), rows[0]]
    assert robustness.choose_penalty(tie) == 0.1  # the first (smaller) penalty wins a tie


def test_threshold_and_coverage():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 8, 400)
    probabilities = np.full((400, 8), 0.02)
    confident = rng.random(400) < 0.5
    probabilities[np.arange(400), np.where(confident, truth, (truth + 1) % 8)] = np.where(confident, 0.86, 0.3)
    threshold = robustness.choose_threshold(probabilities, truth, 0.8)
    assert 0.3 < threshold <= 0.86
    rows = robustness.coverage_table(probabilities, truth)
    assert rows[0]["answered"] == 1.0
    assert any(r["accuracy"] == 1.0 and r["answered"] == pytest.approx(confident.mean()) for r in rows)


def test_the_bundled_default_names_its_settings():
    recognizer = EmotionRecognizer.from_pretrained("whisper-layers")
    assert 0 < recognizer.confidence_threshold < 1 and recognizer.temperature > 0
    assert (WEIGHTS_DIR / "whisper-layers" / "model.onnx").is_file()


def test_speaker_adaptation_of_other_corpora_removes_each_speakers_pull():
    """Out of corpus, "adapted" takes go through the product's session adaptation, one session per speaker."""
    rng = np.random.default_rng(0)
    labels = np.tile(np.arange(4), 30)  # each speaker's takes span four emotions
    speakers = np.repeat([0, 1], 60)
    logits = np.where(np.arange(8) == labels[:, None], 1.0, 0.0) + rng.normal(0, 0.3, (120, 8))
    logits[speakers == 1, 0] += 2.0  # one voice pulls every take towards emotion 0
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    probabilities[5] = np.nan  # a refused take stays refused
    clips = robustness.Clips([], labels, speakers)
    plain = robustness.accuracy(probabilities, labels, [0, 1, 2, 3])
    adapted = robustness.adapted_accuracy(probabilities, clips, [0, 1, 2, 3])
    assert set(adapted) == {f"{robustness.SESSION_TAKES} takes", "all takes"}
    assert adapted["all takes"] > plain + 0.2 and adapted[f"{robustness.SESSION_TAKES} takes"] > plain
    assert np.isnan(robustness.speaker_adapted(probabilities, speakers, None, rng)[5]).all()
