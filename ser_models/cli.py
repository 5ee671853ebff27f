"""Command line: ``python -m ser_models predict FILE_OR_FOLDER... [--model NAME] [--format json|csv]``.

Folders are scored file by file (``--recursive`` descends into sub-folders), in batches, with a
progress bar and a throughput line on stderr. ``--segments`` gives each file's emotion timeline
(one row per window of speech), ``--session`` treats all files as takes of one speaker and adapts
to them (``ser_models.session``; with ``--segments``, each file's windows are adapted to that file's
voice), ``--denoise`` reduces background noise first.

``python -m ser_models score-corpus INPUT OUTPUT`` scores a whole corpus (a folder, or a Parquet or ``datasets``
table of paths or audio bytes) on Ray Data into resumable Parquet shards (``ser_models.corpus``, the [corpus] extra).

``python -m ser_models export-onnx FOLDER...`` writes the ONNX export served by default
(``model.onnx``) beside a model's weights; run it after replacing the weights.

JSON output is one object per line: {"file", "label", "verdict", "snr_db", "probabilities"}, where
"verdict" is the label or "uncertain" (speech buried in noise, or a top probability below the model's
threshold) and "snr_db" the speech's estimated signal-to-noise ratio (with --segments instead
"segment", "start", "end" in seconds). Any common audio format is read, and the audio track of
a video (WAV, FLAC, MP3, OGG, M4A/AAC, WebM/Opus, MP4, MOV, MKV, AMR, AIFF, WMA; see ``audio.load_audio``).

A file that cannot be analysed is reported on stderr in one line naming it, and skipped; the others are
still predicted. The last line on stderr is always the summary (files scored, throughput). The exit status
is 1 when any file failed, 2 when the model itself cannot load, and 141 when the reader of the output went
away early (``... | head -3``): the output then stops quietly, as with other Unix tools.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from . import denoise
from .audio import MAX_SECONDS, SAMPLE_RATE, AudioError, ClippingWarning, TooLongError, load_audio
from .configs import ModelLoadError
from .inference import EmotionRecognizer, find_speech, verdict
from .labels import EMOTIONS
from .registry import DEFAULT_MODEL, MODELS
from .segments import TIMELINE_MAX_SECONDS, timeline
from .session import adapt_all

FILES_PER_BATCH = 64
# What folders are searched for: audio files, and videos (their audio track is analysed).
AUDIO_SUFFIXES = tuple(
    ".wav .flac .ogg .oga .opus .mp3 .aif .aiff .aifc .m4a .aac .webm .mp4 .mov .mkv .amr .3gp .wma .caf".split()
)
# A command that writes to a pipe whose reader has gone (`... | head -3`) is killed by SIGPIPE, and the shell
# reports 128 + 13. Python ignores SIGPIPE and raises BrokenPipeError instead; the CLI then stops quietly
# with the same status, as cat, grep or seq would (a pipeline with `set -o pipefail` sees it as they do).
EXIT_BROKEN_PIPE = 141


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ser_models", description="Speech emotion recognition (RAVDESS).")
    commands = parser.add_subparsers(dest="command", required=True)
    predict = commands.add_parser("predict", help="predict the emotion of audio files")
    predict.add_argument(
        "files",
        nargs="+",
        help="audio or video files (WAV, FLAC, MP3, OGG, M4A, WebM, MP4, MOV, MKV, AMR, AIFF, WMA) or folders of them",
    )
    predict.add_argument("--recursive", "-r", action="store_true", help="also score files in sub-folders")
    predict.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"bundled model ({', '.join(MODELS)}), a model folder or a Hub repo id (default {DEFAULT_MODEL})",
    )
    predict.add_argument("--format", choices=["json", "csv"], default="json", help="JSON lines (default) or CSV")
    predict.add_argument(
        "--segments", action="store_true", help="an emotion timeline per file: one row per window of speech"
    )
    predict.add_argument(
        "--session",
        action="store_true",
        help="all files are takes of one speaker: adapt to that voice (with --segments: each file is one speaker)",
    )
    predict.add_argument("--denoise", action="store_true", help="reduce background noise before the analysis")
    predict.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    corpus = commands.add_parser(
        "score-corpus",
        help="score a corpus on Ray Data into Parquet shards (resumable; needs ser-models[corpus])",
        description="Score every file of INPUT into Parquet shards under OUTPUT; run it again to resume. "
        "Columns: index, file, verdict, snr_db (with --segments: segment, start, end), label, "
        "prob_neutral ... prob_surprised, seconds, error.",
    )
    corpus.add_argument(
        "input",
        help="a folder of audio files (searched recursively), a Parquet file or folder, or a saved `datasets` table",
    )
    corpus.add_argument("output", help="the folder of Parquet shards (created; shards already there are skipped)")
    corpus.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"bundled model ({', '.join(MODELS)}), a model folder or a Hub repo id (default {DEFAULT_MODEL})",
    )
    corpus.add_argument("--segments", action="store_true", help="one row per window of speech (emotion timelines)")
    corpus.add_argument(
        "--column", help="the table column of paths or audio bytes (default: audio, path, file, ... or the only one)"
    )
    corpus.add_argument(
        "--address", help="a Ray cluster to run on (default: $RAY_ADDRESS, or Ray started in this process)"
    )
    corpus.add_argument("--workers", type=_positive, help="actors, each with the model loaded (default: one per CPU)")
    corpus.add_argument("--batch-size", type=_positive, default=16, help="files per batch sent to an actor (16)")
    corpus.add_argument("--shard-size", type=_positive, default=256, help="files per output shard (256)")
    corpus.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    export = commands.add_parser("export-onnx", help="write model.onnx beside the weights of model folders")
    export.add_argument("folders", nargs="+", help="model folders (config.json and model.safetensors)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:
        # stdout now leads nowhere: point it at /dev/null, or the interpreter's last flush of what is still
        # buffered raises again on the way out ("Exception ignored ... BrokenPipeError").
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        except (OSError, ValueError):  # a stdout without a file descriptor (replaced in-process): nothing to do
            pass
        return EXIT_BROKEN_PIPE


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "export-onnx":
        return _export_onnx(args.folders)
    if args.command == "score-corpus":
        return _score_corpus(args)
    if args.denoise and not denoise.available():
        print(f"error: {denoise.INSTALL_HINT}", file=sys.stderr)
        return 2
    try:
        recognizer = EmotionRecognizer.from_pretrained(args.model)
    except ModelLoadError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    files = list(expand(args.files, args.recursive))
    if not files:
        print("error: no audio files found", file=sys.stderr)
        return 1
    write = _csv_writer(args.segments) if args.format == "csv" else _json_writer
    started = time.perf_counter()
    progress = _progress(len(files), disabled=args.no_progress)
    try:
        failed, audio_seconds = _score(args, recognizer, files, write, progress)
    except BrokenPipeError:
        progress.leave = False  # the reader has gone: wipe the bar rather than leave it half drawn
        raise
    finally:
        progress.close()
    seconds = time.perf_counter() - started
    scored = len(files) - failed
    # The last line on stderr, failures or not.
    print(
        f"scored {scored} of {len(files)} file(s)"
        + (f" ({failed} could not be analysed)" if failed else "")
        + f", {audio_seconds:.1f} s of audio, in {seconds:.2f} s: "
        f"{scored / seconds:.1f} files/s, {audio_seconds / seconds:.0f}x real time",
        file=sys.stderr,
    )
    return 1 if failed else 0


def _score(
    args: argparse.Namespace, recognizer: EmotionRecognizer, files: Sequence[str], write: Callable, progress
) -> tuple[int, float]:
    """Write the rows of every file; report each one that fails in one line. Returns (failed, seconds of audio)."""
    prepare = denoise.reduce_noise if args.denoise else (lambda audio: audio)
    max_seconds = TIMELINE_MAX_SECONDS if args.segments else MAX_SECONDS
    failed, audio_seconds, results = 0, 0.0, []

    def report(message: str) -> None:  # above the progress bar
        nonlocal failed
        failed += 1
        progress.write(f"error: {message}", file=sys.stderr)

    for batch in _batches(files, FILES_PER_BATCH):
        names, speech, snrs = [], [], []
        for name in batch:
            try:  # load_audio's messages name the file (as given here, folders and all)
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", ClippingWarning)
                    audio = load_audio(name, max_seconds=max_seconds, name=name)
                _warn(progress, name, caught)
            except TooLongError as error:
                hint = "" if args.segments else " Or use --segments for the emotion timeline of a long recording."
                report(f"{error}{hint}")
                continue
            except AudioError as error:
                report(str(error))
                continue
            try:  # the analysis's messages do not: name it once, in front
                audio = prepare(audio)
                audio_seconds += audio.size / SAMPLE_RATE
                if args.segments:
                    _write_timeline(recognizer, name, audio, write, one_speaker=args.session)
                else:
                    trimmed, check = find_speech(audio, recognizer.top_db)
                    speech.append(trimmed.audio)
                    names.append(name)
                    snrs.append(check.snr_db)
            except AudioError as error:
                report(f"{name!r}: {error}")
        if speech:
            results += zip(names, recognizer.predict_speech(speech), snrs, strict=True)
            if not args.session:  # a session's results wait until every take is in
                for name, probabilities, snr in results:
                    answer = verdict(probabilities, snr, recognizer.confidence_threshold)
                    write(name, probabilities, verdict=answer, snr_db=snr)
                results = []
        sys.stdout.flush()
        progress.update(len(batch))
    if args.session and results:
        for (name, _, snr), adapted in zip(results, adapt_all([p for _, p, _ in results]), strict=True):
            write(name, adapted, verdict=verdict(adapted, snr, recognizer.confidence_threshold), snr_db=snr)
    sys.stdout.flush()  # here, where a closed pipe is caught, not at the interpreter's exit
    return failed, audio_seconds


def _warn(progress, name: str, caught: list[warnings.WarningMessage]) -> None:
    """A clipped recording is scored but said, in one line naming the file; other warnings go on as they came."""
    for warning in caught:
        if issubclass(warning.category, ClippingWarning):
            progress.write(f"warning: {name!r}: {warning.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)


def expand(paths: Sequence[str], recursive: bool = False) -> Iterator[str]:
    """Files as given; folders replaced by the audio files in them (sorted), sub-folders with ``recursive``."""
    for path in paths:
        folder = Path(path)
        if not folder.is_dir():
            yield path
            continue
        pattern = "**/*" if recursive else "*"
        yield from sorted(str(p) for p in folder.glob(pattern) if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())


def _write_timeline(recognizer: EmotionRecognizer, name: str, audio, write: Callable, one_speaker: bool) -> None:
    for segment in timeline(recognizer, audio, one_speaker=one_speaker).segments:
        write(name, segment.probabilities, segment)


def _progress(total: int, disabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="file", desc="scoring", disable=disabled or total < 2, file=sys.stderr)


def _export_onnx(folders: Sequence[str]) -> int:
    from .runtime import torch_available

    if not torch_available():
        print("error: exporting to ONNX needs PyTorch: pip install 'ser-models[train]'", file=sys.stderr)
        return 2
    from .export import save_onnx

    for folder in folders:
        try:
            print(f"wrote {save_onnx(folder)}")
        except ModelLoadError as error:  # also runtime.BackendError
            print(f"error: {error}", file=sys.stderr)
            return 2
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _score_corpus(args: argparse.Namespace) -> int:
    """``score-corpus``: exit 0 when every file of INPUT has its scores in OUTPUT, 1 when some are error rows
    (this run's or an earlier one's), 2 when the job cannot start (no Ray, unreadable INPUT, a model that fails)."""
    from . import corpus

    try:  # here, once, so that a model that cannot load stops the job before Ray starts
        EmotionRecognizer.from_pretrained(args.model)
    except ModelLoadError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    progress = None
    try:
        items = corpus.list_inputs(args.input, args.column)
        progress = _progress(len(items), disabled=args.no_progress)
        report = corpus.score_corpus(
            args.input,
            args.output,
            model=args.model,
            segments=args.segments,
            workers=args.workers,
            address=args.address,
            batch_size=args.batch_size,
            shard_size=args.shard_size,
            column=args.column,
            progress=progress.update,
            items=items,
        )
    except corpus.CorpusError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        if progress is not None:
            progress.close()
    for line in report.summary_lines():
        print(line, file=sys.stderr)
    return 1 if report.failed or report.failed_earlier else 0


def _batches(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _json_writer(name: str, probabilities: dict[str, float], segment=None, verdict=None, snr_db=None) -> None:
    label = max(probabilities, key=probabilities.get)
    if segment is None:
        where = {"verdict": verdict, "snr_db": round(snr_db, 1)} if verdict else {}
    else:
        where = {"segment": segment.segment, "start": segment.start, "end": segment.end}
    print(json.dumps({"file": name, "label": label, **where, "probabilities": probabilities}))


def _csv_writer(segments: bool = False):
    writer = csv.writer(sys.stdout, lineterminator="\n")
    where = ["segment", "start", "end"] if segments else ["verdict", "snr_db"]
    writer.writerow(["file", *where, "label", *EMOTIONS])

    def write(name: str, probabilities: dict[str, float], segment=None, verdict=None, snr_db=None) -> None:
        label = max(probabilities, key=probabilities.get)
        if segment is None:
            where = [verdict, f"{snr_db:.1f}"]
        else:
            where = [segment.segment, f"{segment.start:.3f}", f"{segment.end:.3f}"]
        writer.writerow([name, *where, label, *(f"{probabilities[e]:.6f}" for e in EMOTIONS)])

    return write


if __name__ == "__main__":
    sys.exit(main())
