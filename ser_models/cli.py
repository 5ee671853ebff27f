"""Command line: ``python -m ser_models predict FILE... [--model NAME] [--format json|csv]``.

``python -m ser_models export-onnx FOLDER...`` writes the ONNX export served by default
(``model.onnx``) beside a model's weights; run it after replacing the weights.

JSON output is one object per line: {"file", "label", "probabilities"}. A file that
cannot be analysed is reported on stderr and skipped; the others are still predicted,
and the exit status is 1 when any file failed (2 when the model itself cannot load).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Iterator, Sequence

from .audio import AudioError, load_audio
from .inference import DEFAULT_MODEL, MODEL_DESCRIPTIONS, EmotionRecognizer
from .labels import EMOTIONS
from .models import ModelLoadError

FILES_PER_BATCH = 64


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ser_models", description="Speech emotion recognition (RAVDESS).")
    commands = parser.add_subparsers(dest="command", required=True)
    predict = commands.add_parser("predict", help="predict the emotion of audio files")
    predict.add_argument("files", nargs="+", help="audio files (WAV, FLAC, OGG, MP3)")
    predict.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"bundled model ({', '.join(MODEL_DESCRIPTIONS)}), a model folder or a Hub repo id "
        f"(default {DEFAULT_MODEL})",
    )
    predict.add_argument("--format", choices=["json", "csv"], default="json", help="JSON lines (default) or CSV")
    export = commands.add_parser("export-onnx", help="write model.onnx beside the weights of model folders")
    export.add_argument("folders", nargs="+", help="model folders (config.json and model.safetensors)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "export-onnx":
        return _export_onnx(args.folders)
    try:
        recognizer = EmotionRecognizer.from_pretrained(args.model)
    except ModelLoadError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    write = _csv_writer() if args.format == "csv" else _json_writer
    failed = 0
    for batch in _batches(args.files, FILES_PER_BATCH):
        names, speech = [], []
        for name in batch:
            try:
                speech.append(recognizer.trim(load_audio(name)))
                names.append(name)
            except AudioError as error:
                failed += 1
                print(f"error: {name}: {error}", file=sys.stderr)
        if speech:
            for name, probabilities in zip(names, recognizer.predict_speech(speech), strict=True):
                write(name, probabilities)
        sys.stdout.flush()
    if failed:
        print(f"{failed} of {len(args.files)} file(s) could not be analysed", file=sys.stderr)
    return 1 if failed else 0


def _export_onnx(folders: Sequence[str]) -> int:
    from .runtime import BackendError, save_onnx

    for folder in folders:
        try:
            print(f"wrote {save_onnx(folder)}")
        except (ModelLoadError, BackendError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    return 0


def _batches(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _json_writer(name: str, probabilities: dict[str, float]) -> None:
    label = max(probabilities, key=probabilities.get)
    print(json.dumps({"file": name, "label": label, "probabilities": probabilities}))


def _csv_writer():
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(["file", "label", *EMOTIONS])

    def write(name: str, probabilities: dict[str, float]) -> None:
        label = max(probabilities, key=probabilities.get)
        writer.writerow([name, label, *(f"{probabilities[e]:.6f}" for e in EMOTIONS)])

    return write


if __name__ == "__main__":
    sys.exit(main())
