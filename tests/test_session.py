"""Session adaptation uses only the speaker's own predictions, one session at a time."""

import inspect
import math

import numpy as np
import pytest

from ser_models import EMOTIONS
from ser_models.session import SpeakerSession, adapt_all


def distribution(values) -> dict[str, float]:
    values = np.asarray(values, dtype=float)
    return dict(zip(EMOTIONS, (values / values.sum()).tolist(), strict=True))


def biased_speaker(n: int, seed: int) -> list[dict[str, float]]:
    """Takes of every emotion in turn, each pulled towards "calm" by the voice."""
    rng = np.random.default_rng(seed)
    takes = []
    for i in range(n):
        logits = rng.normal(0, 0.3, len(EMOTIONS))
        logits[i % len(EMOTIONS)] += 1.0  # what the take really expresses
        logits[EMOTIONS.index("calm")] += 1.5  # the voice's pull
        takes.append(distribution(np.exp(logits)))
    return takes


def test_the_api_takes_predictions_only_never_labels():
    assert list(inspect.signature(SpeakerSession.add).parameters) == ["self", "probabilities"]
    assert list(inspect.signature(SpeakerSession.adapt).parameters) == ["self", "probabilities"]


def test_an_empty_session_changes_nothing_and_one_take_changes_little():
    take = biased_speaker(1, seed=0)[0]
    session = SpeakerSession()
    assert session.adapt(take) == take
    session.add(take)
    adapted = session.adapt(take)
    assert math.isclose(sum(adapted.values()), 1)
    assert max(abs(adapted[e] - take[e]) for e in EMOTIONS) < 0.25


def test_a_speakers_pull_is_removed_over_many_takes():
    takes = biased_speaker(40, seed=1)
    truth = [EMOTIONS[i % len(EMOTIONS)] for i in range(40)]
    before = np.mean([max(t, key=t.get) == label for t, label in zip(takes, truth, strict=True)])
    adapted = adapt_all(takes)
    after = np.mean([max(t, key=t.get) == label for t, label in zip(adapted, truth, strict=True)])
    assert after > before + 0.3
    assert all(math.isclose(sum(a.values()), 1) for a in adapted)


def test_two_sessions_never_mix():
    first, second = SpeakerSession(), SpeakerSession()
    for take in biased_speaker(16, seed=2):
        first.add(take)
    probe = biased_speaker(1, seed=3)[0]
    assert second.adapt(probe) == probe and len(second) == 0
    assert first.adapt(probe) != probe


def test_a_session_refuses_predictions_over_other_labels():
    session = SpeakerSession()
    session.add(biased_speaker(1, seed=0)[0])
    with pytest.raises(ValueError, match="different label sets"):
        session.add({"a": 0.5, "b": 0.5})
