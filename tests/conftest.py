from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from train.data import data_dir

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the network

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def ravdess_dir() -> Path:
    """The local RAVDESS copy (actors 01–20); tests that need real speech skip without it."""
    folder = data_dir()
    if not any(folder.glob("Actor_*/*.flac")) and not any(folder.glob("Actor_*/*.wav")):
        pytest.skip(f"RAVDESS not found at {folder}: set RAVDESS_DIR or place the data at ../shared/data/ravdess")
    return folder


@pytest.fixture(scope="session")
def angry_clip(ravdess_dir: Path) -> Path:
    return ravdess_dir / "Actor_01" / "03-01-05-02-01-01-01.flac"


@pytest.fixture(scope="session")
def sample_clips(ravdess_dir: Path) -> list[Path]:
    """One clip of every emotion from actor 02."""
    return [next((ravdess_dir / "Actor_02").glob(f"03-01-{e:02d}-01-01-01-02.*")) for e in range(1, 9)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def app_feedback_dir(tmp_path_factory) -> Path:
    """Where the app started by ``server_url`` stores consented feedback."""
    return tmp_path_factory.mktemp("feedback")


@pytest.fixture(scope="session")
def server_url(app_feedback_dir: Path, tmp_path_factory):
    port = _free_port()
    # The server's log goes to a file: a pipe nobody reads would block the server once it filled (64 kB).
    log_path = tmp_path_factory.mktemp("app-log") / "app.log"
    env = {
        **os.environ,
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_OFFLINE": "1",
        "SER_FEEDBACK_DIR": str(app_feedback_dir),
    }
    log = open(log_path, "w")  # closed after the server stops
    process = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"app.py exited early:\n{log_path.read_text()}")
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            time.sleep(0.3)
    else:
        process.kill()
        pytest.fail("app.py did not start within 90 s")
    yield url
    process.terminate()
    process.wait(timeout=20)
    log.close()
