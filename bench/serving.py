"""What serving costs in a given environment: installed size, cold starts, resident memory, p50 latency.

    python bench/serving.py --python VENV/bin/python [--repo CHECKOUT] [--label after] [--calls 100]

Everything is measured in fresh processes of ``--python`` (the environment under test), on ``--repo``'s
``app.py`` and ``ser_models`` (the installed package when ``--repo`` is not given), so two checkouts and
two environments compare like for like, e.g. the torch-based release against this one:

    python bench/serving.py --python /tmp/venv-before/bin/python --repo /tmp/before --label before
    python bench/serving.py --python /tmp/venv-app/bin/python --label after

- installed size: every distribution in the environment's site-packages (pip and setuptools, which
  every virtual environment starts with, reported apart)
- library cold start: a fresh interpreter imports ser_models, loads the default model and predicts one file
- app cold start: ``python app.py`` until its page answers (the bytecode cache written by the first run)
- CLI peak RSS: ``-m ser_models predict`` on 16 RAVDESS files, the process's own peak
- app RSS: the app's resident memory once its page answers
- p50 latency: ``EmotionRecognizer.predict`` of the default model on one decoded 4 s clip, after warm-up
  (the median run of ``--repeats`` fresh processes)

The figures merge into reports/bench_serving.json under ``--label``; the machine and whether torch was
imported are written with them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
from train.reports import script_command  # noqa: E402

DATA = Path(os.environ.get("RAVDESS_DIR", ROOT.parent / "shared" / "data" / "ravdess"))
CLIP = DATA / "Actor_01" / "03-01-05-02-01-01-01.flac"
VENV_TOOLING = ("pip", "setuptools", "_distutils_hack", "pkg_resources", "wheel", "distutils-precedence.pth")

LATENCY = """
import json, statistics, sys, time
import numpy as np, soundfile as sf
from ser_models import EmotionRecognizer
audio, rate = sf.read(sys.argv[1], dtype="float32")
audio = np.pad(audio, (0, max(0, 4 * rate - audio.size)))[: 4 * rate]
recognizer = EmotionRecognizer.from_pretrained()
for _ in range(10):
    recognizer.predict(audio, rate)
times = []
for _ in range(int(sys.argv[2])):
    started = time.perf_counter(); recognizer.predict(audio, rate); times.append(time.perf_counter() - started)
times.sort()
print(json.dumps({"model": recognizer.name, "backend": recognizer.backend, "torch_imported": "torch" in sys.modules,
                  "p50_ms": 1000 * statistics.median(times), "p95_ms": 1000 * times[int(0.95 * len(times)) - 1]}))
"""
COLD_START = """
import json, sys, time
t0 = time.perf_counter()
from ser_models import EmotionRecognizer
t1 = time.perf_counter(); recognizer = EmotionRecognizer.from_pretrained()
t2 = time.perf_counter(); recognizer.predict_file(sys.argv[1]); t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "first_prediction_s": t3 - t2,
                  "torch_imported": "torch" in sys.modules}))
"""
PEAK_RSS = """
import json, resource, subprocess, sys, time
started = time.perf_counter()
status = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
print(json.dumps({"exit_status": status, "wall_s": time.perf_counter() - started,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def site_packages(python: str) -> Path:
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    return Path(subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout.strip())


def megabytes(path: Path) -> float:
    if path.is_file():
        return path.stat().st_size / 2**20
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink()) / 2**20


def installed_size(python: str) -> dict[str, object]:
    folder = site_packages(python)
    sizes = {entry.name: megabytes(entry) for entry in folder.iterdir()}
    tooling = sum(size for name, size in sizes.items() if name.split("-")[0] in VENV_TOOLING)
    total = sum(sizes.values())
    largest = sorted(((name, round(size)) for name, size in sizes.items() if size >= 20), key=lambda x: -x[1])
    return {
        "site_packages_mb": round(total),
        "without_venv_tooling_mb": round(total - tooling),
        "largest_mb": dict(largest),
        "torch_installed": (folder / "torch").is_dir(),
    }


def run_json(python: str, script: str, *args: str, cwd: Path) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(cwd)}
    done = subprocess.run([python, "-c", script, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def rounded(values: dict) -> dict:
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in values.items()}


def app_start(python: str, repo: Path) -> dict[str, float]:
    """``python app.py`` until its page answers: the seconds it took and its resident memory then."""
    from app_latency import start_app

    process, _, seconds = start_app({"PYTHONPATH": str(repo)}, python, repo)
    try:
        status = Path(f"/proc/{process.pid}/status").read_text().splitlines()
        rss_kib = int(next(line for line in status if line.startswith("VmRSS")).split()[1])
        return {"cold_start_s": round(seconds, 2), "rss_mb": round(rss_kib / 1024)}
    finally:
        process.terminate()
        process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python", default=sys.executable, help="the interpreter of the environment under test")
    parser.add_argument("--repo", type=Path, default=None, help="checkout whose app.py and ser_models to run")
    parser.add_argument("--label", default="after")
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3, help="cold starts and latency: the median of this many runs")
    parser.add_argument("--output", type=Path, default=ROOT / "reports" / "bench_serving.json")
    args = parser.parse_args()
    if not CLIP.is_file():
        raise SystemExit(f"RAVDESS not found at {DATA}: set RAVDESS_DIR")
    # Every start measured is a second start: Python's bytecode cache is written on the first and read after, as
    # on any server (a sandbox's PYTHONDONTWRITEBYTECODE would recompile the app's modules on every start).
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    repo = (args.repo or ROOT).resolve()
    # Without --repo the environment's installed package is measured, from a folder outside the checkout.
    cwd = repo if args.repo else Path(tempfile.mkdtemp(prefix="ser-bench-"))
    files = sorted(DATA.glob("Actor_02/*.flac"))[:16]

    print(f"{args.label}: installed size ...", flush=True)
    result: dict[str, object] = {"python": args.python, "repo": str(repo), "installed": installed_size(args.python)}
    print("library cold start ...", flush=True)
    starts = [run_json(args.python, COLD_START, str(CLIP), cwd=cwd) for _ in range(args.repeats)]
    result["library_cold_start"] = rounded(sorted(starts, key=lambda s: s["import_s"] + s["load_s"])[len(starts) // 2])
    print("CLI peak memory ...", flush=True)
    cli = [args.python, "-m", "ser_models", "predict", *map(str, files)]
    result["cli"] = {"files": len(files), **rounded(run_json(args.python, PEAK_RSS, *cli, cwd=cwd))}
    print("latency ...", flush=True)
    runs = [run_json(args.python, LATENCY, str(CLIP), str(args.calls), cwd=cwd) for _ in range(args.repeats)]
    result["latency"] = {**rounded(sorted(runs, key=lambda r: r["p50_ms"])[len(runs) // 2]), "runs": args.repeats}
    print("app cold start ...", flush=True)
    apps = [app_start(args.python, repo) for _ in range(args.repeats)]
    result["app"] = sorted(apps, key=lambda a: a["cold_start_s"])[len(apps) // 2]
    result["machine"] = f"{platform.machine()}, {os.cpu_count()} cores"
    result["bytecode_cache"] = "written by the first start, read by the rest (medians of --repeats)"
    result["command"] = script_command("bench/serving.py")

    report = json.loads(args.output.read_text()) if args.output.is_file() else {}
    report[args.label] = result
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
