"""Cross-validate a model under both protocols and write its figures to reports/.

    python -m train.crossval --model mel-cnn            # both protocols, 5 folds each
    python -m train.crossval --model mfcc-mlp --protocol speaker-independent

Speaker-independent: actor-grouped 5-fold CV on the actors at hand (the headline).
Speaker-dependent: the seed study's random stratified 70/15/15 split, 5 seeds (comparison only).

Runs data-parallel under ``accelerate launch --multi_gpu --num_processes N -m train.crossval ...``:
every process trains each fold (see train/trainer.py); the main process writes reports and models.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import evaluate
import numpy as np
import torch

from ser_models.labels import EMOTIONS
from train import data, splits
from train.reports import REPORTS_DIR, command_line, write_report
from train.trainer import TRAIN_CONFIGS, TrainConfig, distributed_state, predict_logits, train_model

METRICS_MODULE = str(Path(__file__).parent / "ser_metrics")
PROTOCOLS = ("speaker-independent", "speaker-dependent")
METRIC_KEYS = ("accuracy", "macro_f1", "uar")


def load_features(source: str | None = None, actors: list[int] | None = None, num_proc: int | None = None):
    """(log-mel, lengths, labels, actor per row) for every clip, features cached by ``datasets``.

    Under ``accelerate launch`` the main process extracts them first and the others read its cache.
    """
    with distributed_state().main_process_first():
        dataset = data.with_log_mel(data.load_ravdess(source, actors=actors), num_proc=num_proc)
    log_mel, lengths, labels = data.tensors(dataset)
    return log_mel, lengths, labels, np.asarray(dataset["actor"])


def corrupted_copies(source: str | None, actors: list[int] | None, copies: int) -> list[tuple[torch.Tensor, ...]]:
    """``copies`` corrupted copies of every clip's inputs for multi-condition training (none for 0)."""
    if not copies:
        return []
    if actors:
        raise SystemExit("--corrupted-copies needs every actor: its babble comes from each clip's fold-mates")
    from train.robustness import corrupted_log_mels  # robustness scores fold models with this module's helpers

    with distributed_state().main_process_first():
        return corrupted_log_mels(source, copies)


def protocol_splits(protocol: str, actor_of_row: np.ndarray, labels: np.ndarray, n_folds: int) -> list[splits.Split]:
    if protocol == "speaker-independent":
        return splits.speaker_independent_splits(actor_of_row, n_folds)
    return splits.random_splits(labels, n_folds)


def chance_levels(test_labels: np.ndarray) -> dict[str, float]:
    """Uniform chance, proportional chance (sum of squared class shares) and always-the-majority-class."""
    shares = np.bincount(test_labels, minlength=len(EMOTIONS)) / len(test_labels)
    return {"uniform": 1 / len(EMOTIONS), "proportional": float(np.sum(shares**2)), "majority": float(shares.max())}


