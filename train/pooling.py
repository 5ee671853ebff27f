"""How to pool Whisper-base's layers: mean and std (shipped) against attentive statistics pooling and
per-utterance normalisation, on the same windows, folds and conditions.

    python -m train.pooling                 # writes reports/pooling_whisper-layers.json

Every RAVDESS clip (actors 01–20) goes through the served path (the speech check, trimming, 4 s
windows, ``OnnxWhisperEncoder``), and the states of every layer are kept frame by frame (averaged over
pairs of frames, 40 ms, to fit in memory), for the clean clips, ``robustness``'s two training copies
(the same seeded corruption chains) and the conditions the Real-voices bar names (white noise and
babble at 10 dB, the telephone line, the reverberant room). Heads compared, each trained on the
clean clips and the two copies of its fold's actors:

- ``mean+std``: the shipped head, a logistic regression on every layer's mean and std over the speech;
- ``mean+std, utterance-normalised``: the same, each layer's mean and std vectors standardised over their
  own 512 dimensions first (a per-utterance normalisation that needs no statistics of other clips);
- ``layer-weighted mean+std``: a learnt softmax weighting of the layers (Pepino et al., 2021), then the
  mean and std over the speech and a linear layer;
- ``attentive statistics``: the same layer weighting, then attentive statistics pooling (Okabe et al.,
  2018: a small network scores each frame, and the mean and std are weighted by those scores).

Validation actors choose nothing here; the test actors of each fold score every head (heads fitted on
training + validation actors), mean over the 5 speaker-independent folds.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ser_models import features
from ser_models.audio import AudioError
from ser_models.inference import find_speech
from ser_models.labels import EMOTIONS
from ser_models.models import WhisperHeadConfig
from ser_models.whisper import (
    ENCODER_INPUT_FRAMES,
    MEL_HOP,
    OnnxWhisperEncoder,
    log_mel_spectrogram,
    normalise_layers,
    speech_states,
)
from train import corrupt, splits
from train.reports import REPORTS_DIR, command_line, write_report
from train.robustness import (
    CACHE_DIR,
    SEED,
    FeatureStore,
    accuracy,
    clip_mean,
    degraded,
    ravdess,
    training_copies,
)
from train.whisper_head import HeadTrainConfig, fit_head

CONDITIONS = ("clean", "white 10 dB", "babble 10 dB", "telephone", "reverb")
COPIES = 2
FRAME_POOL = 2  # frames averaged together before storing: 40 ms steps
N_STATES = ENCODER_INPUT_FRAMES // 2 // FRAME_POOL
EPOCHS = 20
BATCH = 64
LEARNING_RATE = 2e-3
WEIGHT_DECAY = 1e-2
ATTENTION_HIDDEN = 128


class Frames:
    """Frame-level states of every window: (n_windows, n_layers, N_STATES, 512) float16, which clip each
    window belongs to, and how many of its states are speech."""

    def __init__(self, states: np.ndarray, owner: np.ndarray, n_valid: np.ndarray):
        self.states, self.owner, self.n_valid = states, owner, n_valid


def frames_of(make_audio: Callable[[], list[np.ndarray]], encoder: OnnxWhisperEncoder, cache: Path) -> Frames:
    """The frame states of every window of the clips ``make_audio`` gives (called only when not cached)."""
    if cache.is_file():
        with np.load(cache) as stored:
            return Frames(stored["states"], stored["owner"], stored["n_valid"])
    audio = make_audio()
    states, owner, n_valid = [], [], []
    window = ENCODER_INPUT_FRAMES * MEL_HOP
    for i, clip in enumerate(tqdm(audio, desc=cache.stem, mininterval=10)):
        try:
            trimmed, _ = find_speech(clip)
        except AudioError:
            continue  # refused: scored as wrong, like the benchmark
        for piece in features.chunk(trimmed.audio):
            piece = encoder.level(piece[:window])
            mel = log_mel_spectrogram(np.pad(piece, (0, window - piece.size)))
            layers = encoder.session.run(None, {"mel": mel[None]})[0][0]  # (n_layers, 200, 512)
            pooled = layers.reshape(layers.shape[0], N_STATES, FRAME_POOL, -1).mean(axis=2)
            states.append(pooled.astype(np.float16))
            owner.append(i)
            n_valid.append(-(-speech_states(piece.size) // FRAME_POOL))
    result = Frames(np.stack(states), np.asarray(owner), np.asarray(n_valid))
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache.with_suffix(".partial.npz"), states=result.states, owner=result.owner, n_valid=result.n_valid)
    cache.with_suffix(".partial.npz").rename(cache)
    return result


def mean_std(frames: Frames, rows: np.ndarray, normalise: bool = False) -> np.ndarray:
    """(len(rows), n_layers * 1024): each layer's mean and std over the speech states."""
    out = []
    for r in rows:
        speech = frames.states[r, :, : frames.n_valid[r]].astype(np.float64)
        stats = np.concatenate([speech.mean(axis=1), speech.std(axis=1)], axis=1)  # (n_layers, 1024)
        out.append((normalise_layers(stats) if normalise else stats).reshape(-1))
    return np.asarray(out, dtype=np.float32)


