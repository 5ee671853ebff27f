"""Temperature scaling: fitted on validation data, it lowers the calibration error on held-out data."""

import json

import numpy as np
import pytest

from train.calibration import (
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    shipped_temperature,
    softmax,
)


def overconfident_predictions(n: int, seed: int, true_temperature: float = 2.5):
    """Labels drawn from softmax(z / T) while the model reports softmax(z): overconfident by T."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, size=(n, 8))
    truth = softmax(logits, true_temperature)
    labels = np.array([rng.choice(8, p=p) for p in truth])
    return logits, labels


def test_ece_is_zero_for_a_perfectly_calibrated_constant_and_large_for_overconfidence():
    labels = np.array([0] * 70 + [1] * 30)
    calibrated = np.tile([0.7, 0.3, 0, 0, 0, 0, 0, 0], (100, 1))
    assert expected_calibration_error(calibrated, labels) == pytest.approx(0.0, abs=1e-9)
    overconfident = np.tile([0.99, 0.01, 0, 0, 0, 0, 0, 0], (100, 1))
    assert expected_calibration_error(overconfident, labels) == pytest.approx(0.29, abs=1e-9)


def test_temperature_fitted_on_validation_lowers_ece_on_held_out_data():
    validation_logits, validation_labels = overconfident_predictions(2000, seed=0)
    test_logits, test_labels = overconfident_predictions(2000, seed=1)
    temperature = fit_temperature(validation_logits, validation_labels)
    assert temperature == pytest.approx(2.5, rel=0.15)
    before = expected_calibration_error(softmax(test_logits), test_labels)
    after = expected_calibration_error(softmax(test_logits, temperature), test_labels)
    assert after < before / 2
    assert negative_log_likelihood(test_logits, test_labels, temperature) < negative_log_likelihood(
        test_logits, test_labels
    )
    assert (softmax(test_logits, temperature).argmax(1) == test_logits.argmax(1)).all()  # accuracy unchanged


def test_a_temperature_that_worsens_unseen_actors_is_not_shipped():
    def folds(nll_before: float, nll_after: float) -> dict:
        return {"nll_before": {"mean": nll_before}, "nll_after": {"mean": nll_after}, "temperature": {"mean": 1.3}}

    assert shipped_temperature(folds(1.20, 1.10)) == 1.3
    assert shipped_temperature(folds(1.10, 1.11)) == 1.0


@pytest.mark.slow
def test_calibration_command_on_saved_folds(ravdess_dir, tmp_path):
    from ser_models import EmotionRecognizer
    from train import calibration, crossval

    crossval.main(
        ["--model", "mfcc-mlp", "--protocol", "speaker-independent", "--actors", *"1 2 3 4 5 6".split()]
        + ["--folds", "3", "--epochs", "2", "--reports", str(tmp_path), "--save-models", str(tmp_path / "m")]
    )
    model_dir = tmp_path / "m" / "speaker-independent" / "fold0"
    report = calibration.main(
        ["--folds", str(tmp_path / "m" / "speaker-independent"), "--apply", str(model_dir), "--reports", str(tmp_path)]
    )
    assert len(report["cross_validated"]["folds"]) == 3
    saved = json.loads((tmp_path / "calibration_mfcc-mlp.json").read_text())
    assert saved["applied"]["temperature"] == report["applied"]["temperature"]
    assert EmotionRecognizer.from_pretrained(model_dir).config.temperature == report["applied"]["temperature"]
