"""``EmotionRecognizer``: the one prediction path used by the API, the CLI, the app and the tests."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import features, runtime
from .audio import load_audio, to_mono_16k
from .labels import EMOTIONS
from .models import EmotionModel, ModelLoadError, resolve_model_dir

WEIGHTS_DIR = Path(__file__).parent / "weights"
ENSEMBLE_NAME = "ensemble.json"
DEFAULT_MODEL = "whisper-cnn"
MODEL_DESCRIPTIONS = {
    "whisper-cnn": "Whisper-base features and the log-mel CNN together: the most accurate (default).",
    "mel-cnn": "Log-mel CNN: four conv blocks over a 64-band log-mel spectrogram; the fastest.",
    "whisper-base": "Whisper-base encoder features with a linear head.",
    "mfcc-mlp": "MFCC MLP: five small networks on the mean and spread of 40 MFCCs; least accurate.",
}
BATCH_SIZE = 64


@dataclass
class Analysis:
    """A prediction with what the model actually heard, for display."""

    probabilities: dict[str, float]
    speech: features.Trimmed
    input_seconds: float
    warnings: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return max(self.probabilities, key=self.probabilities.get)


class EmotionRecognizer:
    """Predict the probability of each of the eight RAVDESS emotions from speech.

    >>> recognizer = EmotionRecognizer.from_pretrained("mel-cnn")
    >>> recognizer.predict_file("clip.wav")  # doctest: +SKIP
    {'neutral': 0.02, 'calm': 0.01, 'happy': 0.05, ..., 'angry': 0.81, ...}
    """

    labels: tuple[str, ...] = EMOTIONS

    def __init__(
        self,
        model: EmotionModel,
        name: str | None = None,
        backend: str | None = None,
        directory: str | os.PathLike | None = None,
    ) -> None:
        """``backend``: "onnx" (onnxruntime) or "torch"; by default $SER_BACKEND, else onnx where it can run.

        ``directory`` is where the model was loaded from; a ``model.onnx`` exported from
        its weights is used from there instead of exporting again (see ser_models.runtime).
        """
        self.model = model.eval()
        self.model.prepare()
        self.name = name or model.model_type
        self.backend, self.network = runtime.network(self.model, backend, directory)

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | os.PathLike = DEFAULT_MODEL, backend: str | None = None
    ) -> EmotionRecognizer:
        """A bundled model by name (see MODEL_DESCRIPTIONS), a local folder, or a Hub repo id.

        A folder with an ``ensemble.json`` gives an EnsembleRecognizer of the models it names.
        """
        bundled = WEIGHTS_DIR / str(name_or_path)
        use_bundled = str(name_or_path) in MODEL_DESCRIPTIONS and bundled.is_dir()
        directory = bundled if use_bundled else resolve_model_dir(name_or_path)
        if (directory / ENSEMBLE_NAME).is_file():
            return EnsembleRecognizer.from_folder(directory, backend, str(name_or_path))
        return cls(EmotionModel.from_pretrained(directory), str(name_or_path), backend, directory)

    def predict(self, waveform: np.ndarray, sample_rate: int) -> dict[str, float]:
        """Probabilities of all eight emotions (summing to 1) for one recording."""
        return self.predict_batch([(waveform, sample_rate)])[0]

    def predict_file(self, path: str | os.PathLike) -> dict[str, float]:
        return self.predict_speech([self.trim(load_audio(path))])[0]

    def predict_batch(self, recordings: Sequence[tuple[np.ndarray, int]]) -> list[dict[str, float]]:
        """Predict many recordings at once; raises the AudioError of the first unusable one."""
        return self.predict_speech([self.trim(to_mono_16k(w, sr)) for w, sr in recordings])

    def analyze(self, waveform: np.ndarray, sample_rate: int) -> Analysis:
        """Like ``predict``, also returning the trimmed speech and any warnings about the input."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            audio = to_mono_16k(waveform, sample_rate)
        speech = features.trim_silence(audio, top_db=self.top_db)
        probabilities = self.predict_speech([speech.audio])[0]
        return Analysis(probabilities, speech, audio.size / features.SAMPLE_RATE, [str(w.message) for w in caught])

    @property
    def top_db(self) -> float:
        return self.model.config.top_db

    @property
    def temperature(self) -> float:
        return self.model.config.temperature

    def trim(self, audio: np.ndarray) -> np.ndarray:
        return features.trim_silence(audio, top_db=self.top_db).audio

    def predict_speech(self, speech: Sequence[np.ndarray]) -> list[dict[str, float]]:
        """Core batched path on already trimmed 16 kHz speech."""
        probabilities = self.speech_probabilities(speech, self.temperature)
        return [dict(zip(self.labels, row.tolist(), strict=True)) for row in probabilities]

    @torch.inference_mode()
    def speech_probabilities(self, speech: Sequence[np.ndarray], temperature: float = 1.0) -> np.ndarray:
        """(n, 8) probabilities at ``temperature``.

        Speech longer than one 4 s input is split into overlapping windows whose
        probabilities are averaged, so no part of a long take is ignored.
        """
        windows, owner = [], []
        for index, audio in enumerate(speech):
            for window in features.chunk(audio):
                windows.append(window)
                owner.append(index)
        # Every window is one full 4 s input (see MelCNN.from_log_mel), so batches can mix lengths.
        probabilities = np.concatenate(
            [
                self._window_probabilities(windows[start : start + BATCH_SIZE], temperature)
                for start in range(0, len(windows), BATCH_SIZE)
            ]
        )
        owner_index = np.asarray(owner)
        return np.stack([probabilities[owner_index == i].mean(axis=0) for i in range(len(speech))])

    def _window_probabilities(self, windows: list[np.ndarray], temperature: float) -> np.ndarray:
        audio, lengths = features.batch_inputs(windows)
        # torch's own ops run on FEATURE_THREADS (see there): even this softmax, split over
        # 2 threads, took ~9 ms instead of µs while another process held a core. The network
        # runs outside: onnxruntime has its own pool; the torch backend uses the process's.
        with runtime.torch_threads(runtime.FEATURE_THREADS):
            inputs = self.model.featurize(audio, lengths)
        logits = self.network(inputs)
        with runtime.torch_threads(runtime.FEATURE_THREADS):
            return torch.softmax(logits.double() / temperature, dim=-1).numpy()


