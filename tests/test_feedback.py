"""Feedback is stored whole or not at all, only with consent, and loads back through ``datasets``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

from ser_models import EMOTIONS
from ser_models.feedback import (
    LOCK_NAME,
    PARTIAL,
    RECORDS,
    ConsentRequiredError,
    FeedbackError,
    FeedbackLimitError,
    FeedbackStore,
    sync_to_hub,
)

ROOT = Path(__file__).resolve().parents[1]
PROBABILITIES = {label: 1 / len(EMOTIONS) for label in EMOTIONS}


def tone(seconds: float = 1.5, frequency: float = 220.0) -> np.ndarray:
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.3 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def save(store: FeedbackStore, samples: np.ndarray | None = None, **overrides):
    arguments = {
        "consent": True,
        "true_label": "sad",
        "prediction": "calm",
        "model": "mel-cnn",
        "probabilities": PROBABILITIES,
        "target": "sad",
        "sentence": "Dogs are sitting by the door",
    }
    return store.save(tone() if samples is None else samples, **{**arguments, **overrides})


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


def leftovers(folder: Path) -> list[Path]:
    """Unfinished records in ``.partial/`` (the writers' lock file is not one)."""
    return [p for p in (folder / PARTIAL).iterdir() if p.name != LOCK_NAME]


NOT_CONSENT = [False, None, 0, 1, 1.0, "false", "no", "0", "off", "true", "yes", "", [0], [True], {}, np.True_]


@pytest.mark.parametrize("consent", NOT_CONSENT, ids=repr)
def test_without_consent_nothing_is_written(tmp_path, consent):
    store = FeedbackStore(tmp_path)
    with pytest.raises(ConsentRequiredError, match="nothing was stored: consent must be the boolean True"):
        save(store, consent=consent)
    assert list(tmp_path.iterdir()) == []  # not even an empty folder


@pytest.mark.parametrize("consent", NOT_CONSENT[1:], ids=repr)
def test_the_app_stores_nothing_unless_consent_is_exactly_true(tmp_path, angry_clip, consent):
    from ser_models.demo import submit_feedback

    store = FeedbackStore(tmp_path / "feedback")
    last = {"audio": str(angry_clip), "model": "mel-cnn", "target": "angry", "prediction": "angry"}
    message = submit_feedback(store, {**last, "probabilities": PROBABILITIES}, "angry", consent, None, session="s")
    assert message.startswith("Nothing was stored: consent must be the boolean True")
    assert not (tmp_path / "feedback").exists()


def test_a_clip_is_stored_once_per_session(tmp_path):
    store = FeedbackStore(tmp_path)
    save(store, session="browser-1")
    with pytest.raises(FeedbackLimitError, match="already stored"):
        save(store, true_label="angry", session="browser-1")  # the same clip, another label
    save(store, tone(frequency=330), session="browser-1")  # a new take is welcome
    save(store, session="browser-2")  # the same clip elsewhere: that session's first
    assert len(store.records()) == 3


def test_a_double_click_stores_one_record(tmp_path):
    store = FeedbackStore(tmp_path)
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(save, store, session="browser") for _ in range(8)]
    outcomes = [future.exception() for future in futures]
    assert sum(outcome is None for outcome in outcomes) == 1
    assert all(isinstance(o, FeedbackLimitError) for o in outcomes if o is not None)
    assert len(store.records()) == 1


def test_a_failed_write_does_not_use_up_the_clip(tmp_path, monkeypatch):
    from ser_models import feedback

    store = FeedbackStore(tmp_path)
    real = feedback._flush

    def disk_full(file):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(feedback, "_flush", disk_full)
    with pytest.raises(OSError):
        save(store, session="browser")
    monkeypatch.setattr(feedback, "_flush", real)
    save(store, session="browser")
    assert len(store.records()) == 1


def test_a_session_may_send_a_few_records_an_hour(tmp_path):
    store = FeedbackStore(tmp_path, max_per_hour=3)
    for i in range(3):
        save(store, tone(frequency=200 + 50 * i), session="busy")
    with pytest.raises(FeedbackLimitError, match="3 recordings in the last hour"):
        save(store, tone(frequency=900), session="busy")
    save(store, tone(frequency=900), session="other")
    save(store, tone(frequency=950))  # scripts and training pass no session: no per-session limit
    assert len(store.records()) == 5


