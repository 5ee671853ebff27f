"""RAVDESS through the ``datasets`` library, from a local folder or a Hub dataset id.

Audio stays in the dataset as ``{"bytes", "path"}`` and is decoded here with soundfile:
``datasets`` 5.x decodes its ``Audio`` feature with torchcodec, whose wheels do not
load beside the CPU build of torch this project pins.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

import datasets
import numpy as np
import torch
from datasets import ClassLabel, Dataset, Features, Value

from ser_models import features, feedback
from ser_models.audio import load_audio
from ser_models.labels import EMOTIONS, GENDERS, INTENSITIES, STATEMENTS, RavdessNameError, parse_ravdess_name

DATA_ENV = "RAVDESS_DIR"
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ravdess"
AUDIO_SUFFIXES = (".wav", ".flac")

FEATURES = Features(
    {
        "audio": {"bytes": Value("binary"), "path": Value("string")},
        "emotion": ClassLabel(names=list(EMOTIONS)),
        "intensity": ClassLabel(names=list(INTENSITIES)),
        "statement": ClassLabel(names=list(STATEMENTS)),
        "repetition": Value("int8"),
        "actor": Value("int8"),
        "gender": ClassLabel(names=list(GENDERS)),
    }
)


def data_dir() -> Path:
    """The local RAVDESS copy: $RAVDESS_DIR, else ../shared/data/ravdess beside the project."""
    return Path(os.environ.get(DATA_ENV, DEFAULT_DATA_DIR))


def load_ravdess(source: str | os.PathLike | None = None, actors: Iterable[int] | None = None) -> Dataset:
    """RAVDESS speech with one column per file-name field.

    ``source`` is a folder in the official layout (``Actor_XX/03-01-EE-II-SS-RR-AA.wav``
    or ``.flac``) or a Hub dataset id whose audio paths carry RAVDESS file names.
    Any file that does not parse is reported by name; none is dropped silently.
    """
    source = data_dir() if source is None else source
    if Path(source).is_dir() and not _looks_like_hub_export(Path(source)):
        dataset = _from_folder(Path(source))
    else:
        dataset = _from_hub(str(source))
    if actors is not None:
        wanted = set(actors)
        dataset = dataset.filter(lambda actor: actor in wanted, input_columns="actor")
    return dataset


def _looks_like_hub_export(folder: Path) -> bool:
    return not any(folder.rglob("*.wav")) and not any(folder.rglob("*.flac")) and any(folder.rglob("*.parquet"))


def _from_folder(folder: Path) -> Dataset:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no .wav or .flac files under {folder}")
    _check_names(str(p) for p in files)
    # The file list and modification times form the fingerprint, so edited data is re-read.
    stamp = hashlib.sha256("".join(f"{p}{p.stat().st_mtime_ns}" for p in files).encode()).hexdigest()
    return Dataset.from_generator(
        _generate_from_files, features=FEATURES, gen_kwargs={"files": [str(p) for p in files], "stamp": stamp}
    )


def _generate_from_files(files: list[str], stamp: str):
    for path in files:
        yield {"audio": {"bytes": None, "path": path}, **_label_columns(path)}


def _from_hub(dataset_id: str) -> Dataset:
    loaded = datasets.load_dataset(dataset_id)
    dataset = datasets.concatenate_datasets(list(loaded.values())) if isinstance(loaded, dict) else loaded
    audio_column = next(
        (name for name, feature in dataset.features.items() if isinstance(feature, datasets.Audio)), "audio"
    )
    if audio_column not in dataset.column_names:
        raise ValueError(f"{dataset_id}: no audio column found among {dataset.column_names}")
    if isinstance(dataset.features[audio_column], datasets.Audio):
        dataset = dataset.cast_column(audio_column, datasets.Audio(decode=False))
    paths = [audio["path"] or "" for audio in dataset[audio_column]]
    _check_names(paths, where=dataset_id)
    labels = [_label_columns(path) for path in paths]
    columns = {"audio": dataset[audio_column], **{key: [row[key] for row in labels] for key in labels[0]}}
    return Dataset.from_dict(columns, features=FEATURES)


def _label_columns(path: str) -> dict:
    name = parse_ravdess_name(path)
    return name.as_dict()


def _check_names(paths: Iterable[str], where: str = "") -> None:
    bad = []
    for path in paths:
        try:
            parse_ravdess_name(path)
        except RavdessNameError as error:
            bad.append(str(error))
    if bad:
        shown = "\n  ".join(bad[:20]) + (f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else "")
        raise RavdessNameError(f"{len(bad)} file(s) {('in ' + where + ' ') if where else ''}do not parse:\n  {shown}")


def load_feedback(folder: str | os.PathLike) -> Dataset:
    """Consented user feedback (see ``ser_models.feedback``) as rows with ``audio`` and ``emotion``.

    The user's own label is the emotion; there is no actor, so feedback can join training
    data but never a speaker-independent test fold.
    """
    folder = Path(folder)
    metadata = sorted(folder.glob(f"{feedback.RECORDS}/*/{feedback.METADATA_NAME}"))
    if not metadata:
        raise FileNotFoundError(f"no feedback records under {folder / feedback.RECORDS}")
    rows = datasets.load_dataset("json", data_files=[str(m) for m in metadata], split="train")
    paths = [str(m.parent / name) for m, name in zip(metadata, rows["file_name"], strict=True)]
    return Dataset.from_dict(
        {"audio": [{"bytes": None, "path": p} for p in paths], "emotion": rows["true_label"]},
        features=Features({"audio": FEATURES["audio"], "emotion": FEATURES["emotion"]}),
    )


def decode(audio: dict) -> np.ndarray:
    """16 kHz mono float32 from a dataset's ``{"bytes", "path"}`` audio cell."""
    return load_audio(audio["bytes"] if audio.get("bytes") else audio["path"])


