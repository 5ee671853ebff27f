"""Real-world corruptions of 16 kHz speech, one module for training (multi-condition) and evaluation.

Every function takes a clip (float32, 16 kHz, mono) and returns a new clip of the same length;
every random choice comes from the ``numpy.random.Generator`` passed in, so a seed fixes the
result. The conditions a public Space meets:

- additive noise: white, pink (1/f), brown (1/f²), or babble of other speakers, at an SNR in dB
  measured against the clip's speech (its trimmed part), the noise covering the whole clip;
- room reverberation: a synthetic room impulse response (direct path, then exponentially decaying
  noise with the room's RT60; Lehmann & Johansson's statistical model, without the geometry);
- telephone: 300–3400 Hz band at 8 kHz, 8-bit μ-law or A-law companding, back to 16 kHz;
- lossy codecs: MP3 or Opus at a low bitrate, through FFmpeg's encoders in the ``av`` wheel;
- level: a gain in dB (a quiet microphone), and microphone colouration (a spectral tilt and a
  low cut, as cheap laptop and phone microphones have).

``EVALUATION_GRID`` is the fixed robustness grid of ``train/robustness.py``; ``random_corruption``
draws the chains used in training. ``UNSEEN_GRID`` holds conditions that neither is built from (an
overdriven microphone, mains hum, packet loss, a longer reverberation than any trained on) and one that
only the training chains combine (a noisy, echoing room), to see how far the training carries.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import soxr
from scipy import signal

from ser_models import features
from ser_models.audio import SAMPLE_RATE

NOISE_COLOURS = ("white", "pink", "brown")
BABBLE_TALKERS = 6
TRAIN_SNR_DB = (0.0, 30.0)
TRAIN_RT60_S = (0.2, 1.0)
TRAIN_GAIN_DB = (-40.0, 0.0)
TRAIN_TILT_DB_PER_OCTAVE = (-3.0, 3.0)
TRAIN_CODEC_KBPS = {"mp3": (16, 64), "opus": (8, 32)}
TELEPHONE_BAND_HZ = (300.0, 3400.0)


def speech_power(clip: np.ndarray) -> float:
    """Mean power of the clip's speech: the part inference keeps after trimming silence."""
    try:
        speech = features.trim_silence(clip, min_speech_seconds=0.0).audio
    except features.SilentAudioError:
        speech = clip
    return float(np.mean(np.square(speech, dtype=np.float64))) + 1e-12


def coloured_noise(length: int, colour: str, rng: np.random.Generator) -> np.ndarray:
    """Unit-power white, pink (1/f power) or brown (1/f²) noise."""
    noise = rng.standard_normal(length)
    if colour != "white":
        exponent = {"pink": 0.5, "brown": 1.0}[colour]  # of the amplitude spectrum
        spectrum = np.fft.rfft(noise)
        spectrum /= np.maximum(np.fft.rfftfreq(length, 1 / SAMPLE_RATE), 20.0) ** exponent
        noise = np.fft.irfft(spectrum, n=length)
    return noise / (np.sqrt(np.mean(noise**2)) + 1e-12)


