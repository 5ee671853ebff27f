"""Train one of the bundled models on every actor at hand and save it as safetensors + config.

    python -m train.cnn              # log-mel CNN  -> ser_models/weights/mel-cnn
    python -m train.mlp              # MFCC MLP     -> ser_models/weights/mfcc-mlp

One man and one woman are held out for early stopping; all other actors train the model.

On several GPUs (or CPU processes) the same command runs data-parallel under ``accelerate launch``:

    accelerate launch --multi_gpu --num_processes 8 -m train.cnn --batch-size 256 --num-proc 16

Every process loads the same features (the main process extracts them first, the others read its
cache) and trains its share of each batch; only the main process saves the model and the report.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from ser_models.registry import WEIGHTS_DIR
from train import data, splits
from train.crossval import corrupted_copies, device_name, load_features
from train.reports import REPORTS_DIR, command_line, write_report
from train.trainer import TRAIN_CONFIGS, distributed_state, train_model


def main(model_type: str, argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog=f"python -m train.{'cnn' if model_type == 'mel-cnn' else 'mlp'}")
    parser.add_argument("--data", default=None, help=f"RAVDESS folder or Hub dataset id (default ${data.DATA_ENV})")
    parser.add_argument("--actors", type=int, nargs="*", default=None, help="train on these actors only")
    parser.add_argument("--output", type=Path, default=WEIGHTS_DIR / model_type, help="where to save the model")
    parser.add_argument("--epochs", type=int, default=None, help="override the model's default epoch count")
    parser.add_argument(
        "--batch-size", type=int, default=None, help="clips per optimizer step over all processes (default 32)"
    )
    parser.add_argument("--learning-rate", type=float, default=None, help="peak learning rate (default 1e-3)")
    parser.add_argument("--seed", type=int, default=None, help="override the seed (default 42)")
    parser.add_argument(
        "--num-proc", type=int, default=None, help="processes for the log-mel extraction (datasets.map num_proc)"
    )
    parser.add_argument(
        "--corrupted-copies",
        type=int,
        default=0,
        help="multi-condition training: this many corrupted copies of every training clip (train.robustness's chains)",
    )
    parser.add_argument("--reports", type=Path, default=REPORTS_DIR)
    parser.add_argument(
        "--feedback", type=Path, default=None, help="also train on consented user feedback in this folder"
    )
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    state = distributed_state()  # one process, or one of `accelerate launch --num_processes N`
    config = TRAIN_CONFIGS[model_type]
    overrides = {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "seed": args.seed,
    }
    config = replace(config, **{key: value for key, value in overrides.items() if value is not None})
    log_mel, lengths, labels, actor_of_row = load_features(args.data, args.actors, num_proc=args.num_proc)
    corrupted = corrupted_copies(args.data, args.actors, args.corrupted_copies)
    actors = sorted({int(a) for a in actor_of_row})
    validation_actors = splits.validation_pair(splits.actor_folds(actors)[0])
    is_validation = np.isin(actor_of_row, validation_actors)
    train_rows, validation_rows = np.flatnonzero(~is_validation), np.flatnonzero(is_validation)
    train_set = (log_mel[train_rows], lengths[train_rows], labels[train_rows])
    for copy_log_mel, copy_lengths in corrupted:  # multi-condition: the same clips, corrupted
        copy = (copy_log_mel[train_rows], copy_lengths[train_rows], labels[train_rows])
        train_set = tuple(torch.cat(parts) for parts in zip(train_set, copy, strict=True))
    feedback_rows = 0
    if args.feedback:
        # Feedback only ever adds training rows: its speakers are unknown, so it cannot validate.
        with state.main_process_first():  # one process extracts, the others read the cache
            extra = data.tensors(data.with_log_mel(data.load_feedback(args.feedback), num_proc=args.num_proc))
        train_set = tuple(torch.cat([ours, theirs]) for ours, theirs in zip(train_set, extra, strict=True))
        feedback_rows = len(extra[2])
    result = train_model(
        model_type,
        train_set,
        (log_mel[validation_rows], lengths[validation_rows], labels[validation_rows]),
        config,
        progress=not args.no_progress,
    )
    report = {
        "model": model_type,
        "command": command_line(f"train.{parser.prog.rsplit('.', 1)[-1]}", argv),
        "device": device_name(),
        "processes": state.num_processes,
        "train_actors": sorted(set(actors) - set(validation_actors)),
        "validation_actors": validation_actors,
        "feedback_clips": feedback_rows,
        "corrupted_copies": args.corrupted_copies,
        "best_epoch": result.best_epoch,
        "validation_macro_f1": result.best_validation_f1,
        "train_seconds": round(result.seconds, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
        "train_config": asdict(config),
        "history": result.history,
    }
    if state.is_main_process:  # every process holds the same model; one writes it
        result.model.save_pretrained(args.output)
        args.reports.mkdir(parents=True, exist_ok=True)
        write_report(report, args.reports / f"train_{model_type}.json")
        processes = f" x {state.num_processes} processes" if state.num_processes > 1 else ""
        print(
            f"saved {model_type} to {args.output}: best validation macro-F1 {result.best_validation_f1:.3f} "
            f"at epoch {result.best_epoch}, {report['total_seconds']:.0f} s on {report['device']}{processes}"
        )
    state.wait_for_everyone()  # no process exits before the model is on disk
    return report
