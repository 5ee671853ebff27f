"""What the Gradio app shows and what it keeps, apart from the UI so that it can be tested without a browser."""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import cache
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from . import denoise as noise_reduction
from . import features
from .audio import MAX_SECONDS, AudioError, SilentAudioError, TooShortError, load_audio, to_mono_16k
from .configs import ModelLoadError
from .feedback import (
    DEFAULT_FEEDBACK_DIR,
    FEEDBACK_DIR_ENV,
    FEEDBACK_REPO_ENV,
    FeedbackError,
    FeedbackStore,
    sync_to_hub,
)
from .inference import Analysis, EmotionRecognizer
from .labels import EMOTIONS, parse_ravdess_name
from .registry import DEFAULT_MODEL, MODELS, WEIGHTS_DIR
from .segments import TIMELINE_MAX_SECONDS, Timeline, timeline
from .session import SpeakerSession

log = logging.getLogger("ser_models.demo")

ROOT = Path(__file__).resolve().parents[1]

TIPS = """**How to get a good reading**
- Read the sentence once, in one take, 2–4 seconds long; silence before and after is cut.
- Act the emotion clearly, as the RAVDESS actors did: the models learned from acted studio speech.
- A quiet room and a steady distance from the microphone help more than a loud voice.
- One reading is a hint, not a verdict: the best model is right about 3 times in 4 on voices it has never heard."""


# ---------------------------------------------------------------------------------------------------------------
# The models


def load_recognizers(
    environ: Mapping[str, str] = os.environ, sources: dict[str, str] | None = None
) -> dict[str, EmotionRecognizer]:
    """Every bundled model (``registry.MODELS``), once. A configured Hub repo or folder replaces the bundled
    weights; if it cannot be loaded (offline, missing, invalid), one line says so and the bundled ones serve.
    A bundled model that cannot run here is left out, also with one line saying why.

    ``sources``, when given, receives where each model was loaded from (a folder or a Hub id).
    """
    sources = {} if sources is None else sources
    recognizers = {}
    for name, bundled in MODELS.items():
        source = environ.get(bundled.env, "").strip()
        if source:
            try:
                recognizers[name] = EmotionRecognizer.from_pretrained(source)
                sources[name] = source
                log.info("%s: loaded from %s", name, source)
                continue
            except ModelLoadError as error:
                log.warning(
                    "%s: could not load %s=%s (%s); using the bundled weights instead", name, bundled.env, source, error
                )
        try:
            recognizers[name] = EmotionRecognizer.from_pretrained(bundled.folder)
            sources[name] = str(bundled.folder)
        except ModelLoadError as error:
            log.warning("%s: not available (%s); the app serves the other models", name, error)
    if not recognizers:
        raise ModelLoadError("no model could be loaded; reinstall with pip install -r requirements.txt")
    return recognizers


def default_model(recognizers: Mapping[str, EmotionRecognizer]) -> str:
    """DEFAULT_MODEL where it loaded, else the first model that did."""
    return DEFAULT_MODEL if DEFAULT_MODEL in recognizers else next(iter(recognizers))


def card_url(name: str, environ: Mapping[str, str] = os.environ) -> str:
    """Where the page links to a file of this repository (``model_card.md``, ``data_card.md``).

    On a Hugging Face Space ($SPACE_ID set) the Space's own file view; elsewhere the file as the app
    serves it (``app.py`` allows exactly these files).
    """
    space = environ.get("SPACE_ID", "").strip()
    if space:
        return f"https://huggingface.co/spaces/{space}/blob/main/{name}"
    return f"gradio_api/file={ROOT / name}"


CARDS = ("model_card.md", "data_card.md")


