"""Reliability suite: hostile files, hostile model folders, a flood against the app, a flood of uploads, and
what a long recording costs. Bounded (fixed counts and durations) and loopback only; each part prints its
figures and writes reports/reliability_<part>.json with the command that made them.

    python bench/reliability.py files            # hostile files through the CLI: a result or one clear line
    python bench/reliability.py models           # hostile model folders: a ModelLoadError, never a crash
    python bench/reliability.py flood            # one client floods /live and /timeline; another's /predict
    python bench/reliability.py uploads          # a flood of 19 MB uploads: the upload folder stays bounded
    python bench/reliability.py timeline-cost    # CPU seconds per minute of audio, default model
    python bench/reliability.py request-cost     # server and client CPU per /predict

Bars: a hostile file gives a result or a clear error (no traceback) with peak memory <= 600 MB; a hostile model
folder a ModelLoadError with peak memory <= 600 MB; during the flood every /predict of a 4 s clip by a fresh
client succeeds within 5 s; the upload folder never holds more than its bounds.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import platform
import resource
import secrets
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from app_latency import loopback_client  # noqa: E402

from ser_models.audio import SAMPLE_RATE, load_audio  # noqa: E402
from ser_models.registry import DEFAULT_MODEL, WEIGHTS_DIR  # noqa: E402
from train.reports import script_command  # noqa: E402

MB = 2**20
MAX_PEAK_MB = 600
CLIP = "03-01-05-02-01-01-01.flac"  # actor 01, angry: the clip every part uses


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the start"


def write_report(name: str, report: dict) -> Path:
    path = ROOT / "reports" / f"reliability_{name}.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return path


def run_measured(command: list[str], timeout: float = 300, cwd: Path = ROOT) -> tuple[int, str, str, float]:
    """Run ``command``; its exit status, stdout, stderr and peak resident memory in MB (of that process alone)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(command, cwd=cwd, stdout=out, stderr=err, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                process.kill()
                pid, status, usage = os.wait4(process.pid, 0)
                break
            time.sleep(0.05)
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return (
            process.returncode,
            out.read().decode(errors="replace"),
            err.read().decode(errors="replace"),
            (usage.ru_maxrss / 1024),
        )


def clip_path() -> Path:
    from train.data import data_dir

    return data_dir() / "Actor_01" / CLIP


def speech(seconds: float = 4.0) -> np.ndarray:
    """The angry clip, cut or padded to ``seconds``."""
    audio = load_audio(clip_path())
    size = int(seconds * SAMPLE_RATE)
    return np.pad(audio, (0, max(0, size - audio.size)))[:size]


def wav_bytes(samples: np.ndarray, rate: int = SAMPLE_RATE) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------------------------
# Hostile files


def encode_av(samples: np.ndarray, rate: int, container: str, codec: str, channels: int = 1, **options) -> bytes:
    import av

    buffer = io.BytesIO()
    layout = {1: "mono", 2: "stereo", 8: "7.1"}[channels]
    with av.open(buffer, "w", format=container, options=options) as output:
        stream = output.add_stream(codec, rate=rate, layout=layout)
        planes = np.repeat(samples[None].astype(np.float32), channels, axis=0)
        step = 1 << 16
        for start in range(0, planes.shape[1], step):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(planes[:, start : start + step]), format="fltp", layout=layout
            )
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                output.mux(packet)
        for packet in stream.encode(None):
            output.mux(packet)
    return buffer.getvalue()