def test_the_store_refuses_past_its_size_cap(tmp_path, monkeypatch):
    # 50 kB: room for a 1.5 s clip (at most 48 kB as 16-bit), then, with its record stored, no more
    monkeypatch.setenv("SER_FEEDBACK_MAX_MB", "0.05")
    store = FeedbackStore(tmp_path)
    assert store.max_bytes == int(0.05 * 2**20)
    save(store)
    with pytest.raises(FeedbackLimitError, match="store is full"):
        save(store, tone(frequency=330))
    assert len(store.records()) == 1
    assert leftovers(tmp_path) == []


def test_a_record_holds_the_clip_and_everything_said_about_it(tmp_path):
    store = FeedbackStore(tmp_path)
    samples = tone(2.0)
    record = save(store, samples, true_label="happy", prediction="surprised", target="happy")
    (stored,) = store.records()
    assert stored == record
    assert (stored.true_label, stored.prediction, stored.target, stored.model) == (
        "happy",
        "surprised",
        "happy",
        "mel-cnn",
    )
    assert stored.probabilities == PROBABILITIES and stored.seconds == 2.0
    assert stored.timestamp.endswith("+00:00")
    clip, rate = sf.read(store.clip_path(stored), dtype="float32")
    assert rate == 16000 and np.allclose(clip, samples, atol=1e-4)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"samples": tone(61)}, "limit is 60 s"),
        ({"samples": np.zeros(0, np.float32)}, "non-empty"),
        ({"samples": np.full(16000, np.nan, np.float32)}, "NaN"),
        ({"true_label": "bored"}, "not one of"),
        ({"prediction": "bored"}, "not one of"),
        ({"sentence": "Something else"}, "not one of the RAVDESS sentences"),
        ({"probabilities": {"sad": 1.0}}, "each of the eight"),
    ],
)
def test_invalid_feedback_is_refused_and_leaves_nothing(tmp_path, overrides, message):
    store = FeedbackStore(tmp_path)
    samples = overrides.pop("samples", None)
    with pytest.raises(FeedbackError, match=message):
        save(store, samples, **overrides)
    assert files_under(tmp_path) == []


def test_fifty_concurrent_submissions_give_fifty_complete_records(tmp_path):
    store = FeedbackStore(tmp_path)
    labels = [EMOTIONS[i % len(EMOTIONS)] for i in range(50)]
    with ThreadPoolExecutor(max_workers=50) as pool:
        futures = [
            pool.submit(save, store, tone(1.0 + i / 50, 100 + 10 * i), true_label=label)
            for i, label in enumerate(labels)
        ]
        records = [future.result() for future in futures]
    stored = store.records()
    assert len(stored) == 50 and len({r.id for r in stored}) == 50
    assert sorted(r.true_label for r in stored) == sorted(labels)
    for record in stored:
        clip, rate = sf.read(store.clip_path(record), dtype="float32")
        assert rate == 16000 and abs(clip.size / 16000 - record.seconds) < 0.001
    assert {r.id for r in records} == {r.id for r in stored}
    assert leftovers(tmp_path) == []


WRITER = textwrap.dedent(
    """
    import os, sys, time
    import numpy as np
    from ser_models import EMOTIONS, feedback

    folder, stop_at, ready = sys.argv[1], sys.argv[2], sys.argv[3]
    real = {"clip": feedback._flush, "rename": os.rename}
    calls = []

    def hang(*args):  # stand in for a process killed at this exact point
        open(ready, "w").close()
        time.sleep(600)

    def flush_then_maybe_hang(file):
        calls.append(file)
        if stop_at == "clip" and len(calls) == 1:
            file.flush()  # half the record is on disk, unsynced
            hang()
        if stop_at == "metadata" and len(calls) == 2:
            hang()
        real["clip"](file)

    feedback._flush = flush_then_maybe_hang
    if stop_at == "rename":
        feedback.os.rename = hang
    store = feedback.FeedbackStore(folder)
    store.save(np.sin(np.arange(16000) / 9).astype("float32") * 0.3, consent=True, true_label="sad",
               prediction="sad", model="mel-cnn", probabilities={e: 1 / 8 for e in EMOTIONS})
    """
)


