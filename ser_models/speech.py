"""Is there speech in a recording, and how far above its noise? Decided by Silero VAD, not by loudness.

A quiet microphone is not silence: the level of a recording says nothing about whether someone
speaks in it, so the decision is made by a voice activity detector on the recording brought to a
common level. Silero VAD's per-frame probabilities come from its batched ("sequence") ONNX model
that ships in the ``silero-vad`` wheel, run here through onnxruntime alone (no torch). Noise,
tones, hum and DC offsets give no speech frames and are refused with the same clear message as
digital silence; speech buried in noise is kept, and its estimated signal-to-noise ratio lets the
caller say that it cannot tell (``inference.uncertain_because``).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from .audio import SilentAudioError

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
SILERO_ONNX = "silero_vad_16k_sequence.onnx"
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
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        return None
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1  # a small recurrent network: threads only add overhead
    options.inter_op_num_threads = 1
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / SILERO_ONNX
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def frame_probabilities(audio: np.ndarray) -> np.ndarray:
    """Silero's speech probability of every 32 ms frame of 16 kHz audio, at the level it hears."""
    session = _session()
    n_frames = -(-audio.size // FRAME)
    padded = np.zeros(CONTEXT + n_frames * FRAME, dtype=np.float32)
    padded[CONTEXT : CONTEXT + audio.size] = audio
    frames = np.lib.stride_tricks.sliding_window_view(padded, CONTEXT + FRAME)[::FRAME][:n_frames]
    state = np.zeros((1, 1, 128), dtype=np.float32)
    probabilities, _, _ = session.run(None, {"input": np.ascontiguousarray(frames), "h": state, "c": state})
    return probabilities.reshape(-1)


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
    if _session() is None:
        return SpeechCheck(np.ones(-(-audio.size // FRAME), dtype=np.float32), MAX_SNR_DB)
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
