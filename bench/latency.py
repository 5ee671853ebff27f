"""Latency of one model on one 4 s clip, by stage: the quick check of a model's speed bar.

    python bench/latency.py --model whisper-layers --calls 100   # -> reports/bench_latency_whisper-layers.json

Stages (p50 over --calls after warm-up): the speech check (Silero VAD and the SNR estimate), trimming,
and the model (features, network, softmax), then the whole ``EmotionRecognizer.predict`` from the
decoded waveform. bench/speed.py measures everything else (throughput, memory, cold starts).
Run it on a quiet machine; the CPU share other processes took during the run is written beside.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from speed import timed  # noqa: E402  (bench/speed.py: warm-up, then one perf_counter span per call)

from ser_models import EmotionRecognizer, features, load_audio, speech  # noqa: E402
from train.data import data_dir  # noqa: E402
from train.reports import script_command  # noqa: E402

CLIP = "Actor_01/03-01-05-02-01-01-01.flac"


def percentiles(function, calls: int) -> dict[str, float]:
    times = np.asarray(timed(function, calls))
    return {"p50_ms": float(np.median(times) * 1000), "p95_ms": float(np.percentile(times, 95) * 1000)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="whisper-layers")
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    audio = features.pad_or_trim(load_audio(data_dir() / CLIP))  # exactly 4.0 s
    recognizer = EmotionRecognizer.from_pretrained(args.model)
    trimmed = recognizer.trim(audio)
    psutil.cpu_percent(interval=None)  # starts the machine-wide CPU measurement
    process = psutil.Process()
    before = process.cpu_times()
    started = time.perf_counter()
    stages = {
        "speech check": percentiles(lambda: speech.check(audio), args.calls),
        "trim": percentiles(lambda: features.trim_silence(audio, top_db=recognizer.top_db), args.calls),
        "model": percentiles(lambda: recognizer.predict_speech([trimmed]), args.calls),
        "end to end (predict)": percentiles(lambda: recognizer.predict(audio, features.SAMPLE_RATE), args.calls),
    }
    wall = time.perf_counter() - started
    after = process.cpu_times()
    ours = (after.user + after.system - before.user - before.system) / wall / os.cpu_count()
    others = max(0.0, psutil.cpu_percent(interval=None) / 100 - ours)
    for stage, figures in stages.items():
        print(f"{args.model:>15} {stage:>22}: p50 {figures['p50_ms']:6.1f} ms, p95 {figures['p95_ms']:6.1f} ms")
    report = {
        "model": args.model,
        "command": script_command("bench/latency.py", argv),
        "clip": CLIP + " (cut to 4.0 s)",
        "calls": args.calls,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "other_processes_cpu_share": round(others, 3),
        "stages": stages,
        "real_time_factor": stages["end to end (predict)"]["p50_ms"] / 4000,
    }
    output = args.output or ROOT / "reports" / f"bench_latency_{args.model}.json"
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {output}")
    return report


if __name__ == "__main__":
    main()