@pytest.mark.parametrize("stop_at", ["clip", "metadata", "rename"])
def test_a_killed_write_leaves_no_partial_record(tmp_path, stop_at):
    folder, ready = tmp_path / "feedback", tmp_path / "ready"
    save(FeedbackStore(folder))  # an earlier record that must survive untouched
    process = subprocess.Popen([sys.executable, "-c", WRITER, str(folder), stop_at, str(ready)], cwd=ROOT)
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert process.poll() is None and time.monotonic() < deadline, "writer never reached the kill point"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=10)

    store = FeedbackStore(folder)
    assert len(store.records()) == 1
    assert len(list((folder / RECORDS).iterdir())) == 1
    assert len(leftovers(folder)) == 1  # the leftover, out of sight of readers and uploads
    assert store.discard_stale_partials(older_than=0) == 1
    save(store)
    assert len(store.records()) == 2


REPLICA = textwrap.dedent(
    """
    import json, os, sys, time
    import numpy as np
    from ser_models import EMOTIONS, feedback

    folder, replica, count, go, kind = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
    store = feedback.FeedbackStore(folder)
    while not os.path.exists(go):  # start together, so the writes overlap
        time.sleep(0.01)
    for i in range(count):
        if kind == "tone":  # a clip of its own for every record: 0.25 s at a frequency only it has
            t = np.arange(4000) / 16000
            samples = (0.3 * np.sin(2 * np.pi * (100 + 1000 * replica + 7 * i) * t)).astype("float32")
        else:  # white noise: FLAC cannot shrink it, so a record takes what the cap check assumes
            samples = np.random.default_rng([replica, i]).uniform(-0.5, 0.5, 8000).astype("float32")
        try:
            record = store.save(samples, consent=True, true_label=EMOTIONS[i % 8], prediction="calm",
                                model="mel-cnn", probabilities={e: 1 / 8 for e in EMOTIONS})
        except feedback.FeedbackLimitError:
            print(json.dumps({"refused": i}), flush=True)
        else:
            print(json.dumps({"id": record.id, "replica": replica, "index": i}), flush=True)
    """
)


def run_replicas(folder: Path, go: Path, count: int, kind: str, env: dict | None = None) -> list[dict]:
    """Two processes, as two app replicas would be, writing ``count`` records each into ``folder``."""
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", REPLICA, str(folder), str(replica), str(count), str(go), kind],
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE,
            text=True,
        )
        for replica in (1, 2)
    ]
    time.sleep(1.0)  # both are importing by now; they start writing on the same signal
    go.touch()
    outcomes = []
    for process in processes:
        out, _ = process.communicate(timeout=300)
        assert process.returncode == 0
        outcomes += [json.loads(line) for line in out.splitlines()]
    return outcomes


def test_two_processes_writing_one_folder_lose_no_record(tmp_path):
    folder = tmp_path / "feedback"
    written = run_replicas(folder, tmp_path / "go", 100, "tone")
    assert len(written) == 200 and all("id" in w for w in written)
    store = FeedbackStore(folder)
    stored = store.records()
    assert len(stored) == 200 and len({r.id for r in stored}) == 200
    assert {r.id for r in stored} == {w["id"] for w in written}
    by_id = {w["id"]: w for w in written}
    for record in stored:
        origin = by_id[record.id]
        assert record.true_label == EMOTIONS[origin["index"] % 8] and record.seconds == 0.25
        t = np.arange(4000) / 16000
        expected = 0.3 * np.sin(2 * np.pi * (100 + 1000 * origin["replica"] + 7 * origin["index"]) * t)
        clip, rate = sf.read(store.clip_path(record), dtype="float32")
        assert rate == 16000 and np.allclose(clip, expected, atol=1e-4)  # its own clip, whole
    assert leftovers(folder) == []
    from train.data import load_feedback

    assert len(load_feedback(folder)) == 200


