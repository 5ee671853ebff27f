"""Calibration: does a probability of 0.7 mean right 7 times in 10? Temperature scaling, measured.

    python -m train.calibration --folds runs/cv_saved/models/speaker-independent [--apply ser_models/weights/mel-cnn]

Reads the per-fold models and logits that ``python -m train.crossval --save-models DIR`` keeps.
On every fold one temperature is fitted on the fold's validation actors (minimum negative
log-likelihood) and the expected calibration error (ECE, 15 equal-width bins) is measured on its
test actors before and after. ``--apply`` stores the folds' mean temperature in a trained model's
config where it lowers the held-out log-likelihood (else temperature 1), which the recognizer applies to
every prediction (one model's own 120 validation clips are too few to fit it alone; their ECE is reported
for information). Writes reports/calibration_<model>.json.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ser_models.models import EmotionModel
from train import splits
from train.crossval import load_features
from train.reports import REPORTS_DIR, command_line, write_report
from train.trainer import predict_logits

ECE_BINS = 15
TEMPERATURES = np.exp(np.linspace(np.log(0.25), np.log(8.0), 400))


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    scaled = logits / temperature
    scaled = scaled - scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=1, keepdims=True)


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    probabilities = softmax(logits, temperature)
    return float(-np.mean(np.log(probabilities[np.arange(len(labels)), labels] + 1e-12)))


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """Mean |accuracy - confidence| over equal-width confidence bins, weighted by bin size."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0, 1, bins + 1)
    error = 0.0
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        members = (confidence > low) & (confidence <= high)
        if members.any():
            error += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(error)


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature with the lowest negative log-likelihood (a 1-D search; the loss is smooth)."""
    losses = [negative_log_likelihood(logits, labels, t) for t in TEMPERATURES]
    return float(TEMPERATURES[int(np.argmin(losses))])


def calibration_scores(logits: np.ndarray, labels: np.ndarray, temperature: float) -> dict:
    return {
        "ece": expected_calibration_error(softmax(logits, temperature), labels),
        "nll": negative_log_likelihood(logits, labels, temperature),
        "mean_confidence": float(softmax(logits, temperature).max(axis=1).mean()),
    }


def fold_actors(folds_dir: Path) -> list[int] | None:
    """The actors whose dataset the saved row numbers index (None: all of them)."""
    saved = np.load(next(folds_dir.glob("fold*/predictions.npz")))
    return [int(a) for a in saved["actors"]] if "actors" in saved else None


def fold_model_type(folds_dir: Path) -> str:
    """Which model the saved folds hold (mel-cnn or mfcc-mlp), from the first fold's config."""
    return json.loads(next(folds_dir.glob("fold*/config.json")).read_text())["model_type"]


def evaluate_folds(folds_dir: Path, labels: np.ndarray) -> dict:
    folds = []
    for fold_dir in sorted(folds_dir.glob("fold*")):
        saved = np.load(fold_dir / "predictions.npz")
        validation_labels, test_labels = labels[saved["validation_rows"]], labels[saved["test_rows"]]
        temperature = fit_temperature(saved["validation_logits"], validation_labels)
        folds.append(
            {
                "fold": fold_dir.name,
                "temperature": temperature,
                "accuracy": float((saved["test_logits"].argmax(axis=1) == test_labels).mean()),
                "before": calibration_scores(saved["test_logits"], test_labels, 1.0),
                "after": calibration_scores(saved["test_logits"], test_labels, temperature),
            }
        )
    if not folds:
        raise FileNotFoundError(f"no fold*/predictions.npz under {folds_dir}; run train.crossval --save-models")

    def mean_std(key: str, when: str) -> dict:
        values = [fold[when][key] for fold in folds]
        return {"mean": float(np.mean(values)), "std": float(np.std(values))}

    return {
        "folds": folds,
        "ece_before": mean_std("ece", "before"),
        "ece_after": mean_std("ece", "after"),
        "nll_before": mean_std("nll", "before"),
        "nll_after": mean_std("nll", "after"),
        "temperature": {"mean": float(np.mean([f["temperature"] for f in folds]))},
    }


def shipped_temperature(cross_validated: dict) -> float:
    """The folds' mean temperature where it lowers the held-out log-likelihood; 1 where it does not (a
    temperature fitted on validation actors that makes unseen actors' probabilities worse is not shipped)."""
    if cross_validated["nll_after"]["mean"] < cross_validated["nll_before"]["mean"]:
        return cross_validated["temperature"]["mean"]
    return 1.0


def apply_to_model(model_dir: Path, temperature: float, log_mel, lengths, labels, actor_of_row) -> dict:
    """Store ``temperature`` in a trained model's config; report ECE on its own validation actors."""
    model = EmotionModel.from_pretrained(model_dir)
    actors = sorted({int(a) for a in actor_of_row})
    validation_actors = splits.validation_pair(splits.actor_folds(actors)[0])  # as train.run chose them
    rows = np.flatnonzero(np.isin(actor_of_row, validation_actors))
    with torch.inference_mode():
        logits = predict_logits(model, log_mel[rows], lengths[rows]).numpy()
    model.config = replace(model.config, temperature=round(temperature, 4))
    model.save_pretrained(model_dir)
    return {
        "model_dir": str(model_dir),
        "temperature": round(temperature, 4),
        "validation_actors": validation_actors,
        "validation_ece_before": expected_calibration_error(softmax(logits), labels[rows]),
        "validation_ece_after": expected_calibration_error(softmax(logits, temperature), labels[rows]),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folds", type=Path, required=True, help="DIR/<protocol> written by crossval --save-models")
    parser.add_argument("--apply", type=Path, default=None, help="a trained model folder to store a temperature in")
    parser.add_argument("--data", default=None)
    parser.add_argument("--reports", type=Path, default=REPORTS_DIR)
    args = parser.parse_args(argv)

    log_mel, lengths, labels, actor_of_row = load_features(args.data, fold_actors(args.folds))
    model_type = fold_model_type(args.folds)
    report = {
        "model": model_type,
        "command": command_line("train.calibration", argv),
        "bins": ECE_BINS,
        "cross_validated": evaluate_folds(args.folds, labels.numpy()),
    }
    if args.apply:
        temperature = shipped_temperature(report["cross_validated"])
        report["applied"] = apply_to_model(args.apply, temperature, log_mel, lengths, labels.numpy(), actor_of_row)
    cv = report["cross_validated"]
    print(
        f"{model_type}: ECE {cv['ece_before']['mean']:.3f} -> {cv['ece_after']['mean']:.3f} on held-out actors "
        f"(temperature {cv['temperature']['mean']:.2f}); NLL {cv['nll_before']['mean']:.3f} -> "
        f"{cv['nll_after']['mean']:.3f}"
    )
    args.reports.mkdir(parents=True, exist_ok=True)
    write_report(report, args.reports / f"calibration_{model_type}.json")
    return report


if __name__ == "__main__":
    main()
