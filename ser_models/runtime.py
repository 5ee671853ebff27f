"""Serving backends for the network: eager torch, or its ONNX export run by onnxruntime.

Only the network (model inputs -> logits) is exported. Features stay in torch, the one
implementation shared with training, so the two backends cannot drift apart there; the
exported graph is the conv/matmul stack, which onnxruntime fuses (Conv+BatchNorm+ReLU)
and runs about 3× faster than eager torch on a small CPU (bench/speed.py).

A bundled model ships its export as ``model.onnx``, stamped with the SHA-256 of the
``model.safetensors`` it was made from: serving then needs only onnxruntime, not the
exporter (faster start, less memory). A stamp that does not match (retrained weights),
or a model from elsewhere, is exported in memory at load time instead (well under a second).

    python -m ser_models export-onnx ser_models/weights/mel-cnn ser_models/weights/mfcc-mlp
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import torch

from . import features
from .models import WEIGHTS_NAME, EmotionModel, MelCNN, MelCRNN

BACKENDS = ("torch", "onnx")
BACKEND_ENV = "SER_BACKEND"  # overrides the default backend, e.g. SER_BACKEND=torch
ONNX_NAME = "model.onnx"
ONNX_OPSET = 17
INPUT_NAME = "features"
OUTPUT_NAME = "logits"
WEIGHTS_HASH_KEY = "safetensors_sha256"
# torch's OpenMP workers meet at a barrier after every op: while another process or
# request holds one of two cores, each op waits a scheduler slice for its second worker.
# Measured on 2 cores with one kept busy: one clip took 14–70 ms end to end with 2 torch
# threads and 3.2 ms with 1. Features (about 0.5 ms a clip) run on one thread; the network
# gets both cores in onnxruntime's pool, which did not degrade so. When the machine is
# quiet, 2 feature threads save about 0.3 ms a clip (bench/speed.py, "thread_settings").
FEATURE_THREADS = 1

Network = Callable[[torch.Tensor], torch.Tensor]


class BackendError(RuntimeError):
    """A backend that was asked for by name but cannot run here."""


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """torch ops inside run on ``threads`` intra-op threads; the caller's setting is restored after.

    With OpenMP the setting belongs to the calling thread, so concurrent requests served
    from other threads are not affected by each other's scope.
    """
    before = torch.get_num_threads()
    if threads == before:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def onnxruntime_available() -> bool:
    return find_spec("onnxruntime") is not None


def exporter_available() -> bool:
    # torch.onnx.export writes its protobuf through the onnx package.
    return find_spec("onnx") is not None


def example_inputs(model: EmotionModel, batch: int = 2) -> torch.Tensor:
    """A batch of the network's inputs, of the shape ``model.featurize`` gives, for tracing."""
    generator = torch.Generator().manual_seed(0)
    audio = torch.randn(batch, features.N_SAMPLES, generator=generator) * 0.1
    lengths = torch.full((batch,), features.N_SAMPLES, dtype=torch.long)
    with torch.no_grad():  # not inference_mode: its tensors cannot be traced by the exporter
        return model.featurize(audio, lengths)


def dynamic_axes(model: EmotionModel) -> dict[str, dict[int, str]]:
    # Serving feeds the CNN the full 4 s, but training's inputs are cropped to the batch's speech
    # (MelCNN.from_log_mel(crop=True)): a dynamic time axis lets the export run on either.
    inputs = {0: "batch", 2: "frames"} if isinstance(model, (MelCNN, MelCRNN)) else {0: "batch"}
    return {INPUT_NAME: inputs, OUTPUT_NAME: {0: "batch"}}


def export_onnx(model: EmotionModel, weights_sha256: str | None = None) -> bytes:
    """The model's network as an ONNX graph with dynamic batch (and, for the CNN, time) axes."""
    if not exporter_available():
        raise BackendError("exporting to ONNX needs the onnx package: pip install -r requirements.txt")
    import onnx

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


def weights_sha256(directory: str | os.PathLike) -> str:
    return hashlib.sha256((Path(directory) / WEIGHTS_NAME).read_bytes()).hexdigest()


def save_onnx(directory: str | os.PathLike) -> Path:
    """Write ``model.onnx`` beside a saved model's weights, stamped with their hash."""
    directory = Path(directory)
    model = EmotionModel.from_pretrained(directory)
    path = directory / ONNX_NAME
    path.write_bytes(export_onnx(model, weights_sha256(directory)))
    return path