def hour_of_8_channels(path: Path, seconds: int = 3600, rate: int = 48_000, channels: int = 8) -> None:
    """Digital silence, 8 channels at 48 kHz, in FLAC frames of 65535 samples: an hour (5.5 GB as float32)
    in about 100 kB."""
    import av

    block = np.zeros((1, rate * 10 * channels), np.int16)  # interleaved
    with av.open(str(path), "w", format="flac") as output:
        stream = output.add_stream("flac", rate=rate, layout="7.1", options={"frame_size": "65535"})
        for index in range(seconds // 10):
            frame = av.AudioFrame.from_ndarray(block, format="s16", layout="7.1")
            frame.sample_rate, frame.pts = rate, index * rate * 10
            for packet in stream.encode(frame):
                output.mux(packet)
        for packet in stream.encode(None):
            output.mux(packet)


def without_flac_length(data: bytes) -> bytes:
    """The same FLAC with STREAMINFO's total_samples set to 0 ("unknown"), as a streaming encoder leaves it."""
    patched = bytearray(data)
    patched[21] &= 0xF0
    patched[22:26] = bytes(4)
    return bytes(patched)


def wav_claiming(frames: int) -> bytes:
    """A 1 s WAV whose header claims ``frames`` frames (its data chunk and RIFF sizes patched)."""
    data = bytearray(wav_bytes(0.3 * np.sin(np.arange(SAMPLE_RATE) / 7)))
    at = data.find(b"data")
    data[at + 4 : at + 8] = struct.pack("<I", min(frames * 2, 0xFFFFFFFF))
    data[4:8] = struct.pack("<I", 0xFFFFFFFF)
    return bytes(data)


def corrupt(data: bytes, seed: int) -> bytes:
    """Random bytes written over the middle half of ``data`` (the header kept)."""
    rng = np.random.default_rng(seed)
    damaged = bytearray(data)
    start, end = len(data) // 4, 3 * len(data) // 4
    damaged[start:end] = rng.integers(0, 256, end - start, dtype=np.uint8).tobytes()
    return bytes(damaged)


def png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def hostile_files(folder: Path) -> dict[str, str]:
    """Write the grid; returns each file's name and what it is."""
    voice = speech(4.0)
    files: dict[str, tuple[bytes | None, str]] = {}
    hour_of_8_channels(folder / "hour-8ch-48k.flac")
    files["hour-8ch-48k.flac"] = (None, "an hour of 8-channel 48 kHz FLAC (header states the length)")
    files["hour-8ch-48k-streamed.flac"] = (
        without_flac_length((folder / "hour-8ch-48k.flac").read_bytes()),
        "the same with no length in the header (decoding must stop at the limit)",
    )
    files["claims-2e31-frames.wav"] = (wav_claiming(2**31), "a 1 s WAV whose header claims 2**31 frames")
    voice48 = np.repeat(voice, 3)  # 48 kHz, crudely: enough for a decoder
    formats = {
        "wav": (wav_bytes(voice), "WAV"),
        "flac": (None, "FLAC"),
        "mp3": (encode_av(voice, SAMPLE_RATE, "mp3", "libmp3lame"), "MP3"),
        "ogg": (None, "Ogg Vorbis"),
        "opus": (encode_av(voice48, 48_000, "ogg", "libopus"), "Ogg Opus"),
        "m4a": (encode_av(voice, SAMPLE_RATE, "ipod", "aac"), "M4A (AAC)"),
        "webm": (encode_av(voice48, 48_000, "webm", "libopus", live="1"), "WebM (Opus), as a browser records"),
    }
    for suffix, kind, subtype in (("flac", "FLAC", "PCM_16"), ("ogg", "OGG", "VORBIS")):
        buffer = io.BytesIO()
        sf.write(buffer, voice, SAMPLE_RATE, format=kind, subtype=subtype)  # libsndfile's encoders
        formats[suffix] = (buffer.getvalue(), formats[suffix][1])
    for suffix, (data, label) in formats.items():
        files[f"good.{suffix}"] = (data, f"a whole 4 s {label} (control: must give a result)")
        files[f"truncated.{suffix}"] = (data[: len(data) // 2], f"{label} cut off at half its bytes")
        files[f"header-only.{suffix}"] = (data[:64], f"{label}: its first 64 bytes")
        files[f"corrupt.{suffix}"] = (corrupt(data, len(suffix)), f"{label} with random bytes over its middle half")
    files["photo.wav"] = (png(), "a PNG image named .wav")
    files["notes.mp3"] = (b"These are meeting notes, not audio.\n" * 50, "text named .mp3")
    files["empty.wav"] = (b"", "an empty file")
    files["page.ogg"] = (b"<!doctype html><html><body>not audio</body></html>", "HTML named .ogg")
    files["archive.flac"] = (b"PK\x03\x04" + bytes(2000), "a ZIP header named .flac")
    files["document.m4a"] = (b"%PDF-1.7\n" + bytes(2000), "a PDF header named .m4a")
    files["program.wav"] = (Path(sys.executable).read_bytes()[:200_000], "the first 200 kB of an executable")
    files["random.webm"] = (np.random.default_rng(0).bytes(500_000), "500 kB of random bytes named .webm")
    described = {}
    for name, (data, label) in files.items():
        if data is not None:
            (folder / name).write_bytes(data)
        described[name] = label
    return described


class Grid:
    """The cases of a hostile grid as they run: every result kept, each failure with its stderr."""

    def __init__(self) -> None:
        self.results: list[dict] = []
        self.failures: list[dict] = []

    def record(self, result: dict, ok: bool, stderr: str, line: str) -> None:
        result["ok"] = ok
        self.results.append(result)
        if not ok:
            self.failures.append({**result, "stderr": stderr[-2000:]})
        print(line, flush=True)

    def report(self, bar: str, **counts) -> dict:
        return {
            "bar": bar,
            **counts,
            "results": self.results,
            "peak_mb_max": max(r["peak_mb"] for r in self.results),
            "failures": self.failures,
            "bar_met": not self.failures,
        }


def files_part(args) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="hostile-files-"))
    try:
        grid = Grid()
        for name, label in hostile_files(folder).items():
            path = folder / name
            command = [sys.executable, "-m", "ser_models", "predict", str(path), "--model", args.model]
            started = time.perf_counter()
            status, out, err, peak = run_measured(command, timeout=300)
            seconds = time.perf_counter() - started
            lines = [line for line in err.splitlines() if line.strip()]
            error_lines = [line for line in lines if name in line and "error" in line.lower()]
            outcome = "result" if status == 0 and out.strip() else ("refused" if status == 1 else f"exit {status}")
            result = {
                "file": name,
                "what": label,
                "bytes": path.stat().st_size,
                "outcome": outcome,
                "message": error_lines[0] if error_lines else (json.loads(out)["label"] if outcome == "result" else ""),
                "peak_mb": round(peak, 1),
                "seconds": round(seconds, 2),
            }
            ok = (
                "Traceback" not in err
                and peak <= MAX_PEAK_MB
                and (outcome == "result" or (outcome == "refused" and len(error_lines) == 1))
                and (not name.startswith("good.") or outcome == "result")
            )
            grid.record(result, ok, err, f"{name:32} {outcome:8} {peak:6.0f} MB  {result['message'][:100]}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return grid.report(
        f"a result or one clear error line naming the file, no traceback, CLI peak <= {MAX_PEAK_MB} MB",
        model=args.model,
        files=len(grid.results),
    )


# ---------------------------------------------------------------------------------------------------------------
# Hostile model folders

LOAD = """
import json, sys, warnings
from ser_models import EmotionRecognizer, ModelLoadError
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    try:
        recognizer = EmotionRecognizer.from_pretrained(sys.argv[1])
        outcome, message = "loaded", ""
    except ModelLoadError as error:
        outcome, message = "ModelLoadError", str(error)
print(json.dumps({"outcome": outcome, "message": message[:300], "warnings": [str(w.message)[:200] for w in caught]}))
"""


def model_copy(folder: Path, name: str, **changes) -> Path:
    target = folder / f"{name}-{secrets.token_hex(3)}"
    shutil.copytree(WEIGHTS_DIR / name, target)
    config = json.loads((target / "config.json").read_text())
    (target / "config.json").write_text(json.dumps({**config, **changes}))
    return target


def ensemble(folder: Path, spec) -> Path:
    target = folder / f"ensemble-{secrets.token_hex(3)}"
    target.mkdir()
    (target / "ensemble.json").write_text(spec if isinstance(spec, str) else json.dumps(spec))
    return target


def hostile_models(folder: Path) -> dict[str, tuple[Path, str]]:
    """The grid: name -> (folder, the outcome expected: "ModelLoadError" or "loaded")."""
    nan, inf = math.nan, math.inf
    grid = {
        "ensemble naming itself (.)": (ensemble(folder, {"members": {".": 1}}), "ModelLoadError"),
        "ensemble naming its parent (..)": (ensemble(folder, {"members": {"..": 1}}), "ModelLoadError"),
        "ensemble of 100,000 members": (
            ensemble(folder, {"members": {f"m{i}": 1 for i in range(100_000)}}),
            "ModelLoadError",
        ),
        "ensemble weight NaN": (ensemble(folder, {"members": {"mel-cnn": nan}}), "ModelLoadError"),
        "ensemble weight 0": (ensemble(folder, {"members": {"mel-cnn": 0}}), "ModelLoadError"),
        "ensemble temperature 0": (
            ensemble(folder, {"members": {"mel-cnn": 1}, "temperature": 0}),
            "ModelLoadError",
        ),
        "ensemble.json nested 100,000 deep": (ensemble(folder, "[" * 100_000), "ModelLoadError"),
        "mel-cnn hidden 1,000,000 (4.3 GB)": (model_copy(folder, "mel-cnn", hidden=1_000_000), "ModelLoadError"),
        "mel-cnn channels [1024] x 7": (model_copy(folder, "mel-cnn", channels=[1024] * 7), "ModelLoadError"),
        "mel-cnn hidden -1": (model_copy(folder, "mel-cnn", hidden=-1), "ModelLoadError"),
        "mel-cnn top_db NaN": (model_copy(folder, "mel-cnn", top_db=nan), "ModelLoadError"),
        "mel-cnn temperature 0": (model_copy(folder, "mel-cnn", temperature=0), "ModelLoadError"),
        "mel-cnn temperature inf": (model_copy(folder, "mel-cnn", temperature=inf), "ModelLoadError"),
        "mfcc-mlp members 100,000 (12 GB)": (model_copy(folder, "mfcc-mlp", members=100_000), "ModelLoadError"),
        "mfcc-mlp members 0": (model_copy(folder, "mfcc-mlp", members=0), "ModelLoadError"),
        "whisper-layers n_features 10**9 (32 GB)": (
            model_copy(folder, "whisper-layers", n_features=10**9),
            "ModelLoadError",
        ),
        "whisper-layers pad_seconds 1e6 (60 GB)": (
            model_copy(folder, "whisper-layers", pad_seconds=1e6),
            "ModelLoadError",
        ),
        "whisper-layers pad_seconds -1": (model_copy(folder, "whisper-layers", pad_seconds=-1), "ModelLoadError"),
        "whisper-layers compute_type float16 (bogus here)": (
            model_copy(folder, "whisper-layers", compute_type="float16"),
            "ModelLoadError",
        ),
        "whisper-layers compute_type 'turbo'": (
            model_copy(folder, "whisper-layers", compute_type="turbo"),
            "ModelLoadError",
        ),
        "whisper-layers confidence_threshold NaN": (
            model_copy(folder, "whisper-layers", confidence_threshold=nan),
            "ModelLoadError",
        ),
    }
    bad_json = model_copy(folder, "mel-cnn")
    (bad_json / "config.json").write_bytes(b"[" * 100_000 + b"]" * 100_000)
    grid["config.json nested 100,000 deep"] = (bad_json, "ModelLoadError")
    try:
        import onnx

        external = model_copy(folder, "mfcc-mlp")
        graph = onnx.load(external / "model.onnx")
        onnx.save_model(graph, external / "model.onnx", save_as_external_data=True, location="data", size_threshold=0)
        # Not an error: the export is not trusted (it would read another file) and the model is exported again
        # from its weights, with a warning (tests/test_hostile_models.py).
        grid["ONNX export with external data"] = (external, "loaded")
    except ImportError:
        pass
    return grid


def models_part(args) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="hostile-models-"))
    try:
        grid = Grid()
        for name, (path, expected) in hostile_models(folder).items():
            status, out, err, peak = run_measured([sys.executable, "-c", LOAD, str(path)], timeout=300)
            try:
                answer = json.loads(out.strip().splitlines()[-1])
            except (ValueError, IndexError):
                answer = {"outcome": f"crashed (exit {status})", "message": err[-300:], "warnings": []}
            result = {"folder": name, **answer, "expected": expected, "peak_mb": round(peak, 1)}
            ok = answer["outcome"] == expected and peak <= MAX_PEAK_MB and "Traceback" not in err
            grid.record(result, ok, err, f"{name:48} {answer['outcome']:16} {peak:6.0f} MB  {answer['message'][:80]}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return grid.report(
        f"a ModelLoadError (an untrusted ONNX export: not used), no traceback, peak <= {MAX_PEAK_MB} MB",
        folders=len(grid.results),
    )


