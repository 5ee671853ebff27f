"""Frozen Whisper encoder features with a small trained head: cross-validation, the padding study, the bundled model.

    python -m train.whisper_head features --pad 0 8 15 30  # encoder features of every clip, cached in runs/whisper/
    python -m train.whisper_head padding --pad 0 8 15 30   # accuracy and encoder latency per padding -> reports/
    python -m train.whisper_head crossval                  # 5-fold CV -> reports/cv_whisper-head.json
    python -m train.whisper_head train                     # one head on all actors -> runs/whisper/head
    python -m train.whisper_head finetune --encoder openai/whisper-base --output DIR  # where the Hub and a GPU are

The encoder is never trained, so its features are computed once per clip and padding length
and cached; the head trains in seconds. Choices (padding, head size) are made on the folds'
validation actors, never on their test actors.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import evaluate
import numpy as np
import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from ser_models import features
from ser_models.export import save_onnx
from ser_models.models import WhisperHead, WhisperHeadConfig
from ser_models.whisper import BUNDLED_ENCODER, TransformersWhisperEncoder, encoder_for
from train import augment, data, splits
from train.crossval import METRICS_MODULE, device_name, fold_scores, plot_confusion, summarize
from train.reports import REPORTS_DIR, RUNS_DIR, command_line, write_report

MODEL_NAME = "whisper-head"
CACHE_DIR = RUNS_DIR / "whisper"
PADDINGS = (0.0, 8.0, 15.0, 30.0)
LATENCY_CLIPS = 20  # clips timed per padding length, spread over the dataset


@dataclass
class HeadTrainConfig:
    """Every knob of the head's training, in one visible place."""

    hidden: int = 0  # 0: linear (multinomial logistic regression)
    l2: float = 1e-2  # weight penalty, chosen on the validation actors (see `padding`)
    max_iterations: int = 200
    seed: int = 42


L2_GRID = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)


@dataclass
class FinetuneConfig:
    """Fine-tuning a transformers Whisper encoder's last layers together with the head."""

    unfreeze_layers: int = 2  # the encoder's last layers (and its final layer norm) train; the rest stay frozen
    epochs: int = 5
    batch_size: int = 8
    encoder_learning_rate: float = 1e-5
    head_learning_rate: float = 1e-3
    seed: int = 42


def speech_of(dataset) -> list[np.ndarray]:
    """The trimmed speech of every clip, as inference trims it."""
    return [features.trim_silence(data.decode(audio)).audio for audio in dataset["audio"]]


def encoder_features(
    dataset,
    encoder: str = BUNDLED_ENCODER,
    pad_seconds: float = 0.0,
    compute_type: str = "float32",
    cache: Path = CACHE_DIR,
    augmentation: str | None = None,
) -> tuple[np.ndarray, float]:
    """Pooled encoder features of every clip (or of one ``augmentation``-ed copy of it, see train/augment.py)
    and the encoder's seconds per clip, cached per dataset and setting."""
    setting = f"{encoder}|{pad_seconds}" + ("" if compute_type == "float32" else f"|{compute_type}")
    setting += f"|{augmentation}" if augmentation else ""
    key = hashlib.sha256(f"{dataset._fingerprint}|{setting}".encode()).hexdigest()[:16]
    name = f"{encoder.replace('/', '--')}-pad{pad_seconds:g}-{compute_type}"
    name += f"-{augmentation}" if augmentation else ""
    path = cache / f"features-{name}-{key}.npz"
    if path.is_file():
        with np.load(path) as stored:
            return stored["features"], float(stored["seconds_per_clip"])
    speech = speech_of(dataset)
    if augmentation:
        speech = augment.augmented_copies(speech, augmentation)
    encode = encoder_for(encoder, pad_seconds, compute_type)
    started = time.perf_counter()
    pooled = np.stack([encode([clip])[0] for clip in tqdm(speech, desc=f"{name}")])
    seconds_per_clip = (time.perf_counter() - started) / len(speech)
    cache.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.npz")
    np.savez(partial, features=pooled, seconds_per_clip=seconds_per_clip)
    partial.rename(path)
    return pooled, seconds_per_clip


def encoder_latency_ms(
    speech: list[np.ndarray], encoder: str, pad_seconds: float, compute_type: str, warmup: int = 3
) -> float:
    """Median milliseconds to encode and pool one clip (run on a quiet machine; extraction times are not)."""
    encode = encoder_for(encoder, pad_seconds, compute_type)
    times = []
    for i, clip in enumerate([*speech[:warmup], *speech]):
        started = time.perf_counter()
        encode([clip])
        if i >= warmup:
            times.append(time.perf_counter() - started)
    return float(np.median(times) * 1000)


