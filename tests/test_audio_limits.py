"""Decoding is bounded by the limits, not by what a file's header claims or how well it compresses."""

from __future__ import annotations

import io
import struct
import tracemalloc

import numpy as np
import pytest
import soundfile as sf

from ser_models import audio
from ser_models.audio import (
    AudioError,
    EmptyAudioError,
    InvalidSamplesError,
    TooLongError,
    TruncatedAudioError,
    UnreadableAudioError,
    UnsupportedAudioError,
    load_audio,
    to_mono_16k,
)

MB = 2**20
RATE, CHANNELS = 48_000, 8


def near_silence(seconds: float, rate: int = RATE, channels: int = CHANNELS) -> np.ndarray:
    """Digital near-silence: zeros and one least significant bit, which FLAC packs into almost nothing."""
    block = np.zeros((int(seconds * rate), channels), np.int16)
    block[0] = 1
    return block


def write_flac(path, seconds: float, channels: int = CHANNELS) -> None:
    with sf.SoundFile(path, "w", RATE, channels, format="FLAC", subtype="PCM_16") as f:
        block = near_silence(10, channels=channels)
        for _ in range(int(seconds // 10)):
            f.write(block)


def without_length(flac: bytes) -> bytes:
    """The same FLAC with STREAMINFO's total_samples set to 0, as a streaming encoder leaves it."""
    assert flac[:4] == b"fLaC"
    patched = bytearray(flac)
    patched[21] &= 0xF0  # total_samples: the low 4 bits of byte 21 and bytes 22-25
    patched[22:26] = bytes(4)
    return bytes(patched)


@pytest.fixture(scope="module")
def ten_minutes(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("flac") / "ten-minutes.flac"
    write_flac(path, 600)
    return path.read_bytes()


def peak_bytes(function, *args, **kwargs) -> tuple[object, int]:
    """What ``function`` returned (or raised) and the most memory it held at once."""
    tracemalloc.start()
    try:
        try:
            result = function(*args, **kwargs)
        except AudioError as error:
            result = error
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_long_many_channel_file_is_refused_from_its_header(ten_minutes):
    assert len(ten_minutes) < 2 * MB  # ten minutes of 8 × 48 kHz: 920 MB as float32
    with sf.SoundFile(io.BytesIO(ten_minutes)) as f:
        assert (f.frames, f.channels, f.samplerate) == (600 * RATE, CHANNELS, RATE)
    error, peak = peak_bytes(load_audio, ten_minutes, max_seconds=60)
    assert isinstance(error, TooLongError) and "600.0 s long; the limit is 60 s" in str(error)
    assert peak < 1 * MB


def test_without_a_length_in_the_header_decoding_stops_at_the_limit(ten_minutes):
    streamed = without_length(ten_minutes)
    with sf.SoundFile(io.BytesIO(streamed)) as f:
        assert f.frames == 0 or f.frames / f.samplerate > 10**9  # libsndfile's "unknown"
    error, peak = peak_bytes(load_audio, streamed, max_seconds=60)
    assert isinstance(error, TooLongError) and "over 60 s long; the limit is 60 s" in str(error)
    mono_at_limit = 60 * RATE * 4
    assert peak < mono_at_limit + 4 * MB  # the mono samples up to the limit and one block; 8 channels would be 8×


def test_a_many_channel_file_within_the_limit_is_mixed_down_block_by_block(tmp_path):
    path = tmp_path / "forty.flac"
    write_flac(path, 40)
    samples, peak = peak_bytes(load_audio, path)
    assert isinstance(samples, np.ndarray) and samples.shape == (40 * 16_000,)
    mono = 40 * RATE * 4
    assert peak < 1.5 * mono + 4 * MB  # the mono samples, the 16 kHz result and a block; all channels: 8 × mono


@pytest.mark.parametrize(
    ("declared", "subtype"), [(2**31, "PCM_U8"), (0xFFFFFFFF, "PCM_16"), (0x7FFFFFFF, "FLOAT")], ids=str
)
def test_a_wav_header_claiming_billions_of_frames_allocates_nothing_big(tmp_path, declared, subtype):
    path = tmp_path / "claims.wav"
    sf.write(path, 0.3 * np.sin(np.arange(16_000) / 7), 16_000, subtype=subtype)
    data = bytearray(path.read_bytes())
    at = data.find(b"data")
    data[at + 4 : at + 8] = struct.pack("<I", declared)
    data[4:8] = struct.pack("<I", min(declared + at, 0xFFFFFFFF))  # the RIFF size agrees with the claim
    path.write_bytes(bytes(data))
    result, peak = peak_bytes(load_audio, path)
    assert peak < 4 * MB
    if isinstance(result, AudioError):
        assert isinstance(result, TruncatedAudioError) and "'claims.wav' is truncated" in str(result)
    else:
        assert result.shape == (16_000,)


@pytest.mark.parametrize(("rate", "channels"), [(655_360, 1), (4_000, 8), (16_000, 40)])
def test_unsupported_rate_or_channels_is_refused_before_decoding(tmp_path, monkeypatch, rate, channels):
    path = tmp_path / "odd.wav"
    sf.write(path, np.zeros((1000, channels), np.int16), rate)

    def no_decoding(*args, **kwargs):
        raise AssertionError("samples were decoded")

    monkeypatch.setattr(sf.SoundFile, "read", no_decoding)
    with pytest.raises(UnsupportedAudioError, match=str(channels) if channels > 32 else f"{rate}"):
        load_audio(path)


def test_an_empty_file_is_empty_not_unreadable(tmp_path):
    path = tmp_path / "nothing.wav"
    path.touch()
    with pytest.raises(EmptyAudioError, match="'nothing.wav' is empty"):
        load_audio(path)
    with pytest.raises(EmptyAudioError):
        load_audio(b"")


@pytest.mark.parametrize("rate", [16000.0, np.float64(44100.0), np.float32(8000)])
def test_an_integral_float_sample_rate_is_accepted(rate):
    samples = 0.1 * np.sin(np.arange(int(rate)) / 5).astype(np.float32)
    assert to_mono_16k(samples, rate).shape == (16_000,)


@pytest.mark.parametrize("rate", [16000.5, float("nan"), True, "16000"])
def test_other_sample_rates_are_refused(rate):
    with pytest.raises(UnsupportedAudioError, match="sample rate"):
        to_mono_16k(np.zeros(16_000, np.float32), rate)


def test_messages_name_the_file_not_the_server_folder(tmp_path):
    folder = tmp_path / "server-private-folder"
    folder.mkdir()
    (folder / "notes.wav").write_text("this is not audio")
    whole = io.BytesIO()
    sf.write(whole, 0.3 * np.sin(np.arange(48_000) / 7), 16_000, format="WAV")
    (folder / "cut.wav").write_bytes(whole.getvalue()[:40_000])
    for name, error in [("missing.wav", UnreadableAudioError), ("notes.wav", UnreadableAudioError), ("cut.wav", None)]:
        with pytest.raises(error or TruncatedAudioError) as caught:
            load_audio(folder / name)
        assert f"'{name}'" in str(caught.value) and "server-private-folder" not in str(caught.value)


def test_errors_keep_no_audio_alive(tmp_path):
    nan = np.zeros(48_000 * 50, np.float32)  # 9 MB as decoded
    nan[::1000] = np.nan
    sf.write(tmp_path / "nan.wav", nan, 48_000, subtype="FLOAT")
    whole = (tmp_path / "nan.wav").read_bytes()
    sf.write(tmp_path / "cut.wav", np.abs(np.nan_to_num(nan)) + 0.1, 48_000, subtype="FLOAT")
    (tmp_path / "cut.wav").write_bytes((tmp_path / "cut.wav").read_bytes()[: len(whole) * 3 // 4])
    (tmp_path / "text.wav").write_text("not audio")
    del nan, whole
    for name, expected in [("nan.wav", InvalidSamplesError), ("cut.wav", TruncatedAudioError), ("text.wav", None)]:
        tracemalloc.start()
        try:
            try:
                load_audio(tmp_path / name)
            except AudioError as error:
                kept = error  # as a log or a list of failures would
            held = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        assert isinstance(kept, expected or UnreadableAudioError)
        assert kept.__context__ is None and kept.__cause__ is None
        assert held < 1 * MB, f"{name}: the error keeps {held / MB:.1f} MB alive"


def test_running_out_of_memory_is_a_clear_refusal(monkeypatch, angry_clip):
    def exhausted(*args):
        raise MemoryError

    monkeypatch.setattr(audio, "_decode", exhausted)
    with pytest.raises(TooLongError, match="too large for the memory") as caught:
        load_audio(angry_clip)
    assert caught.value.__context__ is None
    monkeypatch.setattr(audio.soxr, "resample", lambda *args, **kwargs: exhausted())
    with pytest.raises(TooLongError, match="too large for the memory"):
        to_mono_16k(np.zeros(48_000, np.float32), 48_000)
