"""App benchmark: cold start and gradio_client round-trip latency for a 4 s clip.

    python bench/app_latency.py [--calls 60] [--model mel-cnn]

Starts `python app.py` on a free loopback port, measures the time until the page answers
(cold start: imports, loading both models, building the UI), then calls the /predict
endpoint through gradio_client with a 4.0 s RAVDESS clip. Prints the figures and writes
reports/bench_app.json. Loopback only; the number of calls is bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ser_models.audio import SAMPLE_RATE, load_audio  # noqa: E402
from train.data import data_dir  # noqa: E402
from train.reports import script_command  # noqa: E402


def four_second_clip(folder: Path) -> Path:
    """A real RAVDESS clip cut (or padded with its own silence) to exactly 4.0 s, as 16-bit WAV."""
    source = folder / "Actor_01" / "03-01-05-02-01-01-01.flac"
    audio = load_audio(source)
    audio = np.pad(audio, (0, max(0, 4 * SAMPLE_RATE - audio.size)))[: 4 * SAMPLE_RATE]
    path = Path(tempfile.mkdtemp()) / "clip_4s.wav"
    sf.write(path, audio, SAMPLE_RATE, subtype="PCM_16")
    return path


def loopback_client(url: str, **kwargs):
    """A ``gradio_client.Client`` for an app on this machine, which speaks plain HTTP.

    gradio_client opens a new httpx client for each request, and with ``ssl_verify`` on (its default) each
    loads the CA bundle into a fresh SSL context even for an http:// URL: 73 of a client's 80 ms of CPU per
    /predict here. The benchmarks' clients share the server's two cores, so that would be CPU taken from the
    server being measured; a client on another machine would not take it.
    """
    from gradio_client import Client

    return Client(url, verbose=False, ssl_verify=False, **kwargs)


def start_app(
    extra_env: dict[str, str] | None = None, python: str = sys.executable, repo: Path = ROOT
) -> tuple[subprocess.Popen, str, float]:
    """``python app.py`` of ``repo`` on a free loopback port; returns the process, its URL and the cold-start time."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_OFFLINE": "1",
        "SER_FEEDBACK_DIR": tempfile.mkdtemp(prefix="ser-feedback-"),
        **(extra_env or {}),
    }
    started = time.perf_counter()
    process = subprocess.Popen(
        [python, "app.py"], cwd=repo, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}/"
    while time.perf_counter() - started < 120:
        try:
            urllib.request.urlopen(url, timeout=1)
            return process, url, time.perf_counter() - started
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit("the app did not start within 120 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--model", default="mel-cnn")
    args = parser.parse_args()

    from gradio_client import handle_file

    clip = four_second_clip(data_dir())
    process, url, cold_start = start_app()
    try:
        client = loopback_client(url)
        for _ in range(args.warmup):
            client.predict(handle_file(str(clip)), args.model, "angry", api_name="/predict")
        latencies = []
        for _ in range(args.calls):
            started = time.perf_counter()
            client.predict(handle_file(str(clip)), args.model, "angry", api_name="/predict")
            latencies.append(time.perf_counter() - started)
    finally:
        process.terminate()
        process.wait(timeout=20)
    ms = np.asarray(latencies) * 1000
    result = {
        "command": script_command("bench/app_latency.py"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "model": args.model,
        "clip_seconds": 4.0,
        "calls": args.calls,
        "cold_start_s": round(cold_start, 2),
        "round_trip_ms": {
            "p50": round(float(np.percentile(ms, 50)), 1),
            "p95": round(float(np.percentile(ms, 95)), 1),
            "mean": round(float(ms.mean()), 1),
        },
    }
    print(json.dumps(result, indent=2))
    (ROOT / "reports").mkdir(exist_ok=True)
    (ROOT / "reports" / "bench_app.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