class PoolingHead(nn.Module):
    """Learnt layer weights, then mean+std pooling (optionally attentive), then a linear classifier."""

    def __init__(self, n_layers: int, dim: int, attentive: bool, n_labels: int = len(EMOTIONS)):
        super().__init__()
        self.layer_logits = nn.Parameter(torch.zeros(n_layers))
        self.norm = nn.LayerNorm(dim)
        self.attention = (
            nn.Sequential(nn.Linear(dim, ATTENTION_HIDDEN), nn.Tanh(), nn.Linear(ATTENTION_HIDDEN, 1))
            if attentive
            else None
        )
        if self.attention is not None:
            # Scores start at zero: training starts from plain mean+std pooling and moves off it only where
            # that helps (random scores overfitted 3,000 windows: 53% on clean speech in fold 0).
            nn.init.zeros_(self.attention[-1].weight)
            nn.init.zeros_(self.attention[-1].bias)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(2 * dim, n_labels))

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # states (batch, layers, time, dim), mask (batch, time) True on speech
        mixed = self.norm(torch.einsum("l,bltd->btd", self.layer_logits.softmax(0), states))
        if self.attention is None:
            scores = torch.zeros(mask.shape, dtype=mixed.dtype)
        else:
            scores = self.attention(mixed).squeeze(-1)
        weights = scores.masked_fill(~mask, float("-inf")).softmax(dim=1).unsqueeze(-1)
        mean = (weights * mixed).sum(dim=1)
        std = ((weights * (mixed - mean.unsqueeze(1)).square()).sum(dim=1) + 1e-6).sqrt()
        return self.classifier(torch.cat([mean, std], dim=1))


