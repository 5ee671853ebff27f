"""The app's figures: the spectrogram of the speech the model heard, and the emotion timeline.

Drawn with Pillow (which Gradio installs) rather than matplotlib, whose 75 MB would be a fifth of the
served environment. The spectrogram goes to the page inline, as a data URL in HTML; the timeline is a
table Gradio's own ``gr.LinePlot`` draws in the browser: no image file derived from a user's voice is
ever written to the server's disk.
"""

from __future__ import annotations

import base64
import io
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import features
from .audio import SAMPLE_RATE
from .labels import EMOTIONS

if TYPE_CHECKING:
    from .segments import Timeline

# Frequencies labelled on the spectrogram's (mel-scaled) axis, in Hz.
FREQUENCY_TICKS_HZ = (250, 500, 1000, 2000, 4000, 8000)
# matplotlib's "magma" colour map (CC0), sampled at 256 levels and saved once: dark is quiet, bright is loud.
COLOURMAP_PATH = Path(__file__).parent / "assets" / "magma.npz"
WIDTH, HEIGHT = 760, 300
LEFT, RIGHT, TOP, BOTTOM = 64, 96, 30, 44  # margins around the image, in pixels
INK, GRID = (40, 40, 40), (150, 150, 150)


@cache
def colourmap() -> np.ndarray:
    with np.load(COLOURMAP_PATH) as saved:
        return saved["magma"]


def mel_band_centres() -> np.ndarray:
    """The centre frequency (Hz) of each mel band of the features, lowest first.

    Each band's filter weights the FFT bins around it; their weighted mean frequency is its centre.
    """
    filters = np.asarray(features.mel_filters(), dtype=np.float64)
    bins = np.arange(filters.shape[1]) * SAMPLE_RATE / features.N_FFT
    return (filters @ bins) / filters.sum(axis=1)


def log_mel(speech: np.ndarray) -> np.ndarray:
    """The log-mel power (dB) of all of ``speech`` (16 kHz mono): (N_MELS, frames), one frame per HOP_LENGTH."""
    return features.log_mel_spectrogram(np.asarray(speech, dtype=np.float32).reshape(1, -1))[0]


def time_ticks(start: float, end: float, most: int = 8) -> list[float]:
    """Round times (s) between ``start`` and ``end``, at most ``most`` of them."""
    span = max(end - start, 1e-3)
    step = next(s for s in (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200) if span / s <= most)
    return [t for t in np.arange(np.ceil(start / step) * step, end + 1e-9, step)]


def label(seconds: float) -> str:
    return f"{seconds:.1f}".rstrip("0").rstrip(".")


def spectrogram_png(speech: np.ndarray, start_seconds: float = 0.0) -> bytes:
    """The log-mel spectrogram of the speech the model analyzed, with time (s), frequency (kHz) and power (dB).

    ``speech`` is the trimmed 16 kHz speech and ``start_seconds`` where it began in the recording, so the
    time axis reads as time in the recording. Low frequencies are at the bottom; the frequency axis is
    mel-scaled, as the model hears it, and labelled in kHz.
    """
    from PIL import Image, ImageDraw

    power = log_mel(speech)
    low, high = float(power.min()), float(power.max())
    levels = np.clip((power - low) / max(high - low, 1e-6) * 255, 0, 255).astype(np.uint8)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    canvas, font = _spectrogram_frame().copy(), _font()
    picture = Image.fromarray(colourmap()[levels[::-1]]).resize((plot_w, plot_h), Image.Resampling.NEAREST)
    canvas.paste(picture, (LEFT, TOP))
    draw = ImageDraw.Draw(canvas)
    seconds = np.asarray(speech).size / SAMPLE_RATE
    for t in time_ticks(start_seconds, start_seconds + seconds):
        x = LEFT + (t - start_seconds) / seconds * plot_w
        draw.line((x, TOP + plot_h, x, TOP + plot_h + 4), fill=INK)
        draw.text((x, TOP + plot_h + 6), label(t), fill=INK, font=font, anchor="ma")
    bar_x = LEFT + plot_w + 14
    for db in np.linspace(low, high, 5):
        y = TOP + plot_h - (db - low) / max(high - low, 1e-6) * plot_h
        draw.text((bar_x + 16, y), f"{db:.0f}", fill=INK, font=font, anchor="lm")
    buffer = io.BytesIO()
    # 256 colours (Pillow's fast octree) lose nothing visible of one colour map and grey text, and an indexed
    # PNG is a third of the bytes, encoded in under half the time (2.5 ms and 19 KB against 5.5 ms and 50 KB
    # as RGB): less for the server to send and for every client to decode, on each /predict. Fast deflate:
    # level 1 (optimize=True took 70-120 ms, most of a /predict).
    canvas.quantize(256, method=Image.Quantize.FASTOCTREE).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _font():
    # A font per figure (0.2 ms): FreeType faces are not safe to share between the server's threads.
    from PIL import ImageFont

    return ImageFont.load_default(size=12)


