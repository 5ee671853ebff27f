"""Parameters and CPU latency of each architecture compared in the model card, trained or not.

    python bench/architectures.py [--calls 200] [--output reports/bench_architectures.json]

Latency does not depend on the weights, so the architectures that are not shipped (mel-crnn) are
timed with their initial weights, through the same EmotionRecognizer path as the shipped ones
(onnxruntime, exported in memory): one 4 s RAVDESS clip, decoded, p50/p95 after warm-up.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from speed import CLIP_SOURCE, data_folder, fit, percentiles, synthetic_speech, timed  # noqa: E402

from ser_models import EmotionRecognizer, load_audio  # noqa: E402
from ser_models.audio import SAMPLE_RATE  # noqa: E402
from ser_models.models import MODEL_CLASSES, EmotionModel  # noqa: E402
from ser_models.registry import WEIGHTS_DIR  # noqa: E402
from ser_models.scorers import EnsembleScorer  # noqa: E402
from train.reports import script_command  # noqa: E402


def recognizers() -> Iterator[tuple[str, EmotionRecognizer]]:
    """The bundled models by name, then every other architecture with its initial weights, one at a time
    (each is measured alone in the process, as it would be served)."""
    bundled_types = set()
    for folder in sorted(p for p in WEIGHTS_DIR.iterdir() if p.is_dir()):
        if not (folder / "config.json").is_file():
            continue  # the Whisper encoder's own folder
        recognizer = EmotionRecognizer.from_pretrained(folder.name)
        if not isinstance(recognizer.scorer, EnsembleScorer):
            bundled_types.add(recognizer.config.model_type)
        yield folder.name, recognizer
    for model_type, model_class in MODEL_CLASSES.items():
        if model_type not in bundled_types:
            with tempfile.TemporaryDirectory() as folder:
                model_class().save_pretrained(folder)
                yield f"{model_type} (untrained)", EmotionRecognizer.from_pretrained(folder)


def parameters(recognizer: EmotionRecognizer) -> int:
    scorer = recognizer.scorer
    members = scorer.members.values() if isinstance(scorer, EnsembleScorer) else [scorer]
    return sum(sum(p.numel() for p in EmotionModel.from_pretrained(member.folder).parameters()) for member in members)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--output", type=Path, default=ROOT / "reports" / "bench_architectures.json")
    args = parser.parse_args()
    source = data_folder() / CLIP_SOURCE
    audio = fit(load_audio(source)) if source.is_file() else synthetic_speech(0)
    rows = {}
    for name, recognizer in recognizers():
        latency = percentiles(timed(lambda r=recognizer: r.predict(audio, SAMPLE_RATE), args.calls))
        rows[name] = {"parameters": parameters(recognizer), "backend": recognizer.backend, "latency_ms": latency}
        n = rows[name]["parameters"]
        print(f"{name:28} {n:>10,} params  p50 {latency['p50']:7.2f}  p95 {latency['p95']:7.2f} ms")
    report = {
        "command": script_command("bench/architectures.py"),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "clip": str(CLIP_SOURCE) if source.is_file() else "synthetic",
        "calls": args.calls,
        "models": rows,
        "mean_clip_seconds": round(float(np.asarray(audio).size / SAMPLE_RATE), 2),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