def models_markdown(
    names: Iterable[str], sources: Mapping[str, str] | None = None, environ: Mapping[str, str] = os.environ
) -> str:
    """Each served model in plain words with its measured accuracy, and links to the cards."""
    lines = []
    for name in names:
        bundled = MODELS[name]
        line = f"- **{name}**{' (default)' if name == DEFAULT_MODEL else ''}: {bundled.description}"
        source = (sources or {}).get(name)
        if source is not None and source != str(bundled.folder):
            line += f" *On this server it is replaced by `{source}`; the figures are the bundled model's.*"
        lines.append(line)
    lines.append(
        f"\nHow the accuracy was measured, per emotion: the [model card]({card_url('model_card.md', environ)}). "
        f"The training data: the [data card]({card_url('data_card.md', environ)})."
    )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# The example clips: one RAVDESS clip per emotion, committed for the app's examples only (see data_card.md)

EXAMPLES_DIR = Path(__file__).parent / "assets" / "examples"
EXAMPLE_SOURCES = {  # the file in EXAMPLES_DIR: its RAVDESS file name (16 kHz FLAC, otherwise unchanged)
    "neutral_actor03.flac": "03-01-01-01-01-01-03.flac",
    "calm_actor08.flac": "03-01-02-02-01-01-08.flac",
    "happy_actor07.flac": "03-01-03-02-01-01-07.flac",
    "sad_actor10.flac": "03-01-04-02-01-01-10.flac",
    "angry_actor05.flac": "03-01-05-02-01-01-05.flac",
    "fearful_actor12.flac": "03-01-06-02-01-01-12.flac",
    "disgust_actor15.flac": "03-01-07-02-01-01-15.flac",
    "surprised_actor18.flac": "03-01-08-02-01-01-18.flac",
}
RAVDESS_URL = "https://zenodo.org/records/1188976"
RAVDESS_PAPER_URL = "https://doi.org/10.1371/journal.pone.0196391"
LICENCE_URL = "https://creativecommons.org/licenses/by-nc-sa/4.0/"
EXAMPLES_ATTRIBUTION = (
    f"Example clips: [RAVDESS]({RAVDESS_URL}), Livingstone & Russo (2018), "
    f"[PLoS ONE 13(5): e0196391]({RAVDESS_PAPER_URL}), licensed [CC BY-NC-SA 4.0]({LICENCE_URL}); "
    "one clip per emotion, resampled to 16 kHz. They come from the 20 actors the models were trained on, "
    "so the models have heard these very clips: they show what the app does, not how accurate it is."
)


@dataclass(frozen=True)
class Example:
    path: Path
    emotion: str
    actor: int
    gender: str
    ravdess_name: str

    @property
    def label(self) -> str:
        return f"{self.emotion} (actor {self.actor:02d}, {self.gender})"


def examples() -> list[Example]:
    """The bundled example clips, in RAVDESS's emotion order."""
    clips = []
    for file_name, ravdess_name in EXAMPLE_SOURCES.items():
        parsed = parse_ravdess_name(ravdess_name)
        clips.append(Example(EXAMPLES_DIR / file_name, parsed.emotion, parsed.actor, parsed.gender, ravdess_name))
    return sorted(clips, key=lambda clip: EMOTIONS.index(clip.emotion))


@cache
def _example_digests() -> dict[str, str]:
    return {name: hashlib.sha256((EXAMPLES_DIR / name).read_bytes()).hexdigest() for name in EXAMPLE_SOURCES}


def is_bundled_example(path: str | os.PathLike | None) -> bool:
    """Whether ``path`` holds one of the bundled example clips (Gradio serves copies of them)."""
    if path is None or Path(path).name not in EXAMPLE_SOURCES:
        return False
    try:
        data = Path(path).read_bytes()
    except OSError:
        return False
    return hashlib.sha256(data).hexdigest() == _example_digests()[Path(path).name]


