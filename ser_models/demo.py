"""What the Gradio app shows, kept apart from the UI so that it can be tested without a browser."""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import tempfile
import time
import uuid
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import features
from .audio import AudioError, SilentAudioError, TooShortError, load_audio, to_mono_16k
from .denoise import reduce_noise
from .feedback import (
    DEFAULT_FEEDBACK_DIR,
    FEEDBACK_DIR_ENV,
    FEEDBACK_REPO_ENV,
    FeedbackError,
    FeedbackStore,
    sync_to_hub,
)
from .inference import DEFAULT_MODEL, MODEL_DESCRIPTIONS, WEIGHTS_DIR, Analysis, EmotionRecognizer
from .labels import EMOTIONS
from .models import ModelLoadError
from .segments import TIMELINE_MAX_SECONDS, Timeline, timeline
from .session import SpeakerSession

log = logging.getLogger("ser_models.demo")

# Environment variables that point a model at a Hub repo id or a folder instead of the bundled weights.
MODEL_ENV = {
    "whisper-layers": "SER_WHISPER_LAYERS_MODEL",
    "mel-cnn": "SER_CNN_MODEL",
    "mfcc-mlp": "SER_MLP_MODEL",
    "whisper-base": "SER_WHISPER_MODEL",
    "whisper-cnn": "SER_ENSEMBLE_MODEL",
}
TIPS = """**How to get a good reading**
- Read the sentence once, in one take, 2–4 seconds long; silence before and after is cut.
- Act the emotion clearly, as the RAVDESS actors did: the models learned from acted studio speech.
- A quiet room and a steady distance from the microphone help more than a loud voice.
- One reading is a hint, not a verdict: the best model is right about 3 times in 4 on voices it has never heard."""


def load_recognizers(environ: Mapping[str, str] = os.environ) -> dict[str, EmotionRecognizer]:
    """Every shipped model, once. A configured Hub repo or folder replaces the bundled weights;
    if it cannot be loaded (offline, missing, invalid), one line says so and the bundled ones serve.
    A bundled model that cannot run here (the Whisper models without their packages) is left out, also
    with one line saying why."""
    recognizers = {}
    for name in MODEL_DESCRIPTIONS:
        source = environ.get(MODEL_ENV[name], "").strip()
        if source:
            try:
                recognizers[name] = EmotionRecognizer.from_pretrained(source)
                log.info("%s: loaded from %s", name, source)
                continue
            except ModelLoadError as error:
                log.warning(
                    "%s: could not load %s=%s (%s); using the bundled weights instead",
                    name,
                    MODEL_ENV[name],
                    source,
                    error,
                )
        try:
            recognizers[name] = EmotionRecognizer.from_pretrained(WEIGHTS_DIR / name)
        except ModelLoadError as error:
            log.warning("%s: not available (%s); the app serves the other models", name, error)
    if not recognizers:
        raise ModelLoadError("no model could be loaded; reinstall with pip install -r requirements.txt")
    return recognizers


def default_model(recognizers: Mapping[str, EmotionRecognizer]) -> str:
    """DEFAULT_MODEL where it loaded, else the first model that did."""
    return DEFAULT_MODEL if DEFAULT_MODEL in recognizers else next(iter(recognizers))


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
            f"Recording {self.analysis.input_seconds:.2f} s; speech analysed after trimming silence: "
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


def open_feedback_store(environ: Mapping[str, str] = os.environ) -> FeedbackStore:
    """The folder consented feedback goes to ($SER_FEEDBACK_DIR, default ./feedback), pushed to the
    Hub dataset $SER_FEEDBACK_REPO when one is configured."""
    store = FeedbackStore(environ.get(FEEDBACK_DIR_ENV, "").strip() or DEFAULT_FEEDBACK_DIR)
    repo_id = environ.get(FEEDBACK_REPO_ENV, "").strip()
    if repo_id:
        sync_to_hub(store, repo_id)
    return store


def last_reading(audio: str | None, model: str, reading: Reading) -> dict:
    """What a later feedback submission needs to know about the analysis the user saw."""
    return {
        "audio": audio,
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
) -> str:
    """Store the user's label and clip, only with consent; return the message the page shows.

    Consent is exactly ``True``: through the API "false", "no", 1 or [0] would otherwise read as a yes.
    ``session`` (the browser session) limits a clip to one record and a session to a few an hour.
    """
    if not last:
        return "Analyze a recording first, then say which emotion you meant."
    if consent is False:
        return "Nothing was stored. Tick the consent box if you want to donate this recording and your label."
    if consent is not True:
        return f"Nothing was stored: consent must be the boolean True (the ticked consent box), not {consent!r:.40}."
    if true_label not in EMOTIONS:
        return "Choose the emotion you meant first."
    try:
        samples = load_audio(last["audio"])
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


LIVE_WINDOW_SECONDS = features.CHUNK_SECONDS  # the model hears the last 4 s
LIVE_UPDATE_SECONDS = 0.5  # at most two predictions per second of audio, whatever the chunk size


@dataclass
class LiveState:
    """What a live microphone session keeps between chunks (per browser session, in memory only)."""

    buffer: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    heard_seconds: float = 0.0
    predicted_at: float = -LIVE_UPDATE_SECONDS
    probabilities: dict[str, float] | None = None
    status: str = "Listening…"


