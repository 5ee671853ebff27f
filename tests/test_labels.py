import pytest

from ser_models.labels import EMOTIONS, RavdessNameError, parse_ravdess_name


def test_every_shared_file_name_parses(ravdess_dir):
    files = sorted(ravdess_dir.glob("Actor_*/*.flac"))
    assert len(files) == 1200
    names = [parse_ravdess_name(f) for f in files]
    for path, name in zip(files, names, strict=True):
        assert path.parent.name == f"Actor_{name.actor:02d}"
    per_actor_emotion = {}
    for name in names:
        per_actor_emotion[(name.actor, name.emotion)] = per_actor_emotion.get((name.actor, name.emotion), 0) + 1
    assert all(count == (4 if emotion == "neutral" else 8) for (_, emotion), count in per_actor_emotion.items())
    assert {n.emotion for n in names} == set(EMOTIONS)
    assert {n.gender for n in names if n.actor % 2} == {"male"}


def test_fields_of_one_name():
    name = parse_ravdess_name("Actor_12/03-01-05-02-01-02-12.wav")
    assert name.as_dict() == {
        "emotion": "angry",
        "intensity": "strong",
        "statement": "Kids are talking by the door",
        "repetition": 2,
        "actor": 12,
        "gender": "female",
    }


@pytest.mark.parametrize(
    "bad",
    [
        "recording.wav",
        "03-01-09-01-01-01-01.wav",  # emotion 09
        "03-01-01-02-01-01-01.wav",  # strong neutral does not exist
        "03-01-05-01-03-01-01.wav",  # statement 03
        "03-01-05-01-01-01-25.wav",  # actor 25
        "02-01-05-01-01-01-01.wav",  # video-only modality
        "03-02-05-01-01-01-01.wav",  # song
    ],
)
def test_bad_names_are_refused_by_name(bad):
    with pytest.raises(RavdessNameError, match=bad.split(".")[0]):
        parse_ravdess_name(bad)
