"""The bundled models' registry: every figure it shows users is the one in its report."""

import json
from pathlib import Path

import pytest

from ser_models import MODELS, EmotionRecognizer
from ser_models.registry import DEFAULT_MODEL

REPORTS = Path(__file__).resolve().parents[1] / "reports"


def clean_accuracy(report: dict) -> float:
    if "grid" in report:
        return report["grid"]["clean"]["mean"]
    return report["protocols"]["speaker-independent"]["accuracy"]["mean"]


@pytest.mark.parametrize("name", list(MODELS))
def test_each_figure_is_its_reports(name):
    model = MODELS[name]
    report = json.loads((REPORTS / f"{model.report}.json").read_text())
    assert model.clean_accuracy == pytest.approx(clean_accuracy(report), abs=5e-5)
    if model.noisy_accuracy is not None:
        noisy = json.loads((REPORTS / f"{model.noisy_report or model.report}.json").read_text())
        assert noisy["protocol"] == "speaker-independent"
        assert model.noisy_accuracy == pytest.approx(noisy["grid"]["white 10 dB"]["mean"], abs=5e-5)
    assert f"{model.clean_accuracy:.0%}" in model.description


def test_every_bundled_model_loads_and_the_default_is_one():
    assert DEFAULT_MODEL in MODELS
    for name, model in MODELS.items():
        assert model.folder.is_dir() and model.env.startswith("SER_")
        assert EmotionRecognizer.from_pretrained(name).name == name
