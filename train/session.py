"""Session adaptation, measured: each held-out actor is one session of unlabelled takes.

    python -m train.session --folds runs/cv_saved/models/speaker-independent

Reads the fold models' logits kept by ``python -m train.crossval --save-models DIR`` (probabilities
at the temperature fitted on each fold's validation actors, as served). For every held-out actor
and k = 5, 10, 20 and all 60 takes, the first k takes of a random order (20 orders, seeded) form
the session and every take of the actor is classified with ``SpeakerSession.adapt``; "online" adapts
each take with the takes before it and itself, as the app's "my voice" mode does. "Skewed" sessions
hold the takes of only two emotions, where the method's assumption (a speaker's takes are not all
of one kind) is broken. Labels are read only to score. Writes reports/session_<model>.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ser_models.labels import EMOTIONS
from ser_models.session import PRIOR_WEIGHT, SpeakerSession
from train.calibration import fit_temperature, fold_actors, fold_model_type, softmax
from train.crossval import load_features
from train.reports import REPORTS_DIR, command_line, write_report

SESSION_SIZES = (5, 10, 20, None)  # None: every take of the speaker
ORDERS = 20
SEED = 42


def accuracy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    return float((probabilities.argmax(axis=1) == labels).mean())


def as_dicts(probabilities: np.ndarray) -> list[dict[str, float]]:
    return [dict(zip(EMOTIONS, row.tolist(), strict=True)) for row in probabilities]


def adapted_with_first(probabilities: np.ndarray, order: np.ndarray, k: int) -> np.ndarray:
    session = SpeakerSession()
    for row in as_dicts(probabilities[order[:k]]):
        session.add(row)
    return np.array([list(session.adapt(row).values()) for row in as_dicts(probabilities)])


def adapted_online(probabilities: np.ndarray, order: np.ndarray) -> np.ndarray:
    session, adapted = SpeakerSession(), np.empty_like(probabilities)
    for index in order:
        row = as_dicts(probabilities[[index]])[0]
        session.add(row)
        adapted[index] = list(session.adapt(row).values())
    return adapted


def evaluate_fold(probabilities: np.ndarray, labels: np.ndarray, actors: np.ndarray, rng) -> dict:
    """Accuracy over the fold's test takes, single-take and adapted per actor (session)."""
    results = {"single": accuracy(probabilities, labels)}
    for k in SESSION_SIZES:
        scores = []
        for _ in range(ORDERS):
            adapted = np.empty_like(probabilities)
            for actor in np.unique(actors):
                rows = np.flatnonzero(actors == actor)
                order = rng.permutation(len(rows))
                adapted[rows] = adapted_with_first(probabilities[rows], order, k or len(rows))
            scores.append(accuracy(adapted, labels))
        results[f"k={k or 'all'}"] = float(np.mean(scores))
    online = []
    for _ in range(ORDERS):
        adapted = np.empty_like(probabilities)
        for actor in np.unique(actors):
            rows = np.flatnonzero(actors == actor)
            adapted[rows] = adapted_online(probabilities[rows], rng.permutation(len(rows)))
        online.append(accuracy(adapted, labels))
    results["online"] = float(np.mean(online))
    before, after = [], []
    for _ in range(ORDERS):
        for actor in np.unique(actors):
            pair = rng.choice(len(EMOTIONS), size=2, replace=False)
            rows = np.flatnonzero((actors == actor) & np.isin(labels, pair))
            adapted = adapted_with_first(probabilities[rows], np.arange(len(rows)), len(rows))
            before.append(accuracy(probabilities[rows], labels[rows]))
            after.append(accuracy(adapted, labels[rows]))
    results["skewed_single"] = float(np.mean(before))
    results["skewed_adapted"] = float(np.mean(after))
    return results


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folds", type=Path, required=True, help="DIR/<protocol> written by crossval --save-models")
    parser.add_argument("--data", default=None)
    parser.add_argument("--reports", type=Path, default=REPORTS_DIR)
    args = parser.parse_args(argv)

    _, _, labels, actor_of_row = load_features(args.data, fold_actors(args.folds))
    labels = labels.numpy()
    rng = np.random.default_rng(SEED)
    folds = []
    for fold_dir in sorted(args.folds.glob("fold*")):
        saved = np.load(fold_dir / "predictions.npz")
        temperature = fit_temperature(saved["validation_logits"], labels[saved["validation_rows"]])
        test = saved["test_rows"]
        probabilities = softmax(saved["test_logits"], temperature)
        folds.append({"fold": fold_dir.name, **evaluate_fold(probabilities, labels[test], actor_of_row[test], rng)})
    keys = [key for key in folds[0] if key != "fold"]
    summary = {
        key: {"mean": float(np.mean([f[key] for f in folds])), "std": float(np.std([f[key] for f in folds]))}
        for key in keys
    }
    model_type = fold_model_type(args.folds)
    report = {
        "model": model_type,
        "command": command_line("train.session", argv),
        "prior_weight": PRIOR_WEIGHT,
        "orders": ORDERS,
        "accuracy": summary,
        "folds": folds,
    }
    for key in keys:
        print(f"{key:>15}: {summary[key]['mean']:.1%} ± {summary[key]['std']:.1%}")
    args.reports.mkdir(parents=True, exist_ok=True)
    write_report(report, args.reports / f"session_{model_type}.json")
    return report


if __name__ == "__main__":
    main()