def babble_noise(length: int, talkers: Sequence[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Unit-power sum of BABBLE_TALKERS clips drawn from ``talkers``, each looped to ``length``
    from a random start and brought to the same level."""
    picks = rng.choice(len(talkers), size=min(BABBLE_TALKERS, len(talkers)), replace=False)
    noise = np.zeros(length)
    for i in picks:
        talker = np.asarray(talkers[i], dtype=np.float64)
        talker = np.roll(np.resize(talker, max(length, talker.size)), -int(rng.integers(talker.size)))[:length]
        noise += talker / (np.sqrt(np.mean(talker**2)) + 1e-12)
    return noise / (np.sqrt(np.mean(noise**2)) + 1e-12)


def add_noise(clip: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``clip`` plus unit-power ``noise`` scaled so that the clip's speech is ``snr_db`` above it."""
    mixed = clip + np.sqrt(speech_power(clip) / 10 ** (snr_db / 10)) * noise[: clip.size]
    return _no_clipping(mixed)


def room_impulse_response(rt60: float, rng: np.random.Generator, direct_to_reverberant_db: float = 0.0) -> np.ndarray:
    """A synthetic room impulse response: a unit direct path, then Gaussian noise decaying by 60 dB
    over ``rt60`` seconds, starting 2–10 ms later, at the given direct-to-reverberant energy ratio."""
    length = int(rt60 * SAMPLE_RATE)
    delay = int(rng.uniform(0.002, 0.010) * SAMPLE_RATE)
    t = np.arange(length - delay) / SAMPLE_RATE
    tail = rng.standard_normal(t.size) * np.exp(-3 * np.log(10) * t / rt60)  # 10^(-3 t / rt60): -60 dB at rt60
    tail *= np.sqrt(10 ** (-direct_to_reverberant_db / 10) / np.sum(tail**2))
    response = np.zeros(length)
    response[0] = 1.0
    response[delay:] += tail
    return response


def reverberate(clip: np.ndarray, rt60: float, rng: np.random.Generator, drr_db: float | None = None) -> np.ndarray:
    """The clip as heard in a room: convolved with a synthetic response, kept at the clip's level."""
    drr_db = rng.uniform(-6.0, 6.0) if drr_db is None else drr_db
    wet = signal.fftconvolve(clip, room_impulse_response(rt60, rng, drr_db))[: clip.size]
    wet *= np.sqrt(speech_power(clip) / speech_power(wet))
    return _no_clipping(wet)


def telephone(clip: np.ndarray, law: str = "mu") -> np.ndarray:
    """A narrow-band telephone line: 300–3400 Hz, 8 kHz, 8-bit μ-law ("mu") or A-law ("a") companding."""
    narrow = soxr.resample(clip.astype(np.float64), SAMPLE_RATE, 8000)
    bandpass = signal.butter(4, TELEPHONE_BAND_HZ, btype="bandpass", fs=8000, output="sos")
    narrow = np.clip(signal.sosfilt(bandpass, narrow) / max(np.abs(narrow).max(), 1e-9) * 0.9, -1, 1)
    compressed = _mu_law(narrow) if law == "mu" else _a_law(narrow)
    quantised = np.round(compressed * 127) / 127
    expanded = _mu_law_inverse(quantised) if law == "mu" else _a_law_inverse(quantised)
    wide = soxr.resample(expanded, 8000, SAMPLE_RATE)[: clip.size]
    return _fit(wide * np.sqrt(speech_power(clip) / speech_power(wide)), clip.size)


def codec(clip: np.ndarray, name: str = "mp3", kbps: int = 32) -> np.ndarray:
    """The clip through a lossy encoder and back (FFmpeg's libmp3lame or libopus, via PyAV)."""
    import av

    encoder, container, rate = {"mp3": ("libmp3lame", "mp3", SAMPLE_RATE), "opus": ("libopus", "ogg", 48_000)}[name]
    source = clip if rate == SAMPLE_RATE else soxr.resample(clip, SAMPLE_RATE, rate)
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container) as output:
        stream = output.add_stream(encoder, rate=rate, layout="mono")
        stream.bit_rate = kbps * 1000
        frame = av.AudioFrame.from_ndarray(np.clip(source, -1, 1).astype(np.float32)[None], format="flt", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            output.mux(packet)
        for packet in stream.encode(None):
            output.mux(packet)
    buffer.seek(0)
    with av.open(buffer) as decoded:
        chunks = [f.to_ndarray().reshape(-1) for f in decoded.decode(audio=0)]
    decoded_audio = np.concatenate(chunks).astype(np.float64)
    if rate != SAMPLE_RATE:
        decoded_audio = soxr.resample(decoded_audio, rate, SAMPLE_RATE)
    # Encoders add a start-up delay: align on the cross-correlation peak within 100 ms.
    lag = _lag(clip, decoded_audio, int(0.1 * SAMPLE_RATE))
    return _fit(decoded_audio[lag:], clip.size)


def gain(clip: np.ndarray, db: float) -> np.ndarray:
    return _no_clipping(clip * 10 ** (db / 20))


def overdrive(clip: np.ndarray, drive_db: float) -> np.ndarray:
    """A microphone driven past full scale: the clip's peak raised ``drive_db`` above it, hard-clipped."""
    peak = float(np.abs(clip).max()) or 1.0
    return np.clip(clip / peak * 10 ** (drive_db / 20), -1.0, 1.0).astype(np.float32)


def mains_hum(length: int, rng: np.random.Generator, frequency: float = 50.0, harmonics: int = 5) -> np.ndarray:
    """Unit-power mains hum: the fundamental and its harmonics (amplitude 1/k), each at a random phase."""
    t = np.arange(length) / SAMPLE_RATE
    hum = sum(np.sin(2 * np.pi * k * frequency * t + rng.uniform(0, 2 * np.pi)) / k for k in range(1, harmonics + 1))
    return hum / (np.sqrt(np.mean(hum**2)) + 1e-12)


def drop_packets(clip: np.ndarray, loss: float, rng: np.random.Generator, packet_seconds: float = 0.02) -> np.ndarray:
    """A voice call losing packets: each 20 ms packet silenced with probability ``loss``."""
    packet = int(packet_seconds * SAMPLE_RATE)
    kept = rng.random(-(-clip.size // packet)) >= loss
    return (clip * np.repeat(kept, packet)[: clip.size]).astype(np.float32)


def colour(clip: np.ndarray, tilt_db_per_octave: float, low_cut_hz: float) -> np.ndarray:
    """Microphone colouration: a spectral tilt around 1 kHz and a second-order low cut."""
    spectrum = np.fft.rfft(clip.astype(np.float64))
    frequencies = np.maximum(np.fft.rfftfreq(clip.size, 1 / SAMPLE_RATE), 20.0)
    spectrum *= 10 ** (tilt_db_per_octave * np.log2(frequencies / 1000.0) / 20)
    tilted = np.fft.irfft(spectrum, n=clip.size)
    if low_cut_hz > 0:
        tilted = signal.sosfilt(signal.butter(2, low_cut_hz, btype="highpass", fs=SAMPLE_RATE, output="sos"), tilted)
    return _no_clipping(tilted * np.sqrt(speech_power(clip) / speech_power(tilted)))


@dataclass(frozen=True)
class Condition:
    """One cell of the robustness grid: a name and how to make it from a clip."""

    name: str
    apply: Callable[[np.ndarray, np.random.Generator, Sequence[np.ndarray]], np.ndarray]


def _noise_condition(kind: str, snr_db: float) -> Condition:
    def apply(clip: np.ndarray, rng: np.random.Generator, talkers: Sequence[np.ndarray]) -> np.ndarray:
        noise = babble_noise(clip.size, talkers, rng) if kind == "babble" else coloured_noise(clip.size, kind, rng)
        return add_noise(clip, noise, snr_db)

    return Condition(f"{kind} {snr_db:g} dB", apply)


EVALUATION_GRID: tuple[Condition, ...] = (
    Condition("clean", lambda clip, rng, talkers: clip),
    *(_noise_condition(kind, snr) for kind in ("white", "babble") for snr in (20, 10, 5)),
    Condition("telephone", lambda clip, rng, talkers: telephone(clip, "mu")),
    Condition("reverb", lambda clip, rng, talkers: reverberate(clip, 0.6, rng, drr_db=0.0)),
    Condition("mp3 32 kbit/s", lambda clip, rng, talkers: codec(clip, "mp3", 32)),
    Condition("quiet -30 dB", lambda clip, rng, talkers: gain(clip, -30.0)),
)
CONDITIONS = {condition.name: condition for condition in EVALUATION_GRID}


def _noisy_room(clip: np.ndarray, rng: np.random.Generator, talkers: Sequence[np.ndarray]) -> np.ndarray:
    return add_noise(reverberate(clip, 0.6, rng, drr_db=0.0), babble_noise(clip.size, talkers, rng), 10.0)


UNSEEN_GRID: tuple[Condition, ...] = (
    Condition("clipped +12 dB", lambda clip, rng, talkers: overdrive(clip, 12.0)),
    Condition("mains hum 10 dB", lambda clip, rng, talkers: add_noise(clip, mains_hum(clip.size, rng), 10.0)),
    Condition("packet loss 10%", lambda clip, rng, talkers: drop_packets(clip, 0.1, rng)),
    Condition("reverb RT60 1.5 s", lambda clip, rng, talkers: reverberate(clip, 1.5, rng, drr_db=0.0)),
    Condition("reverb + babble 10 dB", _noisy_room),
)


def random_corruption(
    clip: np.ndarray, rng: np.random.Generator, talkers: Sequence[np.ndarray], kinds: Sequence[str] = ()
) -> np.ndarray:
    """One training copy: a random chain of colouration, reverberation, noise, a telephone line or a
    codec, and a gain, each with its own probability (``kinds`` restricts the chain to those
    stages, for measuring each one's effect)."""
    stages = set(kinds) or {"colour", "reverb", "noise", "channel", "gain"}
    if "colour" in stages and rng.random() < 0.5:
        clip = colour(clip, rng.uniform(*TRAIN_TILT_DB_PER_OCTAVE), rng.choice([0.0, 100.0, 200.0, 300.0]))
    if "reverb" in stages and rng.random() < (0.4 if len(stages) > 1 else 1.0):
        clip = reverberate(clip, rng.uniform(*TRAIN_RT60_S), rng)
    if "noise" in stages and rng.random() < (0.8 if len(stages) > 1 else 1.0):
        kind = rng.choice([*NOISE_COLOURS, "babble", "babble"])
        noise = babble_noise(clip.size, talkers, rng) if kind == "babble" else coloured_noise(clip.size, kind, rng)
        clip = add_noise(clip, noise, rng.uniform(*TRAIN_SNR_DB))
    if "channel" in stages and rng.random() < (0.3 if len(stages) > 1 else 1.0):
        channel = rng.choice(["telephone", "mp3", "opus"])
        if channel == "telephone":
            clip = telephone(clip, rng.choice(["mu", "a"]))
        else:
            clip = codec(clip, channel, int(rng.integers(*TRAIN_CODEC_KBPS[channel])))
    if "gain" in stages:
        clip = gain(clip, rng.uniform(*TRAIN_GAIN_DB))
    return clip.astype(np.float32)


def _mu_law(x: np.ndarray, mu: float = 255.0) -> np.ndarray:
    return np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)


def _mu_law_inverse(y: np.ndarray, mu: float = 255.0) -> np.ndarray:
    return np.sign(y) * np.expm1(np.abs(y) * np.log1p(mu)) / mu


A_LAW = 87.6


def _a_law(x: np.ndarray) -> np.ndarray:
    ax = np.abs(x)
    small = ax < 1 / A_LAW
    y = np.where(small, A_LAW * ax, 1 + np.log(np.maximum(A_LAW * ax, 1e-12))) / (1 + np.log(A_LAW))
    return np.sign(x) * y


def _a_law_inverse(y: np.ndarray) -> np.ndarray:
    ay = np.abs(y) * (1 + np.log(A_LAW))
    x = np.where(ay < 1, ay / A_LAW, np.exp(ay - 1) / A_LAW)
    return np.sign(y) * x


def _lag(reference: np.ndarray, delayed: np.ndarray, max_lag: int) -> int:
    n = min(reference.size, delayed.size - max_lag)
    if n <= 0:
        return 0
    scores = [float(np.dot(reference[:n], delayed[lag : lag + n])) for lag in range(0, max_lag, 8)]
    coarse = 8 * int(np.argmax(scores))
    fine = range(max(0, coarse - 8), min(max_lag, coarse + 9))
    return max(fine, key=lambda lag: float(np.dot(reference[:n], delayed[lag : lag + n])))


def _fit(audio: np.ndarray, length: int) -> np.ndarray:
    return np.pad(audio, (0, max(0, length - audio.size)))[:length].astype(np.float32)


def _no_clipping(audio: np.ndarray) -> np.ndarray:
    """Scale down rather than clip: the mix may exceed full scale where the clip did not."""
    peak = float(np.abs(audio).max())
    return (audio / peak if peak > 1 else audio).astype(np.float32)
