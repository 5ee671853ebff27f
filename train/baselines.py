"""The seed study's classical baselines, measured here under both protocols, plus an eGeMAPS SVM.

    python -m train.baselines                                   # every baseline, both protocols
    python -m train.baselines --protocol speaker-independent --only random-forest egemaps-svm

The seed notebook fitted Random Forest, Gradient Boosting, PCA, LDA and PCA+LDA to raw trimmed samples
and scored them on one random split. Each is a scikit-learn pipeline here (random_state 42), fitted on a
split's train+validation rows and scored on its test rows, over the folds ``train/crossval.py`` uses:
actor-grouped (speaker-independent, the headline) and the seed's random 70/15/15 (speaker-dependent).
The eGeMAPS SVM picks its C on the split's validation rows first, then refits on train+validation.

Features, cached under runs/baselines/ (keyed by clip count, clip names and settings):

- raw: the trimmed 16 kHz clip (``trim_silence``, top_db 25) padded or cropped to 4 s, then resampled to
  2 kHz with soxr: 8,000 samples. 64,000 dims at 16 kHz make gradient boosting far too slow on a couple of
  cores; 2 kHz still holds the voice's F0 and most of its first formant (below 1 kHz), and soxr low-passes
  before decimating, where keeping every 8th sample would alias everything above 1 kHz into what is kept.
- egemaps: openSMILE eGeMAPSv02 functionals (88) of the trimmed 16 kHz clip.

The raw samples are standardised for the linear models: "PCA" keeps 100 components and feeds a logistic
regression, "LDA" is sklearn's default (SVD solver, no shrinkage), "PCA+LDA" is LDA on the 100 components.
Gradient boosting is sklearn's GradientBoostingClassifier (100 stages), but each split considers
sqrt(8,000) ≈ 89 random features: about 8 s a fold on one core, where searching all 8,000 would be ~90
times the work (HistGradientBoostingClassifier took 72 s a fold for only 20 iterations). Every fit runs on
one thread so the recorded seconds compare.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

import numpy as np
import opensmile
import sklearn
import soxr
from datasets import Dataset
from sklearn.decomposition import PCA
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, recall_score
from sklearn.model_selection import ParameterGrid
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from threadpoolctl import threadpool_limits

from ser_models import features
from ser_models.audio import SAMPLE_RATE
from ser_models.labels import EMOTIONS
from train import data
from train.crossval import PROTOCOLS, chance_levels, protocol_splits
from train.reports import REPORTS_DIR, ROOT, RUNS_DIR, command_line, write_report
from train.splits import N_FOLDS, Split

CACHE_DIR = RUNS_DIR / "baselines"
SEED = 42
THREADS = 1  # BLAS/OpenMP threads and n_jobs for every fit
RAW_RATE = 2_000  # Hz the padded 4 s clip is resampled to: 8,000 dims
PCA_COMPONENTS = 100
GB_ESTIMATORS = 100
SVM_C_GRID = [0.1, 1.0, 10.0, 100.0]
METRICS = ("accuracy", "macro_f1", "uar")
LABELS = list(range(len(EMOTIONS)))


@dataclass(frozen=True)
class FeatureSet:
    description: str
    settings: dict
    extract: Callable[[np.ndarray], np.ndarray]  # trimmed 16 kHz clip -> feature vector


@cache
def _smile() -> opensmile.Smile:
    return opensmile.Smile(
        feature_set=opensmile.FeatureSet.eGeMAPSv02, feature_level=opensmile.FeatureLevel.Functionals
    )


def raw_samples(clip: np.ndarray) -> np.ndarray:
    return soxr.resample(features.pad_or_trim(clip, features.N_SAMPLES), SAMPLE_RATE, RAW_RATE)


def egemaps(clip: np.ndarray) -> np.ndarray:
    return _smile().process_signal(clip, SAMPLE_RATE).to_numpy()[0]


FEATURE_SETS = {
    "raw": FeatureSet(
        description=(
            f"trimmed clip (top_db {features.TOP_DB:g}) padded/cropped to {features.CHUNK_SECONDS:g} s at "
            f"{SAMPLE_RATE} Hz, resampled to {RAW_RATE} Hz with soxr: "
            f"{int(features.CHUNK_SECONDS * RAW_RATE)} samples. Why {RAW_RATE} Hz: the 64,000 dims at "
            f"{SAMPLE_RATE} Hz are too slow for gradient boosting; {RAW_RATE} Hz keeps F0 and most of the first "
            "formant, and soxr low-passes before decimating, so nothing above 1 kHz aliases in"
        ),
        settings={
            "top_db": features.TOP_DB,
            "seconds": features.CHUNK_SECONDS,
            "rate": RAW_RATE,
            "resampler": f"soxr {soxr.__version__}",
        },
        extract=raw_samples,
    ),
    "egemaps": FeatureSet(
        description=f"openSMILE eGeMAPSv02 functionals (88) of the trimmed {SAMPLE_RATE} Hz clip",
        settings={"top_db": features.TOP_DB, "feature_set": "eGeMAPSv02", "opensmile": opensmile.__version__},
        extract=egemaps,
    ),
}


@dataclass(frozen=True)
class Baseline:
    label: str  # as the model card names it
    features: str  # key of FEATURE_SETS
    make: Callable[[], Pipeline]
    grid: dict[str, list] = field(default_factory=dict)  # chosen on the split's validation rows
    note: str = ""  # where it departs from the seed study


BASELINES = {
    "random-forest": Baseline(
        "Random forest, raw samples",
        "raw",
        lambda: make_pipeline(RandomForestClassifier(random_state=SEED, n_jobs=THREADS)),
    ),
    "gradient-boosting": Baseline(
        "Gradient boosting, raw samples",
        "raw",
        lambda: make_pipeline(
            GradientBoostingClassifier(n_estimators=GB_ESTIMATORS, max_features="sqrt", random_state=SEED)
        ),
        note="max_features='sqrt' (89 of the 8,000 features searched per split, about 8 s a fold on one core): "
        "searching all of them is ~90 times the work, an estimated 10+ minutes a fold (not run)",
    ),
    "pca": Baseline(
        "PCA + logistic regression, raw samples",
        "raw",
        lambda: make_pipeline(
            StandardScaler(), PCA(PCA_COMPONENTS, random_state=SEED), LogisticRegression(max_iter=2000)
        ),
    ),
    "lda": Baseline("LDA, raw samples", "raw", lambda: make_pipeline(StandardScaler(), LinearDiscriminantAnalysis())),
    "pca-lda": Baseline(
        "PCA + LDA, raw samples",
        "raw",
        lambda: make_pipeline(StandardScaler(), PCA(PCA_COMPONENTS, random_state=SEED), LinearDiscriminantAnalysis()),
    ),
    "egemaps-svm": Baseline(
        "eGeMAPS + SVM (RBF)",
        "egemaps",
        lambda: make_pipeline(StandardScaler(), SVC(kernel="rbf", random_state=SEED)),
        grid={"svc__C": SVM_C_GRID},
        note="C chosen per split by validation macro-F1 (fitted on train), then refitted on train+validation",
    ),
}


def trimmed_clips(dataset: Dataset) -> Iterator[np.ndarray]:
    """Every clip decoded to 16 kHz mono and trimmed as the models' input pipeline trims it."""
    for audio in dataset["audio"]:
        yield features.trim_silence(data.decode(audio)).audio


