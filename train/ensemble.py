"""Ensembles of cross-validated models, scored on the same speaker-independent folds.

    python -m train.ensemble --member mel-cnn=runs/cv_saved/models/speaker-independent \\
        --member whisper-head=runs/whisper/cv/speaker-independent

Each member folder holds one ``fold<k>/predictions.npz`` per fold (``train.crossval --save-models``,
``train.whisper_head crossval --save-models``): the rows and logits of its validation and test actors.
The ensemble averages the members' log-probabilities with weights chosen on the validation actors
(pooled over the folds, a grid of WEIGHT_STEPS), then is scored once on the test actors. Each member's
own score and the calm/neutral confusion are reported beside it.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import evaluate
import numpy as np
from scipy.special import log_softmax

from ser_models.labels import EMOTIONS
from ser_models.scorers import ENSEMBLE_NAME
from train.crossval import METRICS_MODULE, fold_scores, plot_confusion, summarize
from train.reports import REPORTS_DIR, command_line, write_report

WEIGHT_STEPS = 10  # weights in multiples of 1/10, summing to 1
CALM, NEUTRAL = EMOTIONS.index("calm"), EMOTIONS.index("neutral")


def load_member(folder: Path) -> list[dict[str, np.ndarray]]:
    """The saved predictions of every fold, in fold order."""
    folds = sorted(folder.glob("fold*/predictions.npz"), key=lambda p: int(p.parent.name.removeprefix("fold")))
    if not folds:
        raise SystemExit(f"{folder}: no fold*/predictions.npz (run the cross-validation with --save-models)")
    return [dict(np.load(path)) for path in folds]


def weight_grid(n_members: int, steps: int = WEIGHT_STEPS) -> list[np.ndarray]:
    return [np.asarray(c) / steps for c in itertools.product(range(steps + 1), repeat=n_members) if sum(c) == steps]


def combine(logits: list[np.ndarray], weights: np.ndarray) -> np.ndarray:
    """Weighted mean of the members' log-probabilities (a weighted geometric mean of their probabilities)."""
    return sum(w * log_softmax(z, axis=-1) for w, z in zip(weights, logits, strict=True))


def calm_neutral(matrix: np.ndarray) -> dict[str, float]:
    """How often calm is taken for neutral and neutral for calm (shares of each true class)."""
    matrix = np.asarray(matrix, dtype=float)
    return {
        "neutral_as_calm": float(matrix[NEUTRAL, CALM] / matrix[NEUTRAL].sum()),
        "calm_as_neutral": float(matrix[CALM, NEUTRAL] / matrix[CALM].sum()),
    }


def score(labels: np.ndarray, folds: list[dict], logits_of_fold, metric) -> dict:
    """train.crossval.summarize of the test predictions, with the calm/neutral confusion."""
    per_fold, truths, predictions = [], [], []
    for k, fold in enumerate(folds):
        truths.append(labels[fold["test_rows"]])
        predictions.append(logits_of_fold(k).argmax(axis=-1))
        per_fold.append({"fold": k, **fold_scores(metric, predictions[-1], truths[-1])})
    result = summarize(per_fold, truths, predictions, metric)
    return {**result, "calm_neutral": calm_neutral(result["confusion_matrix"])}


def evaluate_ensemble(members: dict[str, list[dict]], labels: np.ndarray) -> dict:
    names = list(members)
    n_folds = len(members[names[0]])
    for name in names:
        if len(members[name]) != n_folds:
            raise SystemExit(f"{name} has {len(members[name])} folds, {names[0]} has {n_folds}")
        for k in range(n_folds):
            for rows in ("validation_rows", "test_rows"):
                if not np.array_equal(members[name][k][rows], members[names[0]][k][rows]):
                    raise SystemExit(f"{name} fold {k}: its {rows} differ from {names[0]}'s; not the same folds")
    folds = members[names[0]]
    metric = evaluate.load(METRICS_MODULE)
    validation_truth = np.concatenate([labels[f["validation_rows"]] for f in folds])

    def validation_accuracy(weights: np.ndarray) -> float:
        combined = np.concatenate(
            [combine([members[n][k]["validation_logits"] for n in names], weights) for k in range(n_folds)]
        )
        return float((combined.argmax(axis=-1) == validation_truth).mean())

    grid = weight_grid(len(names))
    best = max(grid, key=validation_accuracy)
    report = {
        "members": {
            name: score(labels, folds, lambda k, name=name: members[name][k]["test_logits"], metric) for name in names
        },
        "weights": dict(zip(names, best.tolist(), strict=True)),
        "validation_accuracy": validation_accuracy(best),
        "equal_weights_validation_accuracy": validation_accuracy(np.full(len(names), 1 / len(names))),
    }
    report["ensemble"] = score(
        labels, folds, lambda k: combine([members[n][k]["test_logits"] for n in names], best), metric
    )
    return report


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--member", action="append", required=True, metavar="NAME=FOLDER")
    parser.add_argument("--data", default=None, help="RAVDESS folder or Hub dataset id (for the labels)")
    parser.add_argument("--reports", type=Path, default=REPORTS_DIR)
    parser.add_argument("--name", default=None, help="report name (default: the member names joined by +)")
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="also write DIR/ensemble.json with the chosen weights (member names must then be bundled model names)",
    )
    args = parser.parse_args(argv)

    from train import data

    members = {}
    for spec in args.member:
        name, _, folder = spec.partition("=")
        members[name] = load_member(Path(folder))
    dataset = data.load_ravdess(args.data)
    actors = np.unique(np.asarray(dataset["actor"]))
    for name, folds in members.items():
        if "actors" in folds[0] and not np.array_equal(folds[0]["actors"], actors):
            raise SystemExit(f"{name} was cross-validated on actors {folds[0]['actors']}, the data has {actors}")
    labels = np.asarray(dataset["emotion"])
    report = {
        "command": command_line("train.ensemble", argv),
        "protocol": "speaker-independent",
        **evaluate_ensemble(members, labels),
    }
    name = args.name or "+".join(members)
    if args.output:
        args.output.mkdir(parents=True, exist_ok=True)
        spec = {"members": report["weights"], "temperature": 1.0, "evaluated_by": report["command"]}
        write_report(spec, args.output / ENSEMBLE_NAME)
    args.reports.mkdir(parents=True, exist_ok=True)
    write_report(report, args.reports / f"ensemble_{name}.json")
    ensemble = report["ensemble"]
    plot_confusion(
        ensemble["confusion_matrix"],
        f"{name}, speaker-independent: accuracy {ensemble['accuracy']['mean']:.1%}",
        args.reports / f"confusion_{name}_speaker-independent.png",
    )
    for member, result in [*report["members"].items(), (f"ensemble {report['weights']}", ensemble)]:
        print(
            f"{member}: accuracy {result['accuracy']['mean']:.1%} ± {result['accuracy']['std']:.1%}, "
            f"macro-F1 {result['macro_f1']['mean']:.3f}, neutral->calm {result['calm_neutral']['neutral_as_calm']:.0%}"
        )
    return report


if __name__ == "__main__":
    main()