def cross_validate(
    model_type: str,
    log_mel: torch.Tensor,
    lengths: torch.Tensor,
    labels: torch.Tensor,
    fold_splits: list[splits.Split],
    actor_of_row: np.ndarray,
    config: TrainConfig,
    save_to: Path | None = None,
    only_folds: list[int] | None = None,
    corrupted: list[tuple[torch.Tensor, torch.Tensor]] = (),
) -> dict:
    """Train and test one model per fold. With ``save_to``, each fold's model, its row indices and its
    validation and test logits are kept (``save_to/fold<k>/``) for later analyses such as calibration.
    ``corrupted`` holds corrupted copies (log-mel, lengths) of every row: a fold trains on its training
    rows and their copies, and is validated and tested on clean rows."""
    state = distributed_state()
    with state.main_process_first():
        metric = evaluate.load(METRICS_MODULE)
    folds, all_true, all_pred = [], [], []
    for k, split in enumerate(fold_splits):
        if only_folds is not None and k not in only_folds:
            continue

        def rows(index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            return log_mel[index], lengths[index], labels[index]

        train_rows = rows(split.train)
        if corrupted:
            copies = [(m[split.train], n[split.train], labels[split.train]) for m, n in corrupted]
            train_rows = tuple(torch.cat(parts) for parts in zip(train_rows, *copies, strict=True))
        result = train_model(model_type, train_rows, rows(split.validation), config)
        test_logits = predict_logits(result.model, log_mel[split.test], lengths[split.test])
        predictions = test_logits.argmax(dim=-1).numpy()
        if save_to is not None and state.is_main_process:
            fold_dir = save_to / f"fold{k}"
            result.model.save_pretrained(fold_dir)
            validation_logits = predict_logits(result.model, log_mel[split.validation], lengths[split.validation])
            np.savez(
                fold_dir / "predictions.npz",
                actors=np.unique(actor_of_row),  # the row numbers below index a dataset of these actors
                noise=config.noise,
                train_rows=split.train,
                validation_rows=split.validation,
                test_rows=split.test,
                validation_logits=validation_logits.numpy(),
                test_logits=test_logits.numpy(),
            )
        truth = labels[split.test].numpy()
        scores = fold_scores(metric, predictions, truth)
        folds.append(
            {
                "fold": k,
                "test_actors": sorted({int(a) for a in actor_of_row[split.test]}),
                "n_train": len(split.train),
                "n_test": len(split.test),
                "best_epoch": result.best_epoch,
                "seconds": round(result.seconds, 1),
                **scores,
            }
        )
        if state.is_main_process:
            print(f"fold {k}: accuracy {scores['accuracy']:.3f}  macro-F1 {scores['macro_f1']:.3f}", file=sys.stderr)
        all_true.append(truth)
        all_pred.append(predictions)
    return summarize(folds, all_true, all_pred, metric)


def fold_scores(metric, predictions: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Accuracy, macro-F1 and UAR of one fold's test predictions."""
    scores = metric.compute(predictions=predictions, references=truth, num_classes=len(EMOTIONS))
    return {key: scores[key] for key in METRIC_KEYS}


def summarize(folds: list[dict], truths: list[np.ndarray], predictions: list[np.ndarray], metric) -> dict:
    """Every fold's scores as mean and (population) standard deviation, then per-emotion recall, the
    confusion matrix and the chance levels pooled over all test clips, then the folds themselves."""
    truth = np.concatenate(truths)
    pooled = metric.compute(predictions=np.concatenate(predictions), references=truth, num_classes=len(EMOTIONS))
    return {
        **{
            key: {"mean": float(np.mean([f[key] for f in folds])), "std": float(np.std([f[key] for f in folds]))}
            for key in METRIC_KEYS
        },
        "per_class_recall": dict(zip(EMOTIONS, pooled["per_class_recall"], strict=True)),
        "confusion_matrix": pooled["confusion_matrix"],
        "chance": chance_levels(truth),
        "folds": folds,
    }


def merge_runs(runs: list[dict]) -> dict:
    """One report from runs of the same model and settings over disjoint folds (``--only-folds``): every
    fold's scores as one mean ± std, the confusion matrices summed, per-emotion recall and chance from the sum."""
    same = ("model", "train_config", "corrupted_copies", "actors", "clips")
    for run in runs[1:]:
        differing = [key for key in same if run.get(key) != runs[0].get(key)]
        if differing:
            raise SystemExit(f"cannot merge runs that differ in {', '.join(differing)}")
    merged = {key: runs[0][key] for key in (*same, "device", "processes")}
    merged["seconds"] = round(sum(run["seconds"] for run in runs), 1)
    merged["protocols"] = {}
    for protocol in dict.fromkeys(p for run in runs for p in run["protocols"]):
        results = [run["protocols"][protocol] for run in runs if protocol in run["protocols"]]
        folds = sorted((fold for result in results for fold in result["folds"]), key=lambda fold: fold["fold"])
        numbers = [fold["fold"] for fold in folds]
        if len(set(numbers)) != len(numbers):
            raise SystemExit(f"{protocol}: a fold is in more than one run ({numbers})")
        confusion = np.sum([result["confusion_matrix"] for result in results], axis=0)
        per_emotion = confusion.sum(axis=1)
        merged["protocols"][protocol] = {
            **{
                key: {"mean": float(np.mean([f[key] for f in folds])), "std": float(np.std([f[key] for f in folds]))}
                for key in METRIC_KEYS
            },
            "per_class_recall": dict(zip(EMOTIONS, (np.diag(confusion) / per_emotion).tolist(), strict=True)),
            "confusion_matrix": confusion.tolist(),
            "chance": chance_levels(np.repeat(np.arange(len(EMOTIONS)), per_emotion)),
            "folds": folds,
        }
    return merged


def plot_confusion(matrix: list[list[int]], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = np.asarray(matrix, dtype=float)
    shares = counts / counts.sum(axis=1, keepdims=True)
    fig, ax = plt.subplots(figsize=(6.4, 5.6), dpi=110)
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(EMOTIONS)):
        for j in range(len(EMOTIONS)):
            ax.text(
                j,
                i,
                f"{shares[i, j]:.2f}",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if shares[i, j] > 0.5 else "black",
            )
    ax.set_xticks(range(len(EMOTIONS)), EMOTIONS, rotation=45, ha="right")
    ax.set_yticks(range(len(EMOTIONS)), EMOTIONS)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true (row-normalised recall)")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=list(TRAIN_CONFIGS), default="mel-cnn")
    parser.add_argument("--protocol", choices=[*PROTOCOLS, "both"], default="both")
    parser.add_argument("--folds", type=int, default=splits.N_FOLDS)
    parser.add_argument(
        "--data",
        default=None,
        help=f"RAVDESS folder or Hub dataset id (default ${data.DATA_ENV} or {data.DEFAULT_DATA_DIR})",
    )
    parser.add_argument("--actors", type=int, nargs="*", default=None, help="restrict to these actors")
    parser.add_argument("--epochs", type=int, default=None, help="override the model's default epoch count")
    parser.add_argument(
        "--batch-size", type=int, default=None, help="clips per optimizer step over all processes (default 32)"
    )
    parser.add_argument("--learning-rate", type=float, default=None, help="peak learning rate (default 1e-3)")
    parser.add_argument(
        "--noise", type=float, default=None, help="train with white/babble noise mixed into this share of clips"
    )
    parser.add_argument(
        "--corrupted-copies",
        type=int,
        default=0,
        help="multi-condition training: this many corrupted copies of every training clip (train.robustness's chains)",
    )
    parser.add_argument(
        "--num-proc", type=int, default=None, help="processes for the log-mel extraction (datasets.map num_proc)"
    )
    parser.add_argument("--only-folds", type=int, nargs="*", default=None, help="run these folds only (0-based)")
    parser.add_argument("--reports", type=Path, default=REPORTS_DIR)
    parser.add_argument(
        "--save-models", type=Path, default=None, help="keep every fold's model and logits under DIR/<protocol>/"
    )
    parser.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        default=None,
        metavar="REPORT",
        help="train nothing: join the reports of runs over disjoint folds (--only-folds) into --reports/cv_NAME.json",
    )
    parser.add_argument("--name", default=None, help="the merged report's name (default: the model's)")
    args = parser.parse_args(argv)
    if args.merge:
        return write_merged(args, argv)

    started = time.perf_counter()
    config = TRAIN_CONFIGS[args.model]
    if args.epochs:
        config = replace(config, epochs=args.epochs)
    if args.noise is not None:
        config = replace(config, noise=args.noise)
    if args.batch_size is not None:
        config = replace(config, batch_size=args.batch_size)
    if args.learning_rate is not None:
        config = replace(config, learning_rate=args.learning_rate)
    state = distributed_state()
    log_mel, lengths, labels, actor_of_row = load_features(args.data, args.actors, num_proc=args.num_proc)
    corrupted = corrupted_copies(args.data, args.actors, args.corrupted_copies)
    protocols = PROTOCOLS if args.protocol == "both" else (args.protocol,)
    report = {
        "model": args.model,
        "command": command_line("train.crossval", argv),
        "device": device_name(),
        "processes": state.num_processes,
        "train_config": asdict(config),
        "corrupted_copies": args.corrupted_copies,
        "actors": sorted({int(a) for a in actor_of_row}),
        "clips": len(labels),
        "protocols": {},
    }
    for protocol in protocols:
        fold_splits = protocol_splits(protocol, actor_of_row, labels.numpy(), args.folds)
        save_to = args.save_models / protocol if args.save_models else None
        result = cross_validate(
            args.model, log_mel, lengths, labels, fold_splits, actor_of_row, config, save_to, args.only_folds, corrupted
        )
        report["protocols"][protocol] = result
        if not state.is_main_process:  # the same results on every process; the main one writes them
            continue
        plot_confusion(
            result["confusion_matrix"],
            f"{args.model}, {protocol}, {args.folds}-fold: accuracy {result['accuracy']['mean']:.1%}",
            args.reports / f"confusion_{args.model}_{protocol}.png",
        )
        print(
            f"{args.model} {protocol}: accuracy {result['accuracy']['mean']:.1%} ± {result['accuracy']['std']:.1%}, "
            f"macro-F1 {result['macro_f1']['mean']:.3f} ± {result['macro_f1']['std']:.3f}"
        )
        # Written after every protocol, so a long run that is stopped keeps what it finished.
        report["seconds"] = round(time.perf_counter() - started, 1)
        args.reports.mkdir(parents=True, exist_ok=True)
        write_report(report, args.reports / f"cv_{args.model}.json")
    state.wait_for_everyone()
    return report


def write_merged(args: argparse.Namespace, argv: list[str] | None) -> dict:
    runs = [json.loads(path.read_text()) for path in args.merge]
    report = merge_runs(runs)
    # The commands of the runs, then this one: together they reproduce the merged report.
    report["command"] = " && ".join([*(run["command"].strip() for run in runs), command_line("train.crossval", argv)])
    name = args.name or report["model"]
    for protocol, result in report["protocols"].items():
        plot_confusion(
            result["confusion_matrix"],
            f"{name}, {protocol}, {len(result['folds'])}-fold: accuracy {result['accuracy']['mean']:.1%}",
            args.reports / f"confusion_{name}_{protocol}.png",
        )
        print(f"{name} {protocol}: accuracy {result['accuracy']['mean']:.1%} ± {result['accuracy']['std']:.1%}")
    write_report(report, args.reports / f"cv_{name}.json")
    return report


if __name__ == "__main__":
    main()