def cache_path(name: str, dataset: Dataset, cache_dir: Path) -> Path:
    clips = [Path(audio["path"] or "").name for audio in dataset["audio"]]
    key = json.dumps({"settings": FEATURE_SETS[name].settings, "clips": clips}, sort_keys=True)
    return cache_dir / f"{name}-{len(clips)}clips-{hashlib.sha256(key.encode()).hexdigest()[:12]}.npy"


def feature_matrices(dataset: Dataset, names: list[str], cache_dir: Path = CACHE_DIR) -> dict[str, dict]:
    """Each feature set's matrix (one row per clip) and cache file; the missing ones are extracted in one pass,
    whose seconds each of them reports (None: read from the cache)."""
    paths = {name: cache_path(name, dataset, cache_dir) for name in names}
    missing = [name for name in names if not paths[name].exists()]
    seconds = 0.0
    if missing:
        started = time.perf_counter()
        rows: dict[str, list[np.ndarray]] = {name: [] for name in missing}
        for clip in trimmed_clips(dataset):
            for name in missing:
                rows[name].append(FEATURE_SETS[name].extract(clip))
        seconds = time.perf_counter() - started
        cache_dir.mkdir(parents=True, exist_ok=True)
        for name in missing:
            partial = paths[name].with_suffix(".partial.npy")  # a stopped run leaves no truncated cache
            np.save(partial, np.stack(rows[name]).astype(np.float32))
            partial.replace(paths[name])
    return {
        name: {
            "matrix": np.load(paths[name]),
            "cache": str(paths[name].relative_to(ROOT) if paths[name].is_relative_to(ROOT) else paths[name]),
            "extract_seconds": round(seconds, 1) if name in missing else None,
        }
        for name in names
    }


