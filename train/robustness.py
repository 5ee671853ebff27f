"""Real voices: multi-condition training and the robustness benchmark, on held-out actors and other corpora.

    python -m train.robustness head --copies 2                 # Whisper-layers head: CV on the grid, LOCO, corruptions
    python -m train.robustness head --copies 2 --train-output ser_models/weights/whisper-layers   # ... and ship it
    python -m train.robustness folds --folds runs/cv_saved/models/speaker-independent --name mel-cnn
    python -m train.robustness corpora                         # leave-one-corpus-out again, for head's report
    python -m train.robustness unseen                          # the unseen conditions again, for head's report

Every model is scored on each fold's test actors (actors 01–20, speaker-independent folds of
``train.splits``) under ``train.corrupt.EVALUATION_GRID``: clean; white noise and babble at 20, 10
and 5 dB; a μ-law telephone line; a reverberant room (RT60 0.6 s); MP3 at 32 kbit/s; 30 dB quieter;
and, reported apart (not in the grid mean), ``corrupt.UNSEEN_GRID``: conditions outside the grid, most of
them outside the training chains too.
Each degraded clip is seeded by (condition, clip), and babble is made from the fold's *training*
actors, so no test voice is in the noise. Clips go through the serving path (``inference.find_speech``:
the speech check, then trimming; 4 s windows, their probabilities averaged): a clip the path
refuses counts as wrong. Out-of-corpus (``../shared/data/extra``, $SER_EXTRA_DIR): TESS, TurEV-DB
and URDU, scored over the emotions each shares with RAVDESS (argmax among those; chance 1/shared).

``head`` trains the Whisper-layers head (ser_models/whisper.py ``OnnxWhisperEncoder``) with
``--copies`` corrupted copies of every training clip (``corrupt.random_corruption``), picking the
layers and whether each layer is normalised per utterance on the validation actors (the mean over the
grid), then the L2 penalty on the robust criterion (validation actors clean and degraded, and
leave-one-corpus-out; a corpus is scored with the penalty chosen without it), and writes
reports/robustness_<name>.json. Encoder features are cached under runs/robustness/.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import evaluate
import numpy as np
import torch
from tqdm.auto import tqdm

from ser_models import features, speech
from ser_models.audio import AudioError
from ser_models.export import save_onnx
from ser_models.inference import EmotionRecognizer, find_speech
from ser_models.labels import EMOTIONS
from ser_models.models import WhisperHead, WhisperHeadConfig
from ser_models.whisper import LAYERS_ENCODER, encoder_for, head_features
from train import calibration, corrupt, data, session, splits
from train.crossval import METRICS_MODULE, device_name, fold_scores, plot_confusion, summarize
from train.reports import REPORTS_DIR, RUNS_DIR, command_line, write_report
from train.whisper_head import HeadTrainConfig, fit_head, logits_of

CACHE_DIR = RUNS_DIR / "robustness"
SEED = 42
UNSEEN_SEED = 43  # corrupt.UNSEEN_GRID's own random stream
TRAIN_SEED = 7
BABBLE_POOL = 40  # trimmed training clips per fold that babble is drawn from
N_LAYERS = 7
LAYER_SETS = {"last": [6], "middle": [3, 4], "upper": [3, 4, 5, 6], "all": list(range(N_LAYERS))}
L2_GRID = (0.1, 1.0)  # layer sets are compared at these; a 7-layer head takes ~20 s a fit here
PENALTY_GRID = (0.1, 1.0, 3.0, 10.0, 30.0)  # the chosen layers' penalty, on the robust criterion
ECE_BINS = 10  # equal-width confidence bins of the expected calibration error
SESSION_TAKES = 10  # out of corpus, adapted: a speaker's first takes the session has heard (and then all)
CONFIDENCE_GRID = tuple(np.round(np.arange(0.20, 0.71, 0.05), 2))


@dataclass
class Clips:
    """Decoded 16 kHz clips with their emotion index and speaker (an actor number or a corpus code)."""

    audio: list[np.ndarray]
    labels: np.ndarray
    speakers: np.ndarray


def ravdess(source: str | None = None) -> Clips:
    dataset = data.load_ravdess(source)
    return Clips(
        [data.decode(a) for a in dataset["audio"]], np.asarray(dataset["emotion"]), np.asarray(dataset["actor"])
    )


def babble_pool(clips: Clips, speakers: list, rng: np.random.Generator) -> list[np.ndarray]:
    """Trimmed clips of these speakers to make babble from."""
    rows = np.flatnonzero(np.isin(clips.speakers, speakers))
    return [
        find_speech(clips.audio[i])[0].audio for i in rng.choice(rows, size=min(BABBLE_POOL, rows.size), replace=False)
    ]


def degraded(
    clips: Clips, condition: int, talkers_of_row: list[list[np.ndarray]], unseen: bool = False
) -> list[np.ndarray]:
    """Every clip under one condition of the grid (or of ``corrupt.UNSEEN_GRID``), seeded by (condition, clip)."""
    grid, seed = (corrupt.UNSEEN_GRID, UNSEEN_SEED) if unseen else (corrupt.EVALUATION_GRID, SEED)
    apply = grid[condition].apply
    return [
        apply(clip, np.random.default_rng([seed, condition, i]), talkers_of_row[i])
        for i, clip in enumerate(clips.audio)
    ]


def training_copies(clips: Clips, copy: int, talkers_of_row: list[list[np.ndarray]], kinds=()) -> list[np.ndarray]:
    """One random corruption chain per clip (copy ``copy``), seeded by (copy, clip)."""
    return [
        corrupt.random_corruption(clip, np.random.default_rng([TRAIN_SEED, copy, i]), talkers_of_row[i], kinds)
        for i, clip in enumerate(clips.audio)
    ]


def corrupted_log_mels(source: str | None, copies: int, cache: Path = CACHE_DIR) -> list[tuple[torch.Tensor, ...]]:
    """``head``'s training copies (the same seeded chains, babble from each clip's fold-mates) as the CNN's and
    MLP's inputs: (log-mel, speech length) per copy, row for row with ``data.load_ravdess(source)``, cached."""
    clips = ravdess(source)
    store = FeatureStore(clips, splits.speaker_independent_splits(clips.speakers), cache)
    out = []
    for copy in range(copies):
        path = cache / f"logmel-{store.key}-train{copy}.npz"
        if not path.is_file():
            speech = [features.trim_silence(a).audio for a in training_copies(clips, copy, store.training_talkers)]
            log_mels, lengths = [], []
            for start in range(0, len(speech), 64):
                audio, length = features.batch_inputs(speech[start : start + 64])
                log_mels.append(features.log_mel_spectrogram(audio))
                lengths.append(length)
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(path.with_suffix(".partial.npz"), log_mel=np.concatenate(log_mels), length=np.concatenate(lengths))
            path.with_suffix(".partial.npz").rename(path)
        with np.load(path) as stored:
            out.append((torch.from_numpy(stored["log_mel"]), torch.from_numpy(stored["length"]).long()))
    return out


