"""Audio input: decoding, validation and conversion to 16 kHz mono float32.

Every entry point (Python API, CLI, app, training) goes through ``load_audio`` or
``to_mono_16k`` so that one set of checks decides what is acceptable input and one
set of messages explains what is not.
"""

from __future__ import annotations

import io
import math
import os
import re
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATE = 16_000
MIN_SAMPLE_RATE = 8_000
MAX_SAMPLE_RATE = 192_000
MAX_CHANNELS = 32
MAX_SECONDS_ENV = "SER_MAX_SECONDS"
# Longer recordings are refused, not silently cut; a deployment may raise the limit.
MAX_SECONDS = float(os.environ.get(MAX_SECONDS_ENV, "60"))
MAX_FILE_BYTES = 200 * 1024 * 1024


class AudioError(ValueError):
    """Input audio that cannot be analysed; the message is written for the end user."""


class UnreadableAudioError(AudioError):
    """The file is missing, corrupt, truncated or not audio at all."""


class TruncatedAudioError(UnreadableAudioError):
    """The file ends before the length its header promises: an upload or copy was cut off."""


class EmptyAudioError(AudioError):
    """The input holds no samples."""


class InvalidSamplesError(AudioError):
    """The samples are NaN, infinite or of a type that is not audio."""


class UnsupportedAudioError(AudioError):
    """A sample rate or channel layout outside what can be analysed."""


class TooLongError(AudioError):
    """The recording is longer than the configured limit."""


class SilentAudioError(AudioError):
    """Nothing audible is left once silence is removed."""


class TooShortError(AudioError):
    """Too little speech to judge an emotion from."""


class ClippingWarning(UserWarning):
    """Many samples sit at full scale: the recording was probably too loud."""


def load_audio(source: str | os.PathLike | bytes, max_seconds: float = MAX_SECONDS) -> np.ndarray:
    """Decode a file (path or bytes) with soundfile and return 16 kHz mono float32 samples."""
    name = "the uploaded audio" if isinstance(source, bytes) else repr(os.fspath(source))
    if not isinstance(source, bytes):
        path = Path(source)
        if not path.is_file():
            raise UnreadableAudioError(f"{name} does not exist or is not a file")
        if path.stat().st_size > MAX_FILE_BYTES:
            raise UnreadableAudioError(
                f"{name} is {path.stat().st_size / 2**20:.0f} MB; the limit is {MAX_FILE_BYTES / 2**20:.0f} MB"
            )
    try:
        with sf.SoundFile(io.BytesIO(source) if isinstance(source, bytes) else source) as f:
            sample_rate = f.samplerate
            # Refuse before decoding: a long file would otherwise be read whole into memory.
            if f.frames > 0 and f.frames / sample_rate > max_seconds:
                raise TooLongError(_too_long_message(f.frames / sample_rate, max_seconds))
            samples = f.read(dtype="float32", always_2d=True)
            promised = _promised_frames(f) if f.format == "WAV" else f.frames
    except AudioError:
        raise
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as error:
        reason = re.sub(r"^Error opening .*?: ", "", str(error))  # drop the file-object repr libsndfile adds
        raise UnreadableAudioError(
            f"{name} could not be decoded as audio ({reason}). Supported formats: WAV, FLAC, OGG/Vorbis, MP3."
        ) from None
    # MP3 headers only estimate the length, so a little slack; a cut-off file misses far more.
    missing = promised - len(samples)
    if missing > max(0.01 * promised, 0.05 * sample_rate):
        raise TruncatedAudioError(
            f"{name} is truncated: its header promises {promised / sample_rate:.2f} s but only "
            f"{len(samples) / sample_rate:.2f} s are there. The upload or copy was probably cut off; try again."
        )
    return to_mono_16k(samples, sample_rate, max_seconds=max_seconds)


def to_mono_16k(waveform: np.ndarray, sample_rate: int, max_seconds: float = MAX_SECONDS) -> np.ndarray:
    """Validate raw samples of any common dtype and layout; return 16 kHz mono float32.

    A 2-D array may be (samples, channels) as soundfile and Gradio give it, or
    (channels, samples) as torch does: the shorter axis is taken as channels.
    """
    samples = _as_float32(waveform)
    if not isinstance(sample_rate, (int, np.integer)) or not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise UnsupportedAudioError(
            f"sample rate {sample_rate!r} is not supported: use {MIN_SAMPLE_RATE:,}–{MAX_SAMPLE_RATE:,} Hz"
        )
    sample_rate = int(sample_rate)
    if samples.size == 0:
        raise EmptyAudioError("the recording is empty: no samples were received")
    if samples.ndim == 2:
        if samples.shape[0] < samples.shape[1]:
            samples = samples.T
        if samples.shape[1] > MAX_CHANNELS:
            raise UnsupportedAudioError(f"{samples.shape[1]} channels is more than the {MAX_CHANNELS} supported")
        samples = samples.mean(axis=1)
    elif samples.ndim != 1:
        raise UnsupportedAudioError(f"audio must be 1-D or 2-D (samples × channels), got shape {samples.shape}")
    if samples.size / sample_rate > max_seconds:
        raise TooLongError(_too_long_message(samples.size / sample_rate, max_seconds))
    magnitude = np.abs(samples)
    peak = float(magnitude.max())  # NaN and Inf propagate to the max: one pass checks all three
    if not math.isfinite(peak):
        raise InvalidSamplesError("the audio contains NaN or infinite values; the recording is corrupt")
    if peak > 1.0:
        # Float audio outside [-1, 1] is legal but unusual; rescale instead of refusing.
        samples, magnitude, peak = samples / peak, magnitude / peak, 1.0
    if peak >= 0.999 and np.mean(magnitude >= 0.999) > 0.001:
        warnings.warn(
            "the recording is clipped (too loud): move away from the microphone or lower the input gain",
            ClippingWarning,
            stacklevel=2,
        )
    if sample_rate != SAMPLE_RATE:
        samples = soxr.resample(samples, sample_rate, SAMPLE_RATE, quality="HQ")
    return np.ascontiguousarray(samples, dtype=np.float32)


def _promised_frames(f: sf.SoundFile) -> int:
    """The length the header declares. For WAV libsndfile quietly shortens ``frames`` to what is
    there, and only its header dump keeps the declared data size ("data : 96000 (should be 47978)")."""
    declared = re.search(r"^data\s*:\s*(\d+) \(should be (\d+)\)", f.extra_info, re.MULTILINE)
    # Streaming writers leave 0 or 0xFFFFFFFF for "unknown"; those are not truncation.
    if declared and int(declared[2]) < int(declared[1]) < 0xFFFF0000:
        return f.frames * int(declared[1]) // max(int(declared[2]), 1)
    return f.frames


def _as_float32(waveform: np.ndarray) -> np.ndarray:
    samples = np.asarray(waveform)
    kind = samples.dtype.kind
    if kind == "f":
        return samples.astype(np.float32, copy=False)
    if kind == "i":
        return (samples / float(2 ** (8 * samples.dtype.itemsize - 1))).astype(np.float32)
    if kind == "u":
        half = float(2 ** (8 * samples.dtype.itemsize - 1))
        return ((samples - half) / half).astype(np.float32)
    raise InvalidSamplesError(f"samples of type {samples.dtype} are not audio; use integer or float samples")


def _too_long_message(seconds: float, max_seconds: float) -> str:
    return f"the recording is {seconds:.1f} s long; the limit is {max_seconds:.0f} s. Trim it or split it into parts."
