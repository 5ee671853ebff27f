"""A tiny end-to-end run of the real training and evaluation code on a few actors."""

import json

import numpy as np
import pytest

from ser_models import EMOTIONS, EmotionRecognizer, load_audio
from ser_models.feedback import FeedbackStore
from train import crossval, run


@pytest.mark.slow
def test_train_a_model_and_use_it(ravdess_dir, tmp_path, sample_clips):
    output = tmp_path / "model"
    store = FeedbackStore(tmp_path / "feedback")  # two donated clips join the training rows
    for clip, label in zip(sample_clips[:2], ("sad", "happy"), strict=True):
        store.save(
            load_audio(clip),
            consent=True,
            true_label=label,
            prediction="calm",
            model="mel-cnn",
            probabilities=dict.fromkeys(EMOTIONS, 1 / 8),
        )
    report = run.main(
        "mel-cnn",
        [
            "--actors",
            "1",
            "2",
            "3",
            "4",
            "--epochs",
            "2",
            "--output",
            str(output),
            "--reports",
            str(tmp_path),
            "--no-progress",
            "--feedback",
            str(store.folder),
        ],
    )
    assert report["feedback_clips"] == 2
    assert report["validation_actors"] and not set(report["validation_actors"]) & set(report["train_actors"])
    assert len(report["history"]) == 2
    probabilities = EmotionRecognizer.from_pretrained(output).predict_file(sample_clips[0])
    assert list(probabilities) == list(EMOTIONS) and abs(sum(probabilities.values()) - 1) < 1e-6


@pytest.mark.slow
def test_cross_validation_writes_reports(ravdess_dir, tmp_path):
    report = crossval.main(
        [
            "--model",
            "mfcc-mlp",
            "--actors",
            "1",
            "2",
            "3",
            "4",
            "5",
            "6",
            "--folds",
            "3",
            "--epochs",
            "2",
            "--reports",
            str(tmp_path),
        ]
    )
    saved = json.loads((tmp_path / "cv_mfcc-mlp.json").read_text())
    assert saved["command"].startswith("python -m train.crossval --model mfcc-mlp")
    for protocol in ("speaker-independent", "speaker-dependent"):
        result = saved["protocols"][protocol]
        assert len(result["folds"]) == 3
        assert 0 <= result["accuracy"]["mean"] <= 1 and len(result["confusion_matrix"]) == len(EMOTIONS)
        assert abs(result["chance"]["uniform"] - 0.125) < 1e-9
        assert (tmp_path / f"confusion_mfcc-mlp_{protocol}.png").stat().st_size > 1000
    tested = [a for fold in saved["protocols"]["speaker-independent"]["folds"] for a in fold["test_actors"]]
    assert sorted(tested) == [1, 2, 3, 4, 5, 6]
    assert report["actors"] == [1, 2, 3, 4, 5, 6]


def test_runs_over_disjoint_folds_merge_into_the_report_of_one_run(ravdess_dir, tmp_path):
    def run(folder: str, *only: str) -> dict:
        argv = ["--model", "mfcc-mlp", "--protocol", "speaker-independent", "--actors", *"123456", "--folds", "3"]
        argv += ["--epochs", "2", "--reports", str(tmp_path / folder)]
        return crossval.main(argv + (["--only-folds", *only] if only else []))

    whole = run("whole")["protocols"]["speaker-independent"]
    run("first", "0")
    run("rest", "1", "2")
    parts = [str(tmp_path / folder / "cv_mfcc-mlp.json") for folder in ("rest", "first")]
    merged = crossval.main(["--merge", *parts, "--name", "merged", "--reports", str(tmp_path)])
    result = json.loads((tmp_path / "cv_merged.json").read_text())["protocols"]["speaker-independent"]

    def scores(folds: list[dict]) -> list[tuple]:
        return [(f["fold"], f["test_actors"], f["accuracy"], f["macro_f1"]) for f in folds]

    assert scores(result["folds"]) == scores(whole["folds"])  # each fold is the same with or without the others
    assert result["confusion_matrix"] == whole["confusion_matrix"]
    for key in ("accuracy", "macro_f1", "uar", "per_class_recall", "chance"):
        assert result[key] == pytest.approx(whole[key]), key
    assert merged["command"].count("python -m train.crossval") == 3
    assert (tmp_path / "confusion_merged_speaker-independent.png").is_file()
    with pytest.raises(SystemExit, match="more than one run"):
        crossval.main(["--merge", parts[0], parts[0], "--reports", str(tmp_path)])


def test_noise_augmentation_adds_power_only_inside_the_speech():
    import torch

    from ser_models import features
    from train.trainer import add_mel_noise

    rng = np.random.default_rng(0)
    clips = [0.1 * rng.standard_normal(n).astype(np.float32) * np.hanning(n) for n in (64000, 30000, 45000, 20000)]
    audio, lengths = features.batch_inputs(clips)
    log_mel = torch.from_numpy(features.log_mel_spectrogram(audio, lengths))
    lengths = torch.from_numpy(lengths)
    assert torch.equal(add_mel_noise(log_mel, lengths, torch.Generator().manual_seed(0), share=0.0), log_mel)
    noisy = add_mel_noise(log_mel, lengths, torch.Generator().manual_seed(0), share=1.0)
    assert torch.isfinite(noisy).all() and (noisy >= log_mel - 1e-4).all()
    speech_frames = features.valid_frames(lengths)
    for i, frames in enumerate(speech_frames.tolist()):
        assert (noisy[i, :, :frames] > log_mel[i, :, :frames] + 1e-3).any()
        assert torch.allclose(noisy[i, :, frames:], torch.maximum(log_mel[i, :, frames:], noisy[i].amax() - 80))


def test_multi_condition_folds_train_on_their_rows_and_copies_and_validate_and_test_on_clean(monkeypatch):
    import torch

    from ser_models import features
    from train import splits
    from train.trainer import FitResult, TrainConfig, build_model

    seen = []

    def fake_train_model(model_type, train, validation, config):
        seen.append((train, validation))
        return FitResult(build_model(model_type), best_epoch=1, best_validation_f1=0.0, seconds=0.0)

    monkeypatch.setattr(crossval, "train_model", fake_train_model)
    actors = np.repeat(np.arange(1, 21), 2)
    shape = (actors.size, features.N_MELS, features.N_FRAMES)
    lengths, labels = torch.full((actors.size,), 16_000), torch.arange(actors.size) % len(EMOTIONS)
    copies = [(torch.full(shape, 1.0), lengths), (torch.full(shape, 2.0), lengths)]
    fold_splits = splits.speaker_independent_splits(actors)
    crossval.cross_validate(
        "mfcc-mlp", torch.zeros(shape), lengths, labels, fold_splits, actors, TrainConfig(), None, [0], copies
    )
    [(train, validation)] = seen
    k = len(fold_splits[0].train)
    assert len(train[0]) == 3 * k and train[0][:k].eq(0).all() and train[0][k : 2 * k].eq(1).all()
    assert train[0][2 * k :].eq(2).all() and train[2].tolist() == labels[fold_splits[0].train].tolist() * 3
    assert validation[0].eq(0).all() and len(validation[0]) == len(fold_splits[0].validation)
    with pytest.raises(SystemExit, match="every actor"):
        crossval.corrupted_copies(None, [1, 2], 2)
    assert crossval.corrupted_copies(None, None, 0) == []
