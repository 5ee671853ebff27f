import csv
import io
import json
import subprocess
import sys

from ser_models import EMOTIONS
from ser_models.cli import main

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def test_json_lines_contract_in_a_real_process(sample_clips):
    result = subprocess.run(
        [sys.executable, "-m", "ser_models", "predict", *map(str, sample_clips[:3])],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["file"] for r in rows] == [str(c) for c in sample_clips[:3]]
    for row in rows:
        assert set(row) == {"file", "label", "probabilities"}
        assert list(row["probabilities"]) == list(EMOTIONS)
        assert abs(sum(row["probabilities"].values()) - 1) < 1e-6
        assert row["label"] == max(row["probabilities"], key=row["probabilities"].get)


def test_bad_file_is_reported_and_the_rest_still_predicted(sample_clips, tmp_path, capsys):
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF\x00\x00")
    status = main(["predict", str(sample_clips[0]), str(broken), str(sample_clips[1]), "--model", "mfcc-mlp"])
    out, err = capsys.readouterr()
    assert status == 1
    assert [json.loads(line)["file"] for line in out.splitlines()] == [str(sample_clips[0]), str(sample_clips[1])]
    assert f"error: {broken}:" in err and "could not be decoded" in err


def test_csv_output(sample_clips, capsys):
    assert main(["predict", *map(str, sample_clips[:2]), "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 2 and list(rows[0]) == ["file", "label", *EMOTIONS]
    assert abs(sum(float(rows[0][e]) for e in EMOTIONS) - 1) < 1e-4


def test_unknown_model_exits_2(sample_clips, capsys):
    assert main(["predict", str(sample_clips[0]), "--model", "no/such/thing"]) == 2
    assert "neither a model folder nor a Hub repo id" in capsys.readouterr().err
