"""Feature extraction shared by training and inference (one place, so no train/serve skew), in numpy:
serving imports no torch.

16 kHz mono -> trim silence -> crop/pad to 4 s -> log-mel (64 × 201) -> per-utterance norm
                                                          \\-> 40 MFCCs -> mean & std (80)
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from .audio import SAMPLE_RATE, SilentAudioError, TooShortError

N_FFT = 1024
HOP_LENGTH = 320  # 20 ms
N_MELS = 64
N_MFCC = 40
CHUNK_SECONDS = 4.0
N_SAMPLES = int(CHUNK_SECONDS * SAMPLE_RATE)  # 64,000 samples per model input
N_FRAMES = N_SAMPLES // HOP_LENGTH + 1  # 201 frames per model input
TOP_DB = 25.0  # silence threshold for trimming, relative to the loudest frame
# Digital silence only: whether a quiet recording holds speech is the voice detector's call
# (ser_models/speech.py), not a level's; a quiet microphone at -60 dBFS is still a voice.
SILENCE_DBFS = -120.0
MIN_SPEECH_SECONDS = 0.3  # a single short word is analysed ...
RELIABLE_SPEECH_SECONDS = 0.5  # ... with a warning below this
MEL_FILTERS_PATH = Path(__file__).parent / "assets" / "mel_filters.npz"
DB_RANGE = 80.0  # log-mel floor below the utterance's peak, as librosa.power_to_db(top_db=80)


def describe() -> dict[str, float | int]:
    """The feature settings a model was trained with, stored in its config and checked on load."""
    return {
        "sample_rate": SAMPLE_RATE,
        "n_fft": N_FFT,
        "hop_length": HOP_LENGTH,
        "n_mels": N_MELS,
        "n_mfcc": N_MFCC,
        "chunk_seconds": CHUNK_SECONDS,
    }


@dataclass(frozen=True)
class Trimmed:
    """Speech left after trimming, with where it sat in the original recording."""

    audio: np.ndarray
    start: int
    end: int

    @property
    def seconds(self) -> float:
        return self.audio.size / SAMPLE_RATE


def trim_silence(
    audio: np.ndarray,
    top_db: float = TOP_DB,
    frame_length: int = 2048,
    hop_length: int = 512,
    min_speech_seconds: float = MIN_SPEECH_SECONDS,
) -> Trimmed:
    """Cut leading and trailing silence, as ``librosa.effects.trim`` does, and refuse silence.

    Raises SilentAudioError when the loudest frame is below SILENCE_DBFS and
    TooShortError when less than ``min_speech_seconds`` of sound remains.
    """
    # Square once, then average overlapping windows of the squares: the same sums in the same
    # order as squaring every frame, without a 4× overlapping float64 copy (2 MB for 4 s).
    power = np.square(np.pad(audio, frame_length // 2), dtype=np.float64)
    n_frames = 1 + (power.size - frame_length) // hop_length
    if n_frames < 1:
        raise TooShortError(_too_short_message(audio.size / SAMPLE_RATE, min_speech_seconds))
    frames = np.lib.stride_tricks.sliding_window_view(power, frame_length)[::hop_length][:n_frames]
    rms = np.sqrt(np.mean(frames, axis=1))
    peak = float(rms.max())
    if peak <= 10 ** (SILENCE_DBFS / 20):
        raise SilentAudioError(
            "no speech was found: the recording is silent or too quiet. Check that the microphone is on and speak up."
        )
    # Relative to the peak alone (no absolute floor): a quiet take is cut exactly like a loud one.
    loud = np.flatnonzero(rms > peak * 10 ** (-top_db / 20))
    start = int(loud[0]) * hop_length
    end = min(audio.size, (int(loud[-1]) + 1) * hop_length)
    if (end - start) / SAMPLE_RATE < min_speech_seconds:
        raise TooShortError(_too_short_message((end - start) / SAMPLE_RATE, min_speech_seconds))
    if min_speech_seconds and (end - start) / SAMPLE_RATE < RELIABLE_SPEECH_SECONDS:
        warnings.warn(
            f"only {(end - start) / SAMPLE_RATE:.2f} s of speech: short input is less reliable; "
            "a whole sentence gives a better answer",
            ShortSpeechWarning,
            stacklevel=2,
        )
    return Trimmed(audio[start:end], start, end)


class ShortSpeechWarning(UserWarning):
    """Less speech than RELIABLE_SPEECH_SECONDS: analysed, but less reliable."""


def _too_short_message(seconds: float, min_seconds: float) -> str:
    return (
        f"only {seconds:.2f} s of sound was found; at least {min_seconds:.1f} s of speech is needed. "
        "Say the whole sentence."
    )


def pad_or_trim(audio: np.ndarray, length: int = N_SAMPLES) -> np.ndarray:
    """Crop to the first ``length`` samples or zero-pad the end up to it."""
    if audio.size >= length:
        return audio[:length]
    return np.pad(audio, (0, length - audio.size))


def chunk(audio: np.ndarray, length: int = N_SAMPLES, hop: int = N_SAMPLES // 2) -> list[np.ndarray]:
    """Split speech longer than one model input into half-overlapping windows covering all of it."""
    return [audio[s : s + length] for s in chunk_starts(audio.size, length, hop)]


def chunk_starts(n_samples: int, length: int = N_SAMPLES, hop: int = N_SAMPLES // 2) -> list[int]:
    """Where ``chunk``'s windows start: every ``hop``, plus one flush with the end."""
    if n_samples <= length:
        return [0]
    starts = list(range(0, n_samples - length + 1, hop))
    if starts[-1] + length < n_samples:
        starts.append(n_samples - length)
    return starts