@cache
def _spectrogram_frame():
    """Everything of the spectrogram figure that no recording changes: title, frequency axis, colour bar.

    Drawn once: the text alone took a third of each figure's time.
    """
    from PIL import Image, ImageDraw

    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    canvas = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw, font = ImageDraw.Draw(canvas), _font()
    draw.rectangle((LEFT - 1, TOP - 1, LEFT + plot_w, TOP + plot_h), outline=INK)
    draw.text((WIDTH / 2, 6), "Log-mel spectrogram of the speech the model analyzed", fill=INK, font=font, anchor="ma")
    draw.text((LEFT + plot_w / 2, HEIGHT - 4), "time in the recording (s)", fill=INK, font=font, anchor="md")
    for hz, y in frequency_ticks():
        draw.line((LEFT - 4, y, LEFT, y), fill=INK)
        draw.text((LEFT - 6, y), f"{hz / 1000:g}", fill=INK, font=font, anchor="rm")
    canvas.paste(*vertical_text("frequency (kHz)", font, left=6, middle=TOP + plot_h // 2))
    bar_x = LEFT + plot_w + 14
    ramp = colourmap()[np.linspace(255, 0, plot_h).astype(np.uint8)][:, None, :].repeat(12, axis=1)
    canvas.paste(Image.fromarray(ramp), (bar_x, TOP))
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((bar_x - 1, TOP - 1, bar_x + 12, TOP + plot_h), outline=INK)
    draw.text((bar_x + 6, TOP + plot_h + 6), "dB", fill=INK, font=font, anchor="ma")
    return canvas


def frequency_ticks() -> list[tuple[int, float]]:
    """(Hz, pixel row) of each labelled frequency on the spectrogram: the mel band where it lies."""
    centres, plot_h = mel_band_centres(), HEIGHT - TOP - BOTTOM
    bands = [
        (hz, np.interp(hz, centres, np.arange(centres.size))) for hz in FREQUENCY_TICKS_HZ if hz <= centres[-1] * 1.05
    ]
    return [(hz, TOP + plot_h - (band + 0.5) / centres.size * plot_h) for hz, band in bands]


def vertical_text(text: str, font, left: int, middle: int):
    """An image of ``text`` turned 90° (read bottom to top, as axis titles are) and where to paste it."""
    from PIL import Image, ImageDraw

    box = font.getbbox(text)
    image = Image.new("RGB", (box[2] + 4, box[3] + 4), "white")
    ImageDraw.Draw(image).text((2, 2), text, fill=INK, font=font)
    turned = image.rotate(90, expand=True)
    return turned, (left, middle - turned.height // 2)


def spectrogram_html(speech: np.ndarray, start_seconds: float = 0.0) -> str:
    """``spectrogram_png`` as an inline image for ``gr.HTML``: sent in the response, never saved as a file."""
    encoded = base64.b64encode(spectrogram_png(speech, start_seconds)).decode("ascii")
    alt = "Log-mel spectrogram of the speech the model analyzed: time in seconds across, frequency in kHz up"
    return f'<img src="data:image/png;base64,{encoded}" alt="{alt}" style="width:100%;max-width:{WIDTH}px">'


def timeline_points(result: Timeline) -> list[dict[str, float | str]]:
    """Each emotion's probability at every window's centre: the rows ``gr.LinePlot`` draws, one line per emotion."""
    return [
        {"time (s)": round((s.start + s.end) / 2, 2), "probability": round(s.probabilities[e], 4), "emotion": e}
        for s in result.segments
        for e in EMOTIONS
    ]
