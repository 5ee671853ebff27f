"""Evaluation protocols.

Speaker-independent (the headline): whole actors go to train, validation or test, so
the model is always scored on voices it never heard. Speaker-dependent (the seed
study's random 70/15/15 split) is kept only for comparison: every speaker appears
in both train and test, which flatters the figures.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import train_test_split

SEED = 42
N_FOLDS = 5


@dataclass(frozen=True)
class Split:
    """Row indices of one train/validation/test split."""

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray


def actor_folds(actors: list[int], n_folds: int = N_FOLDS, seed: int = SEED) -> list[list[int]]:
    """Deal actors into folds, men and women shuffled separately so each fold is gender-balanced."""
    rng = np.random.default_rng(seed)
    men = [a for a in sorted(set(actors)) if a % 2 == 1]
    women = [a for a in sorted(set(actors)) if a % 2 == 0]
    dealt = list(rng.permutation(men)) + list(rng.permutation(women))
    folds: list[list[int]] = [[] for _ in range(n_folds)]
    for position, actor in enumerate(dealt):
        folds[position % n_folds].append(int(actor))
    return [sorted(fold) for fold in folds]


def speaker_independent_splits(actor_of_row: np.ndarray, n_folds: int = N_FOLDS, seed: int = SEED) -> list[Split]:
    """One split per fold: that fold's actors are the test set, one man and one woman of the
    next fold the validation set (for early stopping), every other actor the training set.

    Every emotion is present for every actor in RAVDESS, so actor groups are also
    stratified by emotion.
    """
    actor_of_row = np.asarray(actor_of_row)
    folds = actor_folds(list(actor_of_row), n_folds, seed)
    splits = []
    for k, test_actors in enumerate(folds):
        validation_actors = validation_pair(folds[(k + 1) % n_folds])
        test = np.flatnonzero(np.isin(actor_of_row, test_actors))
        validation = np.flatnonzero(np.isin(actor_of_row, validation_actors))
        train = np.flatnonzero(~np.isin(actor_of_row, test_actors + validation_actors))
        splits.append(Split(train, validation, test))
    return splits


def validation_pair(actors: list[int]) -> list[int]:
    """One man and one woman (the first of each) from a list of actors."""
    men = [a for a in actors if a % 2 == 1]
    women = [a for a in actors if a % 2 == 0]
    return (men[:1] + women[:1]) or actors[:2]


def random_splits(labels: np.ndarray, n_repeats: int = N_FOLDS, seed: int = SEED) -> list[Split]:
    """Speaker-DEPENDENT: the seed study's random stratified 70/15/15 split, repeated with seeds seed..seed+n-1."""
    rows = np.arange(len(labels))
    splits = []
    for repeat in range(n_repeats):
        train, rest = train_test_split(rows, test_size=0.30, stratify=labels, random_state=seed + repeat)
        validation, test = train_test_split(rest, test_size=0.50, stratify=labels[rest], random_state=seed + repeat)
        splits.append(Split(np.sort(train), np.sort(validation), np.sort(test)))
    return splits
