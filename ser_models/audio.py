"""Audio input: decoding, validation and conversion to 16 kHz mono float32.

Every entry point (Python API, CLI, app, training) goes through ``load_audio`` or
``to_mono_16k`` so that one set of checks decides what is acceptable input and one
set of messages explains what is not.
"""

from __future__ import annotations

import functools
import io
import math
import os
import re
import traceback
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
BLOCK_FRAMES = 1 << 16  # decoded at a time: the only multi-channel array ever held
UNKNOWN_FRAMES = 1 << 62  # libsndfile's "length unknown" is 2**63 - 1; no real file comes near


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


def _user_errors(function):
    """Errors from ``function`` keep no audio alive, and running out of memory becomes a TooLongError."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except AudioError as error:
            # The frames the error passed through hold the decoded arrays: a caller that keeps the
            # error (a log, a list of failures) must not keep them alive as well.
            traceback.clear_frames(error.__traceback__)
            raise
        except MemoryError:
            pass  # raised below, outside this block, so that the failed attempt's arrays are already freed
        raise TooLongError("the recording is too large for the memory free on this server; send a shorter one")

    return wrapper


@_user_errors
def load_audio(source: str | os.PathLike | bytes, max_seconds: float = MAX_SECONDS) -> np.ndarray:
    """Decode a file (path or bytes) with soundfile and return 16 kHz mono float32 samples.

    Rate, channels and length are judged from the header before any sample is read, and decoding
    runs in blocks mixed down to mono as they come: a small file that claims or holds hours of
    many-channel audio costs at most the mono samples up to the limit plus one block.
    """
    # The base name only: a message may reach a user, and the server's folders are none of their business.
    name = "the uploaded audio" if isinstance(source, bytes) else repr(Path(os.fspath(source)).name)
    if isinstance(source, bytes):
        size = len(source)
    elif Path(source).is_file():
        size = Path(source).stat().st_size
    else:
        raise UnreadableAudioError(f"{name} does not exist or is not a file")
    if size == 0:
        raise EmptyAudioError(f"{name} is empty (0 bytes): nothing was recorded or the upload failed")
    if size > MAX_FILE_BYTES:
        raise UnreadableAudioError(f"{name} is {size / 2**20:.0f} MB; the limit is {MAX_FILE_BYTES / 2**20:.0f} MB")
    reason = None
    try:
        with sf.SoundFile(io.BytesIO(source) if isinstance(source, bytes) else source) as f:
            samples, sample_rate, promised = _decode(f, max_seconds)
    except AudioError:
        raise
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as error:
        reason = re.sub(r"^Error opening .*?: ", "", str(error))  # drop the file-object repr libsndfile adds
    if reason is not None:  # raised here, not in the handler, so that the error chains nothing
        raise UnreadableAudioError(
            f"{name} could not be decoded as audio ({reason}). Supported formats: WAV, FLAC, OGG/Vorbis, MP3."
        )
    # MP3 headers only estimate the length, so a little slack; a cut-off file misses far more.
    if promised is not None and promised - len(samples) > max(0.01 * promised, 0.05 * sample_rate):
        raise TruncatedAudioError(
            f"{name} is truncated: its header promises {promised / sample_rate:.2f} s but only "
            f"{len(samples) / sample_rate:.2f} s are there. The upload or copy was probably cut off; try again."
        )
    return to_mono_16k(samples, sample_rate, max_seconds=max_seconds)


@_user_errors
def to_mono_16k(waveform: np.ndarray, sample_rate: int | float, max_seconds: float = MAX_SECONDS) -> np.ndarray:
    """Validate raw samples of any common dtype and layout; return 16 kHz mono float32.

    A 2-D array may be (samples, channels) as soundfile and Gradio give it, or
    (channels, samples) as torch does: the shorter axis is taken as channels.
    """
    samples = _as_float32(waveform)
    sample_rate = _checked_rate(sample_rate)
    if samples.size == 0:
        raise EmptyAudioError("the recording is empty: no samples were received")
    if samples.ndim == 2:
        if samples.shape[0] < samples.shape[1]:
            samples = samples.T
        _check_channels(samples.shape[1])
        samples = samples.mean(axis=1)
    elif samples.ndim != 1:
        raise UnsupportedAudioError(f"audio must be 1-D or 2-D (samples × channels), got shape {samples.shape}")
    if samples.size / sample_rate > max_seconds:
        raise TooLongError(_too_long_message(samples.size / sample_rate, max_seconds))
    low, high = float(samples.min()), float(samples.max())  # NaN and Inf propagate: two passes check all three
    if not (math.isfinite(low) and math.isfinite(high)):
        raise InvalidSamplesError("the audio contains NaN or infinite values; the recording is corrupt")
    peak = max(-low, high)
    if peak > 1.0:
        # Float audio outside [-1, 1] is legal but unusual; rescale instead of refusing.
        samples, peak = samples / peak, 1.0
    # Each side counted apart: no full-size |samples| array beside the samples.
    if peak >= 0.999 and np.count_nonzero(samples >= 0.999) + np.count_nonzero(samples <= -0.999) > samples.size / 1000:
        warnings.warn(
            "the recording is clipped (too loud): move away from the microphone or lower the input gain",
            ClippingWarning,
            stacklevel=3,  # the caller of to_mono_16k, past the error wrapper
        )
    if sample_rate != SAMPLE_RATE:
        samples = soxr.resample(samples, sample_rate, SAMPLE_RATE, quality="HQ")
    return np.ascontiguousarray(samples, dtype=np.float32)


def _decode(f: sf.SoundFile, max_seconds: float) -> tuple[np.ndarray, int, int | None]:
    """Mono float32 samples at the file's own rate, and the length its header promises (None: unknown).

    The header is trusted to refuse a file, never to size an allocation: decoding goes block by block
    and stops at the limit, whatever length the header claims.
    """
    sample_rate = _checked_rate(f.samplerate)
    _check_channels(f.channels)
    limit = max_seconds * sample_rate
    # A streamed FLAC or an unfinished file has no length: libsndfile says 0 or about 2**63.
    known = 0 < f.frames < UNKNOWN_FRAMES
    if known and f.frames > limit:
        raise TooLongError(_too_long_message(f.frames / sample_rate, max_seconds))
    # At most the limit's worth of mono samples, never touched unless decoded: a header that lies costs
    # address space, not memory.
    mono = np.empty(f.frames if known else BLOCK_FRAMES, np.float32)
    block = np.empty((BLOCK_FRAMES, f.channels), np.float32)
    size = 0
    while len(chunk := f.read(BLOCK_FRAMES, dtype="float32", always_2d=True, out=block)):
        if size + len(chunk) > limit:
            raise TooLongError(_too_long_message(None, max_seconds))
        if size + len(chunk) > len(mono):  # no length in the header, or an MP3 estimate too low: grow
            mono.resize(int(min(max(2 * len(mono), size + len(chunk)), limit)), refcheck=False)
        np.mean(chunk, axis=1, out=mono[size : size + len(chunk)])
        size += len(chunk)
    mono.resize(size, refcheck=False)  # in place: no second copy of the samples
    promised = _promised_frames(f) if f.format == "WAV" else f.frames if known else None
    return mono, sample_rate, promised


def _checked_rate(sample_rate: int | float) -> int:
    """The rate as an int; 16000.0 is a rate, 16000.5, True and "16000" are not."""
    if isinstance(sample_rate, (float, np.floating)) and float(sample_rate).is_integer():
        sample_rate = int(sample_rate)
    if (
        isinstance(sample_rate, bool)
        or not isinstance(sample_rate, (int, np.integer))
        or not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE
    ):
        raise UnsupportedAudioError(
            f"sample rate {sample_rate!r} is not supported: use {MIN_SAMPLE_RATE:,}–{MAX_SAMPLE_RATE:,} Hz"
        )
    return int(sample_rate)


def _check_channels(channels: int) -> None:
    if channels > MAX_CHANNELS:
        raise UnsupportedAudioError(f"{channels} channels is more than the {MAX_CHANNELS} supported")


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
    # One float32 copy, scaled in place (a power of two: exact), rather than a float64 one as well.
    half = float(2 ** (8 * samples.dtype.itemsize - 1))
    if kind == "i":
        scaled = samples.astype(np.float32)
        scaled /= half
        return scaled
    if kind == "u":
        scaled = samples.astype(np.float32)
        scaled -= half
        scaled /= half
        return scaled
    raise InvalidSamplesError(f"samples of type {samples.dtype} are not audio; use integer or float samples")


def _too_long_message(seconds: float | None, max_seconds: float) -> str:
    length = f"over {max_seconds:.0f} s" if seconds is None else f"{seconds:.1f} s"
    return f"the recording is {length} long; the limit is {max_seconds:.0f} s. Trim it or split it into parts."