def examples_cache_folder(model: str, sources: Mapping[str, str], environ: Mapping[str, str] = os.environ) -> Path:
    """Where Gradio keeps the examples' cached results: a folder named after everything they depend on.

    The clips, the weights ``model`` was loaded from (all bundled weights, as whisper-layers also reads
    the shared encoder; or the configured Hub id or folder), this package's code and Gradio's version:
    a result cached by other weights or other code is never shown, it is recomputed at start-up.
    """
    digest = hashlib.sha256()

    def add_files(files: Iterable[Path], root: Path) -> None:
        for path in sorted(files):
            if path.is_file():
                digest.update(str(path.relative_to(root)).encode())
                digest.update(path.read_bytes())

    add_files((EXAMPLES_DIR / name for name in EXAMPLE_SOURCES), EXAMPLES_DIR)
    source = sources.get(model, "")
    digest.update(f"{model}={source}".encode())
    if Path(source).is_dir():
        folder = Path(source).resolve()
        root = WEIGHTS_DIR.resolve() if folder.is_relative_to(WEIGHTS_DIR.resolve()) else folder
        add_files(root.rglob("*"), root)
    package = Path(__file__).parent
    add_files(package.glob("*.py"), package)
    digest.update(version("gradio").encode())
    base = Path(environ.get("GRADIO_EXAMPLES_CACHE", "").strip() or ".gradio/cached_examples")
    return base / f"{model}-{digest.hexdigest()[:16]}"


# ---------------------------------------------------------------------------------------------------------------
# Privacy: what the server keeps of a voice, and for how long (PRIVACY says the same to the user)

LIVE_WINDOW_SECONDS = features.CHUNK_SECONDS  # the model hears the last 4 s
LIVE_UPDATE_SECONDS = 0.5  # at most two predictions per second of audio, whatever the chunk size
SWEEP_SECONDS = 5.0  # how often the janitor looks; the ages below leave room for it
UPLOAD_MAX_AGE = 600.0 - SWEEP_SECONDS  # a file received but never analyzed: gone within 10 minutes
TAKE_MAX_AGE = 600.0 - SWEEP_SECONDS  # the last analyzed take, in memory: gone within 10 minutes
VOICES_MAX_AGE = 3600.0  # "my voice": the probabilities of a session's takes (no audio), an hour after the last
LIVE_MAX_IDLE = 30.0 - SWEEP_SECONDS  # the live buffer, in memory, after the last chunk: gone within 30 s
SKIPPED_CHUNK_MAX_AGE = 10.0 - SWEEP_SECONDS  # a streamed chunk the server skipped: gone within 10 s
PRIVACY = f"""**Privacy.** Your voice is analyzed on this server and not kept:
- A recording you upload or record is deleted from the server's disk as soon as it has been analyzed,
  and within {(UPLOAD_MAX_AGE + SWEEP_SECONDS) / 60:.0f} minutes if it never is. The last take you analyzed stays
  in the server's memory (never on disk) for this tab only, so that you can try another model or donate it:
  it is dropped when you close the tab, and at the latest {(TAKE_MAX_AGE + SWEEP_SECONDS) / 60:.0f} minutes
  after its analysis. A long recording is not kept in memory: to analyze it again, upload it again.
- Live: each piece of sound your browser sends (several a second) is deleted as soon as it has been read, and
  one the server skips (a newer piece came first) within {SKIPPED_CHUNK_MAX_AGE + SWEEP_SECONDS:.0f} s. A last
  piece still uploading when you press stop, which the page then never sends on, is deleted like any file never
  analyzed, within {(UPLOAD_MAX_AGE + SWEEP_SECONDS) / 60:.0f} minutes. The last {LIVE_WINDOW_SECONDS:.0f} s are
  held in memory while you speak, and dropped when you stop, close the tab, or send nothing for
  {LIVE_MAX_IDLE + SWEEP_SECONDS:.0f} s.
- Whatever is left is deleted when the server stops. Only if you tick the consent box under
  "Was the model right?" is a recording kept, with your label, as a donation."""


class RecordingGoneError(AudioError):
    """The uploaded file was deleted (analyzed before, or left too long) and no copy is held."""


def private_temp_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """A fresh folder for everything Gradio writes for this process (uploads, streamed microphone chunks),
    inside $GRADIO_TEMP_DIR (else the system's temporary folder), removed with all it holds at exit.

    Point GRADIO_TEMP_DIR at it before importing gradio (its modules read the variable on import).
    """
    base = Path(environ.get("GRADIO_TEMP_DIR", "").strip() or Path(tempfile.gettempdir()) / "gradio")
    base.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="ser-app-", dir=base)).resolve()
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