def tensors(states: np.ndarray, n_valid: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of windows' states as float32, and the mask of their speech states."""
    mask = torch.arange(N_STATES)[None, :] < torch.from_numpy(np.asarray(n_valid))[:, None]
    return torch.from_numpy(np.asarray(states, dtype=np.float32)), mask


def fit_pooling(training: list[tuple[Frames, np.ndarray]], labels: np.ndarray, attentive: bool) -> PoolingHead:
    torch.manual_seed(SEED)
    index = [(frames, r) for frames, rows in training for r in rows]
    n_layers, dim = training[0][0].states.shape[1], training[0][0].states.shape[3]
    model = PoolingHead(n_layers, dim, attentive)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, LEARNING_RATE, total_steps=EPOCHS * -(-len(index) // BATCH)
    )
    rng = np.random.default_rng(SEED)
    for _ in range(EPOCHS):
        model.train()
        order = rng.permutation(len(index))
        for start in range(0, len(order), BATCH):
            chosen = [index[i] for i in order[start : start + BATCH]]
            states, mask = tensors(np.stack([f.states[r] for f, r in chosen]), [f.n_valid[r] for f, r in chosen])
            targets = torch.from_numpy(labels[[f.owner[r] for f, r in chosen]]).long()
            loss = nn.functional.cross_entropy(model(states, mask), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    return model.eval()


@torch.no_grad()
def pooling_probabilities(model: PoolingHead, frames: Frames, n_clips: int) -> np.ndarray:
    probabilities = []
    for start in range(0, len(frames.owner), 256):
        rows = np.arange(start, min(start + 256, len(frames.owner)))
        probabilities.append(model(*tensors(frames.states[rows], frames.n_valid[rows])).softmax(-1).numpy())
    return clip_mean(np.concatenate(probabilities), frames.owner, n_clips)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="RAVDESS folder or Hub dataset id (default: $SER_DATA_DIR)")
    parser.add_argument("--cache", type=Path, default=CACHE_DIR)
    parser.add_argument("--reports", type=Path, default=REPORTS_DIR)
    args = parser.parse_args(argv)
    started = time.perf_counter()

    clips = ravdess(args.data)
    folds = splits.speaker_independent_splits(clips.speakers)
    store = FeatureStore(clips, folds, args.cache)
    encoder = OnnxWhisperEncoder()
    n, labels = len(clips.audio), clips.labels
    names = [c.name for c in corrupt.EVALUATION_GRID]
    conditions = {
        name: frames_of(
            lambda name=name: degraded(clips, names.index(name), store.evaluation_talkers),
            encoder,
            args.cache / f"frames-{store.key}-{name.replace(' ', '_')}.npz",
        )
        for name in CONDITIONS
    }
    copies = [
        frames_of(
            lambda c=c: training_copies(clips, c, store.training_talkers),
            encoder,
            args.cache / f"frames-{store.key}-train{c}.npz",
        )
        for c in range(COPIES)
    ]
    training_sets = [conditions["clean"], *copies]

    def fit_rows(frames: Frames, split: splits.Split) -> np.ndarray:
        return np.flatnonzero(np.isin(frames.owner, np.concatenate([split.train, split.validation])))

    heads = {
        "mean+std": ("linear", False),
        "mean+std, utterance-normalised": ("linear", True),
        "layer-weighted mean+std": ("pooling", False),
        "attentive statistics": ("pooling", True),
    }
    results: dict[str, dict[str, list[float]]] = {name: {c: [] for c in CONDITIONS} for name in heads}
    for k, split in enumerate(folds):
        for name, (kind, option) in heads.items():
            t = time.perf_counter()
            if kind == "linear":
                x = np.concatenate([mean_std(f, fit_rows(f, split), option) for f in training_sets])
                y = np.concatenate([labels[f.owner[fit_rows(f, split)]] for f in training_sets])
                config = WhisperHeadConfig(pad_seconds=4.0, n_features=x.shape[1])
                head = fit_head((x, y), HeadTrainConfig(l2=1.0), config)

                def probabilities(frames: Frames, head=head, option=option) -> np.ndarray:
                    with torch.no_grad():
                        logits = head(torch.from_numpy(mean_std(frames, np.arange(len(frames.owner)), option)))
                    return clip_mean(logits.softmax(-1).numpy(), frames.owner, n)
            else:
                model = fit_pooling([(f, fit_rows(f, split)) for f in training_sets], labels, option)

                def probabilities(frames: Frames, model=model) -> np.ndarray:
                    return pooling_probabilities(model, frames, n)

            for condition, frames in conditions.items():
                results[name][condition].append(accuracy(probabilities(frames)[split.test], labels[split.test]))
            scores = ", ".join(f"{c} {results[name][c][-1]:.1%}" for c in CONDITIONS)
            print(f"fold {k} {name}: {scores} ({time.perf_counter() - t:.0f} s)", flush=True)

    report = {
        "command": command_line("train.pooling", argv),
        "protocol": "speaker-independent, test actors of each fold",
        "conditions": list(CONDITIONS),
        "training": f"clean + {COPIES} corrupted copies, robustness's seeded chains",
        "heads": {
            name: {
                condition: {"mean": float(np.mean(v)), "std": float(np.std(v)), "folds": v}
                for condition, v in by_condition.items()
            }
            | {"mean_over_conditions": float(np.mean([np.mean(v) for v in by_condition.values()]))}
            for name, by_condition in results.items()
        },
        "seconds": round(time.perf_counter() - started, 1),
    }
    for name, row in report["heads"].items():
        print(f"{name:>32}: clean {row['clean']['mean']:.1%}, mean over conditions {row['mean_over_conditions']:.1%}")
    write_report(report, args.reports / "pooling_whisper-layers.json")
    return report


if __name__ == "__main__":
    main()
