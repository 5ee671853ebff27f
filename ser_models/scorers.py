"""Scorers: windows of speech in, probabilities of the eight emotions out. No torch.

A ``Scorer`` is one model folder: its config, its network (``runtime``) and the features the
network reads (``model_inputs``: the same numpy code training calls through
``models.EmotionModel.featurize``). An ``EnsembleScorer`` combines several scorers; either one
is the scoring step of ``inference.EmotionRecognizer``'s pipeline.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import numpy as np

from . import features, registry, runtime
from .configs import (
    MelCNNConfig,
    MelCRNNConfig,
    MfccMLPConfig,
    ModelConfig,
    ModelLoadError,
    WhisperHeadConfig,
    load_config,
    resolve_model_dir,
)

ENSEMBLE_NAME = "ensemble.json"


def inputs_from_log_mel(config: ModelConfig, log_mel: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The network's inputs from a (B, N_MELS, frames) log-mel batch of speech ``lengths`` samples long."""
    if isinstance(config, (MelCNNConfig, MelCRNNConfig)):
        return features.normalized_log_mel(log_mel, lengths, per_band=config.normalization == "band")
    if isinstance(config, MfccMLPConfig):
        return features.mfcc_statistics(log_mel, lengths)
    raise TypeError(f"{config.model_type} does not read a log-mel spectrogram")


