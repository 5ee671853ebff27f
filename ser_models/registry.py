"""The bundled models: one entry each, read by the API, the CLI, the app, the cards and the benchmarks.

Each figure in a description is measured, on actors the model never heard (speaker-independent
cross-validation on RAVDESS actors 01-20), and comes from the report named beside it;
tests/test_registry.py checks that the two still agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

WEIGHTS_DIR = Path(__file__).parent / "weights"


@dataclass(frozen=True)
class BundledModel:
    name: str
    summary: str  # what it is, in plain words
    clean_accuracy: float  # on clean speech of unseen speakers: reports/<report>.json
    noisy_accuracy: float | None  # the same speech with white noise at 10 dB SNR: reports/<noisy_report>.json
    report: str
    env: str  # names a Hub repo id or folder that replaces the bundled weights in the app
    noisy_report: str | None = None  # None: the same report as the clean figure

    @property
    def folder(self) -> Path:
        return WEIGHTS_DIR / self.name

    @property
    def description(self) -> str:
        figures = f"{self.clean_accuracy:.0%} right on voices it never heard"
        if self.noisy_accuracy is not None:
            figures += f", {self.noisy_accuracy:.0%} in loud background noise"
        return f"{self.summary} {figures[0].upper()}{figures[1:]}."


MODELS: dict[str, BundledModel] = {
    model.name: model
    for model in (
        BundledModel(
            "whisper-layers",
            "Listens with every layer of OpenAI's Whisper-base; trained on noisy, echoing, phone-line and quiet "
            "copies of the recordings too, so it holds up best on real microphones.",
            0.7633,
            0.7133,
            "robustness_whisper-layers",
            "SER_WHISPER_LAYERS_MODEL",
        ),
        BundledModel(
            "mel-cnn",
            "A small network that looks at the recording's spectrogram: the fastest (about 3 ms a clip), "
            "trained on noisy, echoing and phone-line copies of the recordings too.",
            0.6208,
            0.5317,
            "robustness_mel-cnn-multi-condition",
            "SER_CNN_MODEL",
        ),
        BundledModel(
            "mfcc-mlp",
            "The seed study's classic: a few numbers summarising the voice's timbre, fed to a small network. "
            "The simplest and least accurate; trained on clean studio speech only.",
            0.4508,
            0.1942,
            "robustness_mfcc-mlp",
            "SER_MLP_MODEL",
        ),
    )
}
DEFAULT_MODEL = "whisper-layers"
