import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ser_models.labels import EMOTIONS, RavdessNameError, parse_ravdess_name
from train import data


@pytest.fixture
def small_copy(ravdess_dir, tmp_path):
    """Actors 01 and 02, copied in the official folder layout."""
    for actor in ("Actor_01", "Actor_02"):
        shutil.copytree(ravdess_dir / actor, tmp_path / "ravdess" / actor)
    return tmp_path / "ravdess"


def test_local_folder_has_every_field_as_a_column(small_copy):
    dataset = data.load_ravdess(small_copy)
    assert len(dataset) == 120
    assert dataset.features["emotion"].names == list(EMOTIONS)
    assert set(dataset.column_names) == {"audio", "emotion", "intensity", "statement", "repetition", "actor", "gender"}
    row = dataset[0]
    assert row["audio"]["path"].endswith("03-01-01-01-01-01-01.flac") and row["actor"] == 1
    assert dataset.features["gender"].int2str(row["gender"]) == "male"
    assert sorted(set(data.load_ravdess(small_copy, actors=[2])["actor"])) == [2]


def test_a_file_that_does_not_parse_is_named(small_copy):
    (small_copy / "Actor_01" / "my_recording.wav").write_bytes(b"")
    with pytest.raises(RavdessNameError, match="my_recording.wav"):
        data.load_ravdess(small_copy)


def test_features_are_cached_between_runs(small_copy, monkeypatch):
    dataset = data.load_ravdess(small_copy, actors=[1])
    first = data.with_log_mel(dataset)
    assert first[0]["log_mel"] and first.cache_files

    def must_not_run(*args, **kwargs):
        raise AssertionError("features were recomputed instead of read from the cache")

    monkeypatch.setattr(data.features, "trim_silence", must_not_run)
    second = data.with_log_mel(data.load_ravdess(small_copy, actors=[1]))
    assert second.cache_files == first.cache_files


def test_hub_style_parquet_dataset_offline(ravdess_dir, tmp_path):
    """A Hub dataset (parquet with an Audio column holding bytes) loads without decoding through torchcodec."""
    clips = sorted((ravdess_dir / "Actor_03").glob("*.flac"))[:6]
    # Written with pyarrow and the schema metadata the Hub's parquet exports carry (an Audio feature);
    # datasets itself would need torchcodec to encode it.
    table = pa.table(
        {
            "audio": pa.array(
                [{"bytes": c.read_bytes(), "path": c.name} for c in clips],
                pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
            ),
            "note": ["x"] * len(clips),
        }
    )
    hf_features = {"info": {"features": {"audio": {"_type": "Audio"}, "note": {"dtype": "string", "_type": "Value"}}}}
    table = table.replace_schema_metadata({"huggingface": json.dumps(hf_features)})
    (tmp_path / "hub" / "data").mkdir(parents=True)
    pq.write_table(table, tmp_path / "hub" / "data" / "train-00000-of-00001.parquet")
    dataset = data.load_ravdess(str(tmp_path / "hub"))
    assert len(dataset) == 6 and set(dataset["actor"]) == {3}
    assert data.decode(dataset[0]["audio"]).dtype.name == "float32"
    log_mel, lengths, labels = data.tensors(data.with_log_mel(dataset))
    assert log_mel.shape == (6, 64, 201)
    assert labels.tolist() == [EMOTIONS.index(parse_ravdess_name(c).emotion) for c in clips]
