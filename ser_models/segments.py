"""Long recordings as an emotion timeline: find the speech, cut it into windows, classify each window.

Voice activity comes from Silero VAD (its ONNX model ships with this package and runs offline
through onnxruntime, see ``speech``); a frame-energy detector can be chosen instead
(``vad="energy"``). Each speech region longer than one model input is split into half-overlapping
4 s windows (``features.chunk_starts``), so every part of a long turn gets its own probabilities.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from . import features, speech
from .audio import SAMPLE_RATE, SilentAudioError
from .inference import BATCH_SIZE, EmotionRecognizer
from .session import adapt_all

log = logging.getLogger("ser_models.segments")

TIMELINE_MAX_SECONDS = 3600.0  # an hour of 16 kHz float32 is 230 MB; longer files should be split first
MIN_SILENCE_SECONDS = 0.6  # pauses shorter than this (within a sentence) stay inside one segment
SILERO_THRESHOLD = 0.35  # below Silero's 0.5 default: soft, breathy endings of acted sentences are speech too
SILERO_PAD_SECONDS = 0.15
ENERGY_PAD_SECONDS = 0.05
ENERGY_FRAME = 480  # 30 ms
ENERGY_HOP = 160  # 10 ms
ENERGY_RANGE_DB = 25.0  # frames this far below the loudest one nearby are silence (as in trimming)
ENERGY_CONTEXT_SECONDS = 3.0  # "nearby": a quiet speaker late in a recording is judged on their own level
# The energy detector stands in only where Silero VAD is missing, and has nothing but level to go by:
# a frame under this is silence whatever its surroundings (a microphone's own noise floor).
ENERGY_FLOOR_DBFS = -60.0
VAD_METHODS = ("auto", "silero", "energy")


@dataclass(frozen=True)
class Segment:
    """One window of speech on the timeline, with its probabilities."""

    segment: int  # index of the speech region the window belongs to
    start: float
    end: float
    probabilities: dict[str, float]

    @property
    def label(self) -> str:
        return max(self.probabilities, key=self.probabilities.get)

    def as_dict(self) -> dict:
        return {
            "segment": self.segment,
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "label": self.label,
            "probabilities": self.probabilities,
        }


@dataclass
class Timeline:
    segments: list[Segment]
    speech_regions: list[tuple[float, float]]
    seconds: float
    vad: str
    notes: list[str] = field(default_factory=list)

    def overall(self) -> dict[str, float]:
        """Probabilities over the whole recording: the windows' mean, weighted by their length."""
        weights = np.array([s.end - s.start for s in self.segments])
        table = np.array([list(s.probabilities.values()) for s in self.segments])
        mean = (table * weights[:, None]).sum(axis=0) / weights.sum()
        return dict(zip(self.segments[0].probabilities, mean.tolist(), strict=True))


def speech_regions(audio: np.ndarray, method: str = "auto") -> tuple[list[tuple[int, int]], str]:
    """Speech as (start, end) sample pairs of 16 kHz mono audio, and the detector that found them."""
    if method not in VAD_METHODS:
        raise ValueError(f"unknown VAD method {method!r}; choose one of {', '.join(VAD_METHODS)}")
    if method == "energy":
        return _energy_regions(audio), "energy"
    regions = speech.speech_timestamps(
        speech.frame_probabilities(audio),
        audio.size,
        threshold=SILERO_THRESHOLD,
        min_silence_seconds=MIN_SILENCE_SECONDS,
        pad_seconds=SILERO_PAD_SECONDS,
    )
    return regions, "silero"