class UploadFolder:
    """The folder Gradio writes what browsers and API clients send into: nothing in it outlives its analysis.

    ``read`` decodes a file and deletes it; ``sweep`` deletes whatever has been there longer than
    ``max_age`` seconds (never analyzed, or written by Gradio for another reason). The bundled
    example clips, which Gradio copies in to serve them, are left alone. Nothing outside ``root``
    is ever deleted.
    """

    def __init__(self, root: str | os.PathLike, max_age: float = UPLOAD_MAX_AGE) -> None:
        self.root = Path(root).resolve()
        self.max_age = max_age

    def holds(self, path: str | os.PathLike) -> bool:
        resolved = Path(path).resolve()
        return resolved != self.root and resolved.is_relative_to(self.root)

    def read(self, path: str | os.PathLike | None, max_seconds: float = MAX_SECONDS, twins: bool = True) -> np.ndarray:
        """Decode an upload to 16 kHz mono samples, then delete the file (whether it decoded or not), and with
        ``twins`` every copy of it here (see ``delete``)."""
        if path is None:
            raise AudioError("no audio: record the sentence with the microphone or upload a file first")
        if not Path(path).is_file():
            raise RecordingGoneError(
                "this recording is no longer on the server: a recording is deleted once it has been analyzed "
                f"(or after {(self.max_age + SWEEP_SECONDS) / 60:.0f} minutes). Record or upload it again"
            )
        try:
            return load_audio(path, max_seconds, name=Path(path).name)
        finally:
            self.delete(path, twins=twins)

    def delete(self, path: str | os.PathLike, twins: bool = False) -> bool:
        """Delete ``path`` if it lies in this folder and is not a bundled example; True if it was deleted.

        ``twins``: also every other file here with the same bytes. Gradio's MCP server first saves an
        agent's base64 audio as a file of its own, then uploads a copy of it, which is what is analyzed.
        """
        path = Path(path)
        if not self.holds(path) or is_bundled_example(path):
            return False
        if twins:
            for twin in self._twins(path):
                self.delete(twin)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        if path.parent != self.root:
            with contextlib.suppress(OSError):  # not empty (another file) or already gone
                path.parent.rmdir()
        return True

    def _twins(self, path: Path) -> list[Path]:
        try:
            size = path.stat().st_size
            digest = hashlib.sha256(path.read_bytes()).digest()
        except OSError:
            return []
        twins = []
        for other in self.root.rglob("*"):
            with contextlib.suppress(OSError):
                if other != path and other.is_file() and other.stat().st_size == size:
                    if hashlib.sha256(other.read_bytes()).digest() == digest:
                        twins.append(other)
        return twins

    def sweep(self, now: float | None = None) -> list[Path]:
        """Delete every file older than ``max_age`` seconds (by its last change), then empty folders."""
        now = time.time() if now is None else now
        deleted = []
        for path in sorted(self.root.rglob("*"), reverse=True):  # files before the folders holding them
            with contextlib.suppress(OSError):  # deleted meanwhile, or a folder that is not empty
                if path.is_dir():
                    path.rmdir()
                    continue
                info = path.lstat()
                if now - max(info.st_mtime, info.st_ctime) > self.max_age and self.delete(path):
                    deleted.append(path)
        return deleted