@dataclass
class WindowFeatures:
    """Encoder features of every served 4 s window, which clip each belongs to, and the refused clips."""

    features: np.ndarray  # (n_windows, n_layers, 1024)
    owner: np.ndarray  # (n_windows,)
    refused: np.ndarray  # (n_clips,) bool
    snr_db: np.ndarray  # (n_clips,) the speech check's estimate (nan where refused)


def window_features(make_audio: Callable[[], list[np.ndarray]], cache: Path, description: str) -> WindowFeatures:
    """The serving path's windows of every clip through the Whisper-layers encoder, cached at ``cache``.

    ``make_audio`` is called only when something must be computed: the whole set, or just the SNR
    estimates when ``speech.SNR_ESTIMATOR`` changed since the cache was written.
    """
    if cache.is_file():
        with np.load(cache) as stored:
            cached = {key: stored[key] for key in stored.files}
        estimator = str(cached.pop("snr_estimator", ""))
        result = WindowFeatures(**cached)
        if estimator != speech.SNR_ESTIMATOR:
            audio = make_audio()
            for i in np.flatnonzero(~result.refused):
                result.snr_db[i] = speech.check(audio[i]).snr_db
            _save(result, cache)
        return result
    audio = make_audio()
    encoder = encoder_for(LAYERS_ENCODER)
    rows, owner, refused, snr = [], [], np.zeros(len(audio), bool), np.full(len(audio), np.nan)
    for i, clip in enumerate(tqdm(audio, desc=description, mininterval=10)):
        try:
            trimmed, check = find_speech(clip)
        except AudioError:
            refused[i] = True
            continue
        snr[i] = check.snr_db
        for window in features.chunk(trimmed.audio):
            rows.append(encoder([window])[0])
            owner.append(i)
    result = WindowFeatures(np.stack(rows), np.asarray(owner), refused, snr)
    _save(result, cache)
    return result


def _save(result: WindowFeatures, cache: Path) -> None:
    cache.parent.mkdir(parents=True, exist_ok=True)
    partial = cache.with_suffix(".partial.npz")
    np.savez(partial, **dataclasses.asdict(result), snr_estimator=speech.SNR_ESTIMATOR)
    partial.rename(cache)


@dataclass(frozen=True)
class Inputs:
    """What a head reads of each window's pooled layers: which layers, and whether each is normalised per
    utterance first (``whisper.normalise_layers``)."""

    layers: tuple[int, ...]
    normalise: bool = False

    def of(self, pooled: np.ndarray) -> np.ndarray:
        return head_features(pooled, self.layers, self.normalise)


def clip_probabilities(model: WhisperHead, windows: WindowFeatures, n_clips: int, temperature: float = 1.0):
    """(n_clips, 8) probabilities as served: each window's softmax, averaged per clip; refused clips are NaN."""
    inputs = Inputs(tuple(model.config.layers), model.config.normalise_layers)
    logits = logits_of(model, inputs.of(windows.features))
    probabilities = torch.softmax(torch.from_numpy(logits).double() / temperature, dim=-1).numpy()
    return clip_mean(probabilities, windows.owner, n_clips)


def clip_mean(window_probabilities: np.ndarray, owner: np.ndarray, n_clips: int) -> np.ndarray:
    """(n_clips, 8): each clip's windows' probabilities averaged, as served; clips without a window are NaN."""
    out = np.full((n_clips, len(EMOTIONS)), np.nan)
    for i in np.unique(owner):
        out[i] = window_probabilities[owner == i].mean(axis=0)
    return out


def accuracy(probabilities: np.ndarray, labels: np.ndarray, classes: list[int] | None = None) -> float:
    """Share right; a refused clip (NaN row) is wrong. ``classes`` restricts the argmax to those emotions."""
    if classes is not None:
        restricted = np.full_like(probabilities, -np.inf)
        restricted[:, classes] = probabilities[:, classes]
        probabilities = restricted
    answered = ~np.isnan(probabilities).any(axis=1)
    predicted = np.where(answered, np.nan_to_num(probabilities, nan=-1).argmax(axis=1), -1)
    return float(np.mean(predicted == labels))


