"""Score a whole corpus on Ray Data: ``ser-models score-corpus INPUT OUTPUT`` (``pip install "ser-models[corpus]"``).

INPUT is a folder of audio files (searched recursively for the extensions ``predict`` picks up in a folder), a
Parquet file or folder of Parquet files, or a ``datasets`` table saved with ``save_to_disk`` (one split's folder),
with a column of paths or of encoded audio bytes (``datasets.Audio``'s ``{"bytes", "path"}`` struct too).

The list of inputs (a folder's files sorted, a table's rows in order) is cut into shards of ``shard_size`` items.
Ray Data sends the pending items, ``batch_size`` at a time, to a pool of ``workers`` actors, each of which loads
the model once; the driver writes each shard to OUTPUT as soon as all of its items are back, under a temporary
name renamed into place, so a shard that exists is complete. A shard is named by its position and a hash of its
inputs and of the settings (``shard-00003-1f2e3d4c5b6a.parquet``): run the same command again after an
interruption and the shards already written are skipped. Shards of an earlier input list (files added or removed
since) are deleted, so that OUTPUT always holds exactly the current input. OUTPUT reads as one table:
``pandas.read_parquet(OUTPUT)`` (``_corpus.json``, the run's settings, and hidden temporary files are ignored).

Columns (see ``output_schema``): ``index`` (the item's position in the input list), ``file``, then ``verdict`` and
``snr_db`` (or, with ``segments``, one row per window of speech with ``segment``, ``start`` and ``end`` in seconds),
``label``, ``prob_neutral`` ... ``prob_surprised`` (the eight probabilities, in ``labels.EMOTIONS`` order),
``seconds`` (the recording's length) and ``error``. A file that cannot be analysed is one row whose ``error`` holds
the message the CLI would print (every other column but ``index`` and ``file`` null): the job never stops for a
bad file. Ray and pyarrow are imported only here, and only when a corpus is scored.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .audio import MAX_SECONDS, SAMPLE_RATE, AudioError, TooLongError, load_audio
from .inference import EmotionRecognizer, find_speech, verdict
from .labels import EMOTIONS
from .registry import DEFAULT_MODEL
from .segments import TIMELINE_MAX_SECONDS, timeline

log = logging.getLogger("ser_models.corpus")

INSTALL_HINT = 'pip install "ser-models[corpus]"'
SHARD_SIZE = 256  # items per output shard: the unit that is written, and skipped on a second run
BATCH_SIZE = 16  # items per map_batches call (one Ray Data block each)
PROB_COLUMNS = tuple(f"prob_{emotion}" for emotion in EMOTIONS)
MANIFEST = "_corpus.json"  # the settings OUTPUT was written with; "_" keeps it out of Parquet dataset readers
SHARD_PATTERN = "shard-*.parquet"
# Columns of a table looked at, in this order, when none is named (``column=``).
COLUMN_NAMES = ("audio", "path", "file", "filename", "file_name", "filepath", "bytes")
TOO_LONG_HINT = " Or use --segments for the emotion timeline of a long recording."
_ROWS = "_rows"  # how many rows the item produced: lets the driver tell when every row of an item is back


class CorpusError(Exception):
    """The corpus job cannot start (no Ray, an unreadable input, an OUTPUT of other settings); for the user."""


@dataclass(frozen=True)
class Item:
    """One input: a file to read, or encoded audio bytes (``file`` then names it, as the table did or ``row N``).

    ``file`` is the name as the input list gives it (what the rows and the messages show); ``path``, where set, is
    where to read it: the absolute path, so that a relative INPUT means the same on every Ray worker.
    """

    index: int
    file: str
    data: bytes | None = None
    path: str | None = None


@dataclass(frozen=True)
class Shard:
    number: int
    items: tuple[Item, ...]
    name: str  # shard-NNNNN-HASH.parquet


@dataclass
class CorpusReport:
    """What one ``score_corpus`` run did."""

    output: str
    files: int = 0  # items in the input
    shards: int = 0
    shards_written: int = 0
    shards_skipped: int = 0  # already complete in OUTPUT from an earlier run
    files_skipped: int = 0
    scored: int = 0  # items of this run analysed without error
    failed: int = 0  # items of this run that became error rows
    failed_earlier: int = 0  # error rows in the shards skipped
    rows: int = 0  # rows written by this run (one per window with segments)
    stale_removed: int = 0  # shards of an earlier input list deleted from OUTPUT
    audio_seconds: float = 0.0  # of the items this run scored
    seconds: float = 0.0  # wall time from the job's start (Ray running) to its last shard, actors starting included
    first_result_seconds: float | None = None  # wall time until the first batch came back (actors started)
    workers: int = 0  # actors used (no more than there are batches)
    written: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)

    def summary_lines(self) -> list[str]:
        """What the CLI prints on stderr, the summary last."""
        lines = []
        if self.stale_removed:
            lines.append(f"removed {self.stale_removed} shard(s) of an earlier input list from {self.output}")
        if self.shards_skipped:
            lines.append(
                f"skipped {self.shards_skipped} of {self.shards} shard(s) ({self.files_skipped} file(s)) already in "
                f"{self.output}" + (f", {self.failed_earlier} of them error rows" if self.failed_earlier else "")
            )
        if self.shards_written == 0 and self.shards_skipped == self.shards:
            lines.append(f"nothing to score: all {self.files} file(s) have their rows in {self.output}")
            return lines
        files = self.scored + self.failed
        rate = files / self.seconds if self.seconds else 0.0
        lines.append(
            f"scored {self.scored} of {files} file(s)"
            + (f" ({self.failed} could not be analysed)" if self.failed else "")
            + f" with {self.workers} worker(s), {self.audio_seconds:.1f} s of audio, in {self.seconds:.2f} s: "
            f"{rate:.1f} files/s, {self.audio_seconds / max(self.seconds, 1e-9):.0f}x real time; "
            f"{self.shards_written} shard(s) written to {self.output}"
        )
        return lines


# ---------------------------------------------------------------- inputs


def list_inputs(source: str | os.PathLike, column: str | None = None) -> list[Item]:
    """The items of INPUT in a fixed order: a folder's audio files sorted, or a table's rows in order."""
    path = Path(source)
    if not path.exists():
        raise CorpusError(f"{str(source)!r} does not exist")
    if path.is_dir():
        if (path / "dataset_dict.json").is_file():
            splits = ", ".join(sorted(p.name for p in path.iterdir() if p.is_dir()))
            raise CorpusError(
                f"{str(source)!r} holds several splits of a `datasets` table ({splits}): give one split's folder"
            )
        if (path / "state.json").is_file() and (path / "dataset_info.json").is_file():
            return _table_items(_read_saved_dataset(path), column, str(source))
        from .cli import expand

        files = list(expand([str(path)], recursive=True))
        if files:
            return [Item(index, name, path=os.path.abspath(name)) for index, name in enumerate(files)]
        if any(path.rglob("*.parquet")):
            return _table_items(_read_parquet(path), column, str(source))
        raise CorpusError(f"no audio files (or Parquet files) found in {str(source)!r}")
    if path.suffix.lower() in (".parquet", ".pq"):
        return _table_items(_read_parquet(path), column, str(source))
    if path.suffix.lower() == ".arrow":
        return _table_items(_read_arrow(path), column, str(source))
    from .cli import AUDIO_SUFFIXES

    if path.suffix.lower() in AUDIO_SUFFIXES:
        return [Item(0, str(source), path=os.path.abspath(source))]
    raise CorpusError(
        f"{str(source)!r} is neither a folder, a Parquet file nor a saved `datasets` table (save_to_disk's folder)"
    )


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise CorpusError(f"scoring a corpus needs Ray Data and pyarrow: {INSTALL_HINT}") from None
    return pa, pq


def _read_parquet(path: Path):
    _, pq = _pyarrow()
    try:
        return pq.read_table(path)
    except Exception as error:  # pyarrow raises several kinds; the user needs the message
        raise CorpusError(f"{str(path)!r} could not be read as Parquet ({type(error).__name__}: {error})") from None


def _read_arrow(path: Path):
    pa, _ = _pyarrow()
    try:
        with pa.memory_map(str(path)) as source:
            return pa.ipc.open_stream(source).read_all()
    except Exception as error:
        raise CorpusError(
            f"{str(path)!r} could not be read as an Arrow table ({type(error).__name__}: {error})"
        ) from None


def _read_saved_dataset(folder: Path):
    """A table ``datasets.Dataset.save_to_disk`` wrote: its Arrow stream files in state.json's order."""
    pa, _ = _pyarrow()
    try:
        state = json.loads((folder / "state.json").read_text())
        files = [folder / entry["filename"] for entry in state["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CorpusError(f"{str(folder)!r} is not a readable saved `datasets` table ({error})") from None
    return pa.concat_tables([_read_arrow(file) for file in files]) if files else pa.table({})


def _table_items(table, column: str | None, source: str) -> list[Item]:
    """One item per row, from a column of paths (strings), of bytes, or of {"bytes", "path"} structs."""
    name = column or _guess_column(table, source)
    if name not in table.column_names:
        raise CorpusError(f"{source!r} has no column {name!r}; its columns: {', '.join(table.column_names)}")
    kind = table.schema.field(name).type
    values = table.column(name).to_pylist()
    items = []
    for index, value in enumerate(values):
        path, data = None, None
        if isinstance(value, dict):  # datasets.Audio's storage
            path, data = value.get("path"), value.get("bytes")
        elif isinstance(value, bytes):
            data = value
        elif isinstance(value, str):
            path = value
        elif value is not None:
            raise CorpusError(f"{source!r}: column {name!r} holds {kind}, not paths or audio bytes")
        # A row with neither becomes an error row, like any other input that cannot be read.
        where = os.path.abspath(path) if path and data is None else None  # relative: to the current folder
        items.append(Item(index, path if path else f"row {index}", data, where))
    if not items:
        raise CorpusError(f"{source!r} has no rows")
    return items


def _guess_column(table, source: str) -> str:
    pa, _ = _pyarrow()

    def usable(field) -> bool:
        kind = field.type
        if pa.types.is_struct(kind):
            return {kind.field(i).name for i in range(kind.num_fields)} >= {"bytes", "path"}
        return any(
            test(kind)
            for test in (pa.types.is_string, pa.types.is_large_string, pa.types.is_binary, pa.types.is_large_binary)
        )

    candidates = [f.name for f in table.schema if usable(f)]
    for preferred in COLUMN_NAMES:
        if preferred in candidates:
            return preferred
    if len(candidates) == 1:
        return candidates[0]
    raise CorpusError(
        f"{source!r}: name the column of paths or audio bytes (--column); candidates: "
        + (", ".join(candidates) or "none")
    )


# ---------------------------------------------------------------- shards


def plan_shards(items: Sequence[Item], shard_size: int, settings: dict) -> list[Shard]:
    """Fixed-size chunks of the input list, each named by its position and a hash of its items and ``settings``."""
    if shard_size < 1:
        raise ValueError("shard_size must be at least 1")
    shards = []
    for number, start in enumerate(range(0, len(items), shard_size)):
        chunk = tuple(items[start : start + shard_size])
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
        for item in chunk:
            content = hashlib.sha256(item.data).hexdigest() if item.data is not None else ""
            digest.update(f"{item.index}\0{item.file}\0{content}\n".encode())
        shards.append(Shard(number, chunk, f"shard-{number:05d}-{digest.hexdigest()[:12]}.parquet"))
    return shards


def shard_complete(path: Path) -> bool:
    """A shard renamed into place is complete; its Parquet footer is read as a last check (a damaged disk)."""
    if not path.is_file():
        return False
    _, pq = _pyarrow()
    try:
        pq.read_metadata(path)
    except Exception:
        return False
    return True


def output_schema(segments: bool = False):
    """The Parquet schema of every shard (the same for error rows and for a shard of errors only)."""
    pa, _ = _pyarrow()
    where = (
        [("segment", pa.int32()), ("start", pa.float64()), ("end", pa.float64())]
        if segments
        else [("verdict", pa.string()), ("snr_db", pa.float64())]
    )
    return pa.schema(
        [
            ("index", pa.int64()),
            ("file", pa.string()),
            *where,
            ("label", pa.string()),
            *[(name, pa.float64()) for name in PROB_COLUMNS],
            ("seconds", pa.float64()),
            ("error", pa.string()),
        ]
    )


# ---------------------------------------------------------------- scoring (runs in the actors; no Ray needed)


def score_items(recognizer: EmotionRecognizer, items: Sequence[Item], segments: bool = False) -> list[dict]:
    """The output rows of ``items``: one per item (with ``segments``, one per window of speech), error rows included.

    The same steps as ``ser-models predict``: the files' speech is scored in one batch, so the probabilities are
    the CLI's. Nothing raised for one item stops the others: an AudioError becomes its message, anything else
    the message with the exception's type.
    """
    rows: list[list[dict]] = [[] for _ in items]
    pending = []  # (position, speech, snr_db, seconds) for one batched prediction
    for position, item in enumerate(items):
        try:
            if segments:
                audio = _load(item, TIMELINE_MAX_SECONDS)
                seconds = audio.size / SAMPLE_RATE
                rows[position] = [
                    _row(item, s.probabilities, seconds, segment=s.segment, start=s.start, end=s.end)
                    for s in timeline(recognizer, audio).segments
                ]
            else:
                audio = _load(item, MAX_SECONDS)
                try:
                    trimmed, check = find_speech(audio, recognizer.top_db)
                except AudioError as error:  # the analysis's messages do not name the file: name it once, in front
                    raise AudioError(f"{item.file!r}: {error}") from None
                pending.append((position, trimmed.audio, check.snr_db, audio.size / SAMPLE_RATE))
        except Exception as error:  # a bad file is a row, never the end of the job
            rows[position] = [_error_row(item, error, segments)]
    if pending:
        for (position, _, snr_db, seconds), probabilities in zip(pending, _predict(recognizer, pending), strict=True):
            item = items[position]
            if isinstance(probabilities, Exception):
                rows[position] = [_error_row(item, probabilities, segments)]
                continue
            answer = verdict(probabilities, snr_db, recognizer.confidence_threshold)
            rows[position] = [_row(item, probabilities, seconds, verdict=answer, snr_db=snr_db)]
    for item_rows in rows:
        for row in item_rows:
            row[_ROWS] = len(item_rows)
    return [row for item_rows in rows for row in item_rows]


def _load(item: Item, max_seconds: float):
    """load_audio's messages name the file as the input list does (the path, folders and all, as the CLI does)."""
    if item.data is not None:
        return load_audio(item.data, max_seconds=max_seconds, name=item.file)
    return load_audio(item.path or item.file, max_seconds=max_seconds, name=item.file)


def _predict(recognizer: EmotionRecognizer, pending: list) -> list:
    """Probabilities for each pending speech: one batch, or one by one where the batch fails (the failing item's
    exception in its place)."""
    try:
        return recognizer.predict_speech([speech for _, speech, _, _ in pending])
    except Exception:
        results = []
        for _, speech, _, _ in pending:
            try:
                results.append(recognizer.predict_speech([speech])[0])
            except Exception as error:
                results.append(error)
        return results


def error_message(item: Item, error: BaseException, segments: bool = False) -> str:
    """What the CLI prints for a file it cannot analyse (without "error: "); other exceptions keep their type."""
    if isinstance(error, TooLongError) and not segments:
        return f"{error}{TOO_LONG_HINT}"
    if isinstance(error, AudioError):
        return str(error)
    return f"{item.file!r}: unexpected {type(error).__name__}: {error}"


def _error_row(item: Item, error: BaseException, segments: bool) -> dict:
    """Every column of the schema, null but for ``index``, ``file`` and ``error``."""
    where = ("segment", "start", "end") if segments else ("verdict", "snr_db")
    empty = dict.fromkeys((*where, "label", *PROB_COLUMNS, "seconds"))
    return {"index": item.index, "file": item.file, **empty, "error": error_message(item, error, segments)}


def _row(item: Item, probabilities: dict[str, float], seconds: float, **where) -> dict:
    return {
        "index": item.index,
        "file": item.file,
        **where,
        "label": max(probabilities, key=probabilities.get),
        **{column: float(probabilities[emotion]) for column, emotion in zip(PROB_COLUMNS, EMOTIONS, strict=True)},
        "seconds": seconds,
        "error": None,
    }


class CorpusScorer:
    """The Ray Data actor: loads the model once, then turns batches of items into output rows."""

    def __init__(self, model: str, segments: bool) -> None:
        self.recognizer = EmotionRecognizer.from_pretrained(model)
        self.segments = segments

    def __call__(self, batch):
        pa, _ = _pyarrow()
        items = [Item(row["index"], row["file"], row["data"], row["path"]) for row in batch.to_pylist()]
        schema = output_schema(self.segments)
        schema = schema.append(pa.field(_ROWS, pa.int64()))
        rows = score_items(self.recognizer, items, self.segments)
        return pa.Table.from_pylist(rows, schema=schema)


# ---------------------------------------------------------------- the job


def score_corpus(
    source: str | os.PathLike,
    output: str | os.PathLike,
    model: str = DEFAULT_MODEL,
    segments: bool = False,
    workers: int | None = None,
    address: str | None = None,
    batch_size: int = BATCH_SIZE,
    shard_size: int = SHARD_SIZE,
    column: str | None = None,
    progress: Callable[[int], None] | None = None,
    items: Sequence[Item] | None = None,
) -> CorpusReport:
    """Score every item of ``source`` into Parquet shards under ``output`` (see the module's docstring).

    Ray runs in this process (``ray.init(num_cpus=workers)``) unless ``address`` (or $RAY_ADDRESS, as under
    ``ray job submit``) names a cluster, or Ray is already initialised (then it is used as it is, and left
    running). ``workers`` actors (default: one per CPU Ray has) each load ``model`` once. ``progress`` is
    called with a number of items done: those skipped, then those of each batch. ``items``: ``list_inputs``'s
    answer, where the caller already has it.
    """
    if batch_size < 1 or shard_size < 1 or (workers is not None and workers < 1):
        raise ValueError("workers, batch_size and shard_size must be at least 1")
    try:
        import ray
    except ImportError:
        raise CorpusError(f"scoring a corpus needs Ray Data: {INSTALL_HINT}") from None
    items = list(items) if items is not None else list_inputs(source, column)
    output = Path(output)
    settings = {"model": str(model), "segments": bool(segments)}
    _check_manifest(output, settings)
    shards = plan_shards(items, shard_size, settings)
    report = CorpusReport(output=str(output), files=len(items), shards=len(shards))
    done = [shard for shard in shards if shard_complete(output / shard.name)]
    report.shards_skipped, report.files_skipped = len(done), sum(len(s.items) for s in done)
    report.failed_earlier = sum(_errors_in(output / shard.name) for shard in done)
    if progress and report.files_skipped:
        progress(report.files_skipped)
    current = {shard.name for shard in shards}
    for stale in output.glob(SHARD_PATTERN):
        if stale.name not in current:
            stale.unlink()
            report.stale_removed += 1
    todo = [shard for shard in shards if shard.name not in {s.name for s in done}]
    if report.stale_removed:
        log.warning("removed %d shard(s) of an earlier input list from %s", report.stale_removed, output)
    if not todo:
        return report
    started_here = _start_ray(ray, workers, address)
    try:
        workers = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        report.workers = min(workers, -(-sum(len(s.items) for s in todo) // batch_size))
        _run(ray, todo, output, model, segments, workers, batch_size, report, progress)
    finally:
        if started_here:
            ray.shutdown()
    return report


def _errors_in(path: Path) -> int:
    _, pq = _pyarrow()
    errors = pq.read_table(path, columns=["error"]).column("error")
    return len(errors) - errors.null_count


def _check_manifest(output: Path, settings: dict) -> None:
    manifest = output / MANIFEST
    if manifest.is_file():
        try:
            earlier = json.loads(manifest.read_text())
        except ValueError:
            earlier = None
        if isinstance(earlier, dict) and {k: earlier.get(k) for k in settings} != settings:
            raise CorpusError(
                f"{str(output)!r} holds scores of other settings ({', '.join(f'{k}={v}' for k, v in earlier.items())}):"
                " choose another OUTPUT folder, or delete it to start over"
            )
    elif output.exists() and not output.is_dir():
        raise CorpusError(f"{str(output)!r} exists and is not a folder")
    output.mkdir(parents=True, exist_ok=True)
    _atomic_write(manifest, json.dumps(settings, indent=2).encode())


def _atomic_write(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def _start_ray(ray, workers: int | None, address: str | None) -> bool:
    """Connect to ``address`` / $RAY_ADDRESS, or start Ray here; False when Ray was already running here."""
    if ray.is_initialized():
        return False
    quiet = {"log_to_driver": False, "logging_level": logging.ERROR}
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, **quiet)
    else:
        # "local": a Ray of its own, even where `ray start` left a cluster running on this machine.
        ray.init(address="local", num_cpus=workers or os.cpu_count() or 1, include_dashboard=False, **quiet)
    return True


def _run(ray, todo: list[Shard], output: Path, model, segments, workers, batch_size, report, progress) -> None:
    import ray.data

    pa, pq = _pyarrow()
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # not "Progress bars disabled" and such
    items = [item for shard in todo for item in shard.items]
    shard_of = {item.index: shard for shard in todo for item in shard.items}
    blocks = [  # one block per batch: Ray Data spreads blocks over the actors, so batches are the unit of balance
        pa.table(
            {
                "index": pa.array([i.index for i in chunk], pa.int64()),
                "file": pa.array([i.file for i in chunk], pa.string()),
                "data": pa.array([i.data for i in chunk], pa.binary()),
                "path": pa.array([i.path for i in chunk], pa.string()),
            }
        )
        for chunk in _chunks(items, batch_size)
    ]
    dataset = ray.data.from_arrow(blocks).map_batches(
        CorpusScorer,
        fn_constructor_kwargs={"model": str(model), "segments": bool(segments)},
        batch_size=batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=min(workers, len(blocks))),  # no actor without a batch to score
        num_cpus=1,
    )
    schema = output_schema(segments)
    pieces: dict[str, list] = {shard.name: [] for shard in todo}
    rows_left: dict[int, int | None] = {item.index: None for item in items}  # None: nothing back yet
    items_left = {shard.name: len(shard.items) for shard in todo}
    started = time.perf_counter()
    for batch in dataset.iter_batches(batch_format="pyarrow", batch_size=None):
        if report.first_result_seconds is None:
            report.first_result_seconds = time.perf_counter() - started
        owners, finished = [], 0
        columns = (batch.column(name).to_pylist() for name in ("index", _ROWS, "error", "seconds"))
        for index, count, error, seconds in zip(*columns, strict=True):
            owner = shard_of[index].name
            owners.append(owner)
            left = (count if rows_left[index] is None else rows_left[index]) - 1
            rows_left[index] = left
            if left == 0:  # every row of this item is back
                finished += 1
                items_left[owner] -= 1
                if error is None:
                    report.scored += 1
                    report.audio_seconds += seconds
                else:
                    report.failed += 1
        report.rows += batch.num_rows
        for name in dict.fromkeys(owners):
            pieces[name].append(batch.filter(pa.array([owner == name for owner in owners])))
            if items_left[name] == 0:
                _write_shard(pq, output / name, pa.concat_tables(pieces.pop(name)), schema)
                report.shards_written += 1
                report.written.append(name)
        if progress:
            progress(finished)
    report.seconds = time.perf_counter() - started
    incomplete = [name for name, left in items_left.items() if left]
    if incomplete:  # not expected: every item yields at least one row, errors included
        raise RuntimeError(f"Ray Data returned no results for some items of {len(incomplete)} shard(s)")


def _write_shard(pq, path: Path, table, schema) -> None:
    """Rows in input order (an item's windows in time order: the sort is stable), renamed into place when whole."""
    table = table.sort_by("index").select(schema.names).cast(schema)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(table, temporary)
    os.replace(temporary, path)  # atomic: a shard under its final name is complete


def _chunks(items: Sequence, size: int) -> Iterable[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
