"""``ser-models score-corpus``: corpus scoring on Ray Data (ser_models.corpus), checked against the CLI."""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ser_models import EMOTIONS, EmotionRecognizer, load_audio
from ser_models import corpus as corpus_module
from ser_models.cli import expand, main
from ser_models.corpus import PROB_COLUMNS, CorpusError, Item, list_inputs, plan_shards, score_corpus, score_items
from ser_models.segments import TIMELINE_MAX_SECONDS, timeline

ROOT = Path(__file__).resolve().parents[1]
MODEL = "whisper-layers"  # the default: the one a corpus is scored with


@pytest.fixture(scope="module")
def recognizer() -> EmotionRecognizer:
    return EmotionRecognizer.from_pretrained(MODEL)


@pytest.fixture
def corpus(sample_clips, tmp_path) -> Path:
    """The eight emotions of actor 02 (half in a sub-folder), a corrupt WAV, a text file named .wav, and notes."""
    folder = tmp_path / "corpus"
    (folder / "more").mkdir(parents=True)
    for number, clip in enumerate(sample_clips):
        shutil.copy(clip, folder / ("more" if number >= 4 else "") / clip.name)
    (folder / "broken.wav").write_bytes(b"RIFF\x00\x00")
    (folder / "more" / "letter.wav").write_text("Dear reader, this is not audio.\n")
    (folder / "notes.txt").write_text("not audio, not picked up")
    return folder