class FeatureStore:
    """Cached window features of RAVDESS under every condition, of training copies and of the extra corpora."""

    def __init__(self, clips: Clips, folds: list[splits.Split], cache: Path):
        self.clips, self.folds, self.cache = clips, folds, cache
        self.key = hashlib.sha256(
            (str(len(clips.audio)) + str(clips.labels.tolist()) + str(clips.speakers.tolist())).encode()
        ).hexdigest()[:10]
        rng = np.random.default_rng(SEED)
        self.evaluation_talkers: list[list[np.ndarray]] = [[] for _ in clips.audio]
        for split in folds:
            pool = babble_pool(clips, sorted(set(clips.speakers[split.train].tolist())), rng)
            for i in split.test:
                self.evaluation_talkers[i] = pool
        # Training babble: other actors of the clip's own fold, never a voice of a fold it is trained for.
        self.training_talkers: list[list[np.ndarray]] = [[] for _ in clips.audio]
        for split in folds:
            fold_actors = sorted(set(clips.speakers[split.test].tolist()))
            for actor in fold_actors:
                pool = babble_pool(clips, [a for a in fold_actors if a != actor], rng)
                for i in np.flatnonzero(clips.speakers == actor):
                    self.training_talkers[i] = pool

    def condition(self, index: int, unseen: bool = False) -> WindowFeatures:
        """The test windows under grid condition ``index`` (of ``corrupt.UNSEEN_GRID`` where ``unseen``)."""
        name = (corrupt.UNSEEN_GRID if unseen else corrupt.EVALUATION_GRID)[index].name
        name = name.replace(" ", "_").replace("/", "").replace("%", "pct").replace("+", "plus")
        path = self.cache / f"ravdess-{self.key}-{'unseen-' if unseen else ''}{name}.npz"
        return window_features(lambda: degraded(self.clips, index, self.evaluation_talkers, unseen), path, name)

    def copy(self, copy: int, kinds: tuple[str, ...] = ()) -> WindowFeatures:
        tag = "-".join(kinds) or "chain"
        path = self.cache / f"ravdess-{self.key}-train{copy}-{tag}.npz"
        return window_features(
            lambda: training_copies(self.clips, copy, self.training_talkers, kinds), path, f"copy {copy}"
        )


def rows_of(windows: WindowFeatures, clip_rows: np.ndarray, labels: np.ndarray, inputs: Inputs):
    """The windows of these clips as a training set (what the head reads of each, labels)."""
    keep = np.isin(windows.owner, clip_rows)
    return inputs.of(windows.features[keep]), labels[windows.owner[keep]]


def fit(training: list[tuple[np.ndarray, np.ndarray]], inputs: Inputs, l2: float) -> WhisperHead:
    rows = np.concatenate([x for x, _ in training])
    targets = np.concatenate([y for _, y in training])
    config = WhisperHeadConfig(
        encoder=LAYERS_ENCODER,
        pad_seconds=4.0,
        n_features=rows.shape[1],
        layers=list(inputs.layers),
        normalise_layers=inputs.normalise,
    )
    return fit_head((rows, targets), HeadTrainConfig(l2=l2), config)


def training_actors(split: splits.Split) -> np.ndarray:
    return split.train


def train_and_validation(split: splits.Split) -> np.ndarray:
    return np.concatenate([split.train, split.validation])


def fold_heads(
    store: FeatureStore,
    inputs: Inputs,
    l2: float,
    actors_of: Callable[[splits.Split], np.ndarray],
    train_sets: list[WindowFeatures],
    extra_sets: Sequence[tuple[np.ndarray, np.ndarray]] = (),
) -> list[WhisperHead]:
    """One head per fold on its ``actors_of`` clips' windows in ``train_sets``, plus ``extra_sets``."""
    labels = store.clips.labels
    return [
        fit([*(rows_of(w, actors_of(s), labels, inputs) for w in train_sets), *extra_sets], inputs, l2)
        for s in store.folds
    ]


def fit_temperature(logits: list[np.ndarray], labels: np.ndarray) -> float:
    """The softmax temperature that minimises the cross-entropy of these (validation) logits."""
    stacked = torch.from_numpy(np.concatenate(logits)).double()
    targets = torch.from_numpy(labels).long()
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], max_iter=100, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(stacked / log_t.exp(), targets)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().exp())


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """``train.calibration``'s ECE over the clips the served path answered (a refused clip has no confidence)."""
    answered = ~np.isnan(probabilities).any(axis=1)
    return calibration.expected_calibration_error(probabilities[answered], labels[answered], bins=ECE_BINS)


