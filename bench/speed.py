"""Inference benchmark: load time, latency by stage, batch throughput and memory, per model and backend.

    python bench/speed.py [--calls 200] [--output reports/bench_speed.json] [--skip-app]

For every shipped model (mel-cnn, mfcc-mlp) on both backends (torch, onnx):
  load        EmotionRecognizer.from_pretrained (median of a few loads; the first load in
              the process is reported apart, as it pays for lazy imports)
  latency     one 4.0 s clip, p50/p95 over --calls calls after warm-up, split into decode
              (load_audio of a FLAC: soundfile and the input checks), trim, features and
              network (with the softmax); end to end from the decoded waveform
              (EmotionRecognizer.predict) and from the file; real-time factor = p50 / 4 s
  throughput  predict_batch on B distinct decoded RAVDESS clips, B = 1 … 64 (clips/s)
  reference   the seed study's way: librosa.load at the file's own rate, librosa.effects.trim,
              librosa mel spectrogram and power_to_db, then the same network in eager torch;
              the speed-up is its p50 over ours, both from the file to the probabilities
Then the torch thread count, the peak RSS of this process and of the CLI
(``python -m ser_models predict``, in a fresh process), the library's cold start and
the app's (bench/app_latency.start_app). The clip is a real RAVDESS recording cut to
4.0 s when the data is there, else a synthetic voiced signal, marked as such. Whether
other processes used the CPU during the run is measured and written with the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ser_models import features, runtime  # noqa: E402
from ser_models.audio import SAMPLE_RATE, load_audio  # noqa: E402
from ser_models.inference import EmotionRecognizer  # noqa: E402
from ser_models.registry import DEFAULT_MODEL, MODELS  # noqa: E402
from ser_models.scorers import EnsembleScorer, model_inputs, softmax  # noqa: E402
from train.reports import script_command  # noqa: E402

CLIP_SECONDS = 4.0
CLIP_SOURCE = Path("Actor_01") / "03-01-05-02-01-01-01.flac"  # the clip bench/app_latency.py uses
BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)
BACKENDS = ("torch", "onnx")
WARMUP = 20
LOADS = 5
THROUGHPUT_SECONDS = 1.0  # time spent per batch size, at least two batches
CLI_FILES = 16
QUIET_CPU_SHARE = 0.05  # other processes below this share of the CPUs: the figures are clean

REFERENCE = (
    "librosa.load(sr=None) at the file's own rate, librosa.effects.trim, fixed to 4 s, "
    "librosa.feature.melspectrogram (FFT size and hop scaled to the rate: the same 64 x 201 input) + power_to_db "
    "(MFCC mean/std via librosa.feature.mfcc for the MLP), then the same network in eager torch under "
    "torch.no_grad on the full 201 frames; timed with the default thread pools and with torch and BLAS on "
    "1 thread, the faster counts. Run on the clip as a 16 kHz FLAC (this project's copy) and as a 48 kHz "
    "16-bit WAV (RAVDESS's original format, which the seed study read; ours resamples it to 16 kHz)"
)
ORIGINAL_RATE = 48_000  # RAVDESS's own files: 48 kHz 16-bit WAV
REFERENCE_MODELS = ("mel-cnn", "mel-crnn", "mfcc-mlp")  # the seed's pipeline has no pretrained encoder
BARS = {
    "mel_cnn_p50_ms": 10.0,
    "mel_cnn_real_time_factor": 0.0025,
    "mel_cnn_clips_per_s": 300.0,
    "default_model_p50_ms": 50.0,
    "app_cold_start_s": 5.0,
    "cli_peak_rss_mb": 600.0,
    "speedup_vs_reference": 3.0,  # on RAVDESS's original 48 kHz WAV, as the seed read it
}


def data_folder() -> Path:
    # As train.data.data_dir, without importing the datasets library into the measured process.
    return Path(os.environ.get("RAVDESS_DIR", ROOT.parent / "shared" / "data" / "ravdess"))


def ravdess_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("Actor_*/*.flac")) + sorted(folder.glob("Actor_*/*.wav"))


def synthetic_speech(seed: int, seconds: float = CLIP_SECONDS) -> np.ndarray:
    """A voiced-sounding stand-in: harmonics of a wobbling pitch under a syllable envelope, silence around."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    pitch = rng.uniform(100, 220) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(2, 5) * t))
    phase = 2 * np.pi * np.cumsum(pitch) / SAMPLE_RATE
    voice = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = np.clip(np.sin(2 * np.pi * rng.uniform(3, 5) * t), 0, None) * ((t > 0.5) & (t < seconds - 0.5))
    audio = 0.2 * voice * envelope + 0.002 * rng.standard_normal(t.size)
    return audio.astype(np.float32)