def fit_head(
    train: tuple[np.ndarray, np.ndarray], config: HeadTrainConfig, model_config: WhisperHeadConfig
) -> WhisperHead:
    """Cross-entropy plus an L2 penalty on the weights, minimised full-batch with L-BFGS.

    Deterministic and without early stopping (like scikit-learn's LogisticRegression), so the
    validation actors stay free to choose the penalty and the padding.
    """
    torch.manual_seed(config.seed)
    model = WhisperHead(dataclasses.replace(model_config, hidden=config.hidden))
    inputs, targets = torch.from_numpy(train[0]), torch.from_numpy(train[1]).long()
    model.fit_scaler(inputs)
    weights = [p for name, p in model.named_parameters() if name.endswith("weight")]
    optimizer = torch.optim.LBFGS(
        model.parameters(), max_iter=config.max_iterations, history_size=20, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(model(inputs), targets) + config.l2 / 2 * sum(w.pow(2).sum() for w in weights)
        loss.backward()
        return loss

    model.eval()  # no dropout or batch statistics: the objective must be deterministic for L-BFGS
    optimizer.step(closure)
    return model


@torch.no_grad()
def logits_of(model: WhisperHead, pooled: np.ndarray) -> np.ndarray:
    return model.eval()(torch.from_numpy(pooled)).numpy()


def training_set(
    pooled: np.ndarray, labels: np.ndarray, rows: np.ndarray, augmented: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The rows' features and labels, plus their augmented copies where given."""
    if augmented is None:
        return pooled[rows], labels[rows]
    return np.concatenate([pooled[rows], augmented[rows]]), np.concatenate([labels[rows], labels[rows]])


def validation_logits(
    pooled: np.ndarray,
    labels: np.ndarray,
    fold_splits: list[splits.Split],
    config: HeadTrainConfig,
    model_config: WhisperHeadConfig,
    augmented: np.ndarray | None = None,
) -> list[np.ndarray]:
    """Each fold's validation-actor logits from a head fitted on its training actors only."""
    heads = [fit_head(training_set(pooled, labels, s.train, augmented), config, model_config) for s in fold_splits]
    return [logits_of(head, pooled[s.validation]) for head, s in zip(heads, fold_splits, strict=True)]


def select_l2(
    pooled: np.ndarray,
    labels: np.ndarray,
    fold_splits: list[splits.Split],
    config: HeadTrainConfig,
    model_config: WhisperHeadConfig,
    augmented: np.ndarray | None = None,
) -> tuple[float, float]:
    """The L2_GRID penalty with the best accuracy on the validation actors of all folds, and that accuracy."""
    truth = np.concatenate([labels[s.validation] for s in fold_splits])
    scored = []
    for l2 in L2_GRID:
        logits = validation_logits(
            pooled, labels, fold_splits, dataclasses.replace(config, l2=l2), model_config, augmented
        )
        scored.append((float((np.concatenate(logits).argmax(axis=-1) == truth).mean()), l2))
    accuracy, l2 = max(scored)
    return l2, accuracy


def cross_validate(
    pooled: np.ndarray,
    labels: np.ndarray,
    actor_of_row: np.ndarray,
    fold_splits: list[splits.Split],
    config: HeadTrainConfig,
    model_config: WhisperHeadConfig,
    save_to: Path | None = None,
    augmented: np.ndarray | None = None,
) -> dict:
    """Like train.crossval.cross_validate, on cached features. The penalty is chosen on the validation
    actors first; each fold's head is then fitted on its training and validation actors (and, with
    ``augmented``, their augmented copies; validation and test actors are always scored clean)."""
    l2, validation_accuracy = select_l2(pooled, labels, fold_splits, config, model_config, augmented)
    config = dataclasses.replace(config, l2=l2)
    held_out_validation = validation_logits(pooled, labels, fold_splits, config, model_config, augmented)
    metric = evaluate.load(METRICS_MODULE)
    folds, all_true, all_pred = [], [], []
    for k, split in enumerate(fold_splits):
        fit_rows = np.concatenate([split.train, split.validation])
        model = fit_head(training_set(pooled, labels, fit_rows, augmented), config, model_config)
        test_logits = logits_of(model, pooled[split.test])
        predictions = test_logits.argmax(axis=-1)
        if save_to is not None:
            fold_dir = save_to / f"fold{k}"
            model.save_pretrained(fold_dir)
            np.savez(
                fold_dir / "predictions.npz",
                actors=np.unique(actor_of_row),
                train_rows=split.train,
                validation_rows=split.validation,
                test_rows=split.test,
                validation_logits=held_out_validation[k],  # from the head fitted without these actors
                test_logits=test_logits,
            )
        truth = labels[split.test]
        folds.append(
            {
                "fold": k,
                "test_actors": sorted({int(a) for a in actor_of_row[split.test]}),
                "n_train": len(fit_rows),
                "n_test": len(split.test),
                **fold_scores(metric, predictions, truth),
            }
        )
        all_true.append(truth)
        all_pred.append(predictions)
    return {
        "l2": l2,
        "validation_accuracy": validation_accuracy,
        **summarize(folds, all_true, all_pred, metric),
    }


def finetune(
    encoder_name: str,
    speech: list[np.ndarray],
    labels: np.ndarray,
    train_rows: np.ndarray,
    validation_rows: np.ndarray,
    config: FinetuneConfig,
):
    """Train the head and the encoder's last layers end to end; keep the epoch with the best validation accuracy.

    Starts from the frozen-feature head (``fit_head``), so epoch 0 is the frozen model and fine-tuning
    can only be kept where it beats it. Returns the transformers WhisperModel, the head and the history.
    """
    torch.manual_seed(config.seed)
    encoder = TransformersWhisperEncoder(encoder_name)
    trainable = [*encoder.encoder.layers[-config.unfreeze_layers :], encoder.encoder.layer_norm]
    for parameter in encoder.encoder.parameters():
        parameter.requires_grad_(False)
    for module in trainable:
        module.requires_grad_(True)

    def pooled(rows: np.ndarray) -> torch.Tensor:
        return torch.cat([encoder.pooled([speech[i] for i in rows[k : k + 32]]) for k in range(0, len(rows), 32)])

    def validation_accuracy() -> float:
        encoder.encoder.eval()
        with torch.no_grad():
            predicted = head(pooled(validation_rows)).argmax(dim=-1).numpy()
        return float((predicted == labels[validation_rows]).mean())

    with torch.no_grad():
        frozen = pooled(train_rows).numpy()
    model_config = WhisperHeadConfig(encoder="encoder", n_features=frozen.shape[1])
    head = fit_head((frozen, labels[train_rows]), HeadTrainConfig(), model_config)
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for m in trainable for p in m.parameters()], "lr": config.encoder_learning_rate},
            {"params": head.head.parameters(), "lr": config.head_learning_rate},
        ]
    )

    def snapshot() -> tuple[float, dict, dict]:
        state = (copy.deepcopy(encoder.whisper.state_dict()), copy.deepcopy(head.state_dict()))
        return (history[-1]["validation_accuracy"], *state)

    history = [{"epoch": 0, "validation_accuracy": validation_accuracy()}]
    best = snapshot()
    generator = np.random.default_rng(config.seed)
    for epoch in range(1, config.epochs + 1):
        encoder.encoder.train()
        order = generator.permutation(train_rows)
        for start in range(0, len(order), config.batch_size):
            rows = order[start : start + config.batch_size]
            logits = head(encoder.pooled([speech[i] for i in rows]))
            loss = F.cross_entropy(logits, torch.from_numpy(labels[rows]).long())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        history.append({"epoch": epoch, "validation_accuracy": validation_accuracy()})
        if history[-1]["validation_accuracy"] > best[0]:
            best = snapshot()
    encoder.whisper.load_state_dict(best[1])
    head.load_state_dict(best[2])
    return encoder.whisper.eval(), head.eval(), history