def head_study(args: argparse.Namespace, argv: list[str] | None) -> dict:
    """The Whisper-layers head, trained multi-condition: selection, LOCO, CV on the grid, each corruption's effect."""
    started = time.perf_counter()
    clips = ravdess(args.data)
    folds = splits.speaker_independent_splits(clips.speakers)
    store = FeatureStore(clips, folds, args.cache)
    grid = [store.condition(c) for c in range(len(corrupt.EVALUATION_GRID))]
    copies = [store.copy(c) for c in range(args.copies)]
    n, labels = len(clips.audio), clips.labels
    names = [c.name for c in corrupt.EVALUATION_GRID]
    report = {
        "model": args.name,
        "command": command_line("train.robustness", argv),
        "device": device_name(),
        "protocol": "speaker-independent",
        "encoder": LAYERS_ENCODER,
        "copies": args.copies,
    }

    def grid_scores(heads, rows_of_fold, temperature=1.0) -> np.ndarray:
        """(conditions, folds) accuracy on each fold's ``rows_of_fold`` clips."""
        table = np.zeros((len(grid), len(folds)))
        for c, windows in enumerate(grid):
            for k, (head, split) in enumerate(zip(heads, folds, strict=True)):
                rows = rows_of_fold(split)
                table[c, k] = accuracy(clip_probabilities(head, windows, n, temperature)[rows], labels[rows])
        return table

    validation: dict[tuple[Inputs, float], np.ndarray] = {}

    def validation_scores(inputs: Inputs, l2: float) -> np.ndarray:
        """(conditions, folds) accuracy on the validation actors of heads fitted on the training actors."""
        if (inputs, l2) not in validation:
            heads = fold_heads(store, inputs, l2, training_actors, [grid[0], *copies])
            validation[inputs, l2] = grid_scores(heads, lambda s: s.validation)
        return validation[inputs, l2]

    # 1. Layers and per-utterance normalisation, chosen on the validation actors by the mean over the grid.
    candidates = [(name, Inputs(tuple(LAYER_SETS[name]))) for name in args.layer_sets] + [
        (f"{name}, normalised", Inputs(tuple(LAYER_SETS[name]), normalise=True)) for name in args.normalised_layer_sets
    ]
    selection, chosen = [], {}
    for name, candidate in candidates:
        for l2 in L2_GRID:
            scores = validation_scores(candidate, l2)
            selection.append({"layers": name, "l2": l2, "clean": scores[0].mean(), "grid": scores.mean()})
            chosen[name] = candidate
            print(f"validation {name:>16} l2 {l2:g}: clean {scores[0].mean():.1%}, grid {scores.mean():.1%}")
    inputs = chosen[max(selection, key=lambda row: row["grid"])["layers"]]

    # 2. Their penalty, on the robust criterion: the validation actors, clean and degraded, and each extra corpus
    #    scored by a head trained on all of RAVDESS (which never heard it; also with --train-extra, whose heads
    #    would cost a fit per corpus and penalty).
    corpora = extra_corpora(store, args.copies) if not args.no_extra and data.extra_dir().is_dir() else {}
    penalties, ravdess_sets = [], ravdess_training(store, copies, grid[0], inputs) if corpora else []
    for l2 in PENALTY_GRID:
        scores = validation_scores(inputs, l2)
        row = {"l2": l2, "clean": float(scores[0].mean()), "degraded": float(scores[1:].mean())}
        if corpora:
            head = fit(ravdess_sets, inputs, l2)
            row["out_of_corpus"] = {
                corpus: accuracy(clip_probabilities(head, windows, len(c.labels)), c.labels, shared_classes(c))
                for corpus, (c, windows, _) in corpora.items()
            }
        row["criterion"] = penalty_criterion(row)
        penalties.append(row)
        print(f"penalty {l2:g}: {row}")
    l2 = choose_penalty(penalties)
    report.update(
        selection=selection,
        layers=list(inputs.layers),
        normalise_layers=inputs.normalise,
        penalty_selection=penalties,
        l2=l2,
    )

    # 3. Out of corpus: each extra corpus scored by heads that never heard it, trained on all of RAVDESS
    #    with and without the other corpora, at the penalty chosen without that corpus's own score.
    #    With --train-extra the corpora then join every head's training.
    extra_sets: list[tuple[np.ndarray, np.ndarray]] = []
    if corpora:
        l2_of = {corpus: choose_penalty(penalties, leave_out=corpus) for corpus in corpora}
        report["out_of_corpus"] = out_of_corpus(store, copies, grid[0], inputs, l2_of, corpora)
        for corpus, row in report["out_of_corpus"].items():
            print(f"{corpus}: {row}")
    if args.train_extra and corpora:
        extra_sets = extra_training(corpora, inputs)
    report["trained_on"] = ["RAVDESS actors 01-20", *(data.EXTRA_CORPORA if extra_sets else ())]

    # 4. Temperature and the confidence threshold, on validation actors (heads without them), clean + grid.
    val_heads = fold_heads(store, inputs, l2, training_actors, [grid[0], *copies], extra_sets)
    val_logits, val_labels, val_probabilities = [], [], []
    for windows in grid:
        for head, split in zip(val_heads, folds, strict=True):
            keep = np.isin(windows.owner, split.validation)
            val_logits.append(logits_of(head, inputs.of(windows.features[keep])))
            val_labels.append(labels[windows.owner[keep]])
    temperature = fit_temperature(val_logits, np.concatenate(val_labels))
    for windows in grid:
        for head, split in zip(val_heads, folds, strict=True):
            val_probabilities.append(clip_probabilities(head, windows, n, temperature)[split.validation])
    val_truth = np.concatenate([labels[s.validation] for _ in grid for s in folds])
    threshold = choose_threshold(np.concatenate(val_probabilities), val_truth, args.min_answered_accuracy)
    report.update(temperature=temperature, confidence_threshold=threshold)

    # 5. Test: heads fitted on training + validation actors (and the extra corpora, as shipped), on the test actors.
    heads = fold_heads(store, inputs, l2, train_and_validation, [grid[0], *copies], extra_sets)
    table = grid_scores(heads, lambda s: s.test, temperature)
    test_probabilities = {
        name: np.concatenate(
            [clip_probabilities(h, grid[c], n, temperature)[s.test] for h, s in zip(heads, folds, strict=True)]
        )
        for c, name in enumerate(names)
    }
    test_truth = np.concatenate([labels[s.test] for s in folds])
    report["grid"] = {name: grid_row(table[c], int(grid[c].refused.sum())) for c, name in enumerate(names)}
    report["grid_mean"] = float(table.mean())
    report["ece"] = {name: expected_calibration_error(p, test_truth) for name, p in test_probabilities.items()}
    everything = np.concatenate(list(test_probabilities.values()))
    report["coverage"] = coverage_table(everything, np.tile(test_truth, len(names)))
    test_snr = np.concatenate([grid[c].snr_db[s.test] for c in range(len(names)) for s in folds])
    report["snr_bins"] = snr_table(everything, test_snr, np.tile(test_truth, len(names)))
    report["robust_score"] = robust_score(report)
    clean_probabilities = np.split(test_probabilities["clean"], np.cumsum([len(s.test) for s in folds])[:-1])
    report["clean"] = clean_scores(clean_probabilities, [labels[s.test] for s in folds], folds, clips.speakers)
    report["session"] = session_scores(
        clean_probabilities, [labels[s.test] for s in folds], [clips.speakers[s.test] for s in folds]
    )
    plot_confusion(
        report["clean"]["confusion_matrix"],
        f"{args.name}, speaker-independent: accuracy {report['grid']['clean']['mean']:.1%}",
        args.reports / f"confusion_{args.name}_speaker-independent.png",
    )
    for name, row in report["grid"].items():
        print(f"{name:>16}: {row['mean']:.1%} ± {row['std']:.1%} (refused {row['refused']})")
    report["unseen"] = unseen_scores(store, heads, temperature)

    # 6. Each corruption's effect: one copy of a single stage, against one copy of the whole chain and none.
    if args.ablation:
        report["ablation"] = {}
        for kinds in (None, ("noise",), ("reverb",), ("channel",), ("gain",), ("colour",), ()):
            train_sets = [grid[0]] if kinds is None else [grid[0], store.copy(0, kinds)]
            scores = grid_scores(fold_heads(store, inputs, l2, train_and_validation, train_sets), lambda s: s.test)
            tag = "none (clean only)" if kinds is None else "+".join(kinds) or "chain"
            report["ablation"][tag] = {name: float(scores[c].mean()) for c, name in enumerate(names)}
            print(f"ablation {tag}: clean {scores[0].mean():.1%}, grid {scores.mean():.1%}")

    if args.train_output:
        report["shipped"] = ship(store, copies, grid[0], extra_sets, report, args)
    report["seconds"] = round(time.perf_counter() - started, 1)
    write_report(report, args.reports / f"robustness_{args.name}.json")
    return report