def live_step(
    recognizer: EmotionRecognizer, state: LiveState | None, chunk: tuple[int, np.ndarray] | None
) -> LiveState:
    """Add one streamed microphone chunk; re-classify the last 4 s at most every LIVE_UPDATE_SECONDS."""
    state = state or LiveState()
    if chunk is None:
        return state
    rate, samples = chunk
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # clipping is reported on full recordings, not on every chunk
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


def analyze_long(
    recognizer: EmotionRecognizer, path: str | None, progress=None, vad: str = "auto", one_speaker: bool = False
) -> Timeline:
    """The emotion timeline of an uploaded recording of up to TIMELINE_MAX_SECONDS."""
    if path is None:
        raise AudioError("no audio: upload a recording first")
    audio = load_audio(path, max_seconds=TIMELINE_MAX_SECONDS)
    return timeline(recognizer, audio, vad=vad, progress=progress, one_speaker=one_speaker)


def describe_timeline(result: Timeline) -> str:
    overall = result.overall()
    top = max(overall, key=overall.get)
    summary = (
        f"{result.seconds:.1f} s analysed, {len(result.speech_regions)} speech segment(s), "
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


def timeline_figure(result: Timeline):
    """Each emotion's probability over time (window centres), speech regions shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(10, 3.6), dpi=100)
    for start, end in result.speech_regions:
        axes.axvspan(start, end, color="0.92", zorder=0)
    centres = [(s.start + s.end) / 2 for s in result.segments]
    colours = plt.get_cmap("tab10")
    for i, emotion in enumerate(EMOTIONS):
        axes.plot(
            centres, [s.probabilities[emotion] for s in result.segments], "o-", ms=3, color=colours(i), label=emotion
        )
    axes.set_xlim(0, result.seconds)
    axes.set_ylim(0, 1)
    axes.set_xlabel("time (s); grey: speech")
    axes.set_ylabel("probability")
    axes.legend(ncol=8, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, 1.18), frameon=False)
    figure.tight_layout()
    plt.close(figure)
    return figure


def read_input(audio: str | tuple[int, np.ndarray] | None) -> tuple[np.ndarray, int]:
    """Samples and rate from what Gradio hands over: a file path or a (rate, samples) pair."""
    if audio is None:
        raise AudioError("no audio: record the sentence with the microphone or upload a file first")
    if isinstance(audio, tuple):
        rate, samples = audio
        return np.asarray(samples), int(rate)
    return load_audio(audio), features.SAMPLE_RATE


def analyze(
    recognizer: EmotionRecognizer,
    audio: str | tuple[int, np.ndarray] | None,
    target: str | None,
    session: SpeakerSession | None = None,
    denoise: bool = False,
) -> Reading:
    """One take: optionally noise-reduced first, and adapted to the speaker's earlier takes in ``session``."""
    samples, rate = read_input(audio)
    notes = []
    if denoise:
        samples, rate = reduce_noise(to_mono_16k(samples, rate)), features.SAMPLE_RATE
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


def spectrogram_image(speech: np.ndarray, height_scale: int = 3, width_scale: int = 2) -> np.ndarray:
    """The log-mel spectrogram of the trimmed speech as an RGB image (low frequencies at the bottom)."""
    audio = torch.from_numpy(speech[: features.N_SAMPLES].astype(np.float32))[None]
    log_mel = features.log_mel_spectrogram(audio)[0, :, : int(features.valid_frames(torch.tensor([audio.shape[1]])))]
    scaled = ((log_mel - log_mel.min()) / (log_mel.max() - log_mel.min() + 1e-9)).numpy()[::-1]
    rgb = (_magma(scaled) * 255).astype(np.uint8)
    return np.repeat(np.repeat(rgb, height_scale, axis=0), width_scale, axis=1)


class ImageFolder:
    """PNG files named by their content, for Gradio to serve.

    Gradio saves a returned array under a name derived from its content, rewriting the file in
    place: two users who upload the same clip at once can be served a half-written image. A file
    path is instead copied into Gradio's cache atomically, so the images are written here, each
    once and atomically, and pruned after ``max_age`` seconds.
    """

    def __init__(self, folder: str | os.PathLike | None = None, max_age: float = 3600.0) -> None:
        self.folder = Path(folder) if folder else Path(tempfile.mkdtemp(prefix="ser-images-"))
        self.max_age = max_age
        self._last_pruned = time.monotonic()

    def save(self, rgb: np.ndarray) -> str:
        buffer = io.BytesIO()
        Image.fromarray(rgb).save(buffer, format="PNG")
        data = buffer.getvalue()
        path = self.folder / f"{hashlib.sha256(data).hexdigest()[:24]}.png"
        self._prune()
        try:
            os.utime(path)  # served again: keep it from being pruned
        except FileNotFoundError:
            partial = path.with_name(f".{uuid.uuid4().hex}.partial")
            partial.write_bytes(data)
            os.replace(partial, path)
        return str(path)

    def _prune(self) -> None:
        if time.monotonic() - self._last_pruned < 60:
            return
        self._last_pruned = time.monotonic()
        for old in self.folder.iterdir():
            with contextlib.suppress(OSError):  # another thread may have pruned it first
                if time.time() - old.stat().st_mtime > self.max_age:
                    old.unlink()


def _magma(values: np.ndarray) -> np.ndarray:
    from matplotlib import colormaps

    return colormaps["magma"](values)[..., :3]


def _ordinal(n: int) -> str:
    return f"{n}{'tsnrhtdd'[(n // 10 % 10 != 1) * (n % 10 < 4) * n % 10 :: 4]}"
