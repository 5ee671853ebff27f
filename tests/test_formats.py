"""Every common audio format decodes like WAV does, and every file that is not usable audio gets a clear error.

The fixtures are made here, at test time, by encoding one clip with FFmpeg's encoders through PyAV: no binary
file is kept in the repository. The clip is a RAVDESS sentence where the corpus is present, else a synthetic
voiced signal.
"""

from __future__ import annotations

import inspect
import io
import sys
import tempfile
import tracemalloc
from dataclasses import dataclass, field

import numpy as np
import pytest
import soxr
from scipy import signal

from ser_models import audio
from ser_models.audio import (
    AudioError,
    TooLongError,
    TruncatedAudioError,
    UnreadableAudioError,
    load_audio,
)
from train.data import data_dir

av = pytest.importorskip("av")

MB = 2**20
RATE = 16_000
PRIVATE = "server-private-folder"  # where the server keeps uploads: no message may show it


@dataclass(frozen=True)
class Case:
    container: str  # FFmpeg's muxer
    codec: str  # FFmpeg's encoder
    rate: int
    channels: int = 1  # two: the right channel at half the left's level, so the mono mix is 0.75 × the clip
    bit_rate: int | None = None
    video: bool = False  # a small video track beside the audio, as a phone's or a camera's video has
    options: dict = field(default_factory=dict)


CASES = {
    "voice-memo.m4a": Case("ipod", "aac", 44_100, channels=2),  # a phone's voice memo
    "browser.webm": Case("webm", "libopus", 48_000, options={"live": "1"}),  # MediaRecorder: no length in the header
    "video.mp4": Case("mp4", "aac", 48_000, video=True),
    "video.mov": Case("mov", "alac", 48_000, channels=2, video=True),
    "audio.mkv": Case("matroska", "libmp3lame", 44_100, channels=2),
    "studio.aiff": Case("aiff", "pcm_s16be", 44_100),
    "phone.amr": Case("amr", "libopencore_amrnb", 8_000, bit_rate=12_200),
    "windows.wma": Case("asf", "wmav2", 44_100, channels=2, bit_rate=128_000),
}


@pytest.fixture(scope="module")
def voice() -> np.ndarray:
    """About 4 s of 16 kHz mono speech."""
    clip = data_dir() / "Actor_01" / "03-01-05-02-01-01-01.flac"
    if clip.is_file():
        return load_audio(clip)
    # A voiced signal: a gliding pitch with falling harmonics, shaped into syllables, and a little breath noise.
    t = np.arange(4 * RATE) / RATE
    pitch = 2 * np.pi * np.cumsum(150 + 40 * np.sin(2 * np.pi * 0.7 * t)) / RATE
    voiced = sum(np.sin(k * pitch) / k for k in range(1, 20))
    syllables = np.clip(np.sin(2 * np.pi * 2.5 * t), 0, None) ** 0.5
    noise = np.random.default_rng(0).standard_normal(t.size)
    clip = syllables * voiced + 0.02 * noise
    return (0.3 * clip / np.abs(clip).max()).astype(np.float32)


def encode(voice: np.ndarray, target, case: Case) -> None:
    """``voice`` through FFmpeg's encoder into ``target`` (a path or a file object)."""
    try:
        av.codec.Codec(case.codec, "w")
    except av.codec.codec.UnknownCodecError:
        pytest.skip(f"this FFmpeg build has no {case.codec} encoder")
    samples = soxr.resample(voice, RATE, case.rate).astype(np.float32)
    planes = np.stack([samples, 0.5 * samples]) if case.channels == 2 else samples[None]
    layout = "stereo" if case.channels == 2 else "mono"
    with av.open(target, "w", format=case.container, options=case.options) as output:
        if case.video:
            picture = output.add_stream("mpeg4", rate=10)
            picture.width, picture.height, picture.pix_fmt = 64, 48, "yuv420p"
        stream = output.add_stream(case.codec, rate=case.rate, layout=layout)
        if case.bit_rate:
            stream.bit_rate = case.bit_rate
        frame = av.AudioFrame.from_ndarray(planes, format="fltp", layout=layout)
        frame.sample_rate = case.rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            output.mux(packet)
        if case.video:
            _encode_video(output, picture, seconds=len(voice) / RATE)


