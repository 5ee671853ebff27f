"""The model card's sections are rendered from the reports' JSON, figures as they were measured."""

import json

from train import cards

STAT = {"mean": 0.5, "std": 0.05}


def write(folder, name, report):
    (folder / name).write_text(json.dumps(report))


def test_sections_are_empty_without_reports(tmp_path):
    for section in (cards.calibration_section, cards.session_section, cards.noise_section, cards.speed_section):
        assert section(tmp_path) == ""


def test_calibration_session_and_noise_sections_show_the_measured_figures(tmp_path):
    fold = {
        "fold": "fold0",
        "temperature": 1.7,
        "before": {"ece": 0.123, "nll": 1.5},
        "after": {"ece": 0.045, "nll": 1.2},
    }
    write(
        tmp_path,
        "calibration_mel-cnn.json",
        {
            "command": "python -m train.calibration --folds X",
            "bins": 15,
            "cross_validated": {
                "folds": [fold],
                "ece_before": {"mean": 0.123, "std": 0.01},
                "ece_after": {"mean": 0.045, "std": 0.01},
                "nll_before": STAT,
                "nll_after": STAT,
            },
            "applied": {
                "validation_actors": [3, 8],
                "temperature": 1.65,
                "validation_ece_before": 0.1,
                "validation_ece_after": 0.09,
            },
        },
    )
    text = cards.calibration_section(tmp_path)
    assert "0.123 ± 0.010" in text and "0.045 ± 0.010" in text and "1.65" in text and "train.calibration" in text

    accuracy = {
        k: STAT for k in ("single", "k=5", "k=10", "k=20", "k=all", "online", "skewed_single", "skewed_adapted")
    }
    write(
        tmp_path,
        "session_mel-cnn.json",
        {"command": "c", "prior_weight": 5.0, "orders": 20, "accuracy": accuracy, "folds": [{}] * 3},
    )
    assert cards.session_section(tmp_path).count("50.0% ± 5.0%") == 8

    cell = {"raw": {"accuracy": STAT, "macro_f1": STAT}, "denoised": {"accuracy": STAT, "macro_f1": STAT}}
    summary = {"clean": cell, "white 5 dB": cell}
    run = {"noise_augmentation": 0.0, "summary": summary, "summary_on_common_folds": summary, "folds": {}}
    write(
        tmp_path,
        "noise_mel-cnn.json",
        {"command": "c", "common_folds": ["fold0"], "runs": {"a": run, "b": {**run, "noise_augmentation": 0.5}}},
    )
    noise = cards.noise_section(tmp_path)
    assert "| white 5 dB |" in noise and "noise-augmented training, noise reduction" in noise