def unseen_scores(store: FeatureStore, heads: list[WhisperHead], temperature: float) -> dict:
    """Each fold's test actors under ``corrupt.UNSEEN_GRID`` (conditions outside the grid), by its head."""
    n, labels = len(store.clips.audio), store.clips.labels
    result = {}
    for c, condition in enumerate(corrupt.UNSEEN_GRID):
        windows = store.condition(c, unseen=True)
        scores = [
            accuracy(clip_probabilities(head, windows, n, temperature)[split.test], labels[split.test])
            for head, split in zip(heads, store.folds, strict=True)
        ]
        result[condition.name] = row = grid_row(scores, int(windows.refused.sum()))
        print(f"{condition.name:>22}: {row['mean']:.1%} ± {row['std']:.1%} (refused {row['refused']})")
    return result


def grid_row(fold_scores: list[float] | np.ndarray, refused: int | None = None) -> dict:
    """One condition's row of a report: mean ± std over the folds, each fold, and the clips refused."""
    row = {"mean": float(np.mean(fold_scores)), "std": float(np.std(fold_scores))}
    row["folds"] = [float(score) for score in fold_scores]
    if refused is not None:
        row["refused"] = refused
    return row


def clean_scores(probabilities: list[np.ndarray], truths: list[np.ndarray], folds, speakers) -> dict:
    """Macro-F1 and UAR per fold (mean ± std), per-emotion recall and the confusion matrix pooled (as crossval)."""
    metric = evaluate.load(METRICS_MODULE)
    predictions = [np.nan_to_num(p, nan=-1).argmax(axis=1) for p in probabilities]
    per_fold = [
        {"fold": k, "test_actors": sorted({int(a) for a in speakers[split.test]}), **fold_scores(metric, pred, truth)}
        for k, (split, pred, truth) in enumerate(zip(folds, predictions, truths, strict=True))
    ]
    return summarize(per_fold, truths, predictions, metric)


def session_scores(probabilities: list[np.ndarray], truths: list[np.ndarray], speakers: list[np.ndarray]) -> dict:
    """Session adaptation (``ser_models.session``), each held-out actor one session of unlabelled takes,
    exactly as ``train.session`` measures it on saved fold models."""
    rng = np.random.default_rng(SEED)
    per_fold = []
    for p, truth, actors in zip(probabilities, truths, speakers, strict=True):
        answered = ~np.isnan(p).any(axis=1)  # a refused take cannot join a session
        per_fold.append(session.evaluate_fold(p[answered], truth[answered], actors[answered], rng))
    return {
        "prior_weight": session.PRIOR_WEIGHT,
        "orders": session.ORDERS,
        "accuracy": {
            key: {"mean": float(np.mean([f[key] for f in per_fold])), "std": float(np.std([f[key] for f in per_fold]))}
            for key in per_fold[0]
        },
    }