# ---------------------------------------------------------------------------------------------------------------
# The app


@dataclass
class App:
    """``python app.py`` on a free loopback port, with its own temporary folder and log."""

    folder: Path
    env: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.folder.mkdir(parents=True, exist_ok=True)
        self.temp = self.folder / "gradio-temp"
        self.log = self.folder / "server.log"
        env = {
            **os.environ,
            "GRADIO_SERVER_PORT": str(port),
            "GRADIO_SERVER_NAME": "127.0.0.1",
            "GRADIO_ANALYTICS_ENABLED": "False",
            "HF_HUB_OFFLINE": "1",
            "GRADIO_TEMP_DIR": str(self.temp),
            "SER_FEEDBACK_DIR": str(self.folder / "feedback"),
            **self.env,
        }
        self.url = f"http://127.0.0.1:{port}/"
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "app.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        started = time.monotonic()
        while time.monotonic() - started < 180:
            if self.process.poll() is not None:
                raise RuntimeError(f"app.py exited early:\n{self.log.read_text()[-3000:]}")
            try:
                urllib.request.urlopen(self.url, timeout=2)
                return
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError("app.py did not start within 180 s")

    def resident_mb(self) -> float:
        import psutil

        process = psutil.Process(self.process.pid)
        return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)]) / MB

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the server and its children have used so far."""
        import psutil

        process = psutil.Process(self.process.pid)
        return sum(sum(p.cpu_times()[:2]) for p in [process, *process.children(recursive=True)])

    def upload_bytes(self) -> int:
        """Bytes under the app's upload folder now. The app deletes uploads while this walks, so a file or
        folder that vanishes is skipped (os.walk ignores a folder it can no longer list; Path.rglob raises)."""
        total = 0
        for folder, _, files in os.walk(self.temp):
            for name in files:
                try:
                    total += os.stat(os.path.join(folder, name)).st_size
                except OSError:
                    pass
        return total

    def stop(self) -> int | None:
        """Stop the app (SIGTERM, then SIGKILL after 30 s); its exit status."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


