import numpy as np

from train.splits import actor_folds, random_splits, speaker_independent_splits

ACTOR_OF_ROW = np.repeat(np.arange(1, 21), 60)


def test_actor_folds_are_disjoint_gender_balanced_and_seeded():
    folds = actor_folds(list(range(1, 21)))
    assert sorted(a for fold in folds for a in fold) == list(range(1, 21))
    assert all(sum(a % 2 for a in fold) == 2 for fold in folds)  # two men, two women each
    assert folds == actor_folds(list(range(1, 21)))
    assert folds != actor_folds(list(range(1, 21)), seed=7)


def test_no_actor_in_two_parts_of_a_split():
    splits = speaker_independent_splits(ACTOR_OF_ROW)
    assert len(splits) == 5
    tested = []
    for split in splits:
        parts = [set(ACTOR_OF_ROW[rows]) for rows in (split.train, split.validation, split.test)]
        assert not parts[0] & parts[1] and not parts[0] & parts[2] and not parts[1] & parts[2]
        assert len(split.train) + len(split.validation) + len(split.test) == len(ACTOR_OF_ROW)
        assert len(parts[1]) == 2 and sum(a % 2 for a in parts[1]) == 1
        tested += sorted(parts[2])
    assert sorted(tested) == list(range(1, 21))  # every actor is tested exactly once


def test_random_split_is_stratified_and_shares_speakers():
    labels = np.tile(np.array([0] * 4 + [e for e in range(1, 8) for _ in range(8)]), 20)
    split = random_splits(labels, n_repeats=1)[0]
    assert len(split.train) == 840 and len(split.validation) == 180 and len(split.test) == 180
    shares = np.bincount(labels[split.test]) / len(split.test)
    assert np.allclose(shares, np.bincount(labels) / len(labels), atol=0.01)
    assert set(ACTOR_OF_ROW[split.train]) & set(ACTOR_OF_ROW[split.test])  # speaker-dependent by design
