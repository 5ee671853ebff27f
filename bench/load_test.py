"""Mixed load test: many concurrent gradio_client users against a local app, bounded in time and requests.

    python bench/load_test.py [--clients 32] [--requests 1000] [--long-clients 2] [--max-seconds 600]

Starts `python app.py` on a loopback port, warms it up, then lets --clients threads, each its own
gradio_client session and its own client address (sent as X-Forwarded-For, which the app believes from
loopback as from a proxy on the same host), send --requests calls in total:

- /predict with a 4 s RAVDESS clip (the default model unless --model);
- every --bad-every-th call a PNG renamed .wav, which must come back as a clear refusal;
- every --feedback-every-th call /feedback after the client's last /predict (consent given every other time),
  which must say it stored the take, or why not;

while --long-clients more clients send a --long-minutes recording to /timeline back to back (counted with the
requests). Past the app's bounds a call may be told "Server busy. Try again in N s": an expected refusal, like
the bad files. Prints and writes reports/load_test.json: throughput, latency percentiles of /predict (all, and
those that overlapped a running timeline), errors, and the server's resident memory after warm-up, at its
peak and at the end. Bar: zero errors, /predict p95 <= 3 s while long jobs run, memory at the end within
25 % of the warmed-up figure, peak <= 1.5 GB.
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
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from app_latency import ROOT, four_second_clip, loopback_client  # noqa: E402
from reliability import App, ten_minute_wav  # noqa: E402

from ser_models.registry import DEFAULT_MODEL  # noqa: E402
from train.data import data_dir  # noqa: E402
from train.reports import script_command  # noqa: E402

EXPECTED_REFUSAL = "could not be decoded as audio"
BUSY = "Server busy. Try again in"
FEEDBACK_ANSWERS = ("Thank you", "Nothing was stored", "Not stored", "Analyze a recording first")
P = "/predict"


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=128, help="requests before the memory baseline")
    parser.add_argument("--bad-every", type=int, default=10, help="every n-th request sends a non-audio file")
    parser.add_argument("--feedback-every", type=int, default=15, help="every n-th request is /feedback")
    parser.add_argument("--long-clients", type=int, default=2, help="clients sending long recordings to /timeline")
    parser.add_argument("--long-minutes", type=float, default=2.0)
    parser.add_argument("--think", type=float, default=0.0, help="seconds each client waits between its calls")
    parser.add_argument("--max-seconds", type=float, default=600, help="stop sending after this long")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--output", type=Path, default=ROOT / "reports" / "load_test.json")
    args = parser.parse_args()

    from gradio_client import handle_file

    folder = Path(tempfile.mkdtemp(prefix="load-test-"))
    clip = four_second_clip(data_dir())
    not_audio = folder / "photo.wav"
    not_audio.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(4000))
    recording = folder / "meeting.wav"
    recording.write_bytes(ten_minute_wav(args.long_minutes * 60))

    load_at_start = os.getloadavg()[0]
    started_app = time.perf_counter()
    app = App(folder / "app")
    cold_start = time.perf_counter() - started_app
    lock = threading.Lock()
    counter = iter(range(10**9))
    results: list[dict] = []  # kind, outcome, started, seconds
    long_running: list[tuple[float, float]] = []  # (start, end) of each /timeline call
    memory: list[tuple[int, float]] = []  # (requests done, server MB)
    deadline = time.perf_counter() + args.max_seconds

    def classify(kind: str, call) -> str:
        try:
            answer = call()
        except Exception as error:  # every failure is counted and named, none stops the run
            text = str(error)
            if BUSY in text:
                return "busy"
            if kind == "bad" and EXPECTED_REFUSAL in text:
                return "refused"
            return f"error: {kind}: {type(error).__name__}: {text[:120]}"
        if kind == "bad":
            return "error: bad: a non-audio file was accepted"
        if kind == "feedback":
            return "ok" if answer.startswith(FEEDBACK_ANSWERS) else f"error: feedback: {answer[:120]}"
        if kind == "timeline":
            return "ok" if "window(s)" in answer[0] else "error: timeline: no windows"
        return "ok" if len(answer[0]["confidences"]) == 8 else "error: predict: not 8 probabilities"

    def short_client(index: int, quota: int) -> None:
        client = loopback_client(app.url, headers={"X-Forwarded-For": f"198.18.{index // 250}.{index % 250 + 1}"})
        consent = False
        for _ in range(quota):
            if time.perf_counter() > deadline:
                return
            with lock:
                n = next(counter)
            if args.bad_every and n % args.bad_every == args.bad_every - 1:
                kind, call = "bad", lambda: client.predict(handle_file(str(not_audio)), args.model, "angry", api_name=P)
            elif args.feedback_every and n % args.feedback_every == args.feedback_every - 1:
                consent = not consent
                kind, call = "feedback", lambda c=consent: client.predict("angry", c, None, api_name="/feedback")
            else:
                kind, call = "predict", lambda: client.predict(handle_file(str(clip)), args.model, "angry", api_name=P)
            began = time.perf_counter()
            outcome = classify(kind, call)
            with lock:
                results.append(
                    {"kind": kind, "outcome": outcome, "start": began, "seconds": time.perf_counter() - began}
                )
            if args.think:
                time.sleep(args.think)

    def long_client(index: int, stop: threading.Event) -> None:
        client = loopback_client(app.url, headers={"X-Forwarded-For": f"198.19.0.{index + 1}"})
        while not stop.is_set() and time.perf_counter() < deadline:
            began = time.perf_counter()
            outcome = classify(
                "timeline",
                lambda: client.predict(handle_file(str(recording)), args.model, False, api_name="/timeline"),
            )
            ended = time.perf_counter()
            with lock:
                results.append({"kind": "timeline", "outcome": outcome, "start": began, "seconds": ended - began})
                long_running.append((began, ended))
            if outcome == "busy":
                stop.wait(5)

    def run_clients(total: int) -> None:
        shares = [total // args.clients + (i < total % args.clients) for i in range(args.clients)]
        threads = [threading.Thread(target=short_client, args=(i, share)) for i, share in enumerate(shares)]
        for thread in threads:
            thread.start()
        while any(thread.is_alive() for thread in threads):
            memory.append((len(results), round(app.resident_mb(), 1)))
            time.sleep(0.5)

    try:
        # The long jobs run from the start: the memory baseline after warm-up includes what a timeline holds.
        stop_long = threading.Event()
        long_threads = [threading.Thread(target=long_client, args=(i, stop_long)) for i in range(args.long_clients)]
        for thread in long_threads:
            thread.start()
        run_clients(args.warmup)
        with lock:
            warmup = len(results)
            results.clear()
            long_running.clear()
        memory.clear()
        memory_after_warmup = app.resident_mb()
        began = time.perf_counter()
        server_cpu, client_cpu = app.cpu_seconds(), time.process_time()
        run_clients(args.requests - args.long_clients)
        server_cpu, client_cpu = app.cpu_seconds() - server_cpu, time.process_time() - client_cpu
        stop_long.set()
        for thread in long_threads:
            thread.join(timeout=args.max_seconds)
        wall = time.perf_counter() - began
        time.sleep(2)
        memory_at_end = app.resident_mb()
    finally:
        app.stop()

    outcomes = Counter(r["outcome"] for r in results)
    errors = {outcome: n for outcome, n in outcomes.items() if outcome.startswith("error")}
    predicts = [r for r in results if r["kind"] == "predict" and r["outcome"] == "ok"]

    def overlaps_long(r: dict) -> bool:
        return any(start < r["start"] + r["seconds"] and r["start"] < end for start, end in long_running)

    def percentiles(rows: list[dict]) -> dict:
        ms = np.array([r["seconds"] for r in rows]) * 1000
        return {q: round(float(np.percentile(ms, int(q[1:]))), 1) if ms.size else None for q in ("p50", "p95", "p99")}

    during_long = [r for r in predicts if overlaps_long(r)]
    timelines = [r for r in results if r["kind"] == "timeline" and r["outcome"] == "ok"]
    peak = max([memory_after_warmup, memory_at_end, *(mb for _, mb in memory)])
    growth = memory_at_end / memory_after_warmup - 1
    p95_long = percentiles(during_long)["p95"]
    report = {
        "command": script_command("bench/load_test.py"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "load_average": {"at_start": round(load_at_start, 1), "at_end": round(os.getloadavg()[0], 1)},
        "model": args.model,
        "clients": args.clients,
        "long_clients": args.long_clients,
        "long_recording_minutes": args.long_minutes,
        "think_seconds": args.think,
        "requests_sent": len(results),
        "requests_planned": args.requests,
        "warmup_requests": warmup,
        "by_kind": {
            kind: dict(Counter(r["outcome"] for r in results if r["kind"] == kind))
            for kind in ("predict", "bad", "feedback", "timeline")
        },
        "succeeded": outcomes["ok"],
        "refused_as_expected": outcomes["refused"],
        "busy_refusals": outcomes["busy"],
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "wall_seconds": round(wall, 1),
        "throughput_rps": round(len(results) / wall, 1),
        # The clients run on the same machine as the server: their share of its CPU is not the server's to use.
        "cpu_seconds": {
            "server": round(server_cpu, 1),
            "clients": round(client_cpu, 1),
            "machine": round(wall * (os.cpu_count() or 1), 1),
        },
        "predict_latency_ms": percentiles(predicts),
        "predict_latency_ms_while_a_timeline_runs": {**percentiles(during_long), "calls": len(during_long)},
        "timeline_seconds": {
            "calls": len(timelines),
            "p50": round(float(np.median([r["seconds"] for r in timelines])), 1) if timelines else None,
        },
        "cold_start_s": round(cold_start, 2),
        "server_memory_mb": {
            "after_warmup": round(memory_after_warmup, 1),
            "peak": round(peak, 1),
            "end": round(memory_at_end, 1),
            "growth_after_warmup": round(growth, 4),
            "by_requests_done": memory[:: max(1, len(memory) // 20)],
        },
        "bars": {
            "errors == 0": not errors,
            "all requests sent": len(results) >= args.requests,
            "predict p95 <= 3 s while a timeline runs": p95_long is not None and p95_long <= 3000,
            "memory at the end within 25 % of warmed-up": abs(growth) <= 0.25,
            "peak <= 1.5 GB": peak <= 1536,
        },
    }
    report["bar_met"] = all(report["bars"].values())
    print(json.dumps(report, indent=2))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