def save_finetuned(whisper, head: WhisperHead, output: Path) -> Path:
    """The head with its fine-tuned encoder in ``output/encoder`` (the config names it relatively)."""
    head.save_pretrained(output)
    whisper.save_pretrained(output / "encoder")
    save_onnx(output)
    return output


@dataclass
class Run:
    """What every subcommand starts from: the clips, their labels and actors, the folds and the report header."""

    args: argparse.Namespace
    dataset: object
    labels: np.ndarray
    actor_of_row: np.ndarray
    fold_splits: list[splits.Split]
    config: HeadTrainConfig
    paddings: list[float]
    common: dict

    def model_config(self, pad: float) -> WhisperHeadConfig:
        return WhisperHeadConfig(
            encoder=self.args.encoder, pad_seconds=pad, compute_type=self.args.compute_type, hidden=self.config.hidden
        )

    def features(self, pad: float, augmentation: str | None = None) -> tuple[np.ndarray, float]:
        args = self.args
        return encoder_features(self.dataset, args.encoder, pad, args.compute_type, args.cache, augmentation)


def features_command(run: Run) -> dict:
    for pad in run.paddings:
        _, seconds = run.features(pad)
        print(f"pad {pad:g} s: {seconds * 1000:.0f} ms per clip")
    return {}


