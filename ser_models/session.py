"""Session (speaker) adaptation: correct a speaker's bias from their own unlabelled utterances.

Every voice pulls a model towards some emotions: a low, soft voice sounds "calm" or "sad" whatever
it acts. Over several utterances of one speaker that pull shows up as the mean of their
log-probabilities. ``SpeakerSession`` subtracts it, shrunk towards zero by n / (n + PRIOR_WEIGHT)
so that one or two takes barely move anything. The log-probabilities are the model's output
features, so this normalises by the speaker's own statistics without retraining and without labels.

It assumes the speaker's takes are not all of one emotion: a session of ten angry takes would be
pulled away from "angry". ``train.session`` measures both the gain and that failure mode.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

PRIOR_WEIGHT = 5.0  # pseudo-utterances of "no bias": with n takes the session's own bias counts n / (n + 5)


class SpeakerSession:
    """Unlabelled predictions of one speaker, and predictions adapted to them.

    >>> session = SpeakerSession()
    >>> for probabilities in recognizer.predict_batch(takes):  # doctest: +SKIP
    ...     session.add(probabilities)
    >>> session.adapt(recognizer.predict(samples, rate))  # doctest: +SKIP
    """

    def __init__(self, prior_weight: float = PRIOR_WEIGHT) -> None:
        self.prior_weight = prior_weight
        self.labels: tuple[str, ...] | None = None
        self._log_probabilities: list[np.ndarray] = []

    def __len__(self) -> int:
        return len(self._log_probabilities)

    def add(self, probabilities: Mapping[str, float]) -> None:
        labels = tuple(probabilities)
        if self.labels is None:
            self.labels = labels
        elif labels != self.labels:
            raise ValueError("a session mixes predictions over different label sets")
        self._log_probabilities.append(_log(probabilities.values()))

    def bias(self) -> np.ndarray:
        """The speaker's pull towards each emotion, shrunk by how much evidence there is."""
        if not self._log_probabilities:
            return np.zeros(len(self.labels or ()))
        mean = np.mean(self._log_probabilities, axis=0)
        n = len(self._log_probabilities)
        return (mean - mean.mean()) * n / (n + self.prior_weight)

    def adapt(self, probabilities: Mapping[str, float]) -> dict[str, float]:
        """The same prediction with this speaker's bias removed (unchanged for an empty session)."""
        if not self._log_probabilities:
            return dict(probabilities)
        if tuple(probabilities) != self.labels:
            raise ValueError("the prediction's labels differ from the session's")
        adjusted = _log(probabilities.values()) - self.bias()
        adjusted = np.exp(adjusted - adjusted.max())
        return dict(zip(self.labels, (adjusted / adjusted.sum()).tolist(), strict=True))


def adapt_all(predictions: list[Mapping[str, float]], prior_weight: float = PRIOR_WEIGHT) -> list[dict[str, float]]:
    """Adapt every prediction of one speaker with the statistics of all of them."""
    session = SpeakerSession(prior_weight)
    for probabilities in predictions:
        session.add(probabilities)
    return [session.adapt(probabilities) for probabilities in predictions]


def _log(values: Iterable[float]) -> np.ndarray:
    return np.log(np.clip(np.fromiter(values, dtype=np.float64), 1e-9, None))
