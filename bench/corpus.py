"""Corpus scoring throughput on Ray Data (``ser_models.corpus``): files/s and real-time factor per worker count.

    python bench/corpus.py [--files 240] [--workers 1 2] [--model whisper-layers] [--batch-size 16]

Scores N real RAVDESS files (spread evenly over the sorted local copy, actors 01-20; a folder of links to
them) into a fresh OUTPUT once per worker count, each with its own local Ray (``ray.init(num_cpus=workers)``).
Two rates per run: "run" (every file, from the job's start to its last shard: actors starting and loading the
model included; Ray's own start excluded) and "steady" (from the first finished batch to the last: what a
long job runs at). From the steady rate per worker of the run whose workers fill the machine's cores, an
estimate of 100 CPU workers' output per hour. Prints the figures and writes reports/bench_corpus.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ser_models.corpus import score_corpus  # noqa: E402
from ser_models.registry import DEFAULT_MODEL  # noqa: E402
from train.data import data_dir  # noqa: E402
from train.reports import script_command  # noqa: E402

CLUSTER_WORKERS = 100


def pick_files(count: int) -> list[Path]:
    files = sorted(data_dir().glob("Actor_*/*.flac")) or sorted(data_dir().glob("Actor_*/*.wav"))
    if len(files) < count:
        raise SystemExit(f"only {len(files)} RAVDESS files under {data_dir()}; asked for {count}")
    step = len(files) / count
    return [files[int(i * step)] for i in range(count)]


def others_busy(seconds: float = 1.0) -> list[str]:
    """Other processes using over 10% of a core during ``seconds`` (the machine is shared): "pid name cpu%"."""
    try:
        import psutil
    except ImportError:
        return ["(psutil not installed: not sampled)"]
    mine = {os.getpid(), *(child.pid for child in psutil.Process().children(recursive=True))}
    processes = [p for p in psutil.process_iter(["pid", "name"]) if p.pid not in mine]
    for process in processes:
        try:
            process.cpu_percent(None)
        except psutil.Error:
            pass
    time.sleep(seconds)
    busy = []
    for process in processes:
        try:
            percent = process.cpu_percent(None)
        except psutil.Error:
            continue
        if percent > 10:
            busy.append(f"{process.pid} {' '.join(process.cmdline()[:3])[:80]} {percent:.0f}%")
    return busy


def run(folder: Path, workers: int, model: str, batch_size: int) -> dict:
    import ray

    busy_before = others_busy()
    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    try:
        done, stamps = 0, []

        def progress(count: int) -> None:
            nonlocal done
            done += count
            stamps.append((time.perf_counter(), done))

        output = Path(tempfile.mkdtemp(prefix=f"corpus-{workers}w-"))
        load = os.getloadavg()
        started = time.perf_counter()
        report = score_corpus(folder, output, model=model, workers=workers, batch_size=batch_size, progress=progress)
        wall = time.perf_counter() - started
    finally:
        ray.shutdown()
    (first_t, first_n), (last_t, last_n) = stamps[0], stamps[-1]
    steady_files_s = (last_n - first_n) / (last_t - first_t)
    audio_per_file = report.audio_seconds / max(report.scored, 1)
    return {
        "workers": workers,
        "files": report.files,
        "scored": report.scored,
        "failed": report.failed,
        "audio_seconds": round(report.audio_seconds, 1),
        "wall_s": round(wall, 2),
        "until_first_batch_s": round(report.first_result_seconds or 0.0, 2),
        "run": {
            "files_per_s": round(report.files / wall, 2),
            "x_real_time": round(report.audio_seconds / wall, 1),
        },
        "steady": {
            "files_per_s": round(steady_files_s, 2),
            "x_real_time": round(steady_files_s * audio_per_file, 1),
            "files_per_s_per_worker": round(steady_files_s / workers, 2),
            # Seconds of one worker's time per second of audio (below 1: faster than real time).
            "real_time_factor_per_worker": round(workers / (steady_files_s * audio_per_file), 5),
        },
        "loadavg_before": [round(x, 2) for x in load],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],  # our own workers count here too
        "other_processes_busy_before": busy_before,
        "other_processes_busy_after": others_busy(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=240)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--output", type=Path, default=ROOT / "reports" / "bench_corpus.json")
    args = parser.parse_args()

    import onnxruntime
    import ray

    folder = Path(tempfile.mkdtemp(prefix="corpus-input-"))
    for path in pick_files(args.files):
        (folder / path.name).symlink_to(path)
    load_start = os.getloadavg()
    runs = []
    for workers in args.workers:
        result = run(folder, workers, args.model, args.batch_size)
        runs.append(result)
        print(
            f"{workers} worker(s): {result['run']['files_per_s']} files/s over the run "
            f"({result['run']['x_real_time']}x real time, {result['wall_s']} s), steady "
            f"{result['steady']['files_per_s']} files/s = {result['steady']['files_per_s_per_worker']} per worker, "
            f"load {result['loadavg_before'][0]} -> {result['loadavg_after'][0]}"
        )
    cores = os.cpu_count() or 1
    # The run whose workers fill the cores: one core per worker, as on a cluster of one-CPU workers.
    basis = max((r for r in runs if r["workers"] <= cores), key=lambda r: r["workers"])
    per_worker = basis["steady"]["files_per_s_per_worker"]
    audio_per_file = basis["audio_seconds"] / max(basis["scored"], 1)
    files_per_hour = per_worker * CLUSTER_WORKERS * 3600
    estimate = {
        "workers": CLUSTER_WORKERS,
        "files_per_hour": round(files_per_hour, -3),
        "audio_hours_per_hour": round(files_per_hour * audio_per_file / 3600, 1),
        "basis": f"the steady rate per worker of the {basis['workers']}-worker run ({per_worker} files/s, "
        f"RAVDESS clips of {audio_per_file:.2f} s on average)",
        "assumption": "linear scaling from the per-worker figure: each worker has one CPU core of this kind to "
        "itself, reading the files (I/O) and the driver writing shards are not the bottleneck, and the files "
        "are short clips like these (longer files score more audio per file)",
    }
    print(
        f"{CLUSTER_WORKERS} CPU workers (estimate): {estimate['files_per_hour']:,.0f} files/hour, "
        f"{estimate['audio_hours_per_hour']} hours of audio per hour"
    )
    report = {
        "command": script_command("bench/corpus.py"),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "machine": f"{platform.processor() or platform.machine()}, {cores} cores, shared with other work",
        "versions": {
            "python": platform.python_version(),
            "ray": ray.__version__,
            "onnxruntime": onnxruntime.__version__,
        },
        "model": args.model,
        "batch_size": args.batch_size,
        "input": f"{args.files} RAVDESS files (FLAC), spread over the sorted list of actors 01-20",
        "threads": "each worker (a Ray actor asking for 1 CPU) runs the model's onnxruntime sessions as the package "
        "sets them: whisper-layers' encoder with 2 intra-op threads, its head onnxruntime's default (one per "
        "physical core), Silero VAD 1; so one worker alone can "
        "use both cores of this machine for part of each file",
        "loadavg_at_start": [round(x, 2) for x in load_start],
        "runs": runs,
        "estimate": estimate,
    }
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