class RawClient:
    """Gradio's HTTP protocol spoken directly, as a page (or a flooder) does, from ``address`` (sent as
    X-Forwarded-For: the app trusts it from loopback, as from a proxy on the same host)."""

    def __init__(self, url: str, address: str) -> None:
        import httpx

        self.http = httpx.Client(base_url=url, headers={"X-Forwarded-For": address}, timeout=120)
        self.config = self.http.get("config").json()

    def post(self, path: str, **kwargs):
        """POST, once more if the server had just closed the kept-alive connection (its 5 s idle timeout)."""
        import httpx

        try:
            return self.http.post(path, **kwargs)
        except httpx.RemoteProtocolError:
            return self.http.post(path, **kwargs)

    def upload(self, name: str, data: bytes) -> tuple[int, dict | str]:
        response = self.post("gradio_api/upload", files={"files": (name, data, "audio/wav")})
        if response.status_code != 200:
            return response.status_code, response.text
        return 200, {"path": response.json()[0], "orig_name": name, "meta": {"_type": "gradio.FileData"}}

    def join(self, api_name: str, data: list, session: str | None = None) -> tuple[int, str]:
        dependency = next(d for d in self.config["dependencies"] if d.get("api_name") == api_name)
        body = {
            "data": data,
            "fn_index": dependency["id"],
            "trigger_id": dependency["targets"][0][0],
            "session_hash": session or secrets.token_hex(8),
            "event_data": None,
        }
        response = self.post("gradio_api/queue/join", json=body)
        return response.status_code, response.text