def choose_threshold(probabilities: np.ndarray, truth: np.ndarray, min_accuracy: float) -> float:
    """The lowest confidence above which validation answers are right at least ``min_accuracy`` of the time."""
    answered = ~np.isnan(probabilities).any(axis=1)
    confidence = np.where(answered, np.nan_to_num(probabilities, nan=0).max(axis=1), 0)
    correct = np.nan_to_num(probabilities, nan=-1).argmax(axis=1) == truth
    for threshold in CONFIDENCE_GRID:
        kept = confidence >= threshold
        if kept.any() and correct[kept].mean() >= min_accuracy:
            return float(threshold)
    return float(CONFIDENCE_GRID[-1])


def coverage_table(probabilities: np.ndarray, truth: np.ndarray) -> list[dict]:
    """For each confidence threshold: the share of clips answered and the accuracy on those."""
    answered = ~np.isnan(probabilities).any(axis=1)
    confidence = np.where(answered, np.nan_to_num(probabilities, nan=0).max(axis=1), 0)
    correct = np.nan_to_num(probabilities, nan=-1).argmax(axis=1) == truth
    rows = []
    for threshold in (0.0, *CONFIDENCE_GRID):
        kept = confidence >= threshold if threshold else answered
        rows.append(
            {
                "threshold": float(threshold),
                "answered": float(kept.mean()),
                "accuracy": float(correct[kept].mean()) if kept.any() else None,
            }
        )
    return rows


def snr_table(probabilities: np.ndarray, snr: np.ndarray, truth: np.ndarray) -> list[dict]:
    """Accuracy against the speech check's estimated SNR (refused clips have no estimate and no answer)."""
    correct = np.nan_to_num(probabilities, nan=-1).argmax(axis=1) == truth
    rows = []
    for low, high in ((-np.inf, 0), (0, 3), (3, 6), (6, 10), (10, 20), (20, np.inf)):
        inside = (snr >= low) & (snr < high)
        rows.append(
            {
                "snr_db": [float(low), float(high)],
                "clips": int(inside.sum()),
                "accuracy": float(correct[inside].mean()) if inside.any() else None,
            }
        )
    return rows


def robust_score(report: dict) -> float:
    """The criterion the default is chosen by: the mean of clean CV, the degraded grid and leave-one-corpus-out."""
    parts = [report["grid"]["clean"]["mean"], np.mean([r["mean"] for k, r in report["grid"].items() if k != "clean"])]
    if "out_of_corpus" in report:
        # The heads as trained here: on RAVDESS alone, or (--train-extra) on the other corpora too.
        key = "accuracy" if len(report.get("trained_on", [])) > 1 else "accuracy_ravdess_only"
        parts.append(np.mean([r[key] for r in report["out_of_corpus"].values()]))
    return float(np.mean(parts))


def corpus_features(
    corpus: str, store: FeatureStore, copies: int
) -> tuple[Clips, WindowFeatures, list[WindowFeatures]]:
    """An extra corpus's clean windows and ``copies`` corrupted copies (babble from RAVDESS voices, never
    the corpus's own). Its audio is decoded only when a cache must be written. Returns clips without audio."""
    dataset = data.load_extra(corpus)
    clips = Clips([], np.asarray(dataset["emotion"]), np.asarray(dataset["speaker"]))

    @cache
    def audio() -> list[np.ndarray]:
        return [data.decode(a) for a in dataset["audio"]]

    def corrupted(copy: int) -> list[np.ndarray]:
        talkers = babble_pool(store.clips, sorted(set(store.clips.speakers.tolist())), np.random.default_rng(SEED))
        decoded = Clips(audio(), clips.labels, clips.speakers)
        return training_copies(decoded, copy, [talkers] * len(clips.labels))

    clean = window_features(audio, store.cache / f"{corpus}-clean.npz", f"{corpus} clean")
    copied = [
        window_features(lambda c=c: corrupted(c), store.cache / f"{corpus}-train{c}.npz", f"{corpus} copy {c}")
        for c in range(copies)
    ]
    return clips, clean, copied


def speaker_adapted(probabilities: np.ndarray, speakers: np.ndarray, takes: int | None, rng) -> np.ndarray:
    """Each take adapted to its speaker (``ser_models.session``, unlabelled) with the first ``takes`` of that
    speaker's takes in a random order (None: all of them, as the timeline's "one speaker" does); refused
    takes stay NaN."""
    adapted = probabilities.copy()
    answered = ~np.isnan(probabilities).any(axis=1)
    for speaker in np.unique(speakers):
        rows = np.flatnonzero((speakers == speaker) & answered)
        if rows.size:
            order = rng.permutation(rows.size)
            adapted[rows] = session.adapted_with_first(probabilities[rows], order, takes or rows.size)
    return adapted


def adapted_accuracy(probabilities: np.ndarray, clips: Clips, classes: list[int]) -> dict[str, float]:
    """Accuracy after speaker adaptation with SESSION_TAKES takes (mean over session.ORDERS orders) and with all."""
    rng = np.random.default_rng(SEED)
    first = [
        accuracy(speaker_adapted(probabilities, clips.speakers, SESSION_TAKES, rng), clips.labels, classes)
        for _ in range(session.ORDERS)
    ]
    every = accuracy(speaker_adapted(probabilities, clips.speakers, None, rng), clips.labels, classes)
    return {f"{SESSION_TAKES} takes": float(np.mean(first)), "all takes": every}


def penalty_criterion(row: dict, leave_out: str | None = None) -> float:
    """``robust_score``'s criterion for one penalty, before any test actor is scored: the validation actors'
    clean accuracy, their degraded-grid mean, and the leave-one-corpus-out mean without ``leave_out``."""
    parts = [row["clean"], row["degraded"]]
    scored = [value for corpus, value in row.get("out_of_corpus", {}).items() if corpus != leave_out]
    if scored:
        parts.append(np.mean(scored))
    return float(np.mean(parts))