def test_the_size_cap_holds_across_processes(tmp_path):
    # Room for about 10 of the 40 noise clips (each just under 16 kB as FLAC, its bound 16,000 bytes).
    max_mb = 10.5 * 16000 / 2**20
    folder = tmp_path / "feedback"
    outcomes = run_replicas(folder, tmp_path / "go", 20, "noise", env={"SER_FEEDBACK_MAX_MB": str(max_mb)})
    stored = FeedbackStore(folder).records()
    assert len(stored) == sum("id" in o for o in outcomes) and 5 <= len(stored) <= 10
    assert sum(p.stat().st_size for p in (folder / RECORDS).glob("*/*")) <= int(max_mb * 2**20)
    assert leftovers(folder) == []


class FakeHub:
    """Stands in for ``HfApi`` (no network): records what the scheduler would commit."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.commits: list[list[str]] = []

    def create_repo(self, repo_id, private=None, repo_type=None, exist_ok=False):
        if self.fail:
            raise OSError("offline")
        assert repo_type == "dataset" and exist_ok
        return SimpleNamespace(repo_id=repo_id)

    def run_as_future(self, function) -> Future:
        future = Future()
        future.set_result(function())
        return future

    def create_commit(self, repo_id, repo_type, operations, commit_message, revision=None):
        self.commits.append(sorted(op.path_in_repo for op in operations))


def test_records_are_pushed_to_a_hub_dataset_without_partials(tmp_path):
    store = FeedbackStore(tmp_path)
    hub = FakeHub()
    scheduler = sync_to_hub(store, "someone/ser-feedback", every_minutes=60, hf_api=hub)
    try:
        assert store.lock is scheduler.lock
        record = save(store)
        (tmp_path / PARTIAL / "in-progress").mkdir()
        (tmp_path / PARTIAL / "in-progress" / "clip.flac").write_bytes(b"half")
        scheduler.trigger().result()
        uploaded = hub.commits[-1]
        assert len(uploaded) == 2 and all(path.startswith(f"{RECORDS}/") for path in uploaded)
        assert any(record.id in path and path.endswith("clip.flac") for path in uploaded)
        scheduler.trigger().result()  # nothing new: no second commit
        assert len([c for c in hub.commits if c]) == 1
    finally:
        scheduler.stop()


def test_unreachable_hub_keeps_feedback_local(tmp_path, caplog):
    store = FeedbackStore(tmp_path)
    assert sync_to_hub(store, "someone/ser-feedback", hf_api=FakeHub(fail=True)) is None
    assert "stay in" in caplog.text and "offline" in caplog.text
    save(store)
    assert len(store.records()) == 1


def test_datasets_loads_the_feedback_for_training(tmp_path):
    from train.data import decode, load_feedback

    store = FeedbackStore(tmp_path)
    for label in ("angry", "calm"):
        save(store, true_label=label)
    dataset = load_feedback(tmp_path)
    assert sorted(dataset.features["emotion"].int2str(dataset["emotion"])) == ["angry", "calm"]
    assert decode(dataset[0]["audio"]).size == 24000
    metadata = json.loads(next((tmp_path / RECORDS).glob("*/metadata.jsonl")).read_text())
    assert metadata["file_name"] == "clip.flac"


def test_the_app_message_never_stores_without_consent(tmp_path, angry_clip):
    from ser_models.demo import submit_feedback

    store = FeedbackStore(tmp_path / "feedback")
    last = {
        "audio": str(angry_clip),
        "model": "mel-cnn",
        "target": "angry",
        "prediction": "angry",
        "probabilities": PROBABILITIES,
    }
    assert "Analyze a recording first" in submit_feedback(store, None, "angry", True, None)
    assert "Nothing was stored" in submit_feedback(store, last, "angry", False, None)
    assert files_under(tmp_path / "feedback") == []
    assert "Thank you" in submit_feedback(store, last, "angry", True, "Kids are talking by the door", session="s")
    message = submit_feedback(store, last, "sad", True, None, session="s")
    assert message.startswith("Not stored: this recording was already stored")
    assert "Not stored" in submit_feedback(store, {**last, "audio": str(tmp_path / "gone.wav")}, "sad", True, None)
    assert [r.true_label for r in store.records()] == ["angry"]