def ten_minute_wav(seconds: float = 600.0) -> bytes:
    """Speech every few seconds over ``seconds``: 16 kHz 16-bit mono, 19.2 MB for ten minutes."""
    voice = speech(4.0)
    rng = np.random.default_rng(0)
    parts, total = [], 0
    while total < seconds * SAMPLE_RATE:
        pause = np.zeros(int(rng.uniform(1.0, 2.0) * SAMPLE_RATE), np.float32)
        parts += [pause, voice]
        total += pause.size + voice.size
    audio = np.concatenate(parts)[: int(seconds * SAMPLE_RATE)]
    return wav_bytes(audio + 3e-4 * rng.standard_normal(audio.size).astype(np.float32))


def flood(
    url: str,
    seconds: float = 60.0,
    live_burst: int = 72,
    live_every: float = 5.0,
    timeline_threads: int = 2,
    probe_every: float = 1.0,
    model: str = DEFAULT_MODEL,
    app: App | None = None,
) -> dict:
    """One client floods /live (``live_burst`` streams opened at once, their chunks uploaded just before, every
    ``live_every`` s, never read) and /timeline (10-minute recordings, back to back from ``timeline_threads``
    threads, never read); meanwhile a fresh client calls /predict with a 4 s clip every ``probe_every`` s.
    Returns the figures."""
    from gradio_client import handle_file

    clip_wav = wav_bytes(speech(4.0))
    long_wav = ten_minute_wav()
    probe_file = Path(tempfile.mkdtemp()) / "probe_4s.wav"
    probe_file.write_bytes(clip_wav)
    flooder = "203.0.113.7"
    stop = threading.Event()
    counts: Counter[str] = Counter()
    lock = threading.Lock()

    def count(kind: str) -> None:
        with lock:
            counts[kind] += 1

    def live_flood() -> None:
        clients = [RawClient(url, flooder) for _ in range(8)]

        def upload(index: int) -> dict | None:
            try:
                status, chunk = clients[index % len(clients)].upload("audio.wav", clip_wav)
            except Exception as error:  # the flooder's own troubles are counted, and it goes on
                count(f"live: client error {type(error).__name__}")
                return None
            if status != 200:
                count(f"live: upload refused {status}")
            return chunk if status == 200 else None

        def join(index_chunk: tuple[int, dict]) -> None:
            index, chunk = index_chunk
            try:
                status, _ = clients[index % len(clients)].join("live", [chunk, model])
            except Exception as error:
                count(f"live: client error {type(error).__name__}")
                return
            count("live: stream opened (joined)" if status == 200 else f"live: join refused {status}")

        with ThreadPoolExecutor(8) as pool:
            while not stop.is_set():
                chunks = [c for c in pool.map(upload, range(live_burst)) if c is not None]  # uploaded first
                started = time.monotonic()
                list(pool.map(join, enumerate(chunks)))  # then the streams, all at once
                with lock:
                    counts["live: bursts"] += 1
                    counts["live: burst seconds (max)"] = max(
                        counts["live: burst seconds (max)"], round(time.monotonic() - started, 2)
                    )
                stop.wait(live_every)

    def timeline_flood() -> None:
        client = RawClient(url, flooder)
        while not stop.is_set():
            try:
                send_timeline(client)
            except Exception as error:  # counted, as above
                count(f"timeline: client error {type(error).__name__}")

    def send_timeline(client: RawClient) -> None:
        status, recording = client.upload("meeting.wav", long_wav)
        if status != 200:
            count(f"timeline: upload refused {status}")
            stop.wait(1.0)
            return
        status, _ = client.join("timeline", [recording, model, False])
        count("timeline: joined" if status == 200 else f"timeline: join refused {status}")

    probes: list[dict] = []
    peak_mb = 0.0
    threads = [threading.Thread(target=live_flood, daemon=True)]
    threads += [threading.Thread(target=timeline_flood, daemon=True) for _ in range(timeline_threads)]
    for thread in threads:
        thread.start()
    fresh = loopback_client(url, headers={"X-Forwarded-For": "198.51.100.1"})
    started = time.monotonic()
    try:
        while time.monotonic() - started < seconds:
            began = time.perf_counter()
            try:
                label, *_ = fresh.predict(handle_file(str(probe_file)), model, "angry", api_name="/predict")
                outcome = "ok" if len(label["confidences"]) == 8 else "bad answer"
            except Exception as error:  # counted and named: the bar is every one succeeding
                outcome = f"error: {type(error).__name__}: {str(error)[:200]}"
            probes.append(
                {
                    "at_s": round(time.monotonic() - started, 1),
                    "latency_s": round(time.perf_counter() - began, 3),
                    "outcome": outcome,
                }
            )
            if app is not None:
                peak_mb = max(peak_mb, app.resident_mb())
            time.sleep(max(0.0, probe_every - (time.perf_counter() - began)))
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=120)
    latencies = np.array([p["latency_s"] for p in probes if p["outcome"] == "ok"])
    failed = [p for p in probes if p["outcome"] != "ok"]
    return {
        "flood_seconds": seconds,
        "model": model,
        "flood": dict(sorted(counts.items())),
        "probes": len(probes),
        "probes_failed": failed,
        "probe_latency_s": {
            "p50": round(float(np.percentile(latencies, 50)), 3) if latencies.size else None,
            "p95": round(float(np.percentile(latencies, 95)), 3) if latencies.size else None,
            "max": round(float(latencies.max()), 3) if latencies.size else None,
        },
        "probe_latencies_s": [p["latency_s"] for p in probes],
        "server_peak_mb": round(peak_mb, 1) if app is not None else None,
        "bar_met": bool(probes) and not failed and latencies.size > 0 and float(latencies.max()) <= 5.0,
    }


