"""Ensembles: the served combination is the one train/ensemble.py evaluated, weights come from validation."""

import json

import numpy as np
import pytest
from scipy.special import softmax

from ser_models import EmotionRecognizer, ModelLoadError, load_audio
from ser_models.scorers import ENSEMBLE_NAME, EnsembleScorer
from train import ensemble


@pytest.fixture(scope="module")
def two_model_ensemble(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ensemble")
    (folder / ENSEMBLE_NAME).write_text(json.dumps({"members": {"mel-cnn": 0.3, "mfcc-mlp": 0.7}}))
    return folder


def test_served_ensemble_is_the_evaluated_weighted_geometric_mean(two_model_ensemble, sample_clips):
    recognizer = EmotionRecognizer.from_pretrained(two_model_ensemble)
    assert isinstance(recognizer.scorer, EnsembleScorer)
    speech = [recognizer.trim(load_audio(c)) for c in sample_clips]  # RAVDESS takes: one 4 s window each
    # train.ensemble combines the members' logits; at temperature 1 these are their log-probabilities.
    members = recognizer.scorer.members
    member_logits = [np.log(members[name].probabilities(speech)) for name in ("mel-cnn", "mfcc-mlp")]
    expected = softmax(ensemble.combine(member_logits, np.array([0.3, 0.7])), axis=-1)
    served = np.array([list(p.values()) for p in recognizer.predict_speech(speech)])
    assert np.abs(served - expected).max() < 1e-9
    assert np.allclose(served.sum(axis=1), 1)


def test_ensemble_answers_like_any_recognizer(two_model_ensemble, angry_clip):
    recognizer = EmotionRecognizer.from_pretrained(two_model_ensemble)
    probabilities = recognizer.predict_file(angry_clip)
    assert len(probabilities) == 8 and abs(sum(probabilities.values()) - 1) < 1e-6
    analysis = recognizer.analyze(load_audio(angry_clip), 16_000)
    assert analysis.probabilities == pytest.approx(probabilities)


@pytest.mark.parametrize(
    "spec",
    [
        "not json",
        json.dumps({"members": ["mel-cnn"]}),
        json.dumps({"weights": {"mel-cnn": 1}}),
        json.dumps({"members": {"mel-cnn": "heavy"}}),
    ],
)
def test_bad_ensemble_files_are_clear_load_errors(tmp_path, spec):
    (tmp_path / ENSEMBLE_NAME).write_text(spec)
    with pytest.raises(ModelLoadError, match="ensemble"):
        EmotionRecognizer.from_pretrained(tmp_path)


def _fold(rng, labels, rows, skill):
    """Saved predictions of a fake member whose logits point to the truth with strength ``skill``."""
    logits = {}
    for part, index in rows.items():
        z = rng.normal(size=(len(index), 8))
        z[np.arange(len(index)), labels[index]] += skill
        logits[f"{part}_logits"] = z
    return {"validation_rows": rows["validation"], "test_rows": rows["test"], **logits}


def test_weights_are_chosen_on_validation_and_favour_the_better_member():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 8, 400)
    folds = [
        {"validation": np.arange(k * 80, k * 80 + 40), "test": np.arange(k * 80 + 40, k * 80 + 80)} for k in range(5)
    ]
    members = {
        "strong": [_fold(rng, labels, rows, 3.0) for rows in folds],
        "weak": [_fold(rng, labels, rows, 0.5) for rows in folds],
    }
    report = ensemble.evaluate_ensemble(members, labels)
    assert report["weights"]["strong"] > report["weights"]["weak"]
    assert report["ensemble"]["accuracy"]["mean"] >= report["members"]["weak"]["accuracy"]["mean"]
    assert set(report["ensemble"]["calm_neutral"]) == {"neutral_as_calm", "calm_as_neutral"}


def test_members_from_different_folds_are_refused():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 8, 100)
    a = [_fold(rng, labels, {"validation": np.arange(0, 20), "test": np.arange(20, 50)}, 1.0)]
    b = [_fold(rng, labels, {"validation": np.arange(0, 20), "test": np.arange(50, 80)}, 1.0)]
    with pytest.raises(SystemExit, match="not the same folds"):
        ensemble.evaluate_ensemble({"a": a, "b": b}, labels)


def test_weight_grid_sums_to_one():
    grid = ensemble.weight_grid(3, steps=4)
    assert len(grid) == 15 and all(abs(w.sum() - 1) < 1e-12 for w in grid)
