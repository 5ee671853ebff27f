"""From trained PyTorch weights to the ``model.onnx`` that serving runs (needs torch and onnx).

ser-models export-onnx ser_models/weights/mel-cnn ser_models/weights/mfcc-mlp
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from . import features
from .configs import ONNX_NAME
from .models import EmotionModel, MelCNN, MelCRNN
from .runtime import INPUT_NAME, OUTPUT_NAME, WEIGHTS_HASH_KEY, BackendError, OnnxNetwork, weights_sha256

ONNX_OPSET = 17


class TorchNetwork:
    """The eager torch network behind the same numpy interface as ``runtime.OnnxNetwork``."""

    def __init__(self, model: EmotionModel) -> None:
        self.model = model.eval()

    @torch.inference_mode()
    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        return self.model(torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32))).float().numpy()


def example_inputs(model: EmotionModel, batch: int = 2) -> torch.Tensor:
    """A batch of the network's inputs, of the shape ``model.featurize`` gives, for tracing."""
    generator = torch.Generator().manual_seed(0)
    if hasattr(model, "feature_mean"):
        # Standardised inputs drawn around the training statistics: no Whisper encoder run.
        noise = torch.randn(batch, model.feature_mean.numel(), generator=generator)
        return (model.feature_mean + model.feature_std * noise).detach()
    audio = torch.randn(batch, features.N_SAMPLES, generator=generator) * 0.1
    lengths = torch.full((batch,), features.N_SAMPLES, dtype=torch.long)
    return model.featurize(audio, lengths)


def dynamic_axes(model: EmotionModel) -> dict[str, dict[int, str]]:
    # Serving feeds the CNN the full 4 s, but training's inputs are cropped to the batch's speech
    # (MelCNN.from_log_mel(crop=True)): a dynamic time axis lets the export run on either.
    inputs = {0: "batch", 2: "frames"} if isinstance(model, (MelCNN, MelCRNN)) else {0: "batch"}
    return {INPUT_NAME: inputs, OUTPUT_NAME: {0: "batch"}}


def export_onnx(model: EmotionModel, weights_sha256: str | None = None) -> bytes:
    """The model's network as an ONNX graph with dynamic batch (and, for the CNN, time) axes."""
    try:
        import onnx
    except ImportError as error:
        raise BackendError("exporting to ONNX needs the onnx package: pip install 'ser-models[train]'") from error

    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # The TorchScript exporter (dynamo=False) is deprecated but exports these models in
        # ~0.2 s without onnxscript; the dynamo exporter takes seconds.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(),
            (example_inputs(model),),
            buffer,
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes=dynamic_axes(model),
            opset_version=ONNX_OPSET,
        )
    graph = onnx.load_from_string(buffer.getvalue())
    stamp = {"model_type": model.model_type, WEIGHTS_HASH_KEY: weights_sha256 or ""}
    onnx.helper.set_model_props(graph, stamp)
    return graph.SerializeToString()


def save_onnx(directory: str | os.PathLike) -> Path:
    """Write ``model.onnx`` beside a saved model's weights, stamped with their hash, and check it."""
    directory = Path(directory)
    model = EmotionModel.from_pretrained(directory)
    path = directory / ONNX_NAME
    path.write_bytes(export_onnx(model, weights_sha256(directory)))
    if not same_logits(OnnxNetwork(path), model):
        raise BackendError(f"{path}: the export does not compute the torch model's logits")
    return path


def same_logits(network: OnnxNetwork, model: EmotionModel, tolerance: float = 1e-3) -> bool:
    """Whether an ONNX graph gives the torch model's logits on one fixed input."""
    with torch.no_grad():
        inputs = example_inputs(model, batch=1)
        expected = model(inputs).double().numpy()
    try:
        actual = network(inputs.numpy()).astype(np.float64)
    except Exception:  # onnxruntime's own types, for a graph that takes other inputs
        return False
    return actual.shape == expected.shape and np.allclose(actual, expected, rtol=tolerance, atol=tolerance)