def log_summary(app: App) -> dict:
    lines = app.log.read_text(errors="replace").splitlines()
    return {
        "log_lines": len(lines),
        "tracebacks": sum("Traceback" in line for line in lines),
        "busy_refusals_logged": sum("Server busy" in line for line in lines),
        "idle_streams_ended_logged": sum("stream that sent nothing" in line for line in lines),
        "uploads_refused_logged": sum("Upload refused" in line for line in lines),
    }


def flood_part(args) -> dict:
    app = App(Path(tempfile.mkdtemp(prefix="flood-")))
    try:
        report = flood(app.url, args.seconds, args.live_burst, args.live_every, args.timeline_threads, app=app)
        time.sleep(8)  # the idle streams end, the flood's files go
        report["server_mb_after"] = round(app.resident_mb(), 1)
        report["upload_folder_mb_after"] = round(app.upload_bytes() / MB, 1)
        report.update(log_summary(app))
    finally:
        app.stop()
    return report


def upload_flood(url: str, files: int, megabytes: float, addresses: list[str], app: App | None = None) -> dict:
    """``files`` uploads of ``megabytes`` random bytes each, from ``addresses`` in turn; the statuses and the
    most the upload folder held."""
    import httpx

    data = np.random.default_rng(1).bytes(int(megabytes * MB))
    statuses: Counter[int] = Counter()
    messages: dict[int, str] = {}
    most = 0
    with httpx.Client(base_url=url, timeout=120) as http:
        for index in range(files):
            address = addresses[index % len(addresses)]
            payload = data[:-8] + index.to_bytes(8, "little")  # each file different: Gradio keys folders on content
            response = http.post(
                "gradio_api/upload",
                files={"files": (f"noise-{index}.wav", payload, "audio/wav")},
                headers={"X-Forwarded-For": address},
            )
            statuses[response.status_code] += 1
            if response.status_code != 200:
                messages.setdefault(response.status_code, response.text)
            if app is not None:
                most = max(most, app.upload_bytes())
    return {
        "files": files,
        "mb_each": megabytes,
        "addresses": len(addresses),
        "statuses": dict(statuses),
        "messages": messages,
        "upload_folder_mb_max": round(most / MB, 1) if app is not None else None,
    }


