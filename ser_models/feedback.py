"""User feedback: the emotion that was meant, and the clip itself, stored only with explicit consent.

Each record is one folder, ``records/<time>-<id>/`` holding ``clip.flac`` (16 kHz mono) and
``metadata.jsonl`` (one line). It is built in ``.partial/`` and moved into ``records/`` with a
single ``rename``, after every byte has been fsynced: a reader, an upload or a crash sees a
whole record or none. ``datasets`` loads the folder with
``load_dataset("json", data_files="records/*/metadata.jsonl")`` (see ``train.data.load_feedback``).

Consent is the boolean ``True`` and nothing else. Within one app session a clip is stored at
most once and at most MAX_PER_HOUR records an hour; the whole folder is capped at
$SER_FEEDBACK_MAX_MB (default 500).

Several processes may write into one folder (app workers, or Space replicas, each pushing its own
folder to the same Hub dataset): there is no shared index to update, a record's name is its UTC time
and a random uuid4 (unique across processes and machines), and the size cap is checked and the record
moved into ``records/`` under one file lock (``.partial/.lock``), so it holds for all of them together.
The per-session limits live in the memory of the process serving that browser session: Gradio keeps
a session in one process, so they hold per session, whatever the number of processes or replicas.

When a Hub dataset repo is configured, ``huggingface_hub.CommitScheduler`` pushes new records
every few minutes; ``.partial/`` is never uploaded. It only ever adds files, and records from
different replicas never share a path, so their commits cannot collide; a failed push is retried.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import soundfile as sf
from filelock import FileLock, Timeout

from .audio import MAX_SECONDS, SAMPLE_RATE
from .labels import EMOTIONS, STATEMENTS

log = logging.getLogger("ser_models.feedback")

FEEDBACK_DIR_ENV = "SER_FEEDBACK_DIR"
FEEDBACK_REPO_ENV = "SER_FEEDBACK_REPO"
FEEDBACK_MAX_MB_ENV = "SER_FEEDBACK_MAX_MB"
DEFAULT_FEEDBACK_MAX_MB = 500.0
MAX_PER_HOUR = 20  # records per app session: a person donates a few takes, a script thousands
SESSION_MEMORY_SECONDS = 24 * 3600  # how long a quiet session's clips and times are remembered
DEFAULT_FEEDBACK_DIR = Path("feedback")
RECORDS = "records"
PARTIAL = ".partial"
CLIP_NAME = "clip.flac"
METADATA_NAME = "metadata.jsonl"
PUSH_EVERY_MINUTES = 10
STALE_PARTIAL_SECONDS = 600  # a write in progress never takes this long; older leftovers are from a crash
LOCK_NAME = ".lock"  # in PARTIAL: held by any process checking the size cap and publishing a record
LOCK_TIMEOUT_SECONDS = 30.0  # the lock is held for a folder scan and a rename, never near this long


class FeedbackError(ValueError):
    """Feedback that cannot be stored; the message is written for the end user."""


class ConsentRequiredError(FeedbackError):
    """The user did not tick the consent box, so nothing may be written."""


class FeedbackLimitError(FeedbackError):
    """The clip was already stored, the session sent too many, or the store is full."""


@dataclass(frozen=True)
class FeedbackRecord:
    """One donated clip with what the user says it expresses and what the model said."""

    id: str
    timestamp: str
    true_label: str
    target: str | None
    prediction: str
    model: str
    probabilities: dict[str, float]
    sentence: str | None
    seconds: float
    file_name: str = CLIP_NAME


class FeedbackStore:
    """An append-only folder of consented feedback records, safe for concurrent writers.

    >>> store = FeedbackStore("feedback")
    >>> store.save(samples, consent=True, true_label="sad", prediction="calm", model="mel-cnn",
    ...            probabilities=probabilities)  # doctest: +SKIP
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        max_seconds: float = MAX_SECONDS,
        max_bytes: int | None = None,
        max_per_hour: int = MAX_PER_HOUR,
    ) -> None:
        self.folder = Path(folder)
        self.max_seconds = max_seconds
        if max_bytes is None:
            max_bytes = int(float(os.environ.get(FEEDBACK_MAX_MB_ENV, DEFAULT_FEEDBACK_MAX_MB)) * 2**20)
        self.max_bytes = max_bytes
        self.max_per_hour = max_per_hour
        # The uploader's lock when syncing to the Hub, so that a scan never runs mid-move.
        self.lock: threading.Lock | None = None
        # Per session: the hashes of the clips stored and the times of its records (in memory only).
        self._sessions: dict[str, tuple[set[str], list[float]]] = {}
        self._sessions_lock = threading.Lock()
        self.discard_stale_partials()

    def save(
        self,
        samples: np.ndarray,
        *,
        consent: bool,
        true_label: str,
        prediction: str,
        model: str,
        probabilities: Mapping[str, float],
        target: str | None = None,
        sentence: str | None = None,
        session: str | None = None,
    ) -> FeedbackRecord:
        """Store one clip (16 kHz mono float samples) and its labels; without consent, write nothing.

        ``consent`` counts only when it is exactly ``True``: "false", "no", 1 or [0] are not a yes.
        With a ``session`` (one per app session), a clip is stored once and at most
        ``max_per_hour`` records an hour; without one (scripts, training) neither limit applies.
        """
        if consent is not True:
            raise ConsentRequiredError(
                "nothing was stored: consent must be the boolean True (tick the consent box to donate this recording)"
            )
        samples = self._checked_samples(samples)
        for name, label in (("true label", true_label), ("prediction", prediction), ("target", target)):
            if label is not None and label not in EMOTIONS:
                raise FeedbackError(f"{name} {label!r} is not one of {', '.join(EMOTIONS)}")
        if sentence is not None and sentence not in STATEMENTS:
            raise FeedbackError(f"sentence {sentence!r} is not one of the RAVDESS sentences")
        if set(probabilities) != set(EMOTIONS) or not all(math.isfinite(p) for p in probabilities.values()):
            raise FeedbackError("probabilities must give a finite value for each of the eight emotions")

        if self._used_bytes() + 2 * samples.size > self.max_bytes:  # 16-bit FLAC is at most 2 bytes a sample
            raise self._full()  # refused before encoding; checked again, exactly, before the record is published
        clip = hashlib.sha256(samples.tobytes()).hexdigest()
        if session is not None:
            self._admit(session, clip)
        try:
            return self._write(samples, true_label, target, prediction, model, probabilities, sentence)
        except BaseException:
            if session is not None:
                self._forget(session, clip)  # not stored after all: the user may try again
            raise

    def _write(self, samples, true_label, target, prediction, model, probabilities, sentence) -> FeedbackRecord:
        now = datetime.now(UTC)
        record = FeedbackRecord(
            id=uuid.uuid4().hex,
            timestamp=now.isoformat(timespec="milliseconds"),
            true_label=true_label,
            target=target,
            prediction=prediction,
            model=model,
            probabilities={label: float(probabilities[label]) for label in EMOTIONS},
            sentence=sentence,
            seconds=round(samples.size / SAMPLE_RATE, 3),
        )
        name = f"{now:%Y%m%dT%H%M%S%f}-{record.id}"
        # Folders appear with the first consented record: without consent nothing at all is written.
        (self.folder / RECORDS).mkdir(parents=True, exist_ok=True)
        staging = self.folder / PARTIAL / name
        staging.mkdir(parents=True)
        try:
            with open(staging / CLIP_NAME, "wb") as file:
                sf.write(file, samples, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
                _flush(file)
            with open(staging / METADATA_NAME, "w", encoding="utf-8") as file:
                file.write(json.dumps(asdict(record), ensure_ascii=False) + "\n")
                _flush(file)
            _fsync_dir(staging)
            staged = sum(file.stat().st_size for file in staging.iterdir())
            # Check and publish as one step for every process writing here, so the cap holds for all.
            with self._folder_lock():
                if self._used_bytes() + staged > self.max_bytes:
                    raise self._full()
                with self.lock or nullcontext():
                    os.rename(staging, self.folder / RECORDS / name)  # the one step that makes the record exist
            _fsync_dir(self.folder / RECORDS)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return record

    def _full(self) -> FeedbackLimitError:
        return FeedbackLimitError(
            f"the feedback store is full ({self.max_bytes / 2**20:.0f} MB); no more recordings are accepted for now"
        )

    @contextmanager
    def _folder_lock(self) -> Iterator[None]:
        """Held by every process writing into this folder (threads included) to check the cap and publish."""
        lock = FileLock(self.folder / PARTIAL / LOCK_NAME, timeout=LOCK_TIMEOUT_SECONDS)
        try:
            lock.acquire()
        except Timeout:
            raise FeedbackError("the feedback store is busy; please try again in a moment") from None
        try:
            yield
        finally:
            lock.release()

    def records(self) -> list[FeedbackRecord]:
        """Every stored record, oldest first."""
        found = []
        for metadata in sorted((self.folder / RECORDS).glob(f"*/{METADATA_NAME}")):
            found.append(FeedbackRecord(**json.loads(metadata.read_text(encoding="utf-8"))))
        return found

    def clip_path(self, record: FeedbackRecord) -> Path:
        (match,) = (self.folder / RECORDS).glob(f"*-{record.id}")
        return match / record.file_name

    def discard_stale_partials(self, older_than: float = STALE_PARTIAL_SECONDS) -> int:
        """Remove records a killed process left half-written; fresh ones may still be in progress."""
        removed = 0
        partial = self.folder / PARTIAL
        for leftover in partial.iterdir() if partial.is_dir() else ():
            if leftover.name == LOCK_NAME:  # another process may hold it; it is not a record
                continue
            if time.time() - leftover.stat().st_mtime > older_than:
                if leftover.is_dir():
                    shutil.rmtree(leftover, ignore_errors=True)
                else:
                    leftover.unlink()
                removed += 1
        if removed:
            log.info("removed %d unfinished feedback record(s) from %s", removed, self.folder / PARTIAL)
        return removed

    def _used_bytes(self) -> int:
        """What the stored records take. ``save`` checks it first against the most a clip can take,
        then, under the folder lock, against the record as written: the cap holds across processes."""
        return sum(file.stat().st_size for file in (self.folder / RECORDS).glob("*/*"))

    def _admit(self, session: str, clip: str) -> None:
        """Count a record for ``session`` before it is written, so that a double click stores it once."""
        now = time.monotonic()
        with self._sessions_lock:
            for other, (_, times) in list(self._sessions.items()):
                if not times or now - times[-1] > SESSION_MEMORY_SECONDS:
                    del self._sessions[other]
            clips, times = self._sessions.setdefault(session, (set(), []))
            if clip in clips:
                raise FeedbackLimitError("this recording was already stored; record a new take to send more feedback")
            times[:] = [t for t in times if now - t < 3600]  # the last hour
            if len(times) >= self.max_per_hour:
                raise FeedbackLimitError(
                    f"this session already sent {len(times)} recordings in the last hour, the most accepted; "
                    "please try again later"
                )
            clips.add(clip)
            times.append(now)

    def _forget(self, session: str, clip: str) -> None:
        with self._sessions_lock:  # the attempt still counts towards the hour's limit
            self._sessions.get(session, (set(), []))[0].discard(clip)

    def _checked_samples(self, samples: np.ndarray) -> np.ndarray:
        samples = np.asarray(samples, dtype=np.float32)
        if samples.ndim != 1 or samples.size == 0:
            raise FeedbackError("the clip must be non-empty mono audio")
        if samples.size / SAMPLE_RATE > self.max_seconds:
            raise FeedbackError(
                f"the clip is {samples.size / SAMPLE_RATE:.1f} s long; the limit is {self.max_seconds:.0f} s"
            )
        if not np.isfinite(samples).all():
            raise FeedbackError("the clip contains NaN or infinite samples")
        return np.clip(samples, -1.0, 1.0)


def sync_to_hub(
    store: FeedbackStore, repo_id: str, every_minutes: float = PUSH_EVERY_MINUTES, hf_api=None, private: bool = True
):
    """Push the store's records to a Hub dataset repo every few minutes with ``CommitScheduler``.

    Returns the scheduler, or None (with one logged line) when the repo cannot be reached:
    feedback then stays in the local folder only.
    """
    from huggingface_hub import CommitScheduler

    try:
        scheduler = CommitScheduler(
            repo_id=repo_id,
            repo_type="dataset",
            folder_path=store.folder,
            every=every_minutes,
            private=private,
            ignore_patterns=[f"{PARTIAL}/**", f"{PARTIAL}/*"],
            hf_api=hf_api,
        )
    except Exception as error:  # offline, no token, no permission: say so, keep the local copy
        log.warning("feedback will stay in %s only: could not reach Hub dataset %s (%s)", store.folder, repo_id, error)
        return None
    store.lock = scheduler.lock
    log.info("feedback in %s is pushed to Hub dataset %s every %s min", store.folder, repo_id, every_minutes)
    return scheduler


def _flush(file) -> None:
    file.flush()
    os.fsync(file.fileno())


def _fsync_dir(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