def scores(truth: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    return {
        "accuracy": float(accuracy_score(truth, predictions)),
        "macro_f1": float(f1_score(truth, predictions, labels=LABELS, average="macro", zero_division=0)),
        "uar": float(recall_score(truth, predictions, labels=LABELS, average="macro", zero_division=0)),
    }


def select_params(baseline: Baseline, x: np.ndarray, y: np.ndarray, split: Split) -> dict:
    """The grid point with the best validation macro-F1 when fitted on the split's train rows alone."""
    if not baseline.grid:
        return {}

    def validation_f1(params: dict) -> float:
        model = baseline.make().set_params(**params).fit(x[split.train], y[split.train])
        return scores(y[split.validation], model.predict(x[split.validation]))["macro_f1"]

    return max(ParameterGrid(baseline.grid), key=validation_f1)  # ties go to the first, smallest value


def evaluate_baseline(
    baseline: Baseline, x: np.ndarray, y: np.ndarray, fold_splits: list[Split], actor_of_row: np.ndarray
) -> dict:
    """Fit on train+validation and score the test rows of every split; mean and population std over splits."""
    folds, all_true, all_pred = [], [], []
    for k, split in enumerate(fold_splits):
        fit_rows = np.concatenate([split.train, split.validation])
        with threadpool_limits(THREADS):
            started = time.perf_counter()
            params = select_params(baseline, x, y, split)
            model = baseline.make().set_params(**params).fit(x[fit_rows], y[fit_rows])
            fitted = time.perf_counter()
            predictions = model.predict(x[split.test])
            predicted = time.perf_counter()
        folds.append(
            {
                "fold": k,
                "test_actors": sorted({int(a) for a in actor_of_row[split.test]}),
                "n_fit": len(fit_rows),
                "n_test": len(split.test),
                "params": params,
                "fit_seconds": round(fitted - started, 2),
                "predict_seconds": round(predicted - fitted, 3),
                **scores(y[split.test], predictions),
            }
        )
        all_true.append(y[split.test])
        all_pred.append(predictions)
    truth, predicted = np.concatenate(all_true), np.concatenate(all_pred)
    summary = {
        key: {"mean": float(np.mean([f[key] for f in folds])), "std": float(np.std([f[key] for f in folds]))}
        for key in METRICS
    }
    return {
        **summary,
        "seconds": round(sum(f["fit_seconds"] + f["predict_seconds"] for f in folds), 1),
        "chance": chance_levels(truth),
        "confusion_matrix": confusion_matrix(truth, predicted, labels=LABELS).tolist(),  # pooled, rows = truth
        "folds": folds,
    }


def run_baselines(
    dataset: Dataset,
    protocols: tuple[str, ...] = PROTOCOLS,
    names: list[str] | None = None,
    n_folds: int = N_FOLDS,
    cache_dir: Path = CACHE_DIR,
) -> dict:
    """Every requested baseline under every requested protocol, as the report's ``baselines`` and ``features``."""
    names = names or list(BASELINES)
    labels = np.asarray(dataset["emotion"])
    actor_of_row = np.asarray(dataset["actor"])
    matrices = feature_matrices(dataset, sorted({BASELINES[name].features for name in names}), cache_dir)
    report = {
        "actors": sorted({int(a) for a in actor_of_row}),
        "clips": len(labels),
        "features": {
            key: {
                "description": FEATURE_SETS[key].description,
                "dims": int(found["matrix"].shape[1]),
                "settings": FEATURE_SETS[key].settings,
                "cache": found["cache"],
                "extract_seconds": found["extract_seconds"],
            }
            for key, found in matrices.items()
        },
        "baselines": {},
    }
    for name in names:
        baseline = BASELINES[name]
        x = matrices[baseline.features]["matrix"]
        entry = {
            "label": baseline.label,
            "features": baseline.features,
            "feature_description": FEATURE_SETS[baseline.features].description,
            "model": repr(baseline.make()),
            "grid": baseline.grid,
            "note": baseline.note,
            "protocols": {},
        }
        for protocol in protocols:
            fold_splits = protocol_splits(protocol, actor_of_row, labels, n_folds)
            result = evaluate_baseline(baseline, x, labels, fold_splits, actor_of_row)
            entry["protocols"][protocol] = result
            print(
                f"{name:18s} {protocol:20s} accuracy {result['accuracy']['mean']:.1%} ± {result['accuracy']['std']:.1%}"
                f"  macro-F1 {result['macro_f1']['mean']:.3f}  ({result['seconds']:.0f} s)",
                file=sys.stderr,
            )
        report["baselines"][name] = entry
    return report


def _cell(entry: dict, protocol: str, metric: str) -> str:
    result = entry["protocols"].get(protocol)
    if result is None:
        return "—"
    mean, std = result[metric]["mean"], result[metric]["std"]
    return f"{mean:.1%} ± {std:.1%}" if metric == "accuracy" else f"{mean:.3f} ± {std:.3f}"


def markdown_table(report: dict) -> str:
    """The baselines as a Markdown table for the model card: mean ± std over the folds, — where not run."""
    lines = [
        "| baseline | speaker-independent accuracy | macro-F1 | speaker-dependent accuracy | macro-F1 |",
        "|---|---|---|---|---|",
    ]
    for entry in report["baselines"].values():
        cells = [_cell(entry, protocol, metric) for protocol in PROTOCOLS for metric in ("accuracy", "macro_f1")]
        lines.append(f"| {entry['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def environment() -> dict:
    return {
        "device": f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores; fits on {THREADS})",
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {"scikit-learn": sklearn.__version__, "numpy": np.__version__, "opensmile": opensmile.__version__},
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--protocol", choices=[*PROTOCOLS, "both"], default="both")
    parser.add_argument("--only", nargs="+", choices=list(BASELINES), default=None, metavar="NAME")
    parser.add_argument(
        "--data",
        default=None,
        help=f"RAVDESS folder or Hub dataset id (default ${data.DATA_ENV} or {data.DEFAULT_DATA_DIR})",
    )
    parser.add_argument("--reports", type=Path, default=REPORTS_DIR)
    args = parser.parse_args(argv)

    started = time.perf_counter()
    protocols = PROTOCOLS if args.protocol == "both" else (args.protocol,)
    report = {
        "command": command_line("train.baselines", argv),
        **environment(),
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        **run_baselines(data.load_ravdess(args.data), protocols, args.only),
    }
    report["seconds"] = round(time.perf_counter() - started, 1)
    args.reports.mkdir(parents=True, exist_ok=True)
    write_report(report, args.reports / "baselines.json")
    print(markdown_table(report))
    return report


if __name__ == "__main__":
    main()