def model_inputs(config: ModelConfig, audio: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The network's inputs from a (B, N_SAMPLES) batch of trimmed, zero-padded speech and its lengths."""
    with single_threaded_blas():
        if isinstance(config, WhisperHeadConfig):
            return whisper_inputs(config, audio, lengths)
        return inputs_from_log_mel(config, features.log_mel_spectrogram(audio, lengths), lengths)


@cache
def _blas():
    """numpy's BLAS libraries, as threadpoolctl finds them (None without threadpoolctl)."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    return ThreadpoolController().select(user_api="blas")


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """numpy's matrix products (the mel projections) on one thread inside, the caller's setting after.

    OpenBLAS's second thread keeps spinning after a product and takes the core that onnxruntime's
    threads run the encoder on next: on 2 cores with one busy, whisper-layers took 88 ms a clip with
    BLAS on 2 threads and 50 ms on 1 (bench/serving.py's clip). The products here are small enough that
    a second thread saves nothing. The limit is process-wide for its duration (2.5 µs to set and restore).
    """
    blas = _blas()
    if blas is None or not blas.lib_controllers:
        yield
        return
    with blas.limit(limits=1):
        yield


def whisper_encoder(config: WhisperHeadConfig):
    from .whisper import encoder_for

    return encoder_for(config.encoder, config.pad_seconds, config.compute_type)


def check_encoder(config: WhisperHeadConfig) -> None:
    """Load the head's encoder and check it gives the layers the head reads (ModelLoadError if not)."""
    layers = getattr(whisper_encoder(config), "n_layers", None)  # set by encoders that return every layer
    if layers is not None and not (config.layers and max(config.layers) < layers):
        raise ModelLoadError(
            f"the encoder {config.encoder!r} gives layers 0-{layers - 1}; this head reads {config.layers}"
        )


def whisper_inputs(config: WhisperHeadConfig, audio: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Pooled Whisper encoder states of each clip: the layers the head reads, side by side."""
    from .whisper import head_features, normalise_layers

    clips = [np.asarray(audio[i, : int(n)], dtype=np.float32) for i, n in enumerate(lengths)]
    pooled = whisper_encoder(config)(clips)
    if pooled.ndim == 3:  # (clips, layers, 2 d)
        pooled = head_features(pooled, config.layers, config.normalise_layers)
    elif config.normalise_layers:  # one layer's (clips, 2 d)
        pooled = normalise_layers(pooled[:, None])[:, 0]
    if pooled.shape[-1] != config.n_features:
        raise ModelLoadError(
            f"the encoder {config.encoder!r} gives {pooled.shape[-1]} features; "
            f"this head was trained on {config.n_features}"
        )
    return pooled


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    scaled -= scaled.max(axis=-1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=-1, keepdims=True)


class Scorer:
    """One model: a batch of speech windows (each at most one 4 s input) -> (n, 8) probabilities."""

    def __init__(
        self,
        config: ModelConfig,
        network: runtime.Network,
        name: str,
        backend: str = "onnx",
        folder: Path | None = None,  # where it was loaded from
    ) -> None:
        self.config, self.network, self.name, self.backend, self.folder = config, network, name, backend, folder
        if isinstance(config, WhisperHeadConfig):
            check_encoder(config)

    @classmethod
    def from_folder(cls, directory: str | os.PathLike, name: str | None = None, backend: str | None = None) -> Scorer:
        config = load_config(directory)
        chosen, network = runtime.load_network(directory, config, backend)
        return cls(config, network, name or Path(directory).name, chosen, Path(directory))

    @property
    def top_db(self) -> float:
        return self.config.top_db

    @property
    def temperature(self) -> float:
        return self.config.temperature

    @property
    def confidence_threshold(self) -> float:
        return getattr(self.config, "confidence_threshold", 0.0)

    def probabilities(self, windows: Sequence[np.ndarray], temperature: float = 1.0) -> np.ndarray:
        audio, lengths = features.batch_inputs(list(windows))
        logits = self.network(model_inputs(self.config, audio, lengths))
        return softmax(logits, temperature)


class EnsembleScorer:
    """Several scorers as one: the weighted geometric mean of their probabilities.

    The weights come from ``train/ensemble.py`` (chosen on validation actors). Members are
    combined at temperature 1, as they were evaluated; the ensemble has its own temperature.
    On disk an ensemble is a folder with ``ensemble.json``:
    ``{"members": {"mel-cnn": 0.6, "mfcc-mlp": 0.4}, "temperature": 1.0}``, each member a
    bundled model name, a folder (relative to the ensemble's) or a Hub repo id.
    """

    def __init__(
        self,
        members: dict[str, Scorer],
        weights: dict[str, float],
        name: str | None = None,
        temperature: float = 1.0,
        confidence_threshold: float = 0.0,
    ) -> None:
        if set(members) != set(weights) or not members:
            raise ModelLoadError(f"ensemble weights {sorted(weights)} do not match its members {sorted(members)}")
        # NaN fails every comparison; a weight or temperature of 0, below or huge gives NaN or inverted answers.
        if not all(0 < x <= 100 for x in [*weights.values(), temperature]) or not 0 <= confidence_threshold <= 1:
            raise ModelLoadError(
                f"ensemble weights and temperature must be in (0, 100] and its confidence threshold in [0, 1]; "
                f"got weights {weights}, temperature {temperature}, confidence threshold {confidence_threshold}"
            )
        top_dbs = {member.top_db for member in members.values()}
        if len(top_dbs) != 1:
            raise ModelLoadError(f"ensemble members trim silence differently (top_db {sorted(top_dbs)})")
        self.members, self.weights = members, weights
        self.temperature, self.confidence_threshold = temperature, confidence_threshold
        self.name = name or "+".join(members)
        self.backend = "+".join(sorted({member.backend for member in members.values()}))
        self.top_db = top_dbs.pop()

    def probabilities(self, windows: Sequence[np.ndarray], temperature: float = 1.0) -> np.ndarray:
        log_mean = sum(
            weight * np.log(np.clip(self.members[name].probabilities(windows), 1e-12, None))
            for name, weight in self.weights.items()
        )
        return softmax(log_mean, temperature)

    @classmethod
    def from_folder(
        cls, directory: str | os.PathLike, backend: str | None = None, name: str | None = None
    ) -> EnsembleScorer:
        """The ensemble in ``directory/ensemble.json``, all of it checked before any member is loaded.

        The folder may come from anywhere (``--model``, a Hub repo), so a member is only a bundled
        model name, a plain sub-folder name (no path: nothing outside the folder is read) or a Hub
        repo id ``user/name``; at most 8, and none an ensemble itself (no nesting, no recursion).
        """
        directory = Path(directory)
        where = directory / ENSEMBLE_NAME
        try:
            spec = json.loads(where.read_text())
        except (OSError, ValueError, RecursionError) as error:  # ValueError: bad JSON or not UTF-8
            raise ModelLoadError(f"{where}: not a valid ensemble ({error})") from None
        if not isinstance(spec, dict) or not isinstance(spec.get("members"), dict):
            raise ModelLoadError(f'{where}: not a valid ensemble: expected {{"members": {{name: weight, ...}}}}')
        unknown = sorted(set(spec) - {"members", "temperature", "confidence_threshold", "evaluated_by"})
        if unknown:
            raise ModelLoadError(f"{where}: unknown ensemble keys {unknown}")
        if not 1 <= len(spec["members"]) <= 8:
            raise ModelLoadError(f"{where}: an ensemble has 1 to 8 members, not {len(spec['members'])}")

        def number(what: str, value: object, probability: bool = False) -> float:
            # NaN fails both comparisons; JSON true is a bool, not a number, here.
            is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not (is_number and (0 <= value <= 1 if probability else 0 < value <= 100)):
                allowed = "in [0, 1]" if probability else "in (0, 100]"
                raise ModelLoadError(f"{where}: {what} must be a number {allowed}, got {value!r:.80}")
            return float(value)

        weights = {m: number(f"the weight of {m!r:.80}", w) for m, w in spec["members"].items()}
        temperature = number("temperature", spec.get("temperature", 1.0))
        threshold = number("confidence_threshold", spec.get("confidence_threshold", 0.0), probability=True)
        part = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}"  # a file name or one half of a Hub id; never "." or ".."
        root = directory.resolve()
        sources = {}
        for member in weights:
            local = directory / member
            if member in registry.MODELS:
                sources[member] = registry.MODELS[member].folder
            # resolve(): a symlinked sub-folder must not lead outside the folder either.
            elif re.fullmatch(part, member) and local.is_dir() and local.resolve().parent == root:
                sources[member] = local
            # Not also a folder under the working directory, which resolve_model_dir would load instead.
            elif re.fullmatch(f"{part}/{part}", member) and not Path(member).exists():
                sources[member] = member  # downloaded below, once every member has passed these checks
            else:
                raise ModelLoadError(
                    f"{where}: member {member!r:.80} is not a bundled model ({', '.join(registry.MODELS)}), "
                    "a sub-folder of the ensemble's folder or a Hub repo id (user/name)"
                )
        members = {}
        for member, source in sources.items():
            source = resolve_model_dir(source)
            if (source / ENSEMBLE_NAME).is_file():
                raise ModelLoadError(f"{where}: member {member!r} is itself an ensemble; ensembles do not nest")
            members[member] = Scorer.from_folder(source, member, backend)
        return cls(members, weights, name or directory.name, temperature, threshold)


def load_scorer(name_or_path: str | os.PathLike, backend: str | None = None) -> Scorer | EnsembleScorer:
    """A bundled model by name (see ``registry.MODELS``), a local folder, or a Hub repo id."""
    name = str(name_or_path)
    bundled = registry.MODELS.get(name)
    directory = bundled.folder if bundled and bundled.folder.is_dir() else resolve_model_dir(name_or_path)
    if (directory / ENSEMBLE_NAME).is_file():
        return EnsembleScorer.from_folder(directory, backend, name)
    return Scorer.from_folder(directory, name, backend)
