"""Speech emotion recognition on the eight RAVDESS emotions.

Serving (this package's top level) needs numpy, soundfile, soxr, av and onnxruntime; the PyTorch
models behind the bundled networks are in ``ser_models.models`` (``pip install 'ser-models[train]'``).

>>> from ser_models import EmotionRecognizer
>>> EmotionRecognizer.from_pretrained("mel-cnn").predict_file("clip.wav")  # doctest: +SKIP
"""

from .audio import (
    SAMPLE_RATE,
    AudioError,
    ClippingWarning,
    EmptyAudioError,
    InvalidSamplesError,
    SilentAudioError,
    TooLongError,
    TooShortError,
    TruncatedAudioError,
    UnreadableAudioError,
    UnsupportedAudioError,
    load_audio,
)
from .configs import ModelLoadError
from .features import ShortSpeechWarning
from .inference import UNCERTAIN, Analysis, EmotionRecognizer, find_speech
from .labels import EMOTIONS, STATEMENTS, parse_ravdess_name
from .registry import DEFAULT_MODEL, MODELS
from .scorers import EnsembleScorer, Scorer

__all__ = [
    "DEFAULT_MODEL",
    "EMOTIONS",
    "MODELS",
    "SAMPLE_RATE",
    "STATEMENTS",
    "UNCERTAIN",
    "Analysis",
    "AudioError",
    "ClippingWarning",
    "EmotionRecognizer",
    "EmptyAudioError",
    "EnsembleScorer",
    "InvalidSamplesError",
    "ModelLoadError",
    "Scorer",
    "ShortSpeechWarning",
    "SilentAudioError",
    "TooLongError",
    "TooShortError",
    "TruncatedAudioError",
    "UnreadableAudioError",
    "UnsupportedAudioError",
    "find_speech",
    "load_audio",
    "parse_ravdess_name",
]