def timeline(
    recognizer: EmotionRecognizer,
    audio: np.ndarray,
    vad: str = "auto",
    progress: Callable[[float, str], None] | None = None,
    one_speaker: bool = False,
) -> Timeline:
    """The emotion timeline of a long 16 kHz mono recording (see ``audio.load_audio``).

    With ``one_speaker``, every window is adapted to the voice of the whole recording
    (``session.adapt_all``): right for one person's monologue, wrong for a conversation.
    """
    report = progress or (lambda fraction, message: None)
    report(0.0, "finding speech")
    regions, method = speech_regions(audio, vad)
    min_samples = int(features.MIN_SPEECH_SECONDS * SAMPLE_RATE)
    kept = [(start, end) for start, end in regions if end - start >= min_samples]
    if not kept:
        raise SilentAudioError(
            f"no stretch of speech of at least {features.MIN_SPEECH_SECONDS:.1f} s was found in the recording"
        )
    windows, owners = [], []
    for index, (start, end) in enumerate(kept):
        for offset in features.chunk_starts(end - start):
            windows.append((start + offset, min(end, start + offset + features.N_SAMPLES)))
            owners.append(index)
    segments = []
    for first in range(0, len(windows), BATCH_SIZE):
        batch = windows[first : first + BATCH_SIZE]
        report(0.1 + 0.9 * first / len(windows), f"classifying windows {first + 1}–{first + len(batch)}")
        for (start, end), owner, probabilities in zip(
            batch,
            owners[first : first + BATCH_SIZE],
            recognizer.predict_speech([audio[start:end] for start, end in batch]),
            strict=True,
        ):
            segments.append(Segment(owner, start / SAMPLE_RATE, end / SAMPLE_RATE, probabilities))
    if one_speaker:
        adapted = adapt_all([segment.probabilities for segment in segments])
        segments = [replace(segment, probabilities=p) for segment, p in zip(segments, adapted, strict=True)]
    report(1.0, "done")
    notes = []
    if len(kept) < len(regions):
        notes.append(f"{len(regions) - len(kept)} speech burst(s) under {features.MIN_SPEECH_SECONDS} s were skipped")
    if one_speaker:
        notes.append(f"Every window was adapted to the voice of the whole recording ({len(segments)} windows).")
    return Timeline(
        segments=segments,
        speech_regions=[(start / SAMPLE_RATE, end / SAMPLE_RATE) for start, end in kept],
        seconds=audio.size / SAMPLE_RATE,
        vad=method,
        notes=notes,
    )


def _energy_regions(audio: np.ndarray) -> list[tuple[int, int]]:
    """Frames within ENERGY_RANGE_DB of the loudest frame around them, gaps under MIN_SILENCE_SECONDS bridged."""
    if audio.size < ENERGY_FRAME:
        return []
    frames = np.lib.stride_tricks.sliding_window_view(audio, ENERGY_FRAME)[::ENERGY_HOP]
    db = 10 * np.log10(np.mean(np.square(frames, dtype=np.float64), axis=1) + 1e-12)
    nearby_peak = _running_max(db, int(ENERGY_CONTEXT_SECONDS * SAMPLE_RATE / ENERGY_HOP))
    loud = (db > nearby_peak - ENERGY_RANGE_DB) & (db > ENERGY_FLOOR_DBFS)
    if not loud.any():
        return []
    edges = np.flatnonzero(np.diff(np.concatenate([[0], loud.astype(np.int8), [0]])))
    regions = [[int(a) * ENERGY_HOP, int(b - 1) * ENERGY_HOP + ENERGY_FRAME] for a, b in edges.reshape(-1, 2)]
    merged = [regions[0]]
    for start, end in regions[1:]:
        if start - merged[-1][1] < MIN_SILENCE_SECONDS * SAMPLE_RATE:
            merged[-1][1] = end
        else:
            merged.append([start, end])
    pad = int(ENERGY_PAD_SECONDS * SAMPLE_RATE)
    return [(max(0, start - pad), min(audio.size, end + pad)) for start, end in merged]


def _running_max(values: np.ndarray, size: int) -> np.ndarray:
    """The maximum of each ``size``-long window centred on every value (edges mirrored), as
    ``scipy.ndimage.maximum_filter1d(values, size)`` gives it."""
    left = size // 2
    padded = np.pad(values, (left, size - 1 - left), mode="symmetric")  # scipy.ndimage's "reflect"
    return np.lib.stride_tricks.sliding_window_view(padded, size).max(axis=1)
