"""``EmotionRecognizer``: the one prediction path used by the API, the CLI, the app and the tests."""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import features, runtime, speech
from .audio import UnreadableAudioError, load_audio, to_mono_16k
from .labels import EMOTIONS
from .models import EmotionModel, ModelLoadError, resolve_model_dir

WEIGHTS_DIR = Path(__file__).parent / "weights"
ENSEMBLE_NAME = "ensemble.json"
DEFAULT_MODEL = "whisper-layers"
MODEL_DESCRIPTIONS = {
    "whisper-layers": "Every layer of Whisper-base, trained on noisy, echoing, phone and quiet copies too: "
    "the most accurate and the steadiest on real microphones (default).",
    "whisper-cnn": "Whisper-base's last layer and the log-mel CNN together; trained on clean studio speech only.",
    "mel-cnn": "A small network that reads the spectrogram; the fastest, trained on clean studio speech only.",
    "whisper-base": "Whisper-base's last layer with a linear read-out; trained on clean studio speech only.",
    "mfcc-mlp": "The seed study's MFCC network: the simplest and least accurate.",
}
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

    @property
    def top_db(self) -> float:
        return self.model.config.top_db

    @property
    def temperature(self) -> float:
        return self.model.config.temperature

    @property
    def confidence_threshold(self) -> float:
        return getattr(self.model.config, "confidence_threshold", 0.0)

    def trim(self, audio: np.ndarray) -> np.ndarray:
        """The speech of a 16 kHz recording; AudioError where there is none (see ``find_speech``)."""
        return find_speech(audio, self.top_db)[0].audio

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
        self.members, self.weights, self._temperature = members, weights, temperature
        self._confidence_threshold = confidence_threshold
        self.name = name or "+".join(members)
        self.backend = "+".join(sorted({member.backend for member in members.values()}))
        self._top_db = top_dbs.pop()

    @classmethod
    def from_folder(
        cls, directory: str | os.PathLike, backend: str | None = None, name: str | None = None
    ) -> EnsembleRecognizer:
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
            if member in MODEL_DESCRIPTIONS:
                sources[member] = WEIGHTS_DIR / member
            # resolve(): a symlinked sub-folder must not lead outside the folder either.
            elif re.fullmatch(part, member) and local.is_dir() and local.resolve().parent == root:
                sources[member] = local
            # Not also a folder under the working directory, which resolve_model_dir would load instead.
            elif re.fullmatch(f"{part}/{part}", member) and not Path(member).exists():
                sources[member] = member  # downloaded below, once every member has passed these checks
            else:
                raise ModelLoadError(
                    f"{where}: member {member!r:.80} is not a bundled model ({', '.join(MODEL_DESCRIPTIONS)}), "
                    "a sub-folder of the ensemble's folder or a Hub repo id (user/name)"
                )
        members = {}
        for member, source in sources.items():
            source = resolve_model_dir(source)
            if (source / ENSEMBLE_NAME).is_file():
                raise ModelLoadError(f"{where}: member {member!r} is itself an ensemble; ensembles do not nest")
            members[member] = EmotionRecognizer(EmotionModel.from_pretrained(source), member, backend, source)
        return cls(members, weights, name or directory.name, temperature, threshold)

    @property
    def top_db(self) -> float:
        return self._top_db

    @property
    def confidence_threshold(self) -> float:
        return self._confidence_threshold

    @property
    def temperature(self) -> float:
        return self._temperature

    def speech_probabilities(self, speech: Sequence[np.ndarray], temperature: float = 1.0) -> np.ndarray:
        log_mean = sum(
            weight * np.log(np.clip(self.members[name].speech_probabilities(speech), 1e-12, None))
            for name, weight in self.weights.items()
        )
        return torch.softmax(torch.from_numpy(log_mean) / temperature, dim=-1).numpy()