def uploads_part(args) -> dict:
    from ser_models.demo import UPLOAD_MAX_MB, UPLOAD_MAX_MB_PER_CLIENT

    app = App(Path(tempfile.mkdtemp(prefix="uploads-")))
    try:
        one = upload_flood(app.url, args.files, args.mb, ["203.0.113.9"], app)
        many = upload_flood(app.url, args.files + 14, args.mb, [f"198.18.0.{i}" for i in range(1, 250)], app)
        with_room = RawClient(app.url, "192.0.2.77").upload("take.wav", wav_bytes(speech(4.0)))[0]
        report = {
            "bounds_mb": {"total": UPLOAD_MAX_MB, "per_client": UPLOAD_MAX_MB_PER_CLIENT},
            "one_client": one,
            "many_addresses": many,
            "a_fresh_client_uploading_4s_after_status": with_room,
            "upload_folder_mb_after": round(app.upload_bytes() / MB, 1),
            **log_summary(app),
        }
    finally:
        app.stop()
    report["bar_met"] = (
        one["upload_folder_mb_max"] <= UPLOAD_MAX_MB_PER_CLIENT + 1
        and many["upload_folder_mb_max"] <= UPLOAD_MAX_MB + UPLOAD_MAX_MB_PER_CLIENT + 1
        and report["tracebacks"] == 0
    )
    return report


# ---------------------------------------------------------------------------------------------------------------
# What a long recording costs