class EnsembleRecognizer(EmotionRecognizer):
    """Several recognizers as one: the weighted geometric mean of their probabilities.

    The weights come from ``train/ensemble.py`` (chosen on validation actors). Members are
    combined at temperature 1, as they were evaluated; the ensemble has its own temperature.
    On disk an ensemble is a folder with ``ensemble.json``:
    ``{"members": {"mel-cnn": 0.6, "whisper-base": 0.4}, "temperature": 1.0}``, each member a
    bundled model name, a folder (relative to the ensemble's) or a Hub repo id.
    """

    def __init__(
        self,
        members: dict[str, EmotionRecognizer],
        weights: dict[str, float],
        name: str | None = None,
        temperature: float = 1.0,
    ) -> None:
        if set(members) != set(weights) or not members:
            raise ModelLoadError(f"ensemble weights {sorted(weights)} do not match its members {sorted(members)}")
        top_dbs = {member.top_db for member in members.values()}
        if len(top_dbs) != 1:
            raise ModelLoadError(f"ensemble members trim silence differently (top_db {sorted(top_dbs)})")
        self.members, self.weights, self._temperature = members, weights, temperature
        self.name = name or "+".join(members)
        self.backend = "+".join(sorted({member.backend for member in members.values()}))
        self._top_db = top_dbs.pop()

    @classmethod
    def from_folder(
        cls, directory: str | os.PathLike, backend: str | None = None, name: str | None = None
    ) -> EnsembleRecognizer:
        directory = Path(directory)
        try:
            spec = json.loads((directory / ENSEMBLE_NAME).read_text())
            weights = {str(k): float(v) for k, v in spec["members"].items()}
            temperature = float(spec.get("temperature", 1.0))
        except (OSError, ValueError, KeyError, AttributeError, TypeError) as error:
            raise ModelLoadError(f"{directory / ENSEMBLE_NAME}: not a valid ensemble ({error})") from None
        members = {}
        for member in weights:
            local = directory / member
            source = local if member not in MODEL_DESCRIPTIONS and local.is_dir() else member
            members[member] = EmotionRecognizer.from_pretrained(source, backend)
        return cls(members, weights, name or directory.name, temperature)

    @property
    def top_db(self) -> float:
        return self._top_db

    @property
    def temperature(self) -> float:
        return self._temperature

    def speech_probabilities(self, speech: Sequence[np.ndarray], temperature: float = 1.0) -> np.ndarray:
        log_mean = sum(
            weight * np.log(np.clip(self.members[name].speech_probabilities(speech), 1e-12, None))
            for name, weight in self.weights.items()
        )
        return torch.softmax(torch.from_numpy(log_mean) / temperature, dim=-1).numpy()
