"""Noise robustness, measured: held-out actors' clips with white noise and babble at 20, 10 and 5 dB SNR.

    python -m train.noise --folds runs/cv_saved/models/speaker-independent \\
        [--folds runs/cv_noise/models/speaker-independent ...]

Each ``--folds`` is a set of fold models written by ``python -m train.crossval --save-models DIR``
(for example one trained as usual and one with ``--noise 0.5``). Every fold model is scored on its
own test actors, clean and with noise, each time with and without ``ser_models.denoise.reduce_noise``
before the usual pipeline. Babble is six trimmed sentences of the fold's training actors, summed,
so no test voice leaks into the noise. The SNR is the power of the clip's speech (trimmed part) over
the noise's, and the noise covers the whole clip, silences included. Writes reports/noise_<model>.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from sklearn.metrics import f1_score

from ser_models import features
from ser_models.audio import AudioError
from ser_models.denoise import reduce_noise
from ser_models.inference import EmotionRecognizer
from ser_models.labels import EMOTIONS
from train import corrupt, data
from train.calibration import fold_actors, fold_model_type
from train.reports import REPORTS_DIR, command_line, write_report

SNRS_DB = (20, 10, 5)
NOISES = ("white", "babble")
SEED = 42


def scores(recognizer: EmotionRecognizer, clips: list[np.ndarray], labels: np.ndarray) -> dict[str, float]:
    """Accuracy and macro-F1; a clip the pipeline refuses (say, noise reduction left no speech) counts as wrong."""
    kept, speech = [], []
    for index, clip in enumerate(clips):
        try:
            speech.append(recognizer.trim(clip))
            kept.append(index)
        except AudioError:
            pass
    predictions = np.full(len(clips), -1)
    for index, probabilities in zip(kept, recognizer.predict_speech(speech), strict=True):
        predictions[index] = EMOTIONS.index(max(probabilities, key=probabilities.get))
    return {
        "accuracy": float((predictions == labels).mean()),
        "macro_f1": float(f1_score(labels, predictions, average="macro", labels=range(len(EMOTIONS)))),
        "refused": len(clips) - len(kept),
    }


def evaluate_folds(folds_dir: Path, audio: list[np.ndarray], labels: np.ndarray) -> dict:
    rng = np.random.default_rng(SEED)
    folds = {}
    for fold_dir in sorted(folds_dir.glob("fold*")):
        saved = np.load(fold_dir / "predictions.npz")
        recognizer = EmotionRecognizer.from_pretrained(fold_dir, backend="torch")
        train_speech = [features.trim_silence(audio[i]).audio for i in saved["train_rows"]]
        test = [audio[i] for i in saved["test_rows"]]
        truth = labels[saved["test_rows"]]
        conditions = {"clean": test}
        for noise in NOISES:
            for snr in SNRS_DB:
                noisy = []
                for clip in test:
                    if noise == "white":
                        source = corrupt.coloured_noise(clip.size, "white", rng)
                    else:
                        source = corrupt.babble_noise(clip.size, train_speech, rng)
                    noisy.append(corrupt.add_noise(clip, source, snr))
                conditions[f"{noise} {snr} dB"] = noisy
        folds[fold_dir.name] = {
            name: {
                "raw": scores(recognizer, clips, truth),
                "denoised": scores(recognizer, [reduce_noise(c) for c in clips], truth),
            }
            for name, clips in conditions.items()
        }
        print(
            f"{folds_dir} {fold_dir.name}: "
            + ", ".join(f"{k} {v['raw']['accuracy']:.2f}" for k, v in folds[fold_dir.name].items())
        )
    return folds


def training_noise(folds_dir: Path) -> float:
    """The --noise share the fold models were trained with (saved beside their logits)."""
    saved = np.load(next(folds_dir.glob("fold*/predictions.npz")))
    return float(saved["noise"]) if "noise" in saved else 0.0  # saved before the option existed: no noise


def summarize(folds: dict) -> dict:
    first = next(iter(folds.values()))
    return {
        condition: {
            variant: {
                metric: {
                    "mean": float(np.mean([f[condition][variant][metric] for f in folds.values()])),
                    "std": float(np.std([f[condition][variant][metric] for f in folds.values()])),
                }
                for metric in ("accuracy", "macro_f1")
            }
            for variant in ("raw", "denoised")
        }
        for condition in first
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folds", type=Path, action="append", required=True, help="fold models (repeatable)")
    parser.add_argument("--data", default=None)
    parser.add_argument("--reports", type=Path, default=REPORTS_DIR)
    args = parser.parse_args(argv)

    dataset = data.load_ravdess(args.data, actors=fold_actors(args.folds[0]))
    audio = [data.decode(cell) for cell in dataset["audio"]]
    labels = np.asarray(dataset["emotion"])
    runs = {}
    for folds_dir in args.folds:
        folds = evaluate_folds(folds_dir, audio, labels)
        runs[str(folds_dir)] = {
            "noise_augmentation": training_noise(folds_dir),
            "folds": folds,
            "summary": summarize(folds),
        }
    common = set.intersection(*(set(run["folds"]) for run in runs.values()))
    for run in runs.values():
        run["summary_on_common_folds"] = summarize({k: v for k, v in run["folds"].items() if k in common})
    model_type = fold_model_type(args.folds[0])
    report = {
        "model": model_type,
        "command": command_line("train.noise", argv),
        "snr_db": SNRS_DB,
        "common_folds": sorted(common),
        "runs": runs,
    }
    args.reports.mkdir(parents=True, exist_ok=True)
    write_report(report, args.reports / f"noise_{model_type}.json")
    return report


if __name__ == "__main__":
    main()
