"""The onnxruntime backend gives the torch backend's probabilities (max abs difference < 1e-4)."""

import numpy as np
import pytest
import torch

from ser_models import MODELS, EmotionRecognizer, features, load_audio, runtime
from ser_models.configs import load_config
from ser_models.export import export_onnx, save_onnx
from ser_models.models import MelCNN, MelCNNConfig
from ser_models.scorers import model_inputs, softmax

TOLERANCE = 1e-4


@pytest.fixture(scope="module", params=list(MODELS))
def backends(request):
    return (
        EmotionRecognizer.from_pretrained(request.param, backend="torch"),
        EmotionRecognizer.from_pretrained(request.param, backend="onnx"),
    )


def max_difference(a: list[dict[str, float]], b: list[dict[str, float]]) -> float:
    return max(abs(x[k] - y[k]) for x, y in zip(a, b, strict=True) for k in x)


def test_bundled_models_serve_their_shipped_export(backends):
    _, served = backends
    assert isinstance(served.scorer.network, runtime.OnnxNetwork)
    stamp = served.scorer.network.metadata[runtime.WEIGHTS_HASH_KEY]
    # A failure here means the weights changed after the export: ser-models export-onnx FOLDER
    assert stamp == runtime.weights_sha256(MODELS[served.name].folder)


def test_parity_on_real_clips_of_several_lengths(backends, sample_clips):
    reference, served = backends
    clips = [load_audio(c) for c in sample_clips]
    speech = [reference.trim(c) for c in clips]
    recordings = [
        *clips,  # RAVDESS takes: about 3.5 s, 1.5–2.5 s of speech
        speech[0][: features.SAMPLE_RATE],  # 1 s: shorter than one input
        np.concatenate(speech[:3]),  # several seconds: more than one window
        np.concatenate(speech)[: features.N_SAMPLES],  # exactly one full 4 s input
    ]
    assert min(r.size for r in recordings) < features.N_SAMPLES < max(r.size for r in recordings)
    pairs = [(r, features.SAMPLE_RATE) for r in recordings]
    assert max_difference(reference.predict_batch(pairs), served.predict_batch(pairs)) < TOLERANCE
    one_by_one = [served.predict(r, features.SAMPLE_RATE) for r in recordings]
    assert max_difference(reference.predict_batch(pairs), one_by_one) < TOLERANCE


@pytest.mark.parametrize("batch", [1, 5, 64])
def test_parity_on_random_batches(backends, batch):
    reference, served = backends
    rng = np.random.default_rng(batch)
    audio = (0.1 * rng.standard_normal((batch, features.N_SAMPLES))).astype(np.float32)
    lengths = rng.integers(features.SAMPLE_RATE // 2, features.N_SAMPLES + 1, batch)
    audio[np.arange(features.N_SAMPLES)[None, :] >= lengths[:, None]] = 0
    inputs = model_inputs(served.config, audio, lengths)
    expected = softmax(reference.scorer.network(inputs))
    actual = softmax(served.scorer.network(inputs))
    assert np.abs(expected - actual).max() < TOLERANCE


@pytest.mark.parametrize("frames", [16, 48, 112, features.N_FRAMES])
def test_cnn_export_takes_any_number_of_frames(frames):
    reference = EmotionRecognizer.from_pretrained("mel-cnn", backend="torch")
    served = EmotionRecognizer.from_pretrained("mel-cnn", backend="onnx")
    inputs = np.random.default_rng(frames).standard_normal((3, features.N_MELS, frames)).astype(np.float32)
    inputs[1, :, frames // 2 :] = 0  # padding frames, which the network must leave out of its pooling
    expected = softmax(reference.scorer.network(inputs))
    actual = softmax(served.scorer.network(inputs))
    assert np.abs(expected - actual).max() < TOLERANCE


def test_model_without_an_export_is_exported_at_load(tmp_path, angry_clip):
    torch.manual_seed(0)
    MelCNN(MelCNNConfig(hidden=32)).save_pretrained(tmp_path)
    served = EmotionRecognizer.from_pretrained(tmp_path, backend="onnx")
    reference = EmotionRecognizer.from_pretrained(tmp_path, backend="torch")
    assert not (tmp_path / runtime.ONNX_NAME).exists()
    audio = load_audio(angry_clip)
    assert max_difference([reference.predict(audio, 16000)], [served.predict(audio, 16000)]) < TOLERANCE


def test_stale_export_is_not_used(tmp_path):
    MelCNN().save_pretrained(tmp_path)
    (tmp_path / runtime.ONNX_NAME).write_bytes(export_onnx(MelCNN().eval(), weights_sha256="0" * 64))
    assert runtime.shipped_network(tmp_path, load_config(tmp_path)) is None
    save_onnx(tmp_path)
    assert runtime.shipped_network(tmp_path, load_config(tmp_path)) is not None


def test_backend_choice(monkeypatch):
    monkeypatch.setenv(runtime.BACKEND_ENV, "torch")
    assert EmotionRecognizer.from_pretrained("mfcc-mlp").backend == "torch"
    monkeypatch.delenv(runtime.BACKEND_ENV)
    assert EmotionRecognizer.from_pretrained("mfcc-mlp").backend == "onnx"
    with pytest.raises(runtime.BackendError, match="unknown backend"):
        EmotionRecognizer.from_pretrained("mfcc-mlp", backend="tensorrt")
