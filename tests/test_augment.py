"""Waveform augmentations: seeded, finite, and doing what their names say."""

import numpy as np
import pytest

from train import augment


@pytest.fixture
def speech():
    t = np.arange(32_000) / 16_000
    return (0.3 * np.sin(2 * np.pi * 180 * t) * np.hanning(t.size)).astype(np.float32)


@pytest.mark.parametrize("name", list(augment.AUGMENTATIONS))
def test_every_augmentation_is_seeded_and_finite(speech, name):
    first = augment.augmented_copies([speech, speech], name)
    again = augment.augmented_copies([speech, speech], name)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert all(a.dtype == np.float32 and np.isfinite(a).all() and a.size > 0 for a in first)
    assert not np.array_equal(first[0], first[1]) or name == "all"  # each clip gets its own draw


def test_noise_lands_in_the_snr_range(speech):
    noisy = augment.add_noise(speech, np.random.default_rng(3))
    noise = noisy - speech
    snr = 10 * np.log10(np.mean(speech**2) / np.mean(noise**2))
    assert augment.NOISE_SNR_DB[0] - 0.01 <= snr <= augment.NOISE_SNR_DB[1] + 0.01


def test_gain_scales_and_clips(speech):
    louder = augment.gain(speech * 4, np.random.default_rng(0))
    assert np.abs(louder).max() <= 1.0
    ratio = np.abs(augment.gain(speech, np.random.default_rng(1))).max() / np.abs(speech).max()
    assert 10 ** (-augment.GAIN_DB / 20) - 1e-6 <= ratio <= 10 ** (augment.GAIN_DB / 20) + 1e-6


def test_stretch_changes_the_length_within_its_range(speech):
    stretched = augment.time_stretch(speech, np.random.default_rng(0))
    low, high = augment.STRETCH_RATE
    assert speech.size / high - 512 <= stretched.size <= speech.size / low + 512


def test_mask_silences_a_stretch_of_time(speech):
    masked = augment.mask(speech, np.random.default_rng(5))
    assert masked.size == speech.size
    quiet = np.abs(masked) < 1e-3
    assert quiet.sum() > np.sum(np.abs(speech) < 1e-3)  # a stretch that was sound is now silent
