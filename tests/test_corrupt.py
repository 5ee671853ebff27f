"""Corruptions for multi-condition training and the robustness grid: seeded, and doing what they say."""

import numpy as np
import pytest
from scipy import signal

from ser_models import load_audio
from ser_models.audio import SAMPLE_RATE
from train import corrupt


@pytest.fixture(scope="module")
def clip(angry_clip) -> np.ndarray:
    return load_audio(angry_clip)


@pytest.fixture(scope="module")
def talkers(sample_clips) -> list[np.ndarray]:
    return [load_audio(path) for path in sample_clips]


def band_energy_share(audio: np.ndarray, low: float, high: float) -> float:
    frequencies, power = signal.welch(audio, fs=SAMPLE_RATE, nperseg=1024)
    return float(power[(frequencies >= low) & (frequencies <= high)].sum() / power.sum())


@pytest.mark.parametrize("condition", corrupt.EVALUATION_GRID + corrupt.UNSEEN_GRID, ids=lambda c: c.name)
def test_every_grid_condition_is_seeded_and_keeps_the_clip_shape(clip, talkers, condition):
    first = condition.apply(clip, np.random.default_rng([1, 2]), talkers)
    again = condition.apply(clip, np.random.default_rng([1, 2]), talkers)
    assert np.array_equal(first, again)
    assert first.shape == clip.shape and first.dtype == np.float32
    assert np.isfinite(first).all() and np.abs(first).max() <= 1.0
    if condition.name != "clean":
        assert not np.array_equal(first, clip)


@pytest.mark.parametrize("snr_db", [20, 10, 5, 0])
@pytest.mark.parametrize("colour", [*corrupt.NOISE_COLOURS, "babble"])
def test_noise_is_mixed_at_the_asked_snr(clip, talkers, snr_db, colour):
    clip = clip * np.float32(0.1)  # headroom: a mix over full scale is scaled down as a whole, not clipped
    rng = np.random.default_rng(0)
    if colour == "babble":
        noise = corrupt.babble_noise(clip.size, talkers, rng)
    else:
        noise = corrupt.coloured_noise(clip.size, colour, rng)
    mixed = corrupt.add_noise(clip, noise, snr_db)
    measured = 10 * np.log10(corrupt.speech_power(clip) / np.mean(np.square(mixed - clip, dtype=np.float64)))
    assert measured == pytest.approx(snr_db, abs=0.05)


def test_noise_colours_have_their_slopes():
    rng = np.random.default_rng(0)
    low_share = {
        c: band_energy_share(corrupt.coloured_noise(SAMPLE_RATE * 4, c, rng), 0, 500) for c in corrupt.NOISE_COLOURS
    }
    assert low_share["white"] == pytest.approx(500 / 8000, abs=0.02)
    assert low_share["white"] < low_share["pink"] < low_share["brown"]


def test_telephone_keeps_only_the_narrow_band(clip):
    phone = corrupt.telephone(clip, "mu")
    assert band_energy_share(phone, 4000, 8000) < 1e-3 < band_energy_share(clip, 4000, 8000)
    assert band_energy_share(phone, 0, 200) < 0.01
    assert not np.array_equal(corrupt.telephone(clip, "a"), phone)


def test_reverb_lengthens_the_decay(clip):
    response = corrupt.room_impulse_response(0.6, np.random.default_rng(0))
    energy = np.cumsum(response[::-1] ** 2)[::-1]  # Schroeder's backward integral
    decay_db = 10 * np.log10(energy / energy[0])
    t30 = np.argmax(decay_db < -35) / SAMPLE_RATE - np.argmax(decay_db < -5) / SAMPLE_RATE
    assert 2 * t30 == pytest.approx(0.6, rel=0.15)  # RT60 from the -5..-35 dB slope
    wet = corrupt.reverberate(clip, 0.6, np.random.default_rng(0))
    assert corrupt.speech_power(wet) == pytest.approx(corrupt.speech_power(clip), rel=0.05)


@pytest.mark.parametrize(("codec", "kbps"), [("mp3", 32), ("opus", 16)])
def test_codecs_are_lossy_but_aligned(clip, codec, kbps):
    decoded = corrupt.codec(clip, codec, kbps)
    error_db = 10 * np.log10(np.mean((decoded - clip) ** 2) / np.mean(clip**2))
    assert -40 < error_db < -3  # changed by the encoder, yet the same sound in the same place


def test_gain_and_colour(clip):
    assert np.allclose(corrupt.gain(clip, -30.0), clip * 10 ** (-1.5), atol=1e-7)
    darker = corrupt.colour(clip, -3.0, 200.0)
    assert band_energy_share(darker, 4000, 8000) < band_energy_share(clip, 4000, 8000)
    assert band_energy_share(darker, 0, 100) < band_energy_share(clip, 0, 100)


def test_training_chains_are_seeded_and_varied(clip, talkers):
    copies = [corrupt.random_corruption(clip, np.random.default_rng([7, i]), talkers) for i in range(6)]
    again = corrupt.random_corruption(clip, np.random.default_rng([7, 0]), talkers)
    assert np.array_equal(copies[0], again)
    assert len({c.tobytes() for c in copies}) == 6
    only_gain = corrupt.random_corruption(clip, np.random.default_rng(3), talkers, kinds=("gain",))
    ratio = only_gain[clip != 0] / clip[clip != 0]
    assert np.allclose(ratio, ratio[0], rtol=1e-4) and 10 ** (-2) <= ratio[0] <= 1.0


def test_overdrive_clips_at_full_scale(clip):
    driven = corrupt.overdrive(clip, 12.0)
    assert np.abs(driven).max() == pytest.approx(1.0)
    # 12 dB over the peak: every sample that was above a quarter of the peak is now flat at full scale.
    loud = np.abs(clip) >= np.abs(clip).max() / 10 ** (12 / 20)
    assert np.all(np.abs(driven[loud]) == 1.0) and 0 < loud.mean() < 0.5


def test_mains_hum_sits_on_50_hz_and_its_harmonics():
    hum = corrupt.mains_hum(SAMPLE_RATE * 2, np.random.default_rng(0))
    assert np.mean(hum**2) == pytest.approx(1.0)
    power = np.abs(np.fft.rfft(hum)) ** 2  # 0.5 Hz bins over 2 s: 50 Hz is bin 100
    harmonics = [100 * k for k in range(1, 6)]
    assert power[harmonics].sum() / power.sum() > 0.999
    assert np.argmax(power) == 100


def test_packet_loss_silences_whole_20_ms_packets(clip):
    lossy = corrupt.drop_packets(clip, 0.1, np.random.default_rng(3))
    assert np.array_equal(lossy, corrupt.drop_packets(clip, 0.1, np.random.default_rng(3)))
    packet = int(0.02 * SAMPLE_RATE)
    whole = clip.size // packet * packet
    before, after = clip[:whole].reshape(-1, packet), lossy[:whole].reshape(-1, packet)
    silenced = np.all(after == 0, axis=1) & np.any(before != 0, axis=1)
    assert 0.04 < silenced.mean() < 0.2
    assert np.array_equal(after[~silenced], before[~silenced])  # a packet is lost whole or kept whole