@pytest.fixture(scope="module")
def ray_session():
    """One local Ray for the module (1 CPU), shut down at its end: no raylet outlives the tests."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    try:
        yield ray
    finally:
        ray.shutdown()


def _rows(output: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(output).to_pylist()


# ---------------------------------------------------------------- without Ray


def test_the_package_and_the_cli_import_without_ray():
    code = "import sys; import ser_models, ser_models.cli, ser_models.corpus; print('ray' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_without_ray_the_command_says_what_to_install(corpus, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    with pytest.raises(CorpusError, match=r'pip install "ser-models\[corpus\]"'):
        score_corpus(corpus, tmp_path / "out")
    assert main(["score-corpus", str(corpus), str(tmp_path / "out"), "--no-progress"]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line == 'error: scoring a corpus needs Ray Data: pip install "ser-models[corpus]"'


def test_rows_are_the_clis_and_bad_files_become_error_rows(corpus, recognizer, monkeypatch):
    files = list(expand([str(corpus)], recursive=True))
    items = [Item(index, name) for index, name in enumerate(files)]
    real_load = corpus_module.load_audio

    def load(source, *args, **kwargs):  # one file raises what no audio check expects
        if str(source).endswith("03-01-03-01-01-01-02.flac"):
            raise KeyError("boom")
        return real_load(source, *args, **kwargs)

    monkeypatch.setattr(corpus_module, "load_audio", load)
    rows = {row["file"]: row for row in score_items(recognizer, items)}
    assert list(rows) == files  # one row per file, in input order
    happy = next(f for f in files if f.endswith("03-01-03-01-01-01-02.flac"))
    assert rows[happy]["error"] == f"{happy!r}: unexpected KeyError: 'boom'" and rows[happy]["label"] is None
    broken, letter = str(corpus / "broken.wav"), str(corpus / "more" / "letter.wav")
    for name in (broken, letter):
        assert rows[name]["error"].startswith(f"{name!r} could not be decoded as audio")
    for name, row in rows.items():
        if row["error"] is None:
            expected = recognizer.predict_file(name)
            assert [row[c] for c in PROB_COLUMNS] == pytest.approx([expected[e] for e in EMOTIONS], abs=1e-6)
            assert row["label"] == max(expected, key=expected.get) and row["snr_db"] > 20 and row["seconds"] > 2


def test_a_batch_that_fails_is_scored_file_by_file(sample_clips, recognizer, monkeypatch):
    items = [Item(i, str(clip)) for i, clip in enumerate(sample_clips[:3])]
    expected = score_items(recognizer, items)
    real = recognizer.predict_speech

    def only_one_at_a_time(speech):
        if len(speech) > 1:
            raise MemoryError("a batch too large")
        return real(speech)

    monkeypatch.setattr(recognizer, "predict_speech", only_one_at_a_time)
    again = score_items(recognizer, items)
    assert [r["label"] for r in again] == [r["label"] for r in expected]
    for row, before in zip(again, expected, strict=True):
        assert [row[c] for c in PROB_COLUMNS] == pytest.approx([before[c] for c in PROB_COLUMNS], abs=1e-6)


def test_inputs_folders_tables_and_saved_datasets(corpus, sample_clips, tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    assert [i.file for i in list_inputs(corpus)] == list(expand([str(corpus)], recursive=True))
    paths = [str(c) for c in sample_clips[:2]]
    pq.write_table(pa.table({"speaker": [2, 2], "path": paths}), tmp_path / "paths.parquet")
    assert [(i.index, i.file, i.data) for i in list_inputs(tmp_path / "paths.parquet")] == [
        (0, paths[0], None),
        (1, paths[1], None),
    ]
    audio = datasets.Audio(decode=False)
    table = datasets.Dataset.from_dict(
        {"audio": [{"bytes": Path(p).read_bytes(), "path": Path(p).name} for p in paths], "text": ["a", "b"]}
    ).cast_column("audio", audio)
    table.save_to_disk(tmp_path / "saved")
    table.to_parquet(tmp_path / "hub" / "train-00000.parquet")
    for source in (tmp_path / "saved", tmp_path / "hub"):
        items = list_inputs(source)
        assert [(i.file, i.data) for i in items] == [(Path(p).name, Path(p).read_bytes()) for p in paths]
    datasets.DatasetDict({"train": table}).save_to_disk(tmp_path / "splits")
    with pytest.raises(CorpusError, match="give one split's folder"):
        list_inputs(tmp_path / "splits")
    pq.write_table(pa.table({"a": ["x"], "b": ["y"]}), tmp_path / "two.parquet")
    with pytest.raises(CorpusError, match=r"name the column .* \(--column\); candidates: a, b"):
        list_inputs(tmp_path / "two.parquet")
    with pytest.raises(CorpusError, match="has no column 'c'"):
        list_inputs(tmp_path / "two.parquet", column="c")
    assert [i.file for i in list_inputs(tmp_path / "two.parquet", column="b")] == ["y"]


def test_shards_are_named_by_their_inputs_and_the_settings():
    items = [Item(i, f"clip{i}.wav") for i in range(10)]
    settings = {"model": MODEL, "segments": False}
    shards = plan_shards(items, 4, settings)
    assert [len(s.items) for s in shards] == [4, 4, 2] and shards[0].name.startswith("shard-00000-")
    assert [s.name for s in plan_shards(items, 4, dict(settings))] == [s.name for s in shards]  # deterministic
    changed = plan_shards([*items[:5], Item(5, "other.wav"), *items[6:]], 4, settings)
    assert [a.name == b.name for a, b in zip(shards, changed, strict=True)] == [True, False, True]
    assert not {s.name for s in plan_shards(items, 4, {**settings, "segments": True})} & {s.name for s in shards}


# ---------------------------------------------------------------- on Ray


def test_the_command_in_a_real_process_starts_and_stops_its_own_ray(sample_clips, tmp_path):
    """`python -m ser_models score-corpus in out` with a relative INPUT: Ray's workers read the files wherever
    they run, the rows name them as given."""
    (tmp_path / "in").mkdir()
    for clip in sample_clips[:2]:
        shutil.copy(clip, tmp_path / "in" / clip.name)
    command = [sys.executable, "-m", "ser_models", "score-corpus", "in", "out", "--workers", "1", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[-1].startswith("scored 2 of 2 file(s) with 1 worker(s), ")
    rows = _rows(tmp_path / "out")
    assert [r["file"] for r in rows] == [f"in/{clip.name}" for clip in sorted(sample_clips[:2])]
    assert all(r["error"] is None and r["label"] in EMOTIONS for r in rows)


def test_a_folder_scores_as_the_cli_does_and_a_second_run_skips_the_shards(
    ray_session, corpus, sample_clips, tmp_path, capsys
):
    output = tmp_path / "scores"
    report = score_corpus(corpus, output, model=MODEL, workers=1, batch_size=3, shard_size=4)
    assert (report.files, report.shards, report.shards_written, report.shards_skipped) == (10, 3, 3, 0)
    assert (report.scored, report.failed) == (8, 2) and ray_session.is_initialized()  # left running for the caller
    rows = _rows(output)
    assert [r["index"] for r in rows] == list(range(10))

    # The CLI on the same folder: its JSON lines, and its error lines for the two bad files.
    assert main(["predict", str(corpus), "--recursive", "--model", MODEL, "--no-progress"]) == 1
    out, err = capsys.readouterr()
    cli = {line["file"]: line for line in map(json.loads, out.splitlines())}
    cli_errors = [line.removeprefix("error: ") for line in err.splitlines() if line.startswith("error: ")]
    assert len(cli) == 8
    for row in rows:
        if row["error"] is not None:
            assert row["error"] in cli_errors and row["label"] is None and row["prob_angry"] is None
            continue
        line = cli[row["file"]]
        assert (row["label"], row["verdict"], round(row["snr_db"], 1)) == (
            line["label"],
            line["verdict"],
            line["snr_db"],
        )
        probabilities = np.array([row[c] for c in PROB_COLUMNS])
        assert np.abs(probabilities - np.array([line["probabilities"][e] for e in EMOTIONS])).max() < 1e-6
    assert sorted(r["error"] for r in rows if r["error"]) == sorted(cli_errors)

    # Again: every shard is complete, so nothing is scored and no file is touched.
    shards = sorted(output.glob("shard-*.parquet"))
    stamps = [p.stat().st_mtime_ns for p in shards]
    again = score_corpus(corpus, output, model=MODEL, workers=1, batch_size=3, shard_size=4)
    assert (again.shards_skipped, again.files_skipped, again.shards_written, again.failed_earlier) == (3, 10, 0, 2)
    assert [p.stat().st_mtime_ns for p in sorted(output.glob("shard-*.parquet"))] == stamps

    # An interrupted run: one shard missing (and a temporary file left behind) is all that is redone.
    shards[1].unlink()
    (output / f".{shards[1].name}.999.tmp").write_bytes(b"half a shard")
    resumed = score_corpus(corpus, output, model=MODEL, workers=1, batch_size=3, shard_size=4)
    assert (resumed.shards_skipped, resumed.shards_written, resumed.written) == (2, 1, [shards[1].name])
    assert [p.stat().st_mtime_ns for p in (shards[0], shards[2])] == [stamps[0], stamps[2]]
    assert _rows(output) == rows  # the hidden temporary file is not part of the table

    # A file added: the shards after it hold other files now; those of the old list go.
    shutil.copy(sample_clips[7], corpus / "more" / "zz-copy.flac")
    grown = score_corpus(corpus, output, model=MODEL, workers=1, batch_size=3, shard_size=4)
    assert (grown.files, grown.shards_skipped, grown.shards_written, grown.stale_removed) == (11, 2, 1, 1)
    assert [r["index"] for r in _rows(output)] == list(range(11))


def test_segments_of_a_saved_table_through_the_command(ray_session, sample_clips, recognizer, tmp_path, capsys):
    import datasets
    import soundfile as sf

    # One long take (two clips with a pause), one clip by path (save_to_disk embeds its bytes under its file
    # name), and bytes that are not audio.
    long_take = np.concatenate([load_audio(sample_clips[4]), np.zeros(16_000, np.float32), load_audio(sample_clips[2])])
    wav = io.BytesIO()
    sf.write(wav, long_take, 16_000, format="WAV")
    rows = [
        {"bytes": wav.getvalue(), "path": "long-take.wav"},
        {"bytes": None, "path": str(sample_clips[0])},
        {"bytes": b"not audio at all", "path": "junk.wav"},
    ]
    table = datasets.Dataset.from_dict({"audio": rows}).cast_column("audio", datasets.Audio(decode=False))
    table.save_to_disk(tmp_path / "table")
    output = tmp_path / "timelines"
    argv = ["score-corpus", str(tmp_path / "table"), str(output), "--segments", "--workers", "1", "--no-progress"]
    assert main(argv) == 1  # a row could not be analysed
    summary = capsys.readouterr().err.splitlines()[-1]
    assert summary.startswith("scored 2 of 3 file(s) (1 could not be analysed) with 1 worker(s), ")
    got = _rows(output)
    assert {r["file"] for r in got} == {"long-take.wav", sample_clips[0].name, "junk.wav"}
    for index, source in ((0, wav.getvalue()), (1, sample_clips[0])):
        expected = timeline(recognizer, load_audio(source, max_seconds=TIMELINE_MAX_SECONDS)).segments
        mine = [r for r in got if r["index"] == index]
        assert [(r["segment"], r["start"], r["end"], r["label"]) for r in mine] == [
            (s.segment, s.start, s.end, s.label) for s in expected
        ]
        for row, segment in zip(mine, expected, strict=True):
            assert (
                max(abs(row[c] - segment.probabilities[e]) for c, e in zip(PROB_COLUMNS, EMOTIONS, strict=True)) < 1e-6
            )
    assert len([r for r in got if r["index"] == 0]) > 1  # the long take has several windows
    [junk] = [r for r in got if r["index"] == 2]
    assert junk["error"].startswith("'junk.wav' could not be decoded as audio") and junk["segment"] is None

    # The same OUTPUT for other settings is refused, before anything runs.
    assert main(["score-corpus", str(tmp_path / "table"), str(output), "--no-progress"]) == 2
    assert "holds scores of other settings" in capsys.readouterr().err
    # And run again as it was: nothing to do, and the status still tells of the error row.
    assert main(argv) == 1
    assert capsys.readouterr().err.splitlines()[-1].startswith("nothing to score: all 3 file(s) have their rows in ")
