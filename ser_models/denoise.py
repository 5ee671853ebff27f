"""Optional noise reduction before analysis: spectral gating with ``noisereduce``.

Off by default: the noise-robustness table in model_card.md (``python -m train.noise``) shows
where it helps and where it costs accuracy.
"""

from __future__ import annotations

from importlib.util import find_spec

import numpy as np

from .audio import SAMPLE_RATE

INSTALL_HINT = "noise reduction needs the noisereduce package: pip install 'ser-models[denoise]'"


def available() -> bool:
    """Whether noise reduction can run here (an optional extra: it brings scipy and matplotlib)."""
    return find_spec("noisereduce") is not None


def reduce_noise(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Non-stationary spectral gating: the noise estimate follows the recording, no noise sample needed."""
    if not available():
        raise RuntimeError(INSTALL_HINT)
    import noisereduce

    cleaned = noisereduce.reduce_noise(y=audio, sr=sample_rate, stationary=False)
    return np.ascontiguousarray(cleaned, dtype=np.float32)
