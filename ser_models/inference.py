"""``EmotionRecognizer``: the one prediction path used by the API, the CLI, the app and the tests.

decode (``audio``) -> validate -> find the speech (``speech``, ``features.trim_silence``) -> cut it
into 4 s windows (``features.chunk``) -> score each window (``scorers``: features and network) ->
average the windows -> calibrated probabilities. Imports no torch.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from . import features, speech
from .audio import UnreadableAudioError, load_audio, to_mono_16k
from .configs import ModelConfig
from .labels import EMOTIONS
from .registry import DEFAULT_MODEL
from .scorers import EnsembleScorer, Scorer, load_scorer

BATCH_SIZE = 64
UNCERTAIN = "uncertain"
# Below this estimated SNR the speech is buried in noise and the answer is "uncertain": held-out
# accuracy by estimated SNR in reports/robustness_whisper-layers.json ("snr_bins").
MIN_SNR_DB = 3.0


@dataclass
class Analysis:
    """A prediction with what the model actually heard, for display."""

    probabilities: dict[str, float]
    speech: features.Trimmed
    input_seconds: float
    warnings: list[str] = field(default_factory=list)
    snr_db: float = speech.MAX_SNR_DB  # the speech's estimated signal-to-noise ratio
    confidence_threshold: float = 0.0  # the model's: a top probability below it is "uncertain"

    @property
    def label(self) -> str:
        return max(self.probabilities, key=self.probabilities.get)

    @property
    def uncertain_because(self) -> str | None:
        """Why the model cannot tell (too noisy, or unsure), or None when it can."""
        return uncertain_because(self.probabilities, self.snr_db, self.confidence_threshold)

    @property
    def verdict(self) -> str:
        """The emotion heard, or "uncertain"; the eight probabilities stay either way."""
        return verdict(self.probabilities, self.snr_db, self.confidence_threshold)


def verdict(probabilities: dict[str, float], snr_db: float, confidence_threshold: float) -> str:
    """The most probable emotion, or UNCERTAIN where ``uncertain_because`` gives a reason."""
    if uncertain_because(probabilities, snr_db, confidence_threshold):
        return UNCERTAIN
    return max(probabilities, key=probabilities.get)


def uncertain_because(probabilities: dict[str, float], snr_db: float, confidence_threshold: float) -> str | None:
    """Why the answer is "uncertain": speech buried in noise, or a top probability under the threshold."""
    if snr_db < MIN_SNR_DB:
        return f"the speech is buried in noise (estimated SNR {snr_db:.0f} dB)"
    top = max(probabilities.values())
    if top < confidence_threshold:
        return f"the model is unsure (top probability {top:.0%}, below its threshold of {confidence_threshold:.0%})"
    return None


def find_speech(audio: np.ndarray, top_db: float = features.TOP_DB) -> tuple[features.Trimmed, speech.SpeechCheck]:
    """Refuse a recording without speech (silence, noise, a tone), then cut the silence around the speech.

    The one gate every path goes through: the API, the CLI, the app and the robustness benchmark.
    """
    check = speech.check(audio)
    return features.trim_silence(audio, top_db=top_db), check


class EmotionRecognizer:
    """Predict the probability of each of the eight RAVDESS emotions from speech.

    >>> recognizer = EmotionRecognizer.from_pretrained("mel-cnn")
    >>> recognizer.predict_file("clip.wav")  # doctest: +SKIP
    {'neutral': 0.02, 'calm': 0.01, 'happy': 0.05, ..., 'angry': 0.81, ...}
    """

    labels: tuple[str, ...] = EMOTIONS

    def __init__(self, scorer: Scorer | EnsembleScorer, name: str | None = None) -> None:
        self.scorer = scorer
        self.name = name or scorer.name

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | os.PathLike = DEFAULT_MODEL, backend: str | None = None
    ) -> EmotionRecognizer:
        """A bundled model by name (see ``registry.MODELS``), a local folder, or a Hub repo id.

        ``backend``: "onnx" (onnxruntime, the default; $SER_BACKEND overrides it) or "torch".
        A folder with an ``ensemble.json`` is scored by the ensemble of the models it names.
        """
        return cls(load_scorer(name_or_path, backend), str(name_or_path))

    @property
    def backend(self) -> str:
        return self.scorer.backend

    @property
    def config(self) -> ModelConfig | None:
        """The model's config (None for an ensemble, whose members each have one)."""
        return getattr(self.scorer, "config", None)

    @property
    def top_db(self) -> float:
        return self.scorer.top_db

    @property
    def temperature(self) -> float:
        return self.scorer.temperature

    @property
    def confidence_threshold(self) -> float:
        return self.scorer.confidence_threshold

    def predict(self, waveform: np.ndarray, sample_rate: int) -> dict[str, float]:
        """Probabilities of all eight emotions (summing to 1) for one recording."""
        return self.predict_batch([(waveform, sample_rate)])[0]

    def predict_file(self, path: str | os.PathLike) -> dict[str, float]:
        if not isinstance(path, (str, bytes, os.PathLike)):
            raise UnreadableAudioError(f"expected the path of an audio file (or its bytes), got {type(path).__name__}")
        return self.predict_speech([self.trim(load_audio(path))])[0]

    def predict_batch(self, recordings: Sequence[tuple[np.ndarray, int]]) -> list[dict[str, float]]:
        """Predict many recordings at once; raises the AudioError of the first unusable one."""
        trimmed = [self.trim(to_mono_16k(w, sr)) for w, sr in recordings]
        return self.predict_speech(trimmed) if trimmed else []

    def analyze(self, waveform: np.ndarray, sample_rate: int) -> Analysis:
        """Like ``predict``, also returning the trimmed speech and any warnings about the input."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            audio = to_mono_16k(waveform, sample_rate)
            trimmed, check = find_speech(audio, self.top_db)
        probabilities = self.predict_speech([trimmed.audio])[0]
        seconds = audio.size / features.SAMPLE_RATE
        messages = [str(w.message) for w in caught]
        return Analysis(probabilities, trimmed, seconds, messages, check.snr_db, self.confidence_threshold)

    def trim(self, audio: np.ndarray) -> np.ndarray:
        """The speech of a 16 kHz recording; AudioError where there is none (see ``find_speech``)."""
        return find_speech(audio, self.top_db)[0].audio

    def predict_speech(self, speech: Sequence[np.ndarray]) -> list[dict[str, float]]:
        """Core batched path on already trimmed 16 kHz speech."""
        probabilities = self.speech_probabilities(speech, self.temperature)
        return [dict(zip(self.labels, row.tolist(), strict=True)) for row in probabilities]

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
                self.scorer.probabilities(windows[start : start + BATCH_SIZE], temperature)
                for start in range(0, len(windows), BATCH_SIZE)
            ]
        )
        owner_index = np.asarray(owner)
        return np.stack([probabilities[owner_index == i].mean(axis=0) for i in range(len(speech))])