class SessionMemory:
    """One value per browser session, in this process's memory only (never on disk): dropped ``max_age``
    seconds after it was last put, when popped (the tab was closed), or when the process ends."""

    def __init__(self, max_age: float) -> None:
        self.max_age = max_age
        self._items: dict[str, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def put(self, session: str | None, value: Any) -> None:
        if session is not None:
            with self._lock:
                self._items[session] = (time.monotonic(), value)

    def get(self, session: str | None) -> Any:
        with self._lock:
            item = self._items.get(session) if session is not None else None
            if item is None:
                return None
            if time.monotonic() - item[0] > self.max_age:
                del self._items[session]
                return None
            return item[1]

    def pop(self, session: str | None) -> Any:
        with self._lock:
            item = self._items.pop(session, None) if session is not None else None
        return None if item is None else item[1]

    def prune(self, now: float | None = None) -> int:
        """Drop every value older than ``max_age``; how many were dropped."""
        now = time.monotonic() if now is None else now
        with self._lock:
            old = [session for session, (at, _) in self._items.items() if now - at > self.max_age]
            for session in old:
                del self._items[session]
        return len(old)

    def __len__(self) -> int:
        return len(self._items)


class StreamedChunks:
    """The files sent to a streaming event (the Live tab's microphone chunks), so that those the server
    never reads are deleted within seconds rather than with the other unanalyzed uploads.

    The browser uploads a chunk several times a second and then names it to the running event; when the
    next one arrives before the server has read it, Gradio replaces it and the skipped file is never
    analyzed (nor deleted by the analysis). ``StreamChunkMiddleware`` reports every file named this way.
    """

    def __init__(self, uploads: UploadFolder, max_age: float = SKIPPED_CHUNK_MAX_AGE) -> None:
        self.uploads = uploads
        self.max_age = max_age
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def saw(self, paths: Iterable[str]) -> None:
        now = time.monotonic()
        with self._lock:
            for path in paths:
                self._seen.setdefault(str(path), now)

    def sweep(self, now: float | None = None) -> list[str]:
        """Delete every chunk named more than ``max_age`` seconds ago that is still there."""
        now = time.monotonic() if now is None else now
        with self._lock:
            old = [path for path, at in self._seen.items() if now - at > self.max_age]
            for path in old:
                del self._seen[path]
        return [path for path in old if self.uploads.delete(path)]

    def __len__(self) -> int:
        return len(self._seen)


def file_paths(data: Any) -> list[str]:
    """The server paths of the files (Gradio FileData dicts) anywhere in a request's JSON body."""
    if isinstance(data, dict):
        if isinstance(data.get("path"), str) and ("meta" in data or "orig_name" in data or "url" in data):
            return [data["path"]]
        return [path for value in data.values() for path in file_paths(value)]
    if isinstance(data, list):
        return [path for value in data for path in file_paths(value)]
    return []


class StreamChunkMiddleware:
    """ASGI middleware: tells ``chunks`` which files each streamed request (POST .../stream/<event>) names,
    then hands the request on unchanged."""

    MAX_BODY = 1 << 20  # a chunk's request is a few hundred bytes of JSON; larger ones are passed on unread

    def __init__(self, app, chunks: StreamedChunks) -> None:
        self.app = app
        self.chunks = chunks

    async def __call__(self, scope, receive, send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if scope.get("method") != "POST" or "/stream/" not in path or path.rstrip("/").endswith("/close"):
            await self.app(scope, receive, send)
            return
        messages, body = [], b""
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            if not message.get("more_body") or len(body) > self.MAX_BODY:
                break
        if len(body) <= self.MAX_BODY:
            with contextlib.suppress(ValueError):  # not JSON: Gradio answers it as it would anyway
                self.chunks.saw(file_paths(json.loads(body)))
        replay = iter(messages)

        async def receive_again():
            return next(replay, None) or await receive()

        await self.app(scope, receive_again, send)


@dataclass(frozen=True)
class Take:
    """One analyzed recording, held in memory for its browser session."""

    key: str  # the path Gradio handed over: the same value when Analyze is pressed again
    samples: np.ndarray  # 16 kHz mono
    example: bool = False  # one of the bundled RAVDESS examples, not the user's voice
    reading: dict | None = None  # what the page showed about it (``last_reading``), for feedback


def take_recording(
    uploads: UploadFolder, takes: SessionMemory, session: str | None, path: str | None, max_seconds: float = MAX_SECONDS
) -> Take:
    """The recording at ``path``: decoded (and its file deleted), or, when the same file was analyzed before
    in this session and is gone, the copy held in memory. The caller keeps it (``takes.put``) once analyzed."""
    previous = takes.get(session)
    if previous is not None and path is not None and previous.key == str(path) and not Path(path).is_file():
        return previous
    example = is_bundled_example(path)
    return Take(str(path), uploads.read(path, max_seconds), example)


def start_janitor(
    uploads: UploadFolder,
    memories: Iterable[SessionMemory],
    chunks: StreamedChunks | None = None,
    interval: float = SWEEP_SECONDS,
) -> threading.Thread:
    """A daemon thread that sweeps ``uploads`` and ``chunks`` and prunes ``memories`` every ``interval`` s."""
    memories = list(memories)

    def run() -> None:
        while True:
            time.sleep(interval)
            try:
                uploads.sweep()
                if chunks is not None:
                    chunks.sweep()
                for memory in memories:
                    memory.prune()
            except Exception:  # never let the janitor die: it is what keeps the privacy promise
                log.exception("cleaning up uploads and memory failed")

    thread = threading.Thread(target=run, name="ser-janitor", daemon=True)
    thread.start()
    return thread


# ---------------------------------------------------------------------------------------------------------------
# One take: the reading, the verdict, feedback


@dataclass
class Reading:
    """Everything the page shows after one analysis."""

    analysis: Analysis
    target: str | None
    notes: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        probabilities = self.analysis.probabilities
        heard = self.analysis.label
        if reason := self.analysis.uncertain_because:
            return (
                f"🤔 **Uncertain:** {reason}. The model heard **{heard}** ({probabilities[heard]:.0%}) more than "
                "anything else; try again closer to the microphone, in a quieter place."
            )
        if not self.target:
            return f"The model heard **{heard}** ({probabilities[heard]:.0%})."
        ranking = sorted(probabilities, key=probabilities.get, reverse=True)
        rank = ranking.index(self.target) + 1
        if heard == self.target:
            return f"✅ **Match.** The model heard **{heard}** ({probabilities[heard]:.0%}), the emotion you acted."
        return (
            f"❌ **No match.** The model heard **{heard}** ({probabilities[heard]:.0%}). "
            f"Your target, **{self.target}**, came {_ordinal(rank)} of {len(EMOTIONS)} "
            f"with {probabilities[self.target]:.0%}."
        )

    @property
    def details(self) -> str:
        speech = self.analysis.speech
        start, end = speech.start / features.SAMPLE_RATE, speech.end / features.SAMPLE_RATE
        lines = [
            f"Recording {self.analysis.input_seconds:.2f} s; speech analyzed after trimming silence: "
            f"{speech.seconds:.2f} s ({start:.2f}–{end:.2f} s)."
        ]
        if speech.seconds > features.CHUNK_SECONDS:
            lines.append(
                f"Longer than {features.CHUNK_SECONDS:.0f} s: the probabilities are the mean over "
                f"{len(features.chunk(speech.audio))} overlapping windows."
            )
        lines += self.notes
        lines += [f"⚠️ {warning}" for warning in self.analysis.warnings]
        return "\n\n".join(lines)

    def spectrogram(self) -> str:
        """The spectrogram of the speech analyzed, on the recording's time axis, as an inline image (HTML)."""
        from .plots import spectrogram_html

        speech = self.analysis.speech
        return spectrogram_html(speech.audio, speech.start / features.SAMPLE_RATE)


def read_input(audio: str | np.ndarray | tuple[int, np.ndarray] | None) -> tuple[np.ndarray, int]:
    """Samples and rate from a file path, a (rate, samples) pair, or 16 kHz samples."""
    if audio is None:
        raise AudioError("no audio: record the sentence with the microphone or upload a file first")
    if isinstance(audio, tuple):
        rate, samples = audio
        return np.asarray(samples), int(rate)
    if isinstance(audio, np.ndarray):
        return audio, features.SAMPLE_RATE
    return load_audio(audio, name=Path(audio).name), features.SAMPLE_RATE


def analyze(
    recognizer: EmotionRecognizer,
    audio: str | np.ndarray | tuple[int, np.ndarray] | None,
    target: str | None,
    session: SpeakerSession | None = None,
    denoise: bool = False,
) -> Reading:
    """One take: optionally noise-reduced first, and adapted to the speaker's earlier takes in ``session``."""
    samples, rate = read_input(audio)
    notes = []
    if denoise and not noise_reduction.available():
        notes.append("Noise reduction is not installed on this server: the recording was analyzed as it is.")
    elif denoise:
        samples, rate = noise_reduction.reduce_noise(to_mono_16k(samples, rate)), features.SAMPLE_RATE
        notes.append("Background noise was reduced (spectral gating) before the analysis.")
    analysis = recognizer.analyze(samples, rate)
    if session is not None:
        session.add(analysis.probabilities)
        analysis = replace(analysis, probabilities=session.adapt(analysis.probabilities))
        notes.append(
            f"My voice: adapted to your {len(session)} take(s) in this browser session "
            f"(kept in memory for this tab only; reload the page to start over)."
        )
    return Reading(analysis, target, notes)


def open_feedback_store(environ: Mapping[str, str] = os.environ) -> FeedbackStore:
    """The folder consented feedback goes to ($SER_FEEDBACK_DIR, default ./feedback), pushed to the
    Hub dataset $SER_FEEDBACK_REPO when one is configured."""
    store = FeedbackStore(environ.get(FEEDBACK_DIR_ENV, "").strip() or DEFAULT_FEEDBACK_DIR)
    repo_id = environ.get(FEEDBACK_REPO_ENV, "").strip()
    if repo_id:
        sync_to_hub(store, repo_id)
    return store


def last_reading(audio: str | None, model: str, reading: Reading, example: bool = False) -> dict:
    """What a later feedback submission needs to know about the analysis the user saw (no audio: the
    take itself stays in memory, see ``Take``)."""
    return {
        "audio": audio,
        "example": example,
        "model": model,
        "target": reading.target,
        "prediction": reading.analysis.label,
        "probabilities": reading.analysis.probabilities,
    }


def submit_feedback(
    store: FeedbackStore,
    last: dict | None,
    true_label: str | None,
    consent: bool,
    sentence: str | None,
    session: str | None = None,
    take: Take | None = None,
) -> str:
    """Store the user's label and clip, only with consent; return the message the page shows.

    Consent is exactly ``True``: through the API "false", "no", 1 or [0] would otherwise read as a yes.
    ``session`` (the browser session) limits a clip to one record and a session to a few an hour. The clip
    is ``take`` (held in memory since its analysis) where it is the one ``last`` describes, else the file
    ``last["audio"]`` names.
    """
    if not last:
        return "Analyze a recording first, then say which emotion you meant."
    if consent is False:
        return "Nothing was stored. Tick the consent box if you want to donate this recording and your label."
    if consent is not True:
        return f"Nothing was stored: consent must be the boolean True (the ticked consent box), not {consent!r:.40}."
    if true_label not in EMOTIONS:
        return "Choose the emotion you meant first."
    if last.get("example"):
        return "Nothing was stored: this is one of the example clips. Feedback is for your own recordings."
    try:
        if take is not None and take.key == str(last["audio"]):
            samples = take.samples
        elif take is None and last["audio"] is not None and Path(last["audio"]).is_file():
            samples = load_audio(last["audio"], name=Path(last["audio"]).name)
        else:
            return (
                "Not stored: the recording is no longer held in memory (it is dropped "
                f"{(TAKE_MAX_AGE + SWEEP_SECONDS) / 60:.0f} minutes after its analysis). Analyze it again first."
            )
        record = store.save(
            samples,
            consent=True,
            true_label=true_label,
            target=last["target"],
            prediction=last["prediction"],
            model=last["model"],
            probabilities=last["probabilities"],
            sentence=sentence,
            session=session,
        )
    except (AudioError, FeedbackError) as error:
        return f"Not stored: {error}."
    except OSError as error:  # disk full, folder removed: the user should not see a crash
        log.error("could not store feedback in %s: %s", store.folder, error)
        return "Not stored: the server could not save it right now. Please try again later."
    return f"Thank you! Your recording was stored as **{record.true_label}** (record `{record.id[:8]}`)."


# ---------------------------------------------------------------------------------------------------------------
# Live microphone


@dataclass
class LiveState:
    """What a live microphone session keeps between chunks (per browser session, in memory only)."""

    buffer: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    heard_seconds: float = 0.0
    predicted_at: float = -LIVE_UPDATE_SECONDS
    probabilities: dict[str, float] | None = None
    status: str = "Listening…"


def read_chunk(uploads: UploadFolder, path: str | None) -> tuple[int, np.ndarray] | None:
    """One streamed microphone chunk as (16000, samples); its file is deleted as soon as it is read."""
    if path is None:
        return None
    return features.SAMPLE_RATE, uploads.read(path, twins=False)  # several a second: no search for copies


def live_step(
    recognizer: EmotionRecognizer,
    state: LiveState | None,
    chunk: tuple[int, np.ndarray] | Callable[[], tuple[int, np.ndarray] | None] | None,
) -> LiveState:
    """Add one streamed microphone chunk; re-classify the last 4 s at most every LIVE_UPDATE_SECONDS.

    ``chunk`` is (rate, samples), or a function returning it (so that a chunk that cannot be read is
    reported like one that cannot be used).
    """
    state = state or LiveState()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # clipping is reported on full recordings, not on every chunk
            if callable(chunk):
                chunk = chunk()
            if chunk is None:
                return state
            rate, samples = chunk
            audio = to_mono_16k(np.asarray(samples), int(rate))
    except AudioError as error:
        state.status = f"Skipped a chunk: {error}."
        return state
    window = int(LIVE_WINDOW_SECONDS * features.SAMPLE_RATE)
    state.buffer = np.concatenate([state.buffer, audio])[-window:]
    state.heard_seconds += audio.size / features.SAMPLE_RATE
    if state.heard_seconds - state.predicted_at < LIVE_UPDATE_SECONDS:
        return state
    state.predicted_at = state.heard_seconds
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a short burst is fine here: the next update hears more
            speech = recognizer.trim(state.buffer)
    except (SilentAudioError, TooShortError):
        state.status = "Listening… no speech in the last few seconds."
        return state
    state.probabilities = recognizer.predict_speech([speech])[0]
    label = max(state.probabilities, key=state.probabilities.get)
    state.status = f"Hearing **{label}** in the last {min(state.heard_seconds, LIVE_WINDOW_SECONDS):.0f} s."
    return state


# ---------------------------------------------------------------------------------------------------------------
# Long recordings


def analyze_long(
    recognizer: EmotionRecognizer,
    audio: str | np.ndarray | None,
    progress=None,
    vad: str = "auto",
    one_speaker: bool = False,
) -> Timeline:
    """The emotion timeline of a recording of up to TIMELINE_MAX_SECONDS (a path, or 16 kHz samples)."""
    if audio is None:
        raise AudioError("no audio: upload a recording first")
    if not isinstance(audio, np.ndarray):
        audio = load_audio(audio, max_seconds=TIMELINE_MAX_SECONDS, name=Path(audio).name)
    return timeline(recognizer, audio, vad=vad, progress=progress, one_speaker=one_speaker)


def describe_timeline(result: Timeline) -> str:
    overall = result.overall()
    top = max(overall, key=overall.get)
    summary = (
        f"{result.seconds:.1f} s analyzed, {len(result.speech_regions)} speech segment(s), "
        f"{len(result.segments)} window(s) (voice activity: {result.vad}). "
        f"Over the whole recording: **{top}** ({overall[top]:.0%})."
    )
    return summary + "".join(f"\n\n{note}" for note in result.notes)


def timeline_table(result: Timeline) -> list[list]:
    """One row per window: start, end, label, its probability, then all eight probabilities."""
    return [
        [round(s.start, 2), round(s.end, 2), s.label, round(s.probabilities[s.label], 3)]
        + [round(s.probabilities[e], 3) for e in EMOTIONS]
        for s in result.segments
    ]


def _ordinal(n: int) -> str:
    return f"{n}{'tsnrhtdd'[(n // 10 % 10 != 1) * (n % 10 < 4) * n % 10 :: 4]}"