def choose_penalty(rows: list[dict], leave_out: str | None = None) -> float:
    """The penalty with the best criterion; a corpus's own score is left out of the penalty it is scored with,
    so that no figure of a corpus chose the head that scores it (the smaller penalty wins a tie)."""
    return max(rows, key=lambda row: penalty_criterion(row, leave_out))["l2"]


def shared_classes(clips: Clips) -> list[int]:
    """The RAVDESS emotions a corpus has: the argmax is restricted to them."""
    return sorted(set(clips.labels.tolist()))


def extra_corpora(store: FeatureStore, copies: int) -> dict[str, tuple[Clips, WindowFeatures, list[WindowFeatures]]]:
    """Every extra corpus's clean windows and (at most one) corrupted copy, for LOCO and --train-extra."""
    return {corpus: corpus_features(corpus, store, min(copies, 1)) for corpus in data.EXTRA_CORPORA}


def ravdess_training(store: FeatureStore, copies, clean, inputs: Inputs) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every RAVDESS actor's windows, clean and corrupted: the training set of the heads scored out of corpus."""
    everyone = np.arange(len(store.clips.audio))
    return [rows_of(w, everyone, store.clips.labels, inputs) for w in [clean, *copies]]


def extra_training(corpora: dict, inputs: Inputs) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every clip of these extra corpora, clean and corrupted, as training sets."""
    return [
        rows_of(w, np.arange(len(clips.labels)), clips.labels, inputs)
        for clips, windows, corrupted in corpora.values()
        for w in [windows, *corrupted]
    ]


def out_of_corpus(store, copies, clean, inputs: Inputs, l2_of: dict[str, float], corpora: dict) -> dict:
    """Leave-one-corpus-out: each extra corpus scored by heads that never heard it (argmax over the emotions
    it shares with RAVDESS), at the penalty ``l2_of`` gives it: one trained on RAVDESS alone, one also on the
    other extra corpora; each take alone, and adapted to its speaker from that speaker's unlabelled takes."""
    ravdess_sets = ravdess_training(store, copies, clean, inputs)
    ravdess_only = {l2: fit(ravdess_sets, inputs, l2) for l2 in sorted(set(l2_of.values()))}
    result = {}
    for corpus, (clips, windows, _) in corpora.items():
        shared, l2 = shared_classes(clips), l2_of[corpus]
        n = len(clips.labels)
        others = extra_training({name: v for name, v in corpora.items() if name != corpus}, inputs)
        with_others = fit(ravdess_sets + others, inputs, l2)
        alone = clip_probabilities(ravdess_only[l2], windows, n)
        together = clip_probabilities(with_others, windows, n)
        result[corpus] = {
            "classes": [EMOTIONS[i] for i in shared],
            "chance": 1 / len(shared),
            "clips": n,
            "speakers": len(set(clips.speakers.tolist())),
            "refused": int(windows.refused.sum()),
            "l2": l2,
            "accuracy_ravdess_only": accuracy(alone, clips.labels, shared),
            "accuracy": accuracy(together, clips.labels, shared),
            "speaker_adapted_ravdess_only": adapted_accuracy(alone, clips, shared),
            "speaker_adapted": adapted_accuracy(together, clips, shared),
        }
    return result


def ship(store, copies, clean, extra_sets, report: dict, args) -> dict:
    """The bundled head: every RAVDESS actor (clean + copies), plus the extra corpora where they helped."""
    inputs = Inputs(tuple(report["layers"]), report["normalise_layers"])
    everyone = np.arange(len(store.clips.audio))
    training = [*(rows_of(w, everyone, store.clips.labels, inputs) for w in [clean, *copies]), *extra_sets]
    model = fit(training, inputs, report["l2"])
    model.config = dataclasses.replace(
        model.config, temperature=report["temperature"], confidence_threshold=report["confidence_threshold"]
    )
    model.save_pretrained(args.train_output)
    save_onnx(args.train_output)
    print(f"wrote {args.train_output}")
    return {
        "output": str(args.train_output),
        "trained_on": report["trained_on"],
        "windows": sum(len(y) for _, y in training),
    }


def corpora_study(args: argparse.Namespace, argv: list[str] | None) -> dict:
    """Leave-one-corpus-out again for the inputs and penalty a ``head`` study chose, read from its report, which
    is updated: the part of ``head`` that reads the extra corpora, without refitting the fold heads."""
    path, report = head_report(args)
    if not data.extra_dir().is_dir():
        raise SystemExit(f"the extra corpora are not at {data.extra_dir()}: set ${data.EXTRA_ENV}")
    clips = ravdess(args.data)
    store = FeatureStore(clips, splits.speaker_independent_splits(clips.speakers), args.cache)
    args.copies = report["copies"]
    copies = [store.copy(c) for c in range(args.copies)]
    inputs = Inputs(tuple(report["layers"]), report.get("normalise_layers", False))
    corpora = extra_corpora(store, args.copies)
    penalties = report.get("penalty_selection")
    l2_of = {c: choose_penalty(penalties, leave_out=c) if penalties else report["l2"] for c in corpora}
    report["out_of_corpus"] = out_of_corpus(store, copies, store.condition(0), inputs, l2_of, corpora)
    report["out_of_corpus_command"] = command_line("train.robustness", argv)
    report["robust_score"] = robust_score(report)
    for corpus, row in report["out_of_corpus"].items():
        print(f"{corpus}: {row}")
    write_report(report, path)
    return report


