"""Optional noise reduction before analysis: spectral gating with ``noisereduce``.

Off by default: the noise-robustness table in model_card.md (``python -m train.noise``) shows
where it helps and where it costs accuracy.
"""

from __future__ import annotations

import numpy as np

from .audio import SAMPLE_RATE


def reduce_noise(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Non-stationary spectral gating: the noise estimate follows the recording, no noise sample needed."""
    import noisereduce

    cleaned = noisereduce.reduce_noise(y=audio, sr=sample_rate, stationary=False)
    return np.ascontiguousarray(cleaned, dtype=np.float32)