class OnnxNetwork:
    """An onnxruntime session that is called like the torch network: features in, logits out."""

    def __init__(self, onnx_model: bytes | str | os.PathLike, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        # One knob for both runtimes: torch.set_num_threads also sizes this session's pool.
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1  # the graph is a chain: nothing to run side by side
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Spinning workers keep burning the cores between calls and starve torch's feature
        # computation, which runs right before every call (one clip took 8 ms instead of 2.6).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        self.source = onnx_model if isinstance(onnx_model, bytes) else str(onnx_model)
        self.session = ort.InferenceSession(self.source, options, providers=["CPUExecutionProvider"])

    @property
    def metadata(self) -> dict[str, str]:
        return dict(self.session.get_modelmeta().custom_metadata_map)

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(inputs.detach().cpu().numpy(), dtype=np.float32)
        (logits,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: array})
        return torch.from_numpy(logits)


def shipped_network(directory: str | os.PathLike | None, model: EmotionModel | None = None) -> OnnxNetwork | None:
    """The ``model.onnx`` in a model folder, if it was exported from the weights beside it.

    A folder may come from anywhere, and the stamp only claims which weights the graph was made
    from: the graph must also read no other file and give the torch network's logits on a fixed
    input, or it is not used (``network`` then exports the model again). ``model``: the one loaded
    from ``directory``; loaded here when None.
    """
    if directory is None or not (Path(directory) / ONNX_NAME).is_file():
        return None
    path = Path(directory) / ONNX_NAME
    data = path.read_bytes()  # checked and served from memory: the file cannot change in between
    # onnxruntime reads a tensor's external data from the file named under the key "location",
    # which protobuf stores verbatim: a graph without these bytes reads no other file.
    if b"location" in data:
        warnings.warn(f"{path} refers to external data: not used, the model is exported again", stacklevel=2)
        return None
    try:
        network = OnnxNetwork(data)
    except Exception as error:  # onnxruntime raises its own exception types for an invalid graph
        warnings.warn(f"{path} is not a valid ONNX model ({error}): the model is exported again", stacklevel=2)
        return None
    if network.metadata.get(WEIGHTS_HASH_KEY) != weights_sha256(directory):
        return None  # stale: the weights were replaced after the export
    if not same_logits(network, model or EmotionModel.from_pretrained(directory)):
        warnings.warn(f"{path} does not compute the weights' network: the model is exported again", stacklevel=2)
        return None
    return network


def same_logits(network: OnnxNetwork, model: EmotionModel, tolerance: float = 1e-3) -> bool:
    """Whether an ONNX graph gives the torch model's logits on one fixed input."""
    with torch_threads(FEATURE_THREADS), torch.no_grad():  # one clip: a second thread only waits (see there)
        if hasattr(model, "feature_mean"):
            # Standardised inputs, drawn around the training statistics: no Whisper encoder run (0.3 s).
            noise = torch.randn(1, model.feature_mean.numel(), generator=torch.Generator().manual_seed(0))
            inputs = model.feature_mean + model.feature_std * noise
        else:
            inputs = example_inputs(model, batch=1)
        expected = model(inputs)
    try:
        actual = network(inputs).double()
    except Exception:  # onnxruntime's own types, for a graph that takes other inputs
        return False
    return actual.shape == expected.shape and torch.allclose(actual, expected.double(), rtol=tolerance, atol=tolerance)


def network(
    model: EmotionModel, backend: str | None = None, directory: str | os.PathLike | None = None
) -> tuple[str, Network]:
    """The backend's name and the callable that maps ``model.featurize`` outputs to logits.

    ``backend`` None: $SER_BACKEND, else onnx where it can run, else torch. ``directory``:
    the folder the model was loaded from, where a shipped export may be.
    """
    explicit = backend or os.environ.get(BACKEND_ENV, "").strip().lower()
    if explicit == "torch":
        return "torch", model
    if explicit not in ("", "onnx"):
        raise BackendError(f"unknown backend {explicit!r}; expected one of {BACKENDS}")
    if not onnxruntime_available():
        if not explicit:
            return "torch", model
        raise BackendError("the onnx backend needs onnxruntime: pip install -r requirements.txt, or use torch")
    shipped = shipped_network(directory, model)
    if shipped is not None:
        return "onnx", shipped
    if not explicit and not exporter_available():
        return "torch", model  # nothing shipped and no exporter: serve what can be served
    return "onnx", OnnxNetwork(export_onnx(model))
