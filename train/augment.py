"""Waveform augmentations for training, seeded: each takes trimmed 16 kHz speech and a numpy Generator.

torch-audiomentations needs torchaudio, whose wheels do not load beside the pinned CPU torch, so
these are librosa/numpy-native. The CNN's own augmentations (SpecAugment masks and noise mixed in
the mel domain) live in train/trainer.py, where they act on cached log-mels.
"""

from __future__ import annotations

from collections.abc import Callable

import librosa
import numpy as np

from ser_models.audio import SAMPLE_RATE
from train import corrupt

NOISE_SNR_DB = (10.0, 30.0)
PITCH_SEMITONES = 2.0  # uniform in ±this
STRETCH_RATE = (0.85, 1.15)
GAIN_DB = 6.0  # uniform in ±this
MASK_SECONDS = 0.3  # longest stretch of time zeroed
MASK_BAND = (100.0, 6000.0, 0.15)  # a band between these Hz, up to this share of that range (in mel), removed

Augmentation = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def add_noise(speech: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """White or pink (1/f) noise at a random SNR in NOISE_SNR_DB (train/corrupt.py mixes it)."""
    noise = corrupt.coloured_noise(speech.size, "white" if rng.random() < 0.5 else "pink", rng)
    return corrupt.add_noise(speech, noise, rng.uniform(*NOISE_SNR_DB))


def pitch_shift(speech: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    steps = rng.uniform(-PITCH_SEMITONES, PITCH_SEMITONES)
    return librosa.effects.pitch_shift(speech, sr=SAMPLE_RATE, n_steps=steps).astype(np.float32)


def time_stretch(speech: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return librosa.effects.time_stretch(speech, rate=rng.uniform(*STRETCH_RATE)).astype(np.float32)


def gain(speech: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Louder or quieter by up to GAIN_DB, clipped to [-1, 1] as a real recording would be."""
    return np.clip(speech * 10 ** (rng.uniform(-GAIN_DB, GAIN_DB) / 20), -1.0, 1.0).astype(np.float32)


def mask(speech: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """SpecAugment's two masks, made on the waveform (the Whisper encoder computes its own log-mel):
    a stretch of up to MASK_SECONDS set to silence, and a frequency band removed."""
    speech = speech.copy()
    width = int(rng.uniform(0, MASK_SECONDS) * SAMPLE_RATE)
    start = int(rng.integers(0, max(1, speech.size - width)))
    speech[start : start + width] = 0.0
    low_hz, high_hz, share = MASK_BAND
    low_mel, high_mel = librosa.hz_to_mel(low_hz), librosa.hz_to_mel(high_hz)
    band_start = rng.uniform(low_mel, high_mel)
    band = librosa.mel_to_hz([band_start, band_start + rng.uniform(0, share) * (high_mel - low_mel)])
    spectrum = np.fft.rfft(speech)
    frequencies = np.fft.rfftfreq(speech.size, 1 / SAMPLE_RATE)
    spectrum[(frequencies >= band[0]) & (frequencies <= band[1])] = 0
    return np.fft.irfft(spectrum, n=speech.size).astype(np.float32)


def chain(speech: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each of the augmentations above with probability 1/2, in a fixed order."""
    for augmentation in (pitch_shift, time_stretch, gain, add_noise):
        if rng.random() < 0.5:
            speech = augmentation(speech, rng)
    return speech


AUGMENTATIONS: dict[str, Augmentation] = {
    "noise": add_noise,
    "pitch": pitch_shift,
    "stretch": time_stretch,
    "gain": gain,
    "mask": mask,
    "all": chain,
}


def augmented_copies(speech: list[np.ndarray], name: str, seed: int = 42) -> list[np.ndarray]:
    """One augmented copy of every clip; clip i always gets the same copy for a given seed."""
    augmentation = AUGMENTATIONS[name]
    return [augmentation(clip, np.random.default_rng([seed, i])) for i, clip in enumerate(speech)]