def folds_study(args: argparse.Namespace, argv: list[str] | None) -> dict:
    """Saved fold models of any type (``train.crossval --save-models``) scored on the grid through the served path.

    Scores the folds that were saved (``fold0`` ... ``fold4``); the report lists them, so a run with fewer
    than all folds says so.
    """
    clips = ravdess(args.data)
    folds = splits.speaker_independent_splits(clips.speakers)
    store = FeatureStore(clips, folds, args.cache)
    scored = [k for k in range(len(folds)) if (args.folds / f"fold{k}").is_dir()]
    if not scored:
        raise SystemExit(f"no saved fold models (fold0 ... fold{len(folds) - 1}) in {args.folds}")
    recognizers = {k: EmotionRecognizer.from_pretrained(args.folds / f"fold{k}") for k in scored}

    def score(unseen: bool) -> dict:
        rows = {}
        for c, condition in enumerate(corrupt.UNSEEN_GRID if unseen else corrupt.EVALUATION_GRID):
            audio = degraded(clips, c, store.evaluation_talkers, unseen)
            scores = []
            for k, recognizer in recognizers.items():
                split = folds[k]
                probabilities = np.full((len(split.test), len(EMOTIONS)), np.nan)
                for j, i in enumerate(split.test):
                    try:
                        probabilities[j] = list(recognizer.predict_speech([recognizer.trim(audio[i])])[0].values())
                    except AudioError:
                        pass
                scores.append(accuracy(probabilities, clips.labels[split.test]))
            rows[condition.name] = row = grid_row(scores)
            print(f"{condition.name:>22}: {row['mean']:.1%} ± {row['std']:.1%}")
        return rows

    report = {
        "model": args.name,
        "command": command_line("train.robustness", argv),
        "device": device_name(),
        "protocol": "speaker-independent",
        "folds_scored": scored,
        "folds_total": len(folds),
        "grid": score(unseen=False),
    }
    report["grid_mean"] = float(np.mean([row["folds"] for row in report["grid"].values()]))
    report["unseen"] = score(unseen=True)
    write_report(report, args.reports / f"robustness_{args.name}.json")
    return report


def unseen_study(args: argparse.Namespace, argv: list[str] | None) -> dict:
    """``corrupt.UNSEEN_GRID`` for the head a ``head`` study chose, read from its report, which is updated: the
    study's test heads fitted again (the same deterministic fits), without the rest of the study."""
    path, report = head_report(args)
    clips = ravdess(args.data)
    folds = splits.speaker_independent_splits(clips.speakers)
    store = FeatureStore(clips, folds, args.cache)
    inputs = Inputs(tuple(report["layers"]), report.get("normalise_layers", False))
    training = [store.condition(0), *(store.copy(c) for c in range(report["copies"]))]
    trained_on_extra = len(report.get("trained_on", [])) > 1
    extra_sets = extra_training(extra_corpora(store, report["copies"]), inputs) if trained_on_extra else []
    heads = fold_heads(store, inputs, report["l2"], train_and_validation, training, extra_sets)  # as ``head`` step 5
    report["unseen"] = unseen_scores(store, heads, report["temperature"])
    report["unseen_command"] = command_line("train.robustness", argv)
    write_report(report, path)
    return report


def head_report(args: argparse.Namespace) -> tuple[Path, dict]:
    """The report a ``head`` study wrote (``--name``), for the studies that add to it."""
    path = args.reports / f"robustness_{args.name}.json"
    if not path.is_file():
        raise SystemExit(f"{path} not found: run `python -m train.robustness head` first")
    return path, json.loads(path.read_text())


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    head = commands.add_parser("head", help="train and score the multi-condition Whisper-layers head")
    head.add_argument("--name", default="whisper-layers")
    head.add_argument("--copies", type=int, default=2, help="corrupted copies of every training clip")
    head.add_argument("--layer-sets", nargs="*", default=list(LAYER_SETS), choices=list(LAYER_SETS))
    head.add_argument(
        "--normalised-layer-sets",
        nargs="*",
        default=["all"],
        choices=list(LAYER_SETS),
        help="layer sets also tried with each layer normalised per utterance (train/pooling.py measured it)",
    )
    head.add_argument("--min-answered-accuracy", type=float, default=0.8)
    head.add_argument("--no-extra", action="store_true", help="skip the out-of-corpus sets")
    head.add_argument("--ablation", action="store_true", help="measure each corruption stage alone")
    head.add_argument("--train-output", type=Path, default=None, help="also train the bundled head into DIR")
    head.add_argument(
        "--train-extra",
        action="store_true",
        help="train on the extra corpora too (every fold's head and the bundled one); compared in model_card.md",
    )
    folds = commands.add_parser("folds", help="score saved fold models on the grid")
    folds.add_argument("--folds", type=Path, required=True)
    folds.add_argument("--name", required=True)
    corpora = commands.add_parser("corpora", help="leave-one-corpus-out again for a head study's report")
    corpora.add_argument("--name", default="whisper-layers")
    unseen = commands.add_parser("unseen", help="the conditions outside the grid, for a head study's report")
    unseen.add_argument("--name", default="whisper-layers")
    for sub in (head, folds, corpora, unseen):
        sub.add_argument("--data", default=None, help=f"RAVDESS folder or Hub id (default ${data.DATA_ENV})")
        sub.add_argument("--cache", type=Path, default=CACHE_DIR)
        sub.add_argument("--reports", type=Path, default=REPORTS_DIR)
    args = parser.parse_args(argv)
    studies = {"head": head_study, "folds": folds_study, "corpora": corpora_study, "unseen": unseen_study}
    return studies[args.command](args, argv)


if __name__ == "__main__":
    main()
