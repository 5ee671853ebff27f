"""The emotion classifiers in PyTorch, for training and ONNX export: one class per model, config in,
safetensors out. Serving does not import this module: it runs each model's ``model.onnx``
(``ser_models.runtime``) on the features of ``ser_models.scorers``, which ``featurize`` calls too.

On disk a model is a folder (or a Hub repo) holding ``config.json`` and
``model.safetensors``. No pickle is ever read: the config is validated before the
model is built and the weights must match it exactly.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F

from . import features
from .configs import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    MelCNNConfig,
    MelCRNNConfig,
    MfccMLPConfig,
    ModelLoadError,
    WhisperHeadConfig,
    load_config,
    resolve_model_dir,
)
from .scorers import inputs_from_log_mel, model_inputs


class EmotionModel(nn.Module):
    """Shared plumbing: features from padded audio, logits, save/load."""

    model_type: ClassVar[str]
    config_class: ClassVar[type]

    def __init__(self, config) -> None:
        super().__init__()
        self.config = config

    def prepare(self) -> None:
        """Load what serving needs beyond the weights (raises ModelLoadError if it cannot)."""

    def featurize(self, audio: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Model inputs from a (B, N_SAMPLES) batch of trimmed, padded speech and its lengths: the
        same numpy function serving calls (``scorers.model_inputs``), so the two cannot differ."""
        return torch.from_numpy(model_inputs(self.config, np.asarray(audio), np.asarray(lengths)))

    def from_log_mel(self, log_mel: torch.Tensor, lengths: torch.Tensor, crop: bool = False) -> torch.Tensor:
        """Model inputs from a log-mel batch; training calls this on cached log-mels (with ``crop``)."""
        inputs = inputs_from_log_mel(self.config, log_mel.detach().cpu().numpy(), lengths.detach().cpu().numpy())
        return torch.from_numpy(inputs).to(log_mel.device)

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
        config = load_config(directory)
        model_class = MODEL_CLASSES[config.model_type]
        if cls is not EmotionModel and model_class is not cls:
            raise ModelLoadError(
                f"{directory / CONFIG_NAME}: model_type is {config.model_type!r}, not {cls.model_type!r}"
            )
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
        normalized = EmotionModel.from_log_mel(self, log_mel, lengths)  # also MelCRNN's (see there)
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

    def prepare(self) -> None:
        from .scorers import check_encoder

        check_encoder(self.config)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.head((pooled - self.feature_mean) / self.feature_std)


MODEL_CLASSES: dict[str, type[EmotionModel]] = {m.model_type: m for m in (MelCNN, MelCRNN, MfccMLP, WhisperHead)}
