"""train/baselines.py on a small slice of real RAVDESS: 6 actors, statement "kids" only (180 clips)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ser_models.labels import EMOTIONS
from train import baselines
from train.crossval import PROTOCOLS
from train.data import load_ravdess

ACTORS = range(1, 7)
N_FOLDS = 3  # 3 folds of 2 actors: every split still has train, validation and test actors


@pytest.fixture(scope="module")
def dataset(ravdess_dir):
    return load_ravdess(ravdess_dir, actors=ACTORS).filter(lambda statement: statement == 0, input_columns="statement")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("baselines-cache")


@pytest.fixture(scope="module")
def report(dataset, cache_dir):
    return baselines.run_baselines(dataset, n_folds=N_FOLDS, cache_dir=cache_dir)


def test_every_baseline_is_scored_on_both_protocols(report, dataset):
    assert report["clips"] == len(dataset) == 180 and report["actors"] == list(ACTORS)
    assert set(report["features"]) == {"raw", "egemaps"}
    assert report["features"]["raw"]["dims"] == baselines.RAW_RATE * 4 and report["features"]["egemaps"]["dims"] == 88
    assert list(report["baselines"]) == list(baselines.BASELINES)
    for entry in report["baselines"].values():
        assert entry["feature_description"] and entry["model"].startswith("Pipeline")
        assert set(entry["protocols"]) == set(PROTOCOLS)
        for result in entry["protocols"].values():
            assert len(result["folds"]) == N_FOLDS
            for metric in baselines.METRICS:
                values = [fold[metric] for fold in result["folds"]]
                assert 0 <= result[metric]["mean"] <= 1
                assert result[metric]["std"] == pytest.approx(np.std(values))
            assert all(fold["fit_seconds"] >= 0 and fold["n_test"] > 0 for fold in result["folds"])
            # Every test clip lands in the 8 × 8 matrix: every prediction is one of the eight emotions.
            matrix = np.asarray(result["confusion_matrix"])
            assert matrix.shape == (len(EMOTIONS), len(EMOTIONS))
            assert matrix.sum() == sum(fold["n_test"] for fold in result["folds"])
    json.dumps(report)  # the report is written as JSON


def test_speaker_independent_folds_test_unseen_actors(report):
    folds = report["baselines"]["random-forest"]["protocols"]["speaker-independent"]["folds"]
    assert sorted(a for fold in folds for a in fold["test_actors"]) == list(ACTORS)


def test_svm_picks_c_from_its_grid(report):
    for result in report["baselines"]["egemaps-svm"]["protocols"].values():
        assert all(fold["params"]["svc__C"] in baselines.SVM_C_GRID for fold in result["folds"])


def test_features_are_read_back_from_the_cache(dataset, cache_dir, report, monkeypatch):
    def no_decoding(dataset):
        raise AssertionError("features were extracted again instead of read from the cache")

    monkeypatch.setattr(baselines, "trimmed_clips", no_decoding)
    again = baselines.feature_matrices(dataset, ["raw", "egemaps"], cache_dir)
    assert all(found["extract_seconds"] is None for found in again.values())
    assert again["raw"]["matrix"].shape == (len(dataset), report["features"]["raw"]["dims"])
    assert len(list(cache_dir.glob("*.npy"))) == 2


def test_cache_key_follows_the_clips_and_the_settings(dataset, cache_dir, monkeypatch):
    fewer = dataset.select(range(10))
    assert baselines.cache_path("raw", fewer, cache_dir) != baselines.cache_path("raw", dataset, cache_dir)
    assert "10clips" in baselines.cache_path("raw", fewer, cache_dir).name
    before = baselines.cache_path("raw", dataset, cache_dir)
    monkeypatch.setitem(baselines.FEATURE_SETS["raw"].settings, "rate", 4000)
    assert baselines.cache_path("raw", dataset, cache_dir) != before


def test_markdown_table_has_a_row_per_baseline(report):
    table = baselines.markdown_table(report)
    lines = table.strip().splitlines()
    assert lines[0].startswith("| baseline | speaker-independent accuracy")
    assert len(lines) == 2 + len(baselines.BASELINES)
    for entry, line in zip(report["baselines"].values(), lines[2:], strict=True):
        assert line.startswith(f"| {entry['label']} |") and line.count("±") == 4


def test_markdown_table_marks_a_protocol_not_run():
    result = {metric: {"mean": 0.5, "std": 0.01} for metric in baselines.METRICS}
    report = {"baselines": {"lda": {"label": "LDA", "protocols": {"speaker-independent": result}}}}
    assert baselines.markdown_table(report).splitlines()[2] == "| LDA | 50.0% ± 1.0% | 0.500 ± 0.010 | — | — |"
