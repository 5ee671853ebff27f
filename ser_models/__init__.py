"""Speech emotion recognition on the eight RAVDESS emotions.

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
from .features import ShortSpeechWarning
from .inference import (
    DEFAULT_MODEL,
    MODEL_DESCRIPTIONS,
    UNCERTAIN,
    Analysis,
    EmotionRecognizer,
    EnsembleRecognizer,
    find_speech,
)
from .labels import EMOTIONS, STATEMENTS, parse_ravdess_name
from .models import MelCNN, MelCRNN, MfccMLP, ModelLoadError, WhisperHead

__all__ = [
    "DEFAULT_MODEL",
    "EMOTIONS",
    "MODEL_DESCRIPTIONS",
    "SAMPLE_RATE",
    "STATEMENTS",
    "UNCERTAIN",
    "Analysis",
    "AudioError",
    "ClippingWarning",
    "EmotionRecognizer",
    "EmptyAudioError",
    "EnsembleRecognizer",
    "InvalidSamplesError",
    "MelCNN",
    "MelCRNN",
    "MfccMLP",
    "ModelLoadError",
    "ShortSpeechWarning",
    "SilentAudioError",
    "TooLongError",
    "TooShortError",
    "TruncatedAudioError",
    "UnreadableAudioError",
    "UnsupportedAudioError",
    "WhisperHead",
    "find_speech",
    "load_audio",
    "parse_ravdess_name",
]
