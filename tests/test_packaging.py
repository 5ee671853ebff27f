"""The installed package, as a user gets it: weights and assets inside, the `ser-models` command, serving
without torch on every common format, and the Python versions the pinned dependencies really install on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# Imported instead of torch by the installed command below: serving must never need it.
TORCH_BLOCKER = 'raise ImportError("serving imported torch")\n'


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The package installed on its own (no dependencies: they are this venv's) into a folder outside the
    repository, as ``pip install .`` lays it out, with a stand-in ``torch`` that fails on import."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            target,
            ROOT,
        ],
        check=True,
        capture_output=True,
    )
    (target / "torch.py").write_text(TORCH_BLOCKER)
    return target


def run_installed(installed: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(installed), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, str(installed / "bin" / "ser-models"), *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def encode(source: np.ndarray, path: Path, codec: str, video: bool = False) -> Path:
    import av

    with av.open(str(path), "w") as container:
        if video:
            picture = container.add_stream("mpeg4", rate=10)
            picture.width, picture.height, picture.pix_fmt = 64, 64, "yuv420p"
        stream = container.add_stream(codec, rate=48000 if codec == "libopus" else 16000)
        stream.layout = "mono"
        samples = (source * 32767).astype(np.int16)
        step = 1024
        for start in range(0, samples.size, step):
            frame = av.AudioFrame.from_ndarray(samples[None, start : start + step], format="s16", layout="mono")
            frame.rate = 16000
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
        if video:
            image = av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), dtype=np.uint8), format="rgb24")
            for packet in picture.encode(image):
                container.mux(packet)
            for packet in picture.encode(None):
                container.mux(packet)
    return path


def test_installed_package_predicts_every_format_outside_the_repository_without_torch(installed, tmp_path, angry_clip):
    from ser_models import load_audio

    files = [tmp_path / "take.flac"]
    files[0].write_bytes(angry_clip.read_bytes())
    audio = load_audio(angry_clip)
    files += [
        encode(audio, tmp_path / "memo.m4a", "aac"),
        encode(audio, tmp_path / "browser.webm", "libopus"),
        encode(audio, tmp_path / "video.mp4", "aac", video=True),
    ]
    result = run_installed(installed, tmp_path, "predict", *[f.name for f in files])
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row["file"] for row in rows] == [f.name for f in files]
    for row in rows:
        assert abs(sum(row["probabilities"].values()) - 1) < 1e-6
        assert row["label"] == "angry"  # actor 01 is in the bundled models' training set: a sanity check


def test_installed_package_holds_its_weights_assets_and_examples(installed):
    package = installed / "ser_models"
    for name in ("whisper-layers", "mel-cnn", "mfcc-mlp"):
        assert {p.name for p in (package / "weights" / name).iterdir()} >= {"config.json", "model.onnx"}
    assert (package / "weights" / "whisper-base-encoder" / "encoder.onnx").is_file()
    assert (package / "assets" / "silero_vad" / "silero_vad_16k_magnitude.onnx").is_file()
    assert (package / "assets" / "mel_filters.npz").is_file()


def serving_requirements() -> list[str]:
    return [*PYPROJECT["project"]["dependencies"], *PYPROJECT["project"]["optional-dependencies"]["app"]]


def resolve(python_version: str) -> subprocess.CompletedProcess:
    """pip's resolution of the serving requirements (with the app) for another Python, downloading nothing."""
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed", "--report", "-"]
    command += ["--only-binary=:all:", "--python-version", python_version, "--target", "/nonexistent"]
    result = subprocess.run([*command, *serving_requirements()], capture_output=True, text=True, timeout=300)
    if result.returncode and any(
        s in result.stderr for s in ("NewConnectionError", "Network is unreachable", "timed out")
    ):
        pytest.skip(f"the package index is not reachable: {result.stderr.strip().splitlines()[-1]}")
    return result


def test_declared_python_floor_is_what_the_pinned_dependencies_install_on():
    floor = PYPROJECT["project"]["requires-python"].removeprefix(">=")
    major, minor = map(int, floor.split("."))
    on_floor = resolve(floor)
    assert on_floor.returncode == 0, on_floor.stderr
    installed = {item["metadata"]["name"].lower() for item in json.loads(on_floor.stdout)["install"]}
    assert "onnxruntime" in installed and "gradio" in installed
    assert not {name for name in installed if name == "torch" or name.startswith("nvidia-")}
    below = resolve(f"{major}.{minor - 1}")
    assert below.returncode != 0 and "No matching distribution" in below.stderr  # the floor is as low as it can be
