"""Audio input: decoding, validation and conversion to 16 kHz mono float32.

Every entry point (Python API, CLI, app, training) goes through ``load_audio`` or
``to_mono_16k`` so that one set of checks decides what is acceptable input and one
set of messages explains what is not.

Files are decoded by libsndfile (soundfile) where it knows the format (WAV, FLAC, OGG, MP3, AIFF),
and otherwise by FFmpeg's libraries through PyAV (M4A/AAC, WebM/Opus, MP4, MOV, MKV, AMR, WMA and
others), with the same limits and messages.
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
SF_MALFORMED = 3  # libsndfile's "Supported file format but file is malformed": its own format, broken
# The demuxers FFmpeg may use for what libsndfile cannot read: audio files and the audio of video files.
# Nothing that opens further files or URLs named inside the upload (concat lists, HLS and DASH playlists),
# and no images, subtitles or text: FFmpeg refuses every other format before parsing the file.
AV_FORMATS = (
    "mov,matroska,asf,amr,amrnb,amrwb,aac,mp3,ogg,flac,wav,w64,aiff,caf,au,avi,flv,mpeg,mpegts,"
    "ac3,eac3,dts,wv,ape,tta,mpc,mpc8,voc,rm"
)
# The demuxer (MP4, M4A, MOV, 3GP) whose streams' length comes from the header (the sample table, or the
# total a fragmented file states), never from the bitrate: FFmpeg estimates other formats' lengths from
# their bitrate where they state none (Matroska, WebM), and an estimate can neither refuse a file before
# decoding nor call it cut off. Decoding stops at the limit either way.
AV_STATED_LENGTH = "mov"
AV_MAX_DAMAGED = 0.1  # packets the decoder may reject (besides one: a cut-off last packet) before the file is damaged
SUPPORTED_FORMATS = "Supported formats: WAV, FLAC, MP3, OGG, M4A/AAC, WebM/Opus, MP4, MOV, MKV, AMR, AIFF, WMA."
WITHOUT_AV = (
    "Only WAV, FLAC, OGG, MP3 and AIFF can be read here: `pip install av` to read M4A, WebM, MP4, AMR, WMA "
    "and other formats."
)


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


def load_audio(
    source: str | os.PathLike | bytes, max_seconds: float = MAX_SECONDS, *, name: str | None = None
) -> np.ndarray:
    """Decode a file (path or bytes) and return 16 kHz mono float32 samples.

    Rate, channels and length are judged from the header before any sample is read, and decoding
    runs in blocks mixed down to mono as they come: a small file that claims or holds hours of
    many-channel audio costs at most the mono samples up to the limit plus one block. libsndfile
    decodes the formats it knows, FFmpeg (through PyAV) the others.

    Every error names the file as ``name`` (an upload's original file name, say), by default as the
    path's file name without its folders, or "the uploaded audio" for bytes: a message may reach a user,
    and the server's folders are none of their business.
    """
    label = _display_name(source, name)
    try:
        return _load_audio(source, max_seconds, label)
    except AudioError as error:
        if label in str(error):
            raise
        kind, message = type(error), str(error)
    # The checks shared with raw samples (rate, channels, length, values) do not know the file: name it.
    # Raised here, not in the handler, so that the error chains nothing.
    raise kind(f"{label}: {message}")


def _display_name(source: str | os.PathLike | bytes, name: str | None) -> str:
    if name is not None:
        return repr(str(name))
    return "the uploaded audio" if isinstance(source, bytes) else repr(Path(os.fspath(source)).name)


@_user_errors
def _load_audio(source: str | os.PathLike | bytes, max_seconds: float, name: str) -> np.ndarray:
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
    reason, hint = None, SUPPORTED_FORMATS
    try:
        decoded = _read_soundfile(source, max_seconds) or _read_av(source, max_seconds)
    except AudioError:
        raise
    except _Undecodable as error:
        reason, hint = error.args
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as error:
        reason = re.sub(r"^Error opening .*?: ", "", str(error))  # drop the file-object repr libsndfile adds
    if reason is not None:  # raised here, not in the handler, so that the error chains nothing
        raise UnreadableAudioError(f"{name} could not be decoded as audio ({reason}). {hint}".rstrip())
    samples, sample_rate, promised, slack = decoded
    if promised is not None and promised - len(samples) > slack:
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


class _Undecodable(Exception):
    """Why a file could not be decoded (args: the reason, and what to tell the user about formats)."""


class _Mono:
    """Mono samples decoded block by block: grown as they come, never beyond ``limit``, refused past it.

    Only the samples up to the limit are ever allocated: a header that lies costs address space, not memory.
    """

    def __init__(self, limit: float, max_seconds: float, expected: int = 0):
        self.limit, self.max_seconds, self.size = limit, max_seconds, 0
        self.samples = np.empty(expected or BLOCK_FRAMES, np.float32)  # expected: at most the limit

    def room(self, count: int) -> np.ndarray:
        """Where the next ``count`` samples go (fill it before the next call)."""
        end = self.size + count
        if end > self.limit:
            raise TooLongError(_too_long_message(None, self.max_seconds))
        if end > len(self.samples):  # no length in the header, or an estimate too low: grow
            self.samples.resize(int(min(max(2 * len(self.samples), end), self.limit)), refcheck=False)
        start, self.size = self.size, end
        return self.samples[start:end]

    def result(self) -> np.ndarray:
        self.samples.resize(self.size, refcheck=False)  # in place: no second copy of the samples
        return self.samples


def _read_soundfile(source: str | os.PathLike | bytes, max_seconds: float) -> tuple | None:
    """What ``_decode`` returns, or None where libsndfile does not know the format (FFmpeg may).

    A file libsndfile knows but finds broken stays broken: FFmpeg is not asked to make something of it.
    """
    try:
        f = sf.SoundFile(io.BytesIO(source) if isinstance(source, bytes) else source)
    except sf.LibsndfileError as error:
        if error.code == SF_MALFORMED:
            raise
        return None
    with f:
        return _decode(f, max_seconds)


def _decode(f: sf.SoundFile, max_seconds: float) -> tuple[np.ndarray, int, int | None, float]:
    """Mono float32 samples at the file's own rate, the length its header promises (None: unknown), and
    how many samples short of that still counts as complete.

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
    mono = _Mono(limit, max_seconds, f.frames if known else 0)
    block = np.empty((BLOCK_FRAMES, f.channels), np.float32)
    while len(chunk := f.read(BLOCK_FRAMES, dtype="float32", always_2d=True, out=block)):
        np.mean(chunk, axis=1, out=mono.room(len(chunk)))
    promised = _promised_frames(f) if f.format == "WAV" else f.frames if known else None
    # MP3 headers only estimate the length, so a little slack; a cut-off file misses far more.
    slack = max(0.01 * promised, 0.05 * sample_rate) if promised else 0.0
    return mono.result(), sample_rate, promised, slack


def _read_av(source: str | os.PathLike | bytes, max_seconds: float) -> tuple[np.ndarray, int, int | None, float]:
    """What ``_decode`` returns, through FFmpeg's libraries (PyAV), for the formats libsndfile does not know."""
    try:
        import av  # optional: only for formats libsndfile does not read
    except ImportError:
        raise _Undecodable("format not recognised", WITHOUT_AV) from None
    try:
        file = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")
    except OSError as error:
        raise _Undecodable(f"the file cannot be read: {error.strerror or 'input/output error'}", "") from None
    with file:
        head = file.read(12)
        file.seek(0)
        try:
            # A file object, never a path: FFmpeg would read a path as a URL ("concat:", "http:").
            container = av.open(
                file,
                metadata_errors="ignore",
                container_options={"format_whitelist": AV_FORMATS, "protocol_whitelist": "none"},
            )
        except MemoryError:
            raise
        except (av.error.FFmpegError, OSError, ValueError):  # ValueError: UnicodeDecodeError too
            raise _Undecodable(_unknown_format(head), SUPPORTED_FORMATS) from None
        with container:
            return _decode_av(av, container, max_seconds)


def _unknown_format(head: bytes) -> str:
    if head[4:8] == b"ftyp":  # an MP4 (M4A, MOV, 3GP) whose index FFmpeg could not find
        return (
            "an MP4/M4A/MOV file without its index: it was cut off during the upload or copy, "
            "or the recording was never finished"
        )
    return "not a recognised audio or video format"


def _decode_av(av, container, max_seconds: float) -> tuple[np.ndarray, int, int | None, float]:
    """What ``_decode`` returns, from the best audio track of an open PyAV container."""
    stream = container.streams.best("audio")
    if stream is None:
        others = sorted({s.type for s in container.streams})
        raise _Undecodable(
            "it has no audio track" + (f", only {' and '.join(others)}" if others else ""), SUPPORTED_FORMATS
        )
    context = stream.codec_context
    if context is None:
        raise _Undecodable("its audio is in a codec this server cannot decode", SUPPORTED_FORMATS)
    if context.sample_rate:
        _checked_rate(context.sample_rate)
    if context.layout.nb_channels:
        _check_channels(context.layout.nb_channels)
    declared = None
    if AV_STATED_LENGTH in container.format.name.split(",") and stream.duration and stream.time_base:
        declared = float(stream.duration * stream.time_base)
    if declared is not None and declared > max_seconds:
        raise TooLongError(_too_long_message(declared, max_seconds))
    mono, sample_rate, packets, damaged = None, 0, 0, 0
    try:
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except MemoryError:
                raise
            except av.error.FFmpegError:
                damaged += 1  # skipped, as FFmpeg itself does; too many and the file is damaged (below)
                continue
            if packet.size:  # not the empty packet that flushes the decoder at the end
                packets += 1
            for frame in frames:
                if mono is None:
                    sample_rate = _checked_rate(frame.sample_rate)
                    expected = round(declared * sample_rate) if declared else 0
                    mono = _Mono(max_seconds * sample_rate, max_seconds, expected)
                if frame.sample_rate == sample_rate:
                    room = mono.room(frame.samples)  # past the limit: refused before the frame is converted
                    room[:] = _frame_mono(frame)
                else:  # a stream may change its rate midway
                    chunk = soxr.resample(_frame_mono(frame), _checked_rate(frame.sample_rate), sample_rate)
                    mono.room(len(chunk))[:] = chunk
    except MemoryError:
        raise
    except av.error.FFmpegError:
        damaged += 1  # the demuxer gave up: the data ends here, and the length check below judges it
    if damaged > max(1, AV_MAX_DAMAGED * (packets + damaged)) or (mono is None and damaged):
        raise _Undecodable(f"{damaged} of {packets + damaged} blocks of its audio are damaged", SUPPORTED_FORMATS)
    if mono is None:
        raise EmptyAudioError("its audio track holds no samples")
    promised = round(declared * sample_rate) if declared else None
    # Codecs pad the first and last blocks (up to ~0.1 s for AAC at low rates): more slack than for PCM.
    slack = max(0.02 * promised, 0.2 * sample_rate) if promised else 0.0
    return mono.result(), sample_rate, promised, slack


def _frame_mono(frame) -> np.ndarray:
    """One decoded frame as float32 mono, whatever its sample format (planar or packed, int or float)."""
    channels = frame.layout.nb_channels
    _check_channels(channels)
    samples = _as_float32(frame.to_ndarray())
    if frame.format.is_planar:  # (channels, samples)
        return samples[0] if channels == 1 else samples.mean(axis=0)
    return samples.reshape(-1, channels).mean(axis=1)  # (1, samples × channels), interleaved


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