def _encode_video(output, picture, seconds: float) -> None:
    for index in range(int(seconds * 10)):
        image = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 128, np.uint8), format="rgb24")
        image.pts = index
        for packet in picture.encode(image):
            output.mux(packet)
    for packet in picture.encode(None):
        output.mux(packet)


def encoded(voice: np.ndarray, case: Case) -> bytes:
    buffer = io.BytesIO()
    encode(voice, buffer, case)
    return buffer.getvalue()


def video_only(seconds: float = 2.0) -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as output:
        picture = output.add_stream("mpeg4", rate=10)
        picture.width, picture.height, picture.pix_fmt = 64, 48, "yuv420p"
        _encode_video(output, picture, seconds)
    return buffer.getvalue()


def similarity(decoded: np.ndarray, source: np.ndarray, max_lag: int = RATE // 10) -> float:
    """The peak normalised cross-correlation within ±0.1 s (encoders add a start-up delay)."""
    correlation = signal.correlate(decoded, source, mode="full", method="fft")
    centre = len(source) - 1
    window = correlation[centre - max_lag : centre + max_lag + 1]
    return float(window.max() / (np.linalg.norm(decoded) * np.linalg.norm(source)))


def envelope_similarity(decoded: np.ndarray, source: np.ndarray, frame: int = RATE // 50) -> float:
    """The correlation of the 20 ms loudness envelopes, at the best lag within ±0.1 s."""

    def envelope(samples: np.ndarray) -> np.ndarray:
        frames = samples[: samples.size // frame * frame].reshape(-1, frame)
        return np.sqrt(np.mean(np.square(frames, dtype=np.float64), axis=1))

    a, b = envelope(decoded), envelope(source)
    size = min(a.size, b.size) - 10
    return max(float(np.corrcoef(a[lag : lag + size], b[5 : 5 + size])[0, 1]) for lag in range(11))


def level_db(samples: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(np.square(samples, dtype=np.float64))))


@pytest.mark.parametrize("file_name", list(CASES))
def test_each_format_decodes_to_16k_mono_float32_like_the_source(voice, tmp_path, file_name):
    case = CASES[file_name]
    path = tmp_path / PRIVATE / file_name
    path.parent.mkdir()
    encode(voice, path, case)
    decoded = load_audio(path)
    assert decoded.dtype == np.float32 and decoded.ndim == 1
    assert abs(decoded.size - voice.size) / RATE <= 0.05  # the same length, within 50 ms
    # Channels are averaged, as for WAV: with the right channel at half level the mix is 0.75 × the clip.
    expected = voice * (0.75 if case.channels == 2 else 1.0)
    assert abs(level_db(decoded) - level_db(expected)) < 1.5
    if case.codec == "libopencore_amrnb":  # a speech codec 4 kHz wide keeps the sound, not the waveform
        assert envelope_similarity(decoded, expected) > 0.9
    else:
        assert similarity(decoded, expected) > 0.95


@pytest.mark.parametrize("file_name", ["voice-memo.m4a", "browser.webm", "phone.amr"])
def test_bytes_decode_like_the_file(voice, tmp_path, file_name):
    data = encoded(voice, CASES[file_name])
    (tmp_path / file_name).write_bytes(data)
    np.testing.assert_array_equal(load_audio(data, name=file_name), load_audio(tmp_path / file_name))


def test_decoding_leaves_no_temporary_files(voice, tmp_path, monkeypatch):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    for file_name in ["voice-memo.m4a", "browser.webm", "video.mp4"]:
        data = encoded(voice, CASES[file_name])
        (tmp_path / file_name).write_bytes(data)
        load_audio(tmp_path / file_name)
        load_audio(data)
    assert not any(scratch.iterdir())


def test_a_cut_off_m4a_is_refused_clearly(voice, tmp_path):
    """An M4A keeps its index at the end (unless written "fast start"): cut off, nothing can be decoded; with the
    index first, the index promises more than is there. Either way an UnreadableAudioError that says so."""
    folder = tmp_path / PRIVATE
    folder.mkdir()
    whole = encoded(voice, CASES["voice-memo.m4a"])
    (folder / "memo.m4a").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(UnreadableAudioError, match="'memo.m4a' could not be decoded as audio .*cut off"):
        load_audio(folder / "memo.m4a")

    # The index (moov) before the audio, as streaming services write it; this muxer needs a real file for that.
    encode(voice, folder / "fast.m4a", Case("ipod", "aac", 44_100, options={"movflags": "+faststart"}))
    data = (folder / "fast.m4a").read_bytes()
    (folder / "fast.m4a").write_bytes(data[: len(data) // 2])
    with pytest.raises(TruncatedAudioError, match=r"'fast.m4a' is truncated: its header promises 4\.\d\d s but only"):
        load_audio(folder / "fast.m4a")


@pytest.mark.parametrize("stated", [False, True], ids=["browser", "muxer"])
def test_a_cut_off_webm_is_decoded_up_to_the_cut(voice, stated):
    """A WebM from a browser (MediaRecorder) states no length, and where a muxer states one FFmpeg cannot tell it
    from an estimate: what is there is decoded, the first part of the recording, and analysed like any other."""
    whole = encoded(voice, Case("webm", "libopus", 48_000) if stated else CASES["browser.webm"])
    prefix = load_audio(whole[: len(whole) // 2], name="take.webm")
    assert prefix.dtype == np.float32 and 0.3 * voice.size < prefix.size < 0.7 * voice.size
    assert similarity(prefix, voice[: prefix.size]) > 0.95


def png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("file_name", "content", "expected"),
    [
        ("picture.m4a", png, "could not be decoded as audio \\(not a recognised audio or video format\\)"),
        ("notes.m4a", lambda: b"Meeting notes: buy milk.\n" * 20, "not a recognised audio or video format"),
        ("zeros.webm", lambda: bytes(4096), "not a recognised audio or video format"),
        ("silent-film.mp4", video_only, "could not be decoded as audio \\(it has no audio track, only video\\)"),
    ],
    ids=["png", "text", "zeros", "video-only"],
)
def test_files_that_are_not_audio_get_a_clear_error_naming_only_the_file(tmp_path, file_name, content, expected):
    path = tmp_path / PRIVATE / file_name
    path.parent.mkdir()
    path.write_bytes(content())
    with pytest.raises(UnreadableAudioError, match=expected) as caught:
        load_audio(path)
    message = str(caught.value)
    assert message.startswith(f"'{file_name}' ") and PRIVATE not in message and str(tmp_path) not in message
    assert caught.value.__context__ is None and caught.value.__cause__ is None


def test_a_playlist_naming_other_files_is_refused_not_followed(voice, tmp_path):
    """FFmpeg's concat and HLS demuxers would read the files a playlist names: any file on the server."""
    encode(voice, tmp_path / "secret.m4a", CASES["voice-memo.m4a"])
    (tmp_path / "list.ffconcat").write_text(f"ffconcat version 1.0\nfile '{tmp_path / 'secret.m4a'}'\n")
    (tmp_path / "list.m3u8").write_text(f"#EXTM3U\n#EXTINF:4,\n{tmp_path / 'secret.m4a'}\n#EXT-X-ENDLIST\n")
    for name in ["list.ffconcat", "list.m3u8"]:
        with pytest.raises(UnreadableAudioError, match="not a recognised audio or video format"):
            load_audio(tmp_path / name)


def test_every_message_names_the_given_name_never_the_server_path(voice, tmp_path):
    """The app passes the upload's original name; the server's temporary file name and folder stay hidden."""
    folder = tmp_path / PRIVATE
    folder.mkdir()
    whole = encoded(voice, CASES["voice-memo.m4a"])
    uploads = {
        "gradio-tmp-1.m4a": whole[: len(whole) // 3],  # cut off
        "gradio-tmp-2.m4a": png(),  # not audio
        "gradio-tmp-3.mp4": video_only(),  # no audio track
        "gradio-tmp-4.m4a": b"",  # empty
    }
    for server_name, data in uploads.items():
        (folder / server_name).write_bytes(data)
        with pytest.raises(AudioError) as caught:
            load_audio(folder / server_name, name="Voice memo 12.m4a")
        message = str(caught.value)
        assert "'Voice memo 12.m4a'" in message, message
        assert server_name not in message and PRIVATE not in message and str(tmp_path) not in message
        with pytest.raises(AudioError, match="'Voice memo 12.m4a'"):
            load_audio(data, name="Voice memo 12.m4a")


def test_the_shared_checks_name_the_file_too(tmp_path):
    """Rate, channels, length and values are judged by checks that do not know the file: its name is put first."""
    tone = 0.3 * np.sin(np.arange(16_000 * 3) / 5).astype(np.float32)
    with av.open(tmp_path / "hum.mkv", "w", format="matroska") as output:
        stream = output.add_stream("pcm_s16le", rate=16_000, layout="mono")
        frame = av.AudioFrame.from_ndarray(tone[None], format="fltp", layout="mono")
        frame.sample_rate = 16_000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            output.mux(packet)
    with pytest.raises(TooLongError, match=r"^'hum.mkv': the recording is over 1 s long; the limit is 1 s"):
        load_audio(tmp_path / "hum.mkv", max_seconds=1)


def test_without_pyav_the_message_says_how_to_read_more_formats(voice, tmp_path, monkeypatch):
    (tmp_path / "memo.m4a").write_bytes(encoded(voice, CASES["voice-memo.m4a"]))
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` now raises ImportError
    with pytest.raises(UnreadableAudioError, match="'memo.m4a' could not be decoded as audio .*`pip install av`"):
        load_audio(tmp_path / "memo.m4a")


def pcm(target, container: str, seconds: float, rate: int = 8_000, options: dict | None = None) -> None:
    """Seconds of a quiet tone as 16-bit PCM in a container libsndfile cannot read, in 1 s packets."""
    block = (0.1 * np.sin(np.arange(rate) / 3)).astype(np.float32)[None]
    with av.open(target, "w", format=container, options=options or {}) as output:
        stream = output.add_stream("pcm_s16le", rate=rate, layout="mono")
        for second in range(int(seconds)):
            frame = av.AudioFrame.from_ndarray(block, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = rate, second * rate
            for packet in stream.encode(frame):
                output.mux(packet)
        for packet in stream.encode(None):
            output.mux(packet)


def test_a_long_file_is_refused_from_its_header_without_decoding(tmp_path, monkeypatch):
    pcm(tmp_path / "ten-minutes.mov", "mov", 600)

    def no_decoding(*args):
        raise AssertionError("samples were decoded")

    monkeypatch.setattr(audio, "_frame_mono", no_decoding)
    with pytest.raises(TooLongError, match=r"^'ten-minutes.mov': the recording is 600\.0 s long; the limit is 60 s"):
        load_audio(tmp_path / "ten-minutes.mov")


def test_without_a_length_in_the_header_decoding_stops_at_the_limit(tmp_path):
    pcm(tmp_path / "endless.mkv", "matroska", 600, options={"live": "1"})  # a stream: no length stated
    with av.open(tmp_path / "endless.mkv") as container:
        assert container.duration / av.time_base > 599  # FFmpeg's estimate from the bitrate: not trusted
    tracemalloc.start()
    try:
        with pytest.raises(TooLongError, match="over 60 s long; the limit is 60 s"):
            load_audio(tmp_path / "endless.mkv")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    all_of_it = 600 * 8_000 * 4
    assert peak < 60 * 8_000 * 4 + 2 * MB < all_of_it / 4  # the mono samples up to the limit, not the whole file


@pytest.mark.parametrize("file_name", ["voice-memo.m4a", "browser.webm", "video.mp4", "phone.amr", "windows.wma"])
def test_damaged_bytes_give_audio_or_an_audio_error_never_a_crash(voice, file_name):
    whole = encoded(voice, CASES[file_name])
    rng = np.random.default_rng(1)
    for where in [0.02, 0.3, 0.6, 0.95]:
        damaged = bytearray(whole)
        at = int(where * len(whole))
        damaged[at : at + 64] = rng.integers(0, 256, 64, dtype=np.uint8).tobytes()
        try:
            decoded = load_audio(bytes(damaged), name=file_name)
        except AudioError as error:
            assert str(error).startswith(f"'{file_name}'")
        else:
            assert decoded.dtype == np.float32 and 0 < decoded.size < voice.size + RATE


def test_load_audio_keeps_its_signature():
    """Positional path and limit as before; ``name`` only by keyword."""
    parameters = inspect.signature(load_audio).parameters
    assert list(parameters)[:2] == ["source", "max_seconds"]
    assert parameters["name"].kind is inspect.Parameter.KEYWORD_ONLY and parameters["name"].default is None
