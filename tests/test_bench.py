"""The benchmark scripts' own computations (their timings are run by hand, never checked here)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))


@pytest.mark.parametrize("name", ["mel-cnn", "mfcc-mlp"])
def test_speed_reference_pipeline_agrees_with_ours(name, sample_clips):
    """bench/speed.py times the seed study's librosa pipeline against ours: both must give the same answer."""
    pytest.importorskip("librosa")
    import speed

    from ser_models import EmotionRecognizer

    recognizer = EmotionRecognizer.from_pretrained(name, backend="torch")
    for clip in sample_clips[:3]:
        reference = speed.reference_probabilities(recognizer.scorer.network.model, clip)
        ours = np.array(list(recognizer.predict_file(clip).values()))
        assert reference.shape == (8,) and abs(reference.sum() - 1) < 1e-6
        assert reference.argmax() == ours.argmax()


def test_a_benchmark_report_names_the_command_that_reruns_it(monkeypatch):
    from train.reports import script_command

    monkeypatch.setattr(sys, "argv", ["bench/corpus.py", "--data", "my recordings"])
    assert script_command("bench/corpus.py") == "python bench/corpus.py --data 'my recordings'"
    assert script_command("bench/speed.py", []) == "python bench/speed.py"  # no trailing space to strip
