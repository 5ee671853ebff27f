"""Running a model's network: its ONNX export on onnxruntime (serving, no torch), or eager torch.

Only the network (model inputs -> logits) is exported; features are computed in numpy
(``ser_models.features``, ``ser_models.scorers``), the one implementation shared with training.
onnxruntime fuses the conv/matmul stack (Conv+BatchNorm+ReLU) and runs it about 3× faster than
eager torch on a small CPU (bench/speed.py).

A model folder ships its export as ``model.onnx``, stamped with the SHA-256 of the
``model.safetensors`` it was made from; serving needs only that file and onnxruntime. A stamp
that does not match (retrained weights), or a folder without an export, is exported in memory at
load time where torch is installed (``ser_models.export``), and refused with the command that
fixes it where it is not:

    ser-models export-onnx path/to/model-folder
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable
from importlib.util import find_spec
from pathlib import Path

import numpy as np

from .configs import ONNX_NAME, WEIGHTS_NAME, ModelConfig, ModelLoadError

BACKENDS = ("onnx", "torch")
BACKEND_ENV = "SER_BACKEND"  # overrides the default backend, e.g. SER_BACKEND=torch
INPUT_NAME = "features"
OUTPUT_NAME = "logits"
WEIGHTS_HASH_KEY = "safetensors_sha256"

Network = Callable[[np.ndarray], np.ndarray]  # model inputs -> logits, both float32 arrays


class BackendError(ModelLoadError):
    """A backend that was asked for by name but cannot run here."""


def torch_available() -> bool:
    return find_spec("torch") is not None


class OnnxNetwork:
    """An onnxruntime session called like a function: model inputs in, logits out."""

    def __init__(self, onnx_model: bytes | str | os.PathLike, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or 0  # 0: onnxruntime's default, one per physical core
        options.inter_op_num_threads = 1  # the graph is a chain: nothing to run side by side
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Spinning workers keep burning the cores between calls and starve the feature
        # computation, which runs right before every call (one clip took 8 ms instead of 2.6).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        self.source = onnx_model if isinstance(onnx_model, bytes) else str(onnx_model)
        self.session = ort.InferenceSession(self.source, options, providers=["CPUExecutionProvider"])

    @property
    def metadata(self) -> dict[str, str]:
        return dict(self.session.get_modelmeta().custom_metadata_map)

    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        array = np.ascontiguousarray(inputs, dtype=np.float32)
        (logits,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: array})
        return logits


def weights_sha256(directory: str | os.PathLike) -> str:
    return hashlib.sha256((Path(directory) / WEIGHTS_NAME).read_bytes()).hexdigest()


def input_shape(config: ModelConfig, batch: int = 1) -> tuple[int, ...]:
    """The shape of one batch of the network's inputs (the CNNs': the full 4 s served)."""
    from . import features

    if config.model_type in ("mel-cnn", "mel-crnn"):
        return (batch, features.N_MELS, features.N_FRAMES)
    if config.model_type == "mfcc-mlp":
        return (batch, 2 * features.N_MFCC)
    return (batch, config.n_features)


def shipped_network(directory: str | os.PathLike | None, config: ModelConfig) -> OnnxNetwork | None:
    """The ``model.onnx`` in a model folder, if it was exported from the weights beside it.

    A folder may come from anywhere, and the stamp only claims which weights the graph was made
    from: the graph must also read no other file and map inputs of the config's shape to eight
    finite logits, or it is not used.
    """
    if directory is None or not (Path(directory) / ONNX_NAME).is_file():
        return None
    path = Path(directory) / ONNX_NAME
    data = path.read_bytes()  # checked and served from memory: the file cannot change in between
    # onnxruntime reads a tensor's external data from the file named under the key "location",
    # which protobuf stores verbatim: a graph without these bytes reads no other file.
    if b"location" in data:
        warnings.warn(f"{path} refers to external data: not used", stacklevel=2)
        return None
    try:
        network = OnnxNetwork(data)
    except Exception as error:  # onnxruntime raises its own exception types for an invalid graph
        warnings.warn(f"{path} is not a valid ONNX model ({error}): not used", stacklevel=2)
        return None
    if not (Path(directory) / WEIGHTS_NAME).is_file() or network.metadata.get(WEIGHTS_HASH_KEY) != weights_sha256(
        directory
    ):
        return None  # stale: the weights were replaced after the export
    try:
        logits = network(np.zeros(input_shape(config), dtype=np.float32))
    except Exception:  # onnxruntime's own types, for a graph that takes other inputs
        logits = None
    if logits is None or logits.shape != (1, len(config.labels)) or not np.isfinite(logits).all():
        warnings.warn(f"{path} does not map this model's inputs to {len(config.labels)} logits: not used", stacklevel=2)
        return None
    return network


def load_network(directory: str | os.PathLike, config: ModelConfig, backend: str | None = None) -> tuple[str, Network]:
    """The backend's name and the network of the model in ``directory``.

    ``backend`` None: $SER_BACKEND, else "onnx": the shipped ``model.onnx``, or an export made now
    where torch is installed. "torch" runs the safetensors weights in eager torch (training's path).
    """
    choice = (backend or os.environ.get(BACKEND_ENV, "") or "onnx").strip().lower()
    if choice not in BACKENDS:
        raise BackendError(f"unknown backend {choice!r}; expected one of {BACKENDS}")
    if choice == "onnx":
        shipped = shipped_network(directory, config)
        if shipped is not None:
            return "onnx", shipped
    if not torch_available():
        why = (
            "the torch backend needs"
            if choice == "torch"
            else f"{directory} has no {ONNX_NAME} made from its weights; exporting one needs"
        )
        fix = f"pip install 'ser-models[train]', then `ser-models export-onnx {directory}`"
        raise BackendError(f"{why} PyTorch: {fix}")
    from .export import TorchNetwork, export_onnx
    from .models import EmotionModel

    model = EmotionModel.from_pretrained(directory)
    if choice == "torch":
        return "torch", TorchNetwork(model)
    return "onnx", OnnxNetwork(export_onnx(model))