def padding_command(run: Run) -> dict:
    """Accuracy (validation and test) and encoder latency for each padding length."""
    args, rows = run.args, []
    timing_clips = speech_of(run.dataset.select(range(0, len(run.dataset), max(1, len(run.dataset) // LATENCY_CLIPS))))
    for pad in run.paddings:
        pooled, _ = run.features(pad)
        latency = encoder_latency_ms(timing_clips, args.encoder, pad, args.compute_type)
        result = cross_validate(
            pooled, run.labels, run.actor_of_row, run.fold_splits, run.config, run.model_config(pad)
        )
        rows.append(
            {
                "pad_seconds": pad,
                "encoder_ms_per_clip": round(latency, 1),
                "validation_accuracy": result["validation_accuracy"],
                **{key: result[key] for key in ("accuracy", "macro_f1", "uar")},
            }
        )
        print(
            f"pad {pad:>4g} s: validation {result['validation_accuracy']:.1%}, "
            f"test {result['accuracy']['mean']:.1%} ± {result['accuracy']['std']:.1%}, "
            f"macro-F1 {result['macro_f1']['mean']:.3f}, encoder {latency:.0f} ms/clip"
        )
    report = {**run.common, "protocol": "speaker-independent", "compute_type": args.compute_type, "paddings": rows}
    name = f"whisper_padding_{args.encoder.replace('/', '--')}_{args.compute_type}.json"
    write_report(report, args.reports / name)
    return report


def finetune_command(run: Run) -> dict:
    args = run.args
    if args.encoder == BUNDLED_ENCODER:
        raise SystemExit("finetune needs a transformers Whisper checkpoint: --encoder openai/whisper-base or a folder")
    actors = sorted({int(a) for a in run.actor_of_row})
    validation_actors = splits.validation_pair(splits.actor_folds(actors)[0])
    is_validation = np.isin(run.actor_of_row, validation_actors)
    whisper, head, history = finetune(
        args.encoder,
        speech_of(run.dataset),
        run.labels,
        np.flatnonzero(~is_validation),
        np.flatnonzero(is_validation),
        FinetuneConfig(),
    )
    save_finetuned(whisper, head, args.output)
    report = {**run.common, "finetune_config": asdict(FinetuneConfig()), "validation_actors": validation_actors}
    report["history"] = history
    write_report(report, args.reports / f"finetune_{MODEL_NAME}.json")
    return report


def augmentation_command(run: Run) -> dict:
    """Each waveform augmentation's effect: one augmented copy of every training clip."""
    args, pad, rows = run.args, run.paddings[0], []
    pooled, _ = run.features(pad)
    for name in [None, *args.augmentations]:
        augmented = run.features(pad, augmentation=name)[0] if name else None
        result = cross_validate(
            pooled, run.labels, run.actor_of_row, run.fold_splits, run.config, run.model_config(pad), None, augmented
        )
        rows.append(
            {
                "augmentation": name or "none",
                "validation_accuracy": result["validation_accuracy"],
                **{key: result[key] for key in ("accuracy", "macro_f1", "uar")},
            }
        )
        print(
            f"{name or 'none':>8}: validation {result['validation_accuracy']:.1%}, "
            f"test {result['accuracy']['mean']:.1%} ± {result['accuracy']['std']:.1%}, "
            f"macro-F1 {result['macro_f1']['mean']:.3f}"
        )
    report = {
        **run.common,
        "protocol": "speaker-independent",
        "pad_seconds": pad,
        "compute_type": args.compute_type,
        "settings": {
            "noise_snr_db": augment.NOISE_SNR_DB,
            "pitch_semitones": augment.PITCH_SEMITONES,
            "stretch_rate": augment.STRETCH_RATE,
            "gain_db": augment.GAIN_DB,
        },
        "augmentations": rows,
    }
    write_report(report, args.reports / "augmentation_whisper-head.json")
    return report


def crossval_command(run: Run) -> dict:
    args, pad = run.args, run.paddings[0]
    pooled, seconds = run.features(pad)
    started = time.perf_counter()
    protocol = "speaker-independent"
    save_to = args.save_models / protocol if args.save_models else None
    result = cross_validate(
        pooled, run.labels, run.actor_of_row, run.fold_splits, run.config, run.model_config(pad), save_to
    )
    plot_confusion(
        result["confusion_matrix"],
        f"{MODEL_NAME} ({args.encoder}, pad {pad:g} s), {protocol}: accuracy {result['accuracy']['mean']:.1%}",
        args.reports / f"confusion_{MODEL_NAME}_{protocol}.png",
    )
    print(
        f"{MODEL_NAME} {protocol}: accuracy {result['accuracy']['mean']:.1%} ± {result['accuracy']['std']:.1%}, "
        f"macro-F1 {result['macro_f1']['mean']:.3f} ± {result['macro_f1']['std']:.3f}"
    )
    report = {
        **run.common,
        "pad_seconds": pad,
        "encoder_ms_per_clip": round(seconds * 1000, 1),
        "protocols": {protocol: result},
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_report(report, args.reports / f"cv_{MODEL_NAME}.json")
    return report


def train_command(run: Run) -> dict:
    """The penalty chosen on the folds' validation actors, then one head on every actor at hand."""
    args, pad = run.args, run.paddings[0]
    pooled, seconds = run.features(pad)
    model_config = run.model_config(pad)
    l2, validation_accuracy = select_l2(pooled, run.labels, run.fold_splits, run.config, model_config)
    model = fit_head((pooled, run.labels), dataclasses.replace(run.config, l2=l2), model_config)
    model.save_pretrained(args.output)
    save_onnx(args.output)
    report = {
        **run.common,
        "pad_seconds": pad,
        "encoder_ms_per_clip": round(seconds * 1000, 1),
        "l2": l2,
        "folds_validation_accuracy": validation_accuracy,
        "train_actors": sorted({int(a) for a in run.actor_of_row}),
    }
    write_report(report, args.reports / f"train_{MODEL_NAME}.json")
    return report


COMMANDS = {
    "features": (features_command, "encoder features of every clip, cached"),
    "padding": (padding_command, "accuracy and encoder latency per padding length"),
    "augmentation": (augmentation_command, "each waveform augmentation's effect"),
    "crossval": (crossval_command, "5-fold speaker-independent CV"),
    "train": (train_command, "the bundled head on every actor"),
    "finetune": (finetune_command, "fine-tune a transformers encoder's last layers with the head"),
}


def main(argv: list[str] | None = None) -> dict:
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("--encoder", default=BUNDLED_ENCODER, help="whisper-base, or a transformers Whisper id")
    options.add_argument("--compute-type", default="float32", choices=["float32", "int8"])
    options.add_argument("--pad", type=float, nargs="*", default=None, help="padding lengths in seconds (0: none)")
    options.add_argument("--hidden", type=int, default=HeadTrainConfig.hidden, help="hidden units (0: linear)")
    options.add_argument(
        "--augmentations", nargs="*", default=list(augment.AUGMENTATIONS), choices=list(augment.AUGMENTATIONS)
    )
    options.add_argument("--data", default=None, help=f"RAVDESS folder or Hub dataset id (default ${data.DATA_ENV})")
    options.add_argument("--actors", type=int, nargs="*", default=None)
    options.add_argument("--cache", type=Path, default=CACHE_DIR)
    options.add_argument("--reports", type=Path, default=REPORTS_DIR)
    options.add_argument("--save-models", type=Path, default=None, help="keep every fold's head and logits under DIR")
    options.add_argument("--output", type=Path, default=CACHE_DIR / "head")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, (_, description) in COMMANDS.items():
        commands.add_parser(name, parents=[options], help=description)
    args = parser.parse_args(argv)

    dataset = data.load_ravdess(args.data, actors=args.actors)
    labels, actor_of_row = np.asarray(dataset["emotion"]), np.asarray(dataset["actor"])
    config = HeadTrainConfig(hidden=args.hidden)
    paddings = args.pad if args.pad else ([float(PADDINGS[-1])] if args.command != "features" else list(PADDINGS))
    common = {
        "model": MODEL_NAME,
        "encoder": args.encoder,
        "command": command_line("train.whisper_head", argv),
        "device": device_name(),
        "actors": sorted({int(a) for a in actor_of_row}),
        "clips": len(labels),
        "head_config": asdict(config),
    }
    run = Run(
        args, dataset, labels, actor_of_row, splits.speaker_independent_splits(actor_of_row), config, paddings, common
    )
    return COMMANDS[args.command][0](run)


if __name__ == "__main__":
    main()