@cache
def mel_filters() -> np.ndarray:
    """Slaney-style mel filterbank (N_MELS × N_FFT/2+1), loaded once.

    Saved from ``librosa.filters.mel(sr=16000, n_fft=1024, n_mels=64)`` into assets/mel_filters.npz
    (tests/test_features.py checks they still agree): building it at run time imports half of
    librosa, which cost the first prediction of every process about a second.
    """
    with np.load(MEL_FILTERS_PATH) as saved:
        return saved[f"mel_{N_MELS}"].astype(np.float32)


@cache
def hann_window(n_fft: int) -> np.ndarray:
    """The periodic Hann window, as ``torch.hann_window`` and ``scipy.signal.get_window("hann")`` make it."""
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)


def stft_power(audio: np.ndarray, n_fft: int, hop_length: int) -> np.ndarray:
    """|STFT|² of (..., samples) audio: (..., n_fft // 2 + 1, frames), centred frames with reflected edges.

    The framing of ``torch.stft(center=True, pad_mode="reflect")`` and ``librosa.stft``, in numpy, so
    that serving needs no torch; the models were trained on torch.stft's output and
    tests/test_features.py checks that the two agree on real recordings.
    """
    pad = [(0, 0)] * (audio.ndim - 1) + [(n_fft // 2, n_fft // 2)]
    padded = np.pad(np.asarray(audio, dtype=np.float32), pad, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft, axis=-1)[..., ::hop_length, :]
    spectrum = np.fft.rfft(frames * hann_window(n_fft), axis=-1)
    power = np.square(spectrum.real) + np.square(spectrum.imag)
    return np.swapaxes(power, -1, -2)


@cache
def _dct_matrix() -> np.ndarray:
    # Orthonormal DCT-II, as librosa.feature.mfcc uses.
    n = np.arange(N_MELS, dtype=np.float64)
    k = np.arange(N_MFCC, dtype=np.float64)[:, None]
    basis = np.cos(np.pi / N_MELS * (n + 0.5) * k) * (2.0 / N_MELS) ** 0.5
    basis[0] /= 2**0.5
    return basis.astype(np.float32)


def valid_frames(lengths: np.ndarray) -> np.ndarray:
    """Number of spectrogram frames that hold speech rather than padding, per item."""
    return np.minimum(np.asarray(lengths) // HOP_LENGTH + 1, N_FRAMES)


def audible_samples(lengths: np.ndarray) -> int:
    """How many samples of a padded batch reach a spectrogram frame that holds speech.

    Later frames see only zero padding; so do the N_FFT // 2 samples that the STFT
    mirrors at the end of a batch cropped here, which is why the frames that are
    computed come out the same as on the full 4 s.
    """
    return min(N_SAMPLES, int(np.max(lengths)) + N_FFT // 2 + 1)


def log_mel_spectrogram(audio: np.ndarray, lengths: np.ndarray | None = None) -> np.ndarray:
    """Log-mel power in dB, floored DB_RANGE below each item's peak: (B, N_SAMPLES) -> (B, N_MELS, N_FRAMES).

    Given the speech ``lengths``, the STFT and the mel projection skip the padding
    (about half of a RAVDESS batch) and its frames get the zero power they would have
    had, so the result is the same, bit for bit, as without ``lengths``.
    """
    audio = np.asarray(audio, dtype=np.float32)
    n_frames = audio.shape[-1] // HOP_LENGTH + 1
    if lengths is not None:
        audio = audio[..., : audible_samples(lengths)]
    mel = mel_filters() @ stft_power(audio, N_FFT, HOP_LENGTH)
    mel = np.pad(mel, [(0, 0)] * (mel.ndim - 1) + [(0, n_frames - mel.shape[-1])])
    db = 10.0 * np.log10(np.maximum(mel, 1e-10))
    peak = db.max(axis=(-2, -1), keepdims=True)
    return np.maximum(db, peak - DB_RANGE).astype(np.float32)


def _frame_mask(log_mel: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    frames = np.arange(log_mel.shape[-1])
    return (frames[None, :] < valid_frames(lengths)[:, None]).astype(log_mel.dtype)[:, None, :]


def normalized_log_mel(log_mel: np.ndarray, lengths: np.ndarray, per_band: bool = False) -> np.ndarray:
    """Mean/variance normalisation over each utterance's speech frames; padding becomes 0.

    Statistics over the speech frames alone keep a short clip's normalisation from
    being dominated by the zero padding that brings it up to 4 s. ``per_band``
    normalises every mel band on its own (cepstral mean and variance normalisation),
    which also removes the microphone's and the speaker's average spectral tilt.
    """
    mask = _frame_mask(log_mel, lengths)
    axes = (-1,) if per_band else (-2, -1)
    count = mask.sum(axis=-1, keepdims=True) * (1 if per_band else log_mel.shape[-2])
    mean = (log_mel * mask).sum(axis=axes, keepdims=True) / count
    var = np.square((log_mel - mean) * mask).sum(axis=axes, keepdims=True) / count
    return ((log_mel - mean) / np.sqrt(var + 1e-5) * mask).astype(np.float32)


def mfcc_statistics(log_mel: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Mean and standard deviation of N_MFCC MFCCs over the speech frames: (B, 2 × N_MFCC)."""
    mfcc = _dct_matrix() @ log_mel
    mask = _frame_mask(mfcc, lengths)
    count = mask.sum(axis=-1)
    mean = (mfcc * mask).sum(axis=-1) / count
    std = np.sqrt(np.square((mfcc - mean[..., None]) * mask).sum(axis=-1) / count)
    return np.concatenate([mean, std], axis=-1).astype(np.float32)


def batch_inputs(segments: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Stack trimmed speech segments into a padded (B, N_SAMPLES) batch and their lengths."""
    lengths = np.array([min(s.size, N_SAMPLES) for s in segments], dtype=np.int64)
    audio = np.zeros((len(segments), N_SAMPLES), dtype=np.float32)  # one copy, not pad then stack
    for row, (segment, length) in enumerate(zip(segments, lengths, strict=True)):
        audio[row, :length] = segment[:length]
    return audio, lengths