def fit(audio: np.ndarray, seconds: float = CLIP_SECONDS) -> np.ndarray:
    """Cut, or pad with silence, to exactly ``seconds``."""
    n = int(seconds * SAMPLE_RATE)
    return np.pad(audio, (0, max(0, n - audio.size)))[:n]


def percentiles(seconds: Sequence[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1000
    return {
        "p50": round(float(np.percentile(ms, 50)), 3),
        "p95": round(float(np.percentile(ms, 95)), 3),
        "mean": round(float(ms.mean()), 3),
    }


def timed(function: Callable[[], object], calls: int, warmup: int = WARMUP) -> list[float]:
    for _ in range(warmup):
        function()
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return times


def load_times(name: str, backend: str) -> dict[str, float]:
    times = []
    for _ in range(LOADS):
        started = time.perf_counter()
        EmotionRecognizer.from_pretrained(name, backend=backend)
        times.append(time.perf_counter() - started)
    return {"first_s": round(times[0], 3), "median_s": round(float(np.median(times[1:])), 3)}


def stage_latency(recognizer: EmotionRecognizer, clip: Path, calls: int) -> dict[str, dict[str, float]]:
    """The serving path of predict_file for one window, cut at its stage boundaries."""
    stages: dict[str, list[float]] = {"decode": [], "trim": [], "features": [], "network": []}

    def once(record: bool) -> None:
        t0 = time.perf_counter()
        audio = load_audio(clip)
        t1 = time.perf_counter()
        speech = recognizer.trim(audio)
        t2 = time.perf_counter()
        inputs = model_inputs(recognizer.config, *features.batch_inputs([speech]))
        t3 = time.perf_counter()
        softmax(recognizer.scorer.network(inputs), recognizer.temperature)
        t4 = time.perf_counter()
        if record:
            for stage, seconds in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                stages[stage].append(seconds)

    for _ in range(WARMUP):
        once(record=False)
    for _ in range(calls):
        once(record=True)
    return {stage: percentiles(times) for stage, times in stages.items()}


def throughput(recognizer: EmotionRecognizer, recordings: list[np.ndarray]) -> dict[str, float]:
    """Clips per second through predict_batch (checks, trimming, features, network) per batch size."""
    result = {}
    for size in BATCH_SIZES:
        batch = [(audio, SAMPLE_RATE) for audio in recordings[:size]]
        recognizer.predict_batch(batch)  # warm-up: first use of this batch shape
        done, started = 0, time.perf_counter()
        while done < 2 * size or time.perf_counter() - started < THROUGHPUT_SECONDS:
            recognizer.predict_batch(batch)
            done += size
        result[str(size)] = round(done / (time.perf_counter() - started), 1)
    return result


def blas_threads(threads: int) -> contextlib.AbstractContextManager:
    """numpy's BLAS (librosa's mel projection) limited to ``threads``, where threadpoolctl is installed."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=threads, user_api="blas")


def reference_probabilities(model: torch.nn.Module, path: Path) -> np.ndarray:
    """The seed study's pipeline: librosa all the way to the log-mel (or MFCCs), then the network."""
    import librosa

    audio, rate = librosa.load(path, sr=None)
    audio, _ = librosa.effects.trim(audio, top_db=model.config.top_db)
    length = min(audio.size, int(CLIP_SECONDS * rate))
    audio = librosa.util.fix_length(audio, size=int(CLIP_SECONDS * rate))
    scale = rate // SAMPLE_RATE  # the same window and hop in seconds, so the network gets its 64 x 201 input
    mel = librosa.feature.melspectrogram(
        y=audio, sr=rate, n_fft=features.N_FFT * scale, hop_length=features.HOP_LENGTH * scale, n_mels=features.N_MELS
    )
    # ref=1.0: absolute dB, as the network was trained on (ref=np.max shifts the MFCCs' c0).
    log_mel = librosa.power_to_db(mel, ref=1.0, top_db=features.DB_RANGE)
    with torch.no_grad():
        if model.model_type == "mfcc-mlp":
            frames = length // (features.HOP_LENGTH * scale) + 1
            mfcc = librosa.feature.mfcc(S=log_mel, n_mfcc=features.N_MFCC)[:, :frames]
            inputs = torch.from_numpy(np.concatenate([mfcc.mean(axis=1), mfcc.std(axis=1)])[None]).float()
        else:
            # All 201 frames, as the seed fed them: cropping to the speech frames came later (MelCNN.from_log_mel).
            band = model.config.normalization == "band"
            speech = np.array([length // scale])  # in 16 kHz samples, as features.valid_frames counts
            inputs = torch.from_numpy(features.normalized_log_mel(log_mel[None], speech, band))
        logits = model(inputs)
    return torch.softmax(logits.double(), dim=-1).numpy()[0]


def measure_model(
    name: str, clip: Path, clip_48k: Path, recordings: list[np.ndarray], calls: int
) -> dict[str, dict[str, object] | float]:
    audio = load_audio(clip)
    result: dict[str, dict[str, object] | float] = {}
    for backend in BACKENDS:
        load = load_times(name, backend)
        recognizer = EmotionRecognizer.from_pretrained(name, backend=backend)
        ensemble = isinstance(recognizer.scorer, EnsembleScorer)
        end_to_end = percentiles(timed(lambda r=recognizer: r.predict(audio, SAMPLE_RATE), calls))
        result[backend] = {
            "load": load,
            # An ensemble's stages are its members'; they are measured under their own names.
            "stages_ms": None if ensemble else stage_latency(recognizer, clip, calls),
            "end_to_end_from_waveform_ms": end_to_end,
            "real_time_factor": round(end_to_end["p50"] / 1000 / CLIP_SECONDS, 5),
            "from_file_ms": percentiles(timed(lambda r=recognizer: r.predict_file(clip), calls)),
            "from_48k_wav_ms": percentiles(timed(lambda r=recognizer: r.predict_file(clip_48k), calls)),
            "clips_per_s": throughput(recognizer, recordings),
        }
    if name in REFERENCE_MODELS:
        result["reference"] = reference(name, clip, clip_48k, calls)
    return result


def reference(name: str, clip: Path, clip_48k: Path, calls: int) -> dict[str, object]:
    """The seed-style pipeline on both files, with the thread setting that suits it best."""
    torch_model = EmotionRecognizer.from_pretrained(name, backend="torch")
    found: dict[str, object] = {"pipeline": REFERENCE}
    for key, path in (("from_file_ms", clip), ("from_48k_wav_ms", clip_48k)):
        # With the default thread pools and with torch and BLAS on 1 thread; the faster counts.
        # On a busy 2-core machine two OpenMP/OpenBLAS threads make librosa and eager torch many
        # times slower, which would flatter our figure.
        by_threads = {}
        for threads in sorted({1, torch.get_num_threads()}):
            with torch_threads(threads), blas_threads(threads):
                by_threads[str(threads)] = percentiles(
                    timed(lambda p=path: reference_probabilities(torch_model.scorer.network.model, p), calls)
                )
        found[key] = min(by_threads.values(), key=lambda timing: timing["p50"])
        found[f"{key}_by_torch_threads"] = by_threads
        ours = np.array(list(torch_model.predict_file(path).values()))
        found[f"{key.removesuffix('_ms')}_max_abs_probability_difference_vs_ours"] = round(
            float(np.abs(reference_probabilities(torch_model.scorer.network.model, path) - ours).max()), 4
        )
    return found


@contextlib.contextmanager
def torch_threads(threads: int):
    """torch ops inside run on ``threads`` intra-op threads; the setting before is restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def thread_settings(clip: Path, recordings: list[np.ndarray], calls: int) -> list[dict[str, object]]:
    """The CNN with numpy's BLAS (the mel projection) and the onnxruntime pool at 1 or 2 threads."""
    audio, rows = load_audio(clip), []
    batch = [(a, SAMPLE_RATE) for a in recordings[: max(BATCH_SIZES)]]
    for feature_threads, network_threads in ((1, 2), (2, 2), (1, 1), (2, 1)):
        recognizer = EmotionRecognizer.from_pretrained("mel-cnn")
        recognizer.scorer.network = runtime.OnnxNetwork(recognizer.scorer.network.source, threads=network_threads)
        with blas_threads(feature_threads):
            latency = percentiles(timed(lambda r=recognizer: r.predict(audio, SAMPLE_RATE), calls // 2))
            recognizer.predict_batch(batch)
            started = time.perf_counter()
            for _ in range(3):
                recognizer.predict_batch(batch)
        rows.append(
            {
                "feature_threads": feature_threads,
                "network_threads": network_threads,
                "backend": recognizer.backend,
                "end_to_end_ms": {"p50": latency["p50"], "p95": latency["p95"]},
                f"clips_per_s_at_{len(batch)}": round(3 * len(batch) / (time.perf_counter() - started), 1),
            }
        )
    return rows


# Runs the CLI and reports its own peak RSS. The CLI cannot be a direct child of the
# benchmark: Linux counts a child's RSS from before its exec, a copy of this big process.
CLI_WRAPPER = """
import json, os, resource, subprocess, sys, time
started = time.perf_counter()
status = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"exit_status": status, "wall_s": time.perf_counter() - started, "maxrss_kib": usage.ru_maxrss}))
"""


def cli_memory(files: list[Path]) -> dict[str, float]:
    """Peak RSS and wall time of ``python -m ser_models predict FILE...`` in a fresh process."""
    command = [sys.executable, "-m", "ser_models", "predict", *map(str, files)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    output = subprocess.run(
        [sys.executable, "-c", CLI_WRAPPER, *command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    measured = json.loads(output.stdout)
    return {
        "files": len(files),
        "backend": EmotionRecognizer.from_pretrained().backend,
        "exit_status": measured["exit_status"],
        "wall_s": round(measured["wall_s"], 2),
        "peak_rss_mb": round(measured["maxrss_kib"] / 1024, 1),  # Linux reports KiB
    }


def library_cold_start(clip: Path) -> dict[str, float]:
    """Import, load the default model and predict one file, in a fresh interpreter."""
    script = (
        "import json, time; t0 = time.perf_counter()\n"
        "from ser_models import EmotionRecognizer\n"
        "t1 = time.perf_counter(); r = EmotionRecognizer.from_pretrained()\n"
        f"t2 = time.perf_counter(); r.predict_file({str(clip)!r}); t3 = time.perf_counter()\n"
        "print(json.dumps({'import_s': t1 - t0, 'load_s': t2 - t1, 'first_prediction_s': t3 - t2,"
        " 'backend': r.backend}))\n"
    )
    started = time.perf_counter()
    output = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True, timeout=300
    ).stdout
    result = {k: round(v, 3) if isinstance(v, float) else v for k, v in json.loads(output).items()}
    return {**result, "total_with_interpreter_s": round(time.perf_counter() - started, 3)}


def app_cold_start() -> float:
    """Seconds from ``python app.py`` to the first answered page, with bench/app_latency.start_app."""
    script = (
        "import sys; sys.path.insert(0, 'bench')\n"
        "from app_latency import start_app\n"
        "process, _, seconds = start_app(); process.terminate(); process.wait(timeout=20); print(seconds)\n"
    )
    output = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    if output.returncode != 0:
        raise RuntimeError(f"the app did not start: {output.stderr[-2000:]}")
    return round(float(output.stdout.split()[-1]), 2)


def wait_for_idle_cpu(timeout: float, busy_percent: float = 10.0) -> None:
    """Poll until the CPUs are nearly idle (another job's load would be measured as ours)."""
    if timeout <= 0:
        return
    import psutil

    deadline = time.monotonic() + timeout
    while (busy := psutil.cpu_percent(interval=2.0)) > busy_percent:
        if time.monotonic() > deadline:
            print(f"CPU still {busy:.0f}% busy after {timeout:.0f} s; measuring anyway", flush=True)
            return
        print(f"waiting for an idle CPU ({busy:.0f}% busy) ...", flush=True)


class CpuWatch:
    """How much CPU other processes took while the benchmark ran (contention makes every figure worse)."""

    def __init__(self) -> None:
        import psutil

        self.psutil = psutil
        self.load_start = os.getloadavg()
        self.started = time.perf_counter()
        self.busy = self._busy()
        self.own = self._own()

    def _busy(self) -> float:
        times = self.psutil.cpu_times()
        return sum(getattr(times, f) for f in ("user", "nice", "system", "irq", "softirq", "steal"))

    @staticmethod
    def _own() -> float:
        own = os.times()
        return own.user + own.system + own.children_user + own.children_system

    def report(self) -> dict[str, object]:
        wall = time.perf_counter() - self.started
        other = (self._busy() - self.busy) - (self._own() - self.own)
        share = max(0.0, other / (wall * (os.cpu_count() or 1)))
        return {
            "load_average_at_start": [round(x, 2) for x in self.load_start],
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
            "other_processes_cpu_share": round(share, 3),
            "nice": os.nice(0),  # below 0: run at a raised priority, to shield it from background jobs
            "quiet": share < QUIET_CPU_SHARE,
        }


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions() -> dict[str, str]:
    import librosa

    found = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}
    found["librosa"] = librosa.__version__
    import onnxruntime

    found["onnxruntime"] = onnxruntime.__version__
    return found


def bars(result: dict) -> dict[str, dict[str, object]]:
    serving = result["default_backend"]
    cnn = result["models"]["mel-cnn"][serving]
    default = result["models"][result["default_model"]][serving]
    cnn_reference = result["models"]["mel-cnn"]["reference"]
    measured = {
        "mel_cnn_p50_ms": cnn["end_to_end_from_waveform_ms"]["p50"],
        "mel_cnn_real_time_factor": cnn["real_time_factor"],
        "mel_cnn_clips_per_s": max(cnn["clips_per_s"].values()),
        "default_model_p50_ms": default["end_to_end_from_waveform_ms"]["p50"],
        "app_cold_start_s": result.get("app_cold_start_s"),
        "cli_peak_rss_mb": result["cli"]["peak_rss_mb"],
        "speedup_vs_reference": round(cnn_reference["from_48k_wav_ms"]["p50"] / cnn["from_48k_wav_ms"]["p50"], 2),
        "speedup_vs_reference_16k_flac": round(cnn_reference["from_file_ms"]["p50"] / cnn["from_file_ms"]["p50"], 2),
    }
    out = {}
    for key, value in measured.items():
        bar = BARS.get(key, BARS["speedup_vs_reference"] if key.startswith("speedup") else None)
        higher_is_better = key == "mel_cnn_clips_per_s" or key.startswith("speedup")
        met = None if value is None else (value >= bar if higher_is_better else value <= bar)
        out[key] = {"measured": value, "bar": bar, "met": met}
    return out


def print_table(result: dict) -> None:
    print(f"\n{result['clip']['description']}; {result['machine']}; torch threads {result['threads']['torch']}")
    header = (
        f"{'model':12} {'backend':9} {'load s':>7} {'decode':>7} {'trim':>6} {'feat':>6} {'net':>6} "
        f"{'e2e p50':>8} {'e2e p95':>8} {'RTF':>8} {'file p50':>9} {'48k p50':>8} {'clips/s @1':>10} {'@64':>7} "
        f"{'best':>7}"
    )
    print(header + "\n" + "-" * len(header))
    for name, backends in result["models"].items():
        for backend in BACKENDS:
            row = backends[backend]
            if "skipped" in row:
                print(f"{name:12} {backend:9} skipped: {row['skipped']}")
                continue
            stages, e2e, tp = row["stages_ms"], row["end_to_end_from_waveform_ms"], row["clips_per_s"]
            split = (
                f"{stages['decode']['p50']:7.2f} {stages['trim']['p50']:6.2f} {stages['features']['p50']:6.2f} "
                f"{stages['network']['p50']:6.2f}"
                if stages
                else f"{'(the members)':>28}"
            )
            print(
                f"{name:12} {backend:9} {row['load']['median_s']:7.3f} {split} "
                f"{e2e['p50']:8.2f} {e2e['p95']:8.2f} {row['real_time_factor']:8.5f} "
                f"{row['from_file_ms']['p50']:9.2f} {row['from_48k_wav_ms']['p50']:8.2f} {tp['1']:10.0f} "
                f"{tp['64']:7.0f} {max(tp.values()):7.0f}"
            )
        if "reference" in backends:
            reference = backends["reference"]
            print(
                f"{name:12} {'reference':9} {'':63} {reference['from_file_ms']['p50']:9.2f} "
                f"{reference['from_48k_wav_ms']['p50']:8.2f}"
            )
    print(
        "\nms unless marked; e2e: EmotionRecognizer.predict on the decoded 4 s waveform; file: predict_file "
        "on the 16 kHz FLAC; 48k: predict_file on the same clip as a 48 kHz WAV"
    )
    print(f"CLI: {result['cli']}; peak RSS of this process: {result['peak_rss_mb']} MB")
    print(f"library cold start: {result['library_cold_start']}; app cold start: {result.get('app_cold_start_s')} s")
    print("threads (numpy BLAS features / onnxruntime network):")
    for row in result["thread_settings"]:
        rate = next(v for k, v in row.items() if k.startswith("clips_per_s"))
        print(
            f"  {row['feature_threads']} / {row['network_threads']}: p50 {row['end_to_end_ms']['p50']} ms, "
            f"p95 {row['end_to_end_ms']['p95']} ms, {rate} clips/s"
        )
    print(f"CPU contention: {result['contention']}")
    for key, bar in result["bars"].items():
        print(f"  {key:26} {bar['measured']!s:>10}  bar {bar['bar']:<8} {'met' if bar['met'] else 'NOT met'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200, help="timed calls per latency figure (after warm-up)")
    parser.add_argument("--output", type=Path, default=ROOT / "reports" / "bench_speed.json")
    parser.add_argument("--skip-app", action="store_true", help="do not start the Gradio app for its cold start")
    parser.add_argument(
        "--wait-quiet", type=float, default=0, metavar="S", help="first wait up to S seconds for an idle CPU"
    )
    args = parser.parse_args()
    if args.calls < 1:
        parser.error("--calls must be at least 1")
    wait_for_idle_cpu(args.wait_quiet)

    watch = CpuWatch()
    workdir = Path(tempfile.mkdtemp(prefix="ser-bench-"))
    files = ravdess_files(data_folder())
    if files:
        source = data_folder() / CLIP_SOURCE
        audio = fit(load_audio(source if source.is_file() else files[0]))
        # Every 7th file: a spread of actors, emotions and intensities rather than one actor's takes.
        batch_files = files[::7][: max(BATCH_SIZES)]
        recordings = [load_audio(f) for f in batch_files]
        description = f"RAVDESS {CLIP_SOURCE.name} cut to {CLIP_SECONDS} s"
    else:
        audio = synthetic_speech(0)
        recordings = [synthetic_speech(seed) for seed in range(1, max(BATCH_SIZES) + 1)]
        batch_files = []
        for i, recording in enumerate(recordings[:CLI_FILES]):
            batch_files.append(workdir / f"synthetic_{i}.flac")
            sf.write(batch_files[-1], recording, SAMPLE_RATE, subtype="PCM_16")
        description = f"synthetic voiced signal, {CLIP_SECONDS} s (RAVDESS not found)"
    clip = workdir / "clip_4s.flac"
    sf.write(clip, audio, SAMPLE_RATE, subtype="PCM_16")
    clip_48k = workdir / "clip_4s_48k.wav"
    sf.write(clip_48k, soxr.resample(audio, SAMPLE_RATE, ORIGINAL_RATE, quality="HQ"), ORIGINAL_RATE, subtype="PCM_16")
    speech = EmotionRecognizer.from_pretrained("mel-cnn", backend="torch").trim(load_audio(clip))

    result: dict = {
        "command": script_command("bench/speed.py"),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "machine": f"{cpu_model()}, {os.cpu_count()} cores, {platform.machine()}",
        "versions": versions(),
        "threads": {
            "torch": torch.get_num_threads(),
            "torch_interop": torch.get_num_interop_threads(),
            "onnxruntime_intra_op": "onnxruntime's default (one per physical core)",
        },
        "clip": {
            "description": description,
            "synthetic": not files,
            "seconds": CLIP_SECONDS,
            "speech_seconds_after_trim": round(speech.size / SAMPLE_RATE, 3),
            "format": "FLAC, 16 kHz, 16-bit",
        },
        "batch_clips": {
            "count": len(recordings),
            "mean_seconds": round(float(np.mean([r.size for r in recordings])) / SAMPLE_RATE, 2),
        },
        "calls": args.calls,
        "warmup": WARMUP,
        "default_model": DEFAULT_MODEL,
        "default_backend": EmotionRecognizer.from_pretrained().backend,
        "models": {},
    }
    for name in MODELS:
        print(f"measuring {name} ...", flush=True)
        result["models"][name] = measure_model(name, clip, clip_48k, recordings, args.calls)
    print("thread settings ...", flush=True)
    result["thread_settings"] = thread_settings(clip, recordings, args.calls)
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print("CLI and cold starts ...", flush=True)
    result["cli"] = cli_memory(batch_files[:CLI_FILES])
    result["library_cold_start"] = library_cold_start(clip)
    if not args.skip_app:
        result["app_cold_start_s"] = app_cold_start()
    result["contention"] = watch.report()
    result["bars"] = bars(result)
    print_table(result)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