def timeline_cost_part(args) -> dict:
    from timeline import long_recording  # bench/timeline.py: RAVDESS sentences (actors 01-04), 1-2 s pauses

    from ser_models import EmotionRecognizer
    from ser_models.demo import APP_TIMELINE_MAX_SECONDS, LONG_JOB_CPU_SECONDS, TIMELINE_CPU_SECONDS_PER_MINUTE
    from ser_models.segments import timeline

    path = long_recording(args.minutes)
    recognizer = EmotionRecognizer.from_pretrained(args.model)
    timeline(recognizer, load_audio(path, max_seconds=7200)[: 30 * SAMPLE_RATE])  # warm up

    def cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    cpu_start, wall_start = cpu(), time.perf_counter()
    audio = load_audio(path, max_seconds=7200)
    result = timeline(recognizer, audio)
    cpu_seconds, wall = cpu() - cpu_start, time.perf_counter() - wall_start
    per_minute = cpu_seconds / args.minutes
    return {
        "model": args.model,
        "audio_minutes": args.minutes,
        "windows": len(result.segments),
        "cpu_seconds": round(cpu_seconds, 1),
        "wall_seconds": round(wall, 1),
        "cpu_seconds_per_audio_minute": round(per_minute, 2),
        "in_the_app": {
            "TIMELINE_CPU_SECONDS_PER_MINUTE": TIMELINE_CPU_SECONDS_PER_MINUTE,
            "LONG_JOB_CPU_SECONDS": LONG_JOB_CPU_SECONDS,
            "APP_TIMELINE_MAX_SECONDS": APP_TIMELINE_MAX_SECONDS,
            "cpu_seconds_of_the_longest_accepted": round(per_minute * APP_TIMELINE_MAX_SECONDS / 60, 1),
        },
        "peak_memory_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def request_cost_part(args) -> dict:
    """Server and client CPU time per /predict of a 4 s clip, one client, calls one after another: what bounds
    the throughput of a 2-core machine, and so the latency of many clients calling without a pause."""
    import psutil
    from gradio_client import handle_file

    clip = Path(tempfile.mkdtemp()) / "clip_4s.wav"
    clip.write_bytes(wav_bytes(speech(4.0)))
    app = App(Path(tempfile.mkdtemp(prefix="request-cost-")))
    models = {}
    try:
        client = loopback_client(app.url)
        server = psutil.Process(app.process.pid)
        for model in args.models:
            for _ in range(5):
                client.predict(handle_file(str(clip)), model, "angry", api_name="/predict")
            server_before, client_before = server.cpu_times(), resource.getrusage(resource.RUSAGE_SELF)
            started = time.perf_counter()
            for _ in range(args.calls):
                client.predict(handle_file(str(clip)), model, "angry", api_name="/predict")
            wall = time.perf_counter() - started
            server_after, client_after = server.cpu_times(), resource.getrusage(resource.RUSAGE_SELF)
            server_cpu = server_after.user + server_after.system - server_before.user - server_before.system
            client_cpu = client_after.ru_utime + client_after.ru_stime - client_before.ru_utime - client_before.ru_stime
            models[model] = {
                "server_cpu_ms_per_request": round(1000 * server_cpu / args.calls, 1),
                "client_cpu_ms_per_request": round(1000 * client_cpu / args.calls, 1),
                "round_trip_ms": round(1000 * wall / args.calls, 1),
            }
            print(model, models[model], flush=True)
    finally:
        app.stop()
    return {"calls_per_model": args.calls, "models": models}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parts = parser.add_subparsers(dest="part", required=True)
    files = parts.add_parser("files")
    files.add_argument("--model", default=DEFAULT_MODEL)
    parts.add_parser("models")
    flood_parser = parts.add_parser("flood")
    flood_parser.add_argument("--seconds", type=float, default=60.0)
    flood_parser.add_argument("--live-burst", type=int, default=72)
    flood_parser.add_argument("--live-every", type=float, default=5.0)
    flood_parser.add_argument("--timeline-threads", type=int, default=2)
    uploads = parts.add_parser("uploads")
    uploads.add_argument("--files", type=int, default=50)
    uploads.add_argument("--mb", type=float, default=19.0)
    request_cost = parts.add_parser("request-cost")
    request_cost.add_argument("--calls", type=int, default=60)
    request_cost.add_argument("--models", nargs="+", default=["mel-cnn", DEFAULT_MODEL])
    cost = parts.add_parser("timeline-cost")
    cost.add_argument("--minutes", type=float, default=10.0)
    cost.add_argument("--model", default=DEFAULT_MODEL)
    args = parser.parse_args()
    started = time.perf_counter()
    header = {"command": script_command("bench/reliability.py"), "machine": machine()}
    run = {
        "files": files_part,
        "models": models_part,
        "flood": flood_part,
        "uploads": uploads_part,
        "timeline-cost": timeline_cost_part,
        "request-cost": request_cost_part,
    }[args.part]
    report = {**header, **run(args)}
    report["load_average_at_the_end"] = round(os.getloadavg()[0], 1)
    report["run_seconds"] = round(time.perf_counter() - started, 1)
    write_report(args.part.replace("-", "_"), report)


if __name__ == "__main__":
    main()
