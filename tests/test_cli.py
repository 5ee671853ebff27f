import csv
import io
import json
import subprocess
import sys

import pytest

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
        assert set(row) == {"file", "label", "verdict", "snr_db", "probabilities"}
        assert row["verdict"] in (row["label"], "uncertain") and row["snr_db"] > 20  # studio speech
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
    [line] = [line for line in err.splitlines() if line.startswith("error:")]  # one line per failed file
    assert line.startswith(f"error: '{broken}' could not be decoded as audio") and line.count("broken.wav") == 1
    assert err.splitlines()[-1].startswith("scored 2 of 3 file(s) (1 could not be analysed), ")  # the summary last


def test_every_format_is_read_and_folders_pick_them_up(sample_clips, tmp_path, capsys):
    import av
    import numpy as np

    from ser_models import load_audio

    voice = load_audio(sample_clips[4])
    with av.open(tmp_path / "memo.m4a", "w", format="ipod") as output:
        stream = output.add_stream("aac", rate=16_000, layout="mono")
        frame = av.AudioFrame.from_ndarray(voice[None].astype(np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16_000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            output.mux(packet)
    (tmp_path / "notes.txt").write_text("not audio, not picked up")
    assert main(["predict", str(tmp_path), "--model", "mfcc-mlp", "--no-progress"]) == 0
    [row] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert row["file"] == str(tmp_path / "memo.m4a")


def test_a_too_long_recording_suggests_segments(tmp_path, capsys):
    import numpy as np
    import soundfile as sf

    sf.write(tmp_path / "talk.wav", np.zeros(16_000 * 70, np.int16), 16_000)
    assert main(["predict", str(tmp_path / "talk.wav"), "--model", "mfcc-mlp", "--no-progress"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and err[-1].startswith("scored 0 of 1 file(s) (1 could not be analysed)")
    assert err[0].startswith(f"error: '{tmp_path / 'talk.wav'}': the recording is 70.0 s long; the limit is 60 s.")
    assert err[0].endswith("Or use --segments for the emotion timeline of a long recording.")


def test_a_clipped_recording_is_scored_with_one_warning_line_naming_it(angry_clip, tmp_path, capsys):
    import numpy as np
    import soundfile as sf

    audio, rate = sf.read(angry_clip, dtype="float32")
    sf.write(tmp_path / "loud.wav", np.clip(audio * 40, -1, 1), rate)
    assert main(["predict", str(tmp_path / "loud.wav"), "--model", "mfcc-mlp", "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["file"] == str(tmp_path / "loud.wav")
    err = captured.err.splitlines()
    assert len(err) == 2 and err[-1].startswith("scored 1 of 1 file(s)")
    assert (
        err[0] == f"warning: '{tmp_path / 'loud.wav'}': the recording is clipped (too loud): move away from the "
        "microphone or lower the input gain"
    )


def test_output_to_a_reader_that_went_away_ends_quietly(sample_clips):
    """`python -m ser_models predict --segments ... | head -3`: once head has its lines and exits, the CLI stops
    with the status a Unix tool killed by SIGPIPE has (141), and no traceback."""
    import os

    fcntl = pytest.importorskip("fcntl")
    if not hasattr(fcntl, "F_SETPIPE_SZ"):
        pytest.skip("needs Linux's F_SETPIPE_SZ to make the pipe small")
    read_end, write_end = os.pipe()
    # One page of pipe, and more output than that and Python's 8 KB buffer together (about 250 bytes a row):
    # the CLI is certain to write again after the reader has gone.
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)
    clips = [str(sample_clips[0])] * 80
    command = [sys.executable, "-m", "ser_models", "predict", "--segments", *clips, "--model", "mfcc-mlp"]
    with subprocess.Popen(command, stdout=write_end, stderr=subprocess.PIPE, cwd=ROOT, text=True) as child:
        os.close(write_end)
        received = b""
        while received.count(b"\n") < 3 and (chunk := os.read(read_end, 1024)):
            received += chunk
        os.close(read_end)  # as head does once it has its three lines
        _, err = child.communicate(timeout=300)
    assert child.returncode == 141, err
    assert "Traceback" not in err and "BrokenPipeError" not in err and "Exception ignored" not in err
    rows = [json.loads(line) for line in received.decode().splitlines()[:3]]
    assert [row["file"] for row in rows] == clips[:3]


def test_csv_output(sample_clips, capsys):
    assert main(["predict", *map(str, sample_clips[:2]), "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 2 and list(rows[0]) == ["file", "verdict", "snr_db", "label", *EMOTIONS]
    assert abs(sum(float(rows[0][e]) for e in EMOTIONS) - 1) < 1e-4


def test_unknown_model_exits_2(sample_clips, capsys):
    assert main(["predict", str(sample_clips[0]), "--model", "no/such/thing"]) == 2
    assert "neither a model folder nor a Hub repo id" in capsys.readouterr().err


def test_folder_mode_scores_every_audio_file_and_reports_throughput(ravdess_dir, tmp_path, capsys):
    import shutil

    nested = tmp_path / "corpus" / "deeper"
    nested.mkdir(parents=True)
    clips = sorted((ravdess_dir / "Actor_04").glob("*.flac"))[:6]
    for clip in clips[:4]:
        shutil.copy(clip, tmp_path / "corpus")
    for clip in clips[4:]:
        shutil.copy(clip, nested)
    (tmp_path / "corpus" / "notes.txt").write_text("not audio, not picked up")

    assert main(["predict", str(tmp_path / "corpus"), "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 4 and "scored 4 of 4 file(s)" in err and "files/s" in err

    assert main(["predict", str(tmp_path / "corpus"), "--recursive", "--format", "csv", "--no-progress"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert sorted(__import__("pathlib").Path(r["file"]).name for r in rows) == sorted(c.name for c in clips)


def test_segments_give_a_timeline_per_file(sample_clips, tmp_path, capsys):
    import numpy as np
    import soundfile as sf

    from ser_models import load_audio

    recording = tmp_path / "two_sentences.wav"
    silence = np.zeros(24000, np.float32)
    sf.write(
        recording, np.concatenate([silence, load_audio(sample_clips[4]), silence, load_audio(sample_clips[5])]), 16000
    )
    assert main(["predict", str(recording), "--segments", "--no-progress"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["segment"] for r in rows] == [0, 1]
    assert rows[0]["start"] >= 1.0 and rows[0]["end"] < rows[1]["start"]
    for row in rows:
        assert abs(sum(row["probabilities"].values()) - 1) < 1e-6
    assert main(["predict", str(recording), "--segments", "--format", "csv", "--no-progress"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert header == ",".join(["file", "segment", "start", "end", "label", *EMOTIONS])


def test_session_adapts_all_files_together_and_denoise_runs(sample_clips, capsys):
    from ser_models import EmotionRecognizer
    from ser_models.session import adapt_all

    files = list(map(str, sample_clips))
    assert main(["predict", *files, "--session", "--model", "mfcc-mlp", "--no-progress"]) == 0
    adapted = [json.loads(line)["probabilities"] for line in capsys.readouterr().out.splitlines()]
    plain = [EmotionRecognizer.from_pretrained("mfcc-mlp").predict_file(f) for f in files]
    expected = adapt_all(plain)
    assert all(abs(a[e] - b[e]) < 1e-5 for a, b in zip(adapted, expected, strict=True) for e in EMOTIONS)
    assert main(["predict", files[0], "--denoise", "--no-progress"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1


def test_speech_buried_in_noise_is_uncertain_and_noise_alone_is_refused(angry_clip, tmp_path, capsys):
    import numpy as np
    import soundfile as sf

    from ser_models import load_audio
    from train import corrupt

    clip = load_audio(angry_clip)
    rng = np.random.default_rng(0)
    sf.write(
        tmp_path / "buried.wav", corrupt.add_noise(clip, corrupt.coloured_noise(clip.size, "white", rng), 0), 16000
    )
    sf.write(tmp_path / "hiss.wav", 0.1 * rng.standard_normal(48000), 16000)
    status = main(["predict", str(tmp_path / "buried.wav"), str(tmp_path / "hiss.wav")])
    out, err = capsys.readouterr()
    [row] = [json.loads(line) for line in out.splitlines()]
    assert status == 1 and row["verdict"] == "uncertain" and row["snr_db"] < 3
    [line] = [line for line in err.splitlines() if line.startswith("error:")]
    assert line.startswith(f"error: '{tmp_path / 'hiss.wav'}': ") and "no speech" in line  # named once, in front
    assert line.count("hiss.wav") == 1 and err.splitlines()[-1].startswith("scored 1 of 2 file(s)")


def test_denoise_without_its_extra_says_how_to_install_it(monkeypatch, capsys, angry_clip):
    from ser_models import cli, denoise

    monkeypatch.setattr(denoise, "available", lambda: False)
    assert cli.main(["predict", "--denoise", str(angry_clip)]) == 2
    assert "pip install 'ser-models[denoise]'" in capsys.readouterr().err
