"""Silero VAD without its in-graph STFT: the ONNX file ``ser_models.speech`` serves.

    python -m train.silero_export      # -> ser_models/assets/silero_vad/silero_vad_16k_magnitude.onnx

Silero's batched ("sequence") ONNX model, from the ``silero-vad`` 6.2.3 wheel (MIT), computes its
STFT inside the graph as a convolution of each reflect-padded frame with a Hann-windowed Fourier
basis: 2.6 of the 7 ms it takes for a 4 s clip on this CPU. numpy's FFT gives the same magnitudes in
0.5 ms (``speech.frame_magnitudes``), so the file shipped is Silero's graph from the magnitudes on:
the STFT nodes are cut off and the magnitudes become its input. Before writing, the cut graph fed
with numpy's magnitudes is checked against the whole original graph on speech and noise.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnx.utils
import onnxruntime

from ser_models import speech
from ser_models.audio import load_audio
from train.data import data_dir

MAGNITUDE_TENSOR = "/stft/Sqrt_output_0"  # the name of the STFT's output in Silero's graph
TOLERANCE = 1e-4  # largest difference in a frame's speech probability


def original_model() -> Path:
    """The sequence model inside the installed silero-vad wheel (requirements-dev.txt)."""
    try:
        import silero_vad
    except ImportError as error:
        raise SystemExit("needs the silero-vad wheel: pip install -r requirements-dev.txt") from error
    return Path(silero_vad.__file__).parent / "data" / "silero_vad_16k_sequence.onnx"


def cut_stft(source: Path) -> onnx.ModelProto:
    """Silero's graph from its STFT magnitudes on; the magnitudes are its input ``magnitude``."""
    model = onnx.load(str(source))
    outputs = [value.name for value in model.graph.output]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "cut.onnx"
        onnx.utils.extract_model(str(source), str(path), [MAGNITUDE_TENSOR, "h", "c"], outputs)
        cut = onnx.load(str(path))
    for node in cut.graph.node:
        node.input[:] = [speech.MAGNITUDE_INPUT if name == MAGNITUDE_TENSOR else name for name in node.input]
    (magnitude,) = [value for value in cut.graph.input if value.name == MAGNITUDE_TENSOR]
    magnitude.name = speech.MAGNITUDE_INPUT
    cut.producer_name = "train.silero_export"
    cut.doc_string = f"Silero VAD 6.2.3 (MIT) sequence model without its STFT; made from {source.name}"
    onnx.checker.check_model(cut)
    return cut


def largest_difference(source: Path, cut: onnx.ModelProto, audio: np.ndarray) -> float:
    """The largest difference in speech probability between the original and the cut graph on ``audio``."""
    frames = speech.frames_with_context(audio)
    state = np.zeros((1, 1, 128), dtype=np.float32)
    original = onnxruntime.InferenceSession(str(source), providers=["CPUExecutionProvider"])
    expected = original.run(None, {"input": frames, "h": state, "c": state})[0]
    served = onnxruntime.InferenceSession(cut.SerializeToString(), providers=["CPUExecutionProvider"])
    found = served.run(None, {speech.MAGNITUDE_INPUT: speech.frame_magnitudes(frames), "h": state, "c": state})[0]
    return float(np.abs(expected - found).max())


def check_audio() -> np.ndarray:
    """A few seconds that exercise both ends of the detector: a RAVDESS take where found, then noise."""
    rng = np.random.default_rng(0)
    noise = (0.05 * rng.standard_normal(3 * speech.SAMPLE_RATE)).astype(np.float32)
    clips = sorted(data_dir().glob("Actor_01/*.flac"))[:3]
    return np.concatenate([*(load_audio(clip) for clip in clips), noise])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=None, help="Silero's sequence model (default: the wheel's)")
    parser.add_argument("--output", type=Path, default=speech.SILERO_ONNX_PATH)
    args = parser.parse_args()
    source = args.source or original_model()
    cut = cut_stft(source)
    difference = largest_difference(source, cut, check_audio())
    if difference > TOLERANCE:
        raise SystemExit(f"the cut graph differs from Silero's by {difference:.2e} (> {TOLERANCE}): not written")
    onnx.save(cut, str(args.output))
    print(f"{args.output}: {args.output.stat().st_size / 1e6:.2f} MB, largest difference {difference:.1e}")


if __name__ == "__main__":
    main()
