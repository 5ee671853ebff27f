"""Property-based: whatever samples arrive, the answer is eight probabilities or a documented AudioError."""

import math
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ser_models import EMOTIONS, AudioError, ClippingWarning, EmotionRecognizer

RECOGNIZERS = {name: EmotionRecognizer.from_pretrained(name) for name in ("mel-cnn", "mfcc-mlp")}


@st.composite
def recordings(draw):
    rate = draw(st.sampled_from([8000, 11025, 16000, 22050, 44100, 48000, 96000]))
    seconds = draw(st.floats(min_value=0.0, max_value=3.0))
    channels = draw(st.integers(min_value=1, max_value=3))
    dtype = draw(st.sampled_from([np.int16, np.int32, np.uint8, np.float32, np.float64]))
    kind = draw(st.sampled_from(["tone", "noise", "silence", "nan", "loud"]))
    n = int(seconds * rate)
    t = np.arange(n) / rate
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    signal = {
        "tone": 0.3 * np.sin(2 * np.pi * draw(st.floats(80, 3000)) * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t)),
        "noise": 0.2 * rng.standard_normal(n),
        "silence": np.zeros(n),
        "nan": np.where(rng.random(n) < 0.01, np.nan, 0.1 * rng.standard_normal(n)),
        "loud": np.clip(3 * rng.standard_normal(n), -1, 1),
    }[kind]
    samples = np.repeat(signal[:, None], channels, axis=1) if channels > 1 else signal
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        samples = np.nan_to_num(samples)
        scaled = samples * (info.max - (info.min + info.max) / 2) + (info.min + info.max) / 2
        samples = np.clip(scaled, info.min, info.max).astype(dtype)
    else:
        samples = samples.astype(dtype)
    return samples, rate


@pytest.mark.parametrize("model", sorted(RECOGNIZERS))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(recording=recordings())
def test_predict_returns_a_distribution_or_a_documented_error(model, recording):
    samples, rate = recording
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no stray numpy warnings either
        warnings.simplefilter("ignore", ClippingWarning)
        try:
            probabilities = RECOGNIZERS[model].predict(samples, rate)
        except AudioError as error:
            assert str(error)  # every refusal carries a message for the user
            return
    assert list(probabilities) == list(EMOTIONS)
    assert all(math.isfinite(p) and 0 <= p <= 1 for p in probabilities.values())
    assert math.isclose(sum(probabilities.values()), 1.0, abs_tol=1e-6)
