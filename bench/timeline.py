"""Timeline benchmark: seconds of audio analysed per second for a long recording, and peak memory.

    python bench/timeline.py [--minutes 10] [--model mel-cnn] [--vad auto]

Builds a recording of real RAVDESS sentences separated by 1-2 s pauses (tiled to --minutes),
writes it as a 16-bit WAV, then times ``load_audio`` + ``segments.timeline`` on it. Prints the
figures and writes reports/bench_timeline.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ser_models import EmotionRecognizer, features, load_audio  # noqa: E402
from ser_models.segments import TIMELINE_MAX_SECONDS, timeline  # noqa: E402
from train.data import data_dir  # noqa: E402
from train.reports import script_command  # noqa: E402


def long_recording(minutes: float, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    files = sorted(data_dir().glob("Actor_0[1-4]/*.flac"))
    parts, total = [], 0
    while total < minutes * 60 * features.SAMPLE_RATE:
        speech = features.trim_silence(load_audio(files[rng.integers(len(files))])).audio
        pause = np.zeros(int(rng.uniform(1.0, 2.0) * features.SAMPLE_RATE), np.float32)
        parts += [pause, speech]
        total += pause.size + speech.size
    audio = np.concatenate(parts)[: int(minutes * 60 * features.SAMPLE_RATE)]
    audio += 3e-4 * rng.standard_normal(audio.size).astype(np.float32)
    path = Path(tempfile.mkdtemp()) / "long.wav"
    sf.write(path, audio, features.SAMPLE_RATE, subtype="PCM_16")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--model", default="mel-cnn")
    parser.add_argument("--vad", default="auto", choices=["auto", "silero", "energy"])
    parser.add_argument("--output", type=Path, default=ROOT / "reports" / "bench_timeline.json")
    args = parser.parse_args()

    path = long_recording(args.minutes)
    recognizer = EmotionRecognizer.from_pretrained(args.model)
    started = time.perf_counter()
    audio = load_audio(path, max_seconds=TIMELINE_MAX_SECONDS)
    decoded = time.perf_counter()
    result = timeline(recognizer, audio, vad=args.vad)
    finished = time.perf_counter()
    seconds = audio.size / features.SAMPLE_RATE
    report = {
        "command": script_command("bench/timeline.py"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}",
        "model": args.model,
        "vad": result.vad,
        "audio_seconds": round(seconds, 1),
        "speech_segments": len(result.speech_regions),
        "windows": len(result.segments),
        "decode_seconds": round(decoded - started, 2),
        "timeline_seconds": round(finished - decoded, 2),
        "audio_seconds_per_second": round(seconds / (finished - started), 1),
        "peak_memory_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    print(json.dumps(report, indent=2))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