def _log_mel_batch(batch: dict, top_db: float) -> dict:
    speech = [features.trim_silence(decode(audio), top_db=top_db).audio for audio in batch["audio"]]
    audio, lengths = features.batch_inputs(speech)
    return {"log_mel": features.log_mel_spectrogram(audio), "length": lengths}


def with_log_mel(dataset: Dataset, top_db: float = features.TOP_DB, num_proc: int | None = None) -> Dataset:
    """Add the un-normalised log-mel and speech length of every clip (cached by ``datasets``).

    ``num_proc`` worker processes share the clips (``datasets.map``), for large corpora; the
    features are the same, and a cache written with one ``num_proc`` is read back under any other.
    """
    return dataset.map(
        _log_mel_batch,
        batched=True,
        batch_size=32,
        fn_kwargs={"top_db": top_db},
        num_proc=num_proc if num_proc and num_proc > 1 else None,
        desc="log-mel features",
    )


def tensors(dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(log-mel, speech lengths, emotion labels) of a dataset with features, as tensors."""
    table = dataset.with_format("torch", columns=["log_mel", "length", "emotion"])[:]
    return table["log_mel"].float(), table["length"].long(), table["emotion"].long()


EXTRA_ENV = "SER_EXTRA_DIR"
DEFAULT_EXTRA_DIR = DEFAULT_DATA_DIR.parent / "extra"
EXTRA_CORPORA = ("tess", "turev_db", "urdu")


def extra_dir() -> Path:
    """The out-of-corpus sets (TESS, TurEV-DB, URDU): $SER_EXTRA_DIR, else ../shared/data/extra."""
    return Path(os.environ.get(EXTRA_ENV, DEFAULT_EXTRA_DIR))


def load_extra(corpus: str, folder: str | os.PathLike | None = None) -> Dataset:
    """One extra corpus as rows of ``audio`` (path), ``emotion`` (RAVDESS names) and ``speaker``,
    from its ``labels.csv`` (``file,emotion,speaker``)."""
    root = Path(folder or extra_dir()) / corpus
    table = datasets.load_dataset("csv", data_files=str(root / "labels.csv"), split="train")
    unknown = sorted(set(table["emotion"]) - set(EMOTIONS))
    if unknown:
        raise ValueError(f"{root / 'labels.csv'}: emotions {unknown} are not RAVDESS emotions")
    return Dataset.from_dict(
        {
            "audio": [{"bytes": None, "path": str(root / name)} for name in table["file"]],
            "emotion": table["emotion"],
            "speaker": table["speaker"],
        },
        features=Features({"audio": FEATURES["audio"], "emotion": FEATURES["emotion"], "speaker": Value("string")}),
    )
