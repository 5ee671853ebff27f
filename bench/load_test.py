"""Load test: many concurrent gradio_client users against a local app, bounded in time and requests.

    python bench/load_test.py [--clients 32] [--requests 1000] [--max-seconds 600]

Starts `python app.py` on a loopback port (or uses --url, which must be loopback), warms
it up, then lets --clients threads, each with its own gradio_client session, send
--requests calls to /predict in total: a 4 s RAVDESS clip, and every --bad-every-th call
a PNG renamed .wav that must come back as a clear refusal. Prints and writes
reports/load_test.json: throughput, latency percentiles, errors, and the server's resident
memory after warm-up and at the end. Bar: zero errors, memory growth under 10 %.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from app_latency import ROOT, four_second_clip, start_app  # noqa: E402

from train.data import data_dir  # noqa: E402

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
EXPECTED_REFUSAL = "could not be decoded as audio"


def resident_mb(pid: int) -> float:
    """Resident memory of a process and its children, in MB."""
    import psutil

    process = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)]) / 2**20


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=1000)
    # Eight calls per client: sessions, caches and allocator pools fill up before the memory baseline.
    parser.add_argument("--warmup", type=int, default=256, help="requests before the memory baseline")
    parser.add_argument("--bad-every", type=int, default=10, help="every n-th request sends a non-audio file")
    parser.add_argument("--max-seconds", type=float, default=600, help="stop sending after this long")
    parser.add_argument("--model", default="mel-cnn")
    parser.add_argument("--url", default=None, help="a running app on loopback (default: start one)")
    parser.add_argument("--output", type=Path, default=ROOT / "reports" / "load_test.json")
    args = parser.parse_args()

    from gradio_client import Client, handle_file

    clip = four_second_clip(data_dir())
    not_audio = Path(tempfile.mkdtemp()) / "photo.wav"
    not_audio.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(4000))

    process = None
    if args.url:
        if urlparse(args.url).hostname not in LOOPBACK:
            raise SystemExit(f"--url must be a loopback address, got {args.url}")
        url, cold_start = args.url, None
    else:
        process, url, cold_start = start_app()
    server_pid = process.pid if process else None

    local = threading.local()
    counter = iter(range(10**9))
    lock = threading.Lock()

    def call(bad: bool) -> tuple[float, str]:
        if not hasattr(local, "client"):
            local.client = Client(url, verbose=False)
        started = time.perf_counter()
        try:
            label, *_ = local.client.predict(
                handle_file(str(not_audio if bad else clip)), args.model, "angry", api_name="/predict"
            )
            outcome = "error: bad file accepted" if bad else ("ok" if len(label["confidences"]) == 8 else "error")
        except Exception as error:  # every failure is counted and named, none stops the run
            outcome = "refused" if bad and EXPECTED_REFUSAL in str(error) else f"error: {type(error).__name__}"
        return time.perf_counter() - started, outcome

    def request(_: int) -> tuple[float, str] | None:
        if time.perf_counter() > deadline:
            return None
        with lock:
            n = next(counter)
        return call(bad=args.bad_every > 0 and n % args.bad_every == args.bad_every - 1)

    try:
        deadline = time.perf_counter() + args.max_seconds
        with ThreadPoolExecutor(max_workers=args.clients) as pool:
            warmup = [r for r in pool.map(request, range(args.warmup)) if r]
            memory_after_warmup = resident_mb(server_pid) if server_pid else None
            peak = memory_after_warmup or 0.0
            started = time.perf_counter()
            futures = [pool.submit(request, i) for i in range(args.requests)]
            timeline = []  # (requests done, server MB): a leak grows with requests, a warm-up levels off
            while not all(f.done() for f in futures):
                if server_pid:
                    timeline.append((sum(f.done() for f in futures), round(resident_mb(server_pid), 1)))
                    peak = max(peak, timeline[-1][1])
                time.sleep(0.5)
            wall = time.perf_counter() - started
            results = [r for f in futures if (r := f.result())]
        memory_at_end = resident_mb(server_pid) if server_pid else None
    finally:
        if process:
            process.terminate()
            process.wait(timeout=30)

    outcomes = Counter(outcome for _, outcome in results)
    ok_ms = np.array([seconds for seconds, outcome in results if outcome == "ok"]) * 1000
    errors = {outcome: n for outcome, n in outcomes.items() if outcome.startswith("error")}
    growth = (memory_at_end / memory_after_warmup - 1) if server_pid else None
    report = {
        "command": "python bench/load_test.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "model": args.model,
        "clients": args.clients,
        "requests_sent": len(results),
        "requests_planned": args.requests,
        "warmup_requests": len(warmup),
        "succeeded": outcomes["ok"],
        "refused_as_expected": outcomes["refused"],
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "wall_seconds": round(wall, 1),
        "throughput_rps": round(len(results) / wall, 1),
        "latency_ms": {
            q: round(float(np.percentile(ok_ms, int(q[1:]))), 1) if ok_ms.size else None for q in ("p50", "p95", "p99")
        },
        "cold_start_s": round(cold_start, 2) if cold_start else None,
        "server_memory_mb": {
            "after_warmup": round(memory_after_warmup, 1) if memory_after_warmup else None,
            "peak": round(peak, 1) if server_pid else None,
            "end": round(memory_at_end, 1) if memory_at_end else None,
            "growth_after_warmup": round(growth, 4) if growth is not None else None,
            "by_requests_done": timeline[:: max(1, len(timeline) // 20)],
        },
        "bar_met": not errors and len(results) == args.requests and (growth is None or growth < 0.10),
    }
    print(json.dumps(report, indent=2))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
