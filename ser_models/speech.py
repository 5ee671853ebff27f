"""Is there speech in a recording, and how far above its noise? Decided by Silero VAD, not by loudness.

A quiet microphone is not silence: the level of a recording says nothing about whether someone
speaks in it, so the decision is made by a voice activity detector on the recording brought to a
common level. Silero VAD's per-frame probabilities come from its batched ("sequence") ONNX model
from the ``silero-vad`` 6.2.3 wheel (MIT, assets/silero_vad/LICENSE; that wheel depends on torch),
run here through onnxruntime alone. Its STFT is computed in numpy and the graph shipped starts
from the magnitudes (``train/silero_export.py`` cuts it and checks it against the original). Noise,
tones, hum and DC offsets give no speech frames and are refused with the same clear message as
digital silence; speech buried in noise is kept, and its estimated signal-to-noise ratio lets the
caller say that it cannot tell (``inference.uncertain_because``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from .audio import SAMPLE_RATE, SilentAudioError

FRAME = 512  # Silero's frame at 16 kHz: 32 ms
CONTEXT = 64  # samples of the previous frame each frame carries
SPEECH_PROBABILITY = 0.5  # Silero's own default threshold for a speech frame
MIN_SPEECH_FRAMES = 3  # ~0.1 s of frames that are surely speech: a click or a cough is not enough
NOISE_PROBABILITY = 0.2  # frames below this measure the noise floor
# Silero hears shouting and screaming poorly (strong RAVDESS takes score 0.2-0.4, in noise 0.4-0.7 on a
# few frames). A recording whose level swings this far between its loud and quiet frames, with some
# sign of a voice, is speech too; stationary noise, hum and tones swing under 10 dB (brown noise 8.5).
MIN_DYNAMICS_DB = 12.0
WEAK_SPEECH_PROBABILITY = 0.15
DIGITAL_SILENCE = 1e-6  # peak amplitude below which nothing was recorded at all (-120 dBFS)
TARGET_PEAK = 0.5  # the level the VAD hears every recording at
MAX_SNR_DB = 60.0
SNR_ESTIMATOR = "median-of-non-speech-frames"  # names the estimate, so cached evaluations know when it changed
SILERO_ONNX_PATH = Path(__file__).parent / "assets" / "silero_vad" / "silero_vad_16k_magnitude.onnx"
MAGNITUDE_INPUT = "magnitude"
STFT_SIZE = 256  # Silero's STFT: Hann-windowed frames of 256 samples every 128, reflect-padded by 128
STFT_HOP = 128
STFT_COLUMNS = (CONTEXT + FRAME + STFT_HOP // 2 - STFT_SIZE) // STFT_HOP + 1  # 4 per frame (see frame_magnitudes)
FFT_BLOCK = 32  # frames transformed at a time (1 s)
BLOCK_FRAMES = 512  # frames per onnxruntime call (16 s): memory stays bounded on an hour of audio
NO_SPEECH_MESSAGE = (
    "no speech was found: the recording is silent, or holds only noise or a tone. "
    "Check that the microphone is on and speak the sentence."
)


@dataclass(frozen=True)
class SpeechCheck:
    """What the detector found: per-frame speech probabilities and the estimated SNR in dB."""

    probabilities: np.ndarray
    snr_db: float


@cache
def _session():
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1  # a small recurrent network: threads only add overhead
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(str(SILERO_ONNX_PATH), options, providers=["CPUExecutionProvider"])


def frames_with_context(audio: np.ndarray) -> np.ndarray:
    """(n_frames, CONTEXT + FRAME): every 32 ms frame of 16 kHz audio with the last CONTEXT samples before it,
    the input Silero's streaming model reads (zeros before the start and after the end)."""
    n_frames = -(-audio.size // FRAME)
    padded = np.zeros(CONTEXT + n_frames * FRAME, dtype=np.float32)
    padded[CONTEXT : CONTEXT + audio.size] = audio
    return np.lib.stride_tricks.sliding_window_view(padded, CONTEXT + FRAME)[::FRAME][:n_frames]


@cache
def _stft_window() -> np.ndarray:
    return np.hanning(STFT_SIZE + 1)[:-1]  # periodic, as Silero's Fourier basis


def frame_magnitudes(frames: np.ndarray) -> np.ndarray:
    """Silero's STFT magnitudes of each frame, (n_frames, 129, STFT_COLUMNS): its graph's first step, in numpy.

    Silero convolves each frame, reflect-padded by STFT_HOP on both sides, with a Hann-windowed Fourier
    basis every STFT_HOP samples and drops the first column: so only the right padding is ever read,
    and only its first half. numpy's FFT gives the same to about 1e-6 in a sixth of the time. It runs
    in float64 (numpy transforms it five times faster than float32) and on FFT_BLOCK frames at a time
    (temporaries of a megabyte cost more in fresh pages than the transform itself: 1.4 ms vs 0.5).
    """
    blocks = []
    for start in range(0, len(frames), FFT_BLOCK):
        block = frames[start : start + FFT_BLOCK]
        reflected = block[:, -2 : -2 - STFT_HOP // 2 : -1]
        columns = np.lib.stride_tricks.sliding_window_view(
            np.concatenate([block, reflected], axis=1), STFT_SIZE, axis=1
        )
        spectrum = np.fft.rfft(columns[:, ::STFT_HOP] * _stft_window(), axis=-1)
        blocks.append(np.abs(spectrum).transpose(0, 2, 1).astype(np.float32))
    return np.concatenate(blocks) if blocks else np.zeros((0, STFT_SIZE // 2 + 1, STFT_COLUMNS), dtype=np.float32)


def frame_probabilities(audio: np.ndarray) -> np.ndarray:
    """Silero's speech probability of every 32 ms frame of 16 kHz audio, as its streaming model gives them.

    The recurrent state carries over from one block of frames to the next.
    """
    frames = frames_with_context(audio)
    hidden = cell = np.zeros((1, 1, 128), dtype=np.float32)
    probabilities = []
    for start in range(0, len(frames), BLOCK_FRAMES):
        magnitudes = frame_magnitudes(frames[start : start + BLOCK_FRAMES])
        values, hidden, cell = _session().run(None, {MAGNITUDE_INPUT: magnitudes, "h": hidden, "c": cell})
        probabilities.append(values.reshape(-1))
    return np.concatenate(probabilities) if probabilities else np.zeros(0, dtype=np.float32)


def speech_timestamps(
    probabilities: np.ndarray,
    n_samples: int,
    threshold: float = SPEECH_PROBABILITY,
    min_speech_seconds: float = 0.25,
    min_silence_seconds: float = 0.1,
    pad_seconds: float = 0.03,
) -> list[tuple[int, int]]:
    """Speech regions (start, end samples) from frame probabilities: Silero's own state machine.

    Ported from ``get_speech_timestamps_from_probs`` in silero-vad 6.2.3 (MIT), without its cutting
    of regions longer than a maximum (not used here); tests/test_speech.py checks it against the
    original. Speech starts at a frame >= ``threshold`` and ends after ``min_silence_seconds`` of
    frames below ``threshold`` - 0.15.
    """
    rate = SAMPLE_RATE
    min_speech, min_silence, pad = min_speech_seconds * rate, min_silence_seconds * rate, pad_seconds * rate
    negative = max(threshold - 0.15, 0.01)
    regions: list[list[int]] = []
    start = None
    silence_from = 0  # where the current run of silence inside speech began (0: none)
    for index, probability in enumerate(probabilities):
        sample = FRAME * index
        if probability >= threshold and silence_from:
            silence_from = 0
        if probability >= threshold and start is None:
            start = sample
            continue
        if probability < negative and start is not None:
            silence_from = silence_from or sample
            if sample - silence_from < min_silence:
                continue
            if silence_from - start > min_speech:
                regions.append([start, silence_from])
            start, silence_from = None, 0
    if start is not None and n_samples - start > min_speech:
        regions.append([start, n_samples])
    for i, region in enumerate(regions):
        if i == 0:
            region[0] = int(max(0, region[0] - pad))
        if i != len(regions) - 1:
            gap = regions[i + 1][0] - region[1]
            if gap < 2 * pad:
                region[1] += int(gap // 2)
                regions[i + 1][0] = int(max(0, regions[i + 1][0] - gap // 2))
            else:
                region[1] = int(min(n_samples, region[1] + pad))
                regions[i + 1][0] = int(max(0, regions[i + 1][0] - pad))
        else:
            region[1] = int(min(n_samples, region[1] + pad))
    return [(int(a), int(b)) for a, b in regions]


def check(audio: np.ndarray) -> SpeechCheck:
    """Refuse a recording without speech (SilentAudioError); otherwise say how noisy its speech is.

    The recording is brought to a common peak first, so a quiet but clean take is judged like a
    loud one. The SNR compares the power of the speech frames with the median power of the frames
    the detector is sure hold none; with no such frame (speech from start to end) the quietest
    tenth of the speech frames stands for the noise floor.
    """
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak < DIGITAL_SILENCE:
        raise SilentAudioError(NO_SPEECH_MESSAGE)
    levelled = audio * (TARGET_PEAK / peak)
    probabilities = frame_probabilities(levelled)
    speech = probabilities >= SPEECH_PROBABILITY
    power = _frame_power(levelled, probabilities.size)
    if speech.sum() < MIN_SPEECH_FRAMES:
        swing = 10 * np.log10(np.percentile(power, 95) + 1e-20) - 10 * np.log10(np.percentile(power, 10) + 1e-20)
        if swing < MIN_DYNAMICS_DB or probabilities.max() < WEAK_SPEECH_PROBABILITY:
            raise SilentAudioError(NO_SPEECH_MESSAGE)
        speech = probabilities >= min(SPEECH_PROBABILITY, probabilities.max() / 2)
    speech_power = float(np.mean(power[speech]))
    quiet = probabilities < NOISE_PROBABILITY
    # The median: a breath or a soft consonant the detector calls non-speech must not count as noise.
    noise_power = float(np.median(power[quiet])) if quiet.sum() >= MIN_SPEECH_FRAMES else 0.0
    if noise_power == 0.0:
        noise_power = float(np.percentile(power[speech], 10))
    snr = 10 * np.log10(max(speech_power - noise_power, 1e-12) / max(noise_power, 1e-12))
    return SpeechCheck(probabilities, float(np.clip(snr, -MAX_SNR_DB, MAX_SNR_DB)))


def _frame_power(audio: np.ndarray, n_frames: int) -> np.ndarray:
    padded = np.zeros(n_frames * FRAME, dtype=np.float64)
    padded[: audio.size] = audio
    return np.mean(np.square(padded.reshape(n_frames, FRAME)), axis=1)
