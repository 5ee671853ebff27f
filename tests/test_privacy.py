"""What the app keeps of a voice, and for how long: exactly what the page's privacy text says.

The unit tests drive the pieces (the upload folder, the memory, the streamed chunks); the server tests
start app.py with GRADIO_TEMP_DIR pointing at a temporary folder, talk to it the way the browser does
(uploads, the queue, the stream of microphone chunks), and look at what is left on disk.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ser_models import EMOTIONS, load_audio
from ser_models.demo import (
    EXAMPLE_SOURCES,
    EXAMPLES_DIR,
    LIVE_IDLE_SECONDS,
    LIVE_WATCH_SECONDS,
    PRIVACY,
    SKIPPED_CHUNK_MAX_AGE,
    SWEEP_SECONDS,
    TAKE_MAX_AGE,
    UPLOAD_MAX_AGE,
    RecordingGoneError,
    SessionMemory,
    StreamChunkMiddleware,
    StreamedChunks,
    UploadFolder,
    file_paths,
    is_bundled_example,
    submit_feedback,
    take_recording,
)
from ser_models.feedback import FeedbackStore

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from reliability import App as AppProcess  # noqa: E402
from reliability import wav_bytes  # noqa: E402

AUDIO_SUFFIXES = {".wav", ".flac", ".mp3", ".ogg", ".m4a", ".webm", ".mp4", ".aac", ".opus"}


def upload_into(folder: Path, name: str, data: bytes) -> Path:
    """A file where Gradio would put an upload: <folder>/<hash>/<name>."""
    path = folder / secrets.token_hex(8) / name
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    return path


def test_the_page_states_the_limits_the_code_keeps():
    text = " ".join(PRIVACY.split())  # as the page renders it
    assert "deleted from the server's disk as soon as it has been analyzed" in text
    assert f"within {(UPLOAD_MAX_AGE + SWEEP_SECONDS) / 60:.0f} minutes if it never is" in text
    assert f"at the latest {(TAKE_MAX_AGE + SWEEP_SECONDS) / 60:.0f} minutes" in text
    assert f"within {SKIPPED_CHUNK_MAX_AGE + SWEEP_SECONDS:.0f} s" in text
    assert "still uploading when you press stop" in text
    assert f"send nothing for {LIVE_IDLE_SECONDS + LIVE_WATCH_SECONDS:.0f} s" in text
    assert "consent box" in text


def test_an_upload_is_deleted_once_read_and_nothing_outside_the_folder_is(tmp_path, angry_clip):
    uploads = UploadFolder(tmp_path / "gradio")
    path = upload_into(uploads.root, "take.flac", angry_clip.read_bytes())
    samples = uploads.read(str(path))
    assert samples.dtype == np.float32 and samples.size > 16000
    assert not path.exists() and path.parent.exists()  # its empty folder goes with the sweep (see below)
    uploads.sweep(now=time.time() + UploadFolder.EMPTY_FOLDER_AGE + 1)
    assert not path.parent.exists()
    with pytest.raises(RecordingGoneError, match="deleted once it has been analyzed"):
        uploads.read(str(path))
    assert uploads.read(str(angry_clip)).size == samples.size and angry_clip.exists()  # not in the folder
    broken = upload_into(uploads.root, "photo.wav", b"\x89PNG\r\n\x1a\n" + bytes(2000))
    with pytest.raises(Exception, match="could not be decoded"):
        uploads.read(str(broken))
    assert not broken.exists()  # deleted even when it is not audio


def test_two_uploads_of_the_same_file_are_one_file_deleted_after_the_last_analysis(tmp_path, angry_clip):
    uploads = UploadFolder(tmp_path)
    path = upload_into(tmp_path, "clip.flac", angry_clip.read_bytes())  # Gradio: <hash of the bytes>/<name>
    uploads.expect(path)  # one user's upload ...
    uploads.expect(path)  # ... and another's of the same file: the same path
    assert uploads.read(str(path)).size > 16000 and path.exists()  # the other one still waits for it
    assert uploads.read(str(path)).size > 16000 and not path.exists()
    uploads.expect(path := upload_into(tmp_path, "chunk.wav", wav_bytes(np.zeros(1600, np.float32))))
    uploads.expect(path)
    assert uploads.done(path) is False and path.exists()  # one refused (or skipped): the other is still read
    assert uploads.done(path) is True and not path.exists()


def test_the_bundled_examples_are_never_deleted(tmp_path):
    uploads = UploadFolder(tmp_path, max_age=0)
    copy = upload_into(tmp_path, "happy_actor07.flac", (EXAMPLES_DIR / "happy_actor07.flac").read_bytes())
    impostor = upload_into(tmp_path, "sad_actor10.flac", wav_bytes(np.zeros(1600, np.float32)))
    assert is_bundled_example(copy) and not is_bundled_example(impostor)
    uploads.read(str(copy))
    assert copy.exists()
    time.sleep(0.01)
    assert uploads.sweep() == [impostor] and copy.exists()


def test_sweep_deletes_what_was_never_analyzed_after_max_age(tmp_path):
    uploads = UploadFolder(tmp_path, max_age=600)
    old = upload_into(tmp_path, "old.wav", wav_bytes(np.zeros(1600, np.float32)))
    new = upload_into(tmp_path, "new.wav", wav_bytes(np.zeros(1600, np.float32)))
    os.utime(old, (time.time() - 601, time.time() - 601))
    assert uploads.sweep() == []  # the change time (the upload's rename) still counts: not old yet
    assert set(uploads.sweep(now=time.time() + 601)) == {new, old}
    assert list(tmp_path.iterdir()) == []  # their folders too


def test_memory_forgets_after_max_age_and_when_popped():
    memory = SessionMemory(max_age=60)
    memory.put("tab-1", "take 1")
    memory.put("tab-2", "take 2")
    memory.put(None, "no session: nothing kept")
    assert memory.get("tab-1") == "take 1" and len(memory) == 2
    assert memory.pop("tab-2") == "take 2" and memory.get("tab-2") is None
    assert memory.prune(now=time.monotonic() + 61) == 1 and memory.get("tab-1") is None and len(memory) == 0
    quick = SessionMemory(max_age=0)
    quick.put("tab-3", "take 3")
    time.sleep(0.01)
    assert quick.get("tab-3") is None


def test_analyze_again_reads_the_take_from_memory_and_feedback_stores_it(tmp_path, angry_clip):
    uploads, takes = UploadFolder(tmp_path / "gradio"), SessionMemory(600)
    path = str(upload_into(uploads.root, "take.flac", angry_clip.read_bytes()))
    first = take_recording(uploads, takes, "tab", path)
    assert not Path(path).exists() and takes.get("tab") is None  # kept once analyzed, by the caller
    takes.put("tab", first)
    assert take_recording(uploads, takes, "tab", path) is first  # another model, the same take
    with pytest.raises(RecordingGoneError):
        take_recording(uploads, takes, "another tab", path)
    store = FeedbackStore(tmp_path / "feedback")
    last = {"audio": path, "example": False, "model": "mel-cnn", "target": "angry", "prediction": "angry"}
    last["probabilities"] = dict.fromkeys(EMOTIONS, 1 / 8)
    assert "Thank you" in submit_feedback(store, last, "angry", True, None, session="tab", take=takes.get("tab"))
    message = submit_feedback(store, last, "angry", True, None, session="other", take=None)
    assert message.startswith("Not stored: the recording is no longer held in memory")
    example = {**last, "example": True}
    assert "example clips" in submit_feedback(store, example, "angry", True, None, session="x", take=first)
    assert len(store.records()) == 1


def test_streamed_chunks_the_server_skips_are_deleted(tmp_path):
    uploads = UploadFolder(tmp_path)
    chunks = StreamedChunks(uploads, max_age=5)
    read, skipped = (upload_into(tmp_path, "audio.wav", wav_bytes(np.full(1600, x, np.float32))) for x in (0.1, 0.2))
    chunks.saw([str(read), str(skipped)])
    uploads.read(str(read))
    assert chunks.sweep() == [] and skipped.exists()  # too recent: the server may be about to read it
    assert chunks.sweep(now=time.monotonic() + 6) == [str(skipped)] and not skipped.exists()
    assert len(chunks) == 0


def test_middleware_reports_the_files_a_stream_request_names_and_passes_it_on(tmp_path):
    import asyncio

    seen_by_app = []

    async def app(scope, receive, send):
        message = await receive()
        seen_by_app.append(json.loads(message["body"]))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    chunks = StreamedChunks(UploadFolder(tmp_path))
    middleware = StreamChunkMiddleware(app, chunks)
    body = {"data": [{"path": "/tmp/gradio/x/audio.wav", "meta": {"_type": "gradio.FileData"}}, "mel-cnn"]}

    async def post(path: str) -> None:
        messages = [{"type": "http.request", "body": json.dumps(body).encode(), "more_body": False}]

        async def receive():
            return messages.pop(0)

        async def send(message):
            pass

        await middleware({"type": "http", "method": "POST", "path": path}, receive, send)

    asyncio.run(post("/gradio_api/stream/abc123"))
    asyncio.run(post("/gradio_api/queue/join"))
    assert seen_by_app == [body, body] and len(chunks) == 1
    assert file_paths(body) == ["/tmp/gradio/x/audio.wav"] and file_paths({"path": "not a file"}) == []


def test_the_examples_cache_keeps_only_the_most_recent_folders(tmp_path):
    from ser_models.demo import EXAMPLES_CACHES_KEPT, prune_examples_cache

    folders = []
    for index in range(7):
        folder = tmp_path / f"mel-cnn-{index:016x}"
        (folder / "30").mkdir(parents=True)
        (folder / "30" / "log.csv").write_text("results")
        os.utime(folder, (1000 + index, 1000 + index))
        folders.append(folder)
    unrelated = tmp_path / "notes"
    unrelated.mkdir()
    current = tmp_path / f"whisper-layers-{'a' * 16}"  # this process's: not written yet, kept whatever happens
    removed = prune_examples_cache(current)
    assert sorted(removed) == folders[: 7 - (EXAMPLES_CACHES_KEPT - 1)]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f.name for f in folders[-3:]] + ["notes"])
    current.mkdir()  # now the newest: another process (other weights) starting keeps it
    prune_examples_cache(folders[0].with_name("mel-cnn-" + "f" * 16))
    assert current.exists() and len([p for p in tmp_path.iterdir() if p.name != "notes"]) == EXAMPLES_CACHES_KEPT - 1


def test_the_folders_of_dead_app_processes_are_removed_at_start(tmp_path):
    from ser_models.demo import private_temp_dir, remove_stale_temp_dirs

    dead, fresh, alive = tmp_path / "ser-app-999999999-abc", tmp_path / "ser-app-999999998-def", None
    for folder in (dead, fresh):
        (folder / "hash").mkdir(parents=True)
        (folder / "hash" / "take.wav").write_bytes(b"RIFF")
    old = time.time() - UPLOAD_MAX_AGE - 2 * SWEEP_SECONDS
    for path in (dead / "hash" / "take.wav", dead / "hash", dead):
        os.utime(path, (old, old))
    alive = private_temp_dir({"GRADIO_TEMP_DIR": str(tmp_path)})  # this process's: its pid is in the name
    os.utime(alive, (old, old))
    assert remove_stale_temp_dirs(tmp_path) == []  # the dead one went when private_temp_dir started
    assert not dead.exists() and fresh.exists() and alive.exists()  # fresh: touched within 10 minutes


def test_the_record_gradio_keeps_of_every_upload_forgets_deleted_files(tmp_path):
    from ser_models.demo import forget_missing

    kept = upload_into(tmp_path, "a.wav", b"RIFF")
    paths = {str(kept), str(tmp_path / "gone" / "b.wav")}
    assert forget_missing(paths) == 1 and paths == {str(kept)}


# ---------------------------------------------------------------------------------------------------------------
# The running app


class App(AppProcess):
    """app.py in a subprocess (bench/reliability.py's), with where its examples cache lives."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder, env={"GRADIO_EXAMPLES_CACHE": str(folder / "examples-cache")})
        self.examples_cache = folder / "examples-cache"
        self.feedback = folder / "feedback"

    def audio_files(self) -> list[Path]:
        """Every audio file under the temporary folder, except Gradio's copies of the bundled examples."""
        return [
            p
            for p in self.temp.rglob("*")
            if p.is_file() and not is_bundled_example(p) and (p.suffix.lower() in AUDIO_SUFFIXES or p.suffix == "")
        ]


@pytest.fixture(scope="module")
def app(tmp_path_factory, ravdess_dir):
    server = App(tmp_path_factory.mktemp("privacy"))
    yield server
    server.stop()


class Browser:
    """One browser session, spoken to as the page does: uploads, the queue, and a stream's chunks."""

    def __init__(self, url: str) -> None:
        import httpx

        self.http = httpx.Client(base_url=url, timeout=60)
        self.api = "gradio_api/"
        self.session = secrets.token_hex(8)
        self.config = self.http.get("config").json()

    def dependency(self, api_name: str) -> dict:
        return next(d for d in self.config["dependencies"] if d.get("api_name") == api_name)

    def upload(self, name: str, data: bytes) -> dict:
        response = self.http.post(self.api + "upload", files={"files": (name, data, "audio/wav")})
        response.raise_for_status()
        return {"path": response.json()[0], "orig_name": name, "meta": {"_type": "gradio.FileData"}}

    def body(self, api_name: str, data: list) -> dict:
        dependency = self.dependency(api_name)
        return {
            "data": data,
            "fn_index": dependency["id"],
            "trigger_id": dependency["targets"][0][0],
            "session_hash": self.session,
            "event_data": None,
        }

    def join(self, api_name: str, data: list) -> str:
        response = self.http.post(self.api + "queue/join", json=self.body(api_name, data))
        response.raise_for_status()
        return response.json()["event_id"]

    def messages(self, event_id: str) -> list[dict]:
        """The event's messages, up to and including process_completed."""
        received = []
        with self.http.stream("GET", self.api + "queue/data", params={"session_hash": self.session}) as response:
            for line in response.iter_lines():
                if line.startswith("data:"):
                    message = json.loads(line[5:])
                    if message.get("event_id") == event_id:
                        received.append(message)
                        if message.get("msg") == "process_completed":
                            return received
        return received

    def call(self, api_name: str, data: list):
        [*_, done] = self.messages(self.join(api_name, data))
        if not done["success"]:
            raise RuntimeError(done["output"].get("error"))
        return done["output"]["data"]


def test_an_analyzed_upload_leaves_no_audio_and_can_still_be_donated(app, angry_clip):
    tab = Browser(app.url)
    take = tab.upload("my take.flac", angry_clip.read_bytes())
    assert Path(take["path"]).is_file()
    label, verdict, spectrogram, details = tab.call("predict", [take, "mel-cnn", "angry", False, False])
    assert (
        label["label"] in EMOTIONS and "model heard" in verdict and spectrogram.startswith('<img src="data:image/png')
    )
    assert not Path(take["path"]).exists() and app.audio_files() == []
    again = tab.call("predict", [take, "mfcc-mlp", "angry", False, False])  # another model: from memory
    assert again[0]["label"] in EMOTIONS and app.audio_files() == []
    [message] = tab.call("feedback", ["angry", True, "Kids are talking by the door"])
    assert "Thank you" in message, message
    [record] = FeedbackStore(app.feedback).records()
    assert record.true_label == "angry" and record.model == "mfcc-mlp"
    stranger = Browser(app.url)  # another tab cannot reach this take, nor donate anything
    with pytest.raises(RuntimeError, match="no longer on the server"):
        stranger.call("predict", [take, "mel-cnn", "angry", False, False])
    [message] = stranger.call("feedback", ["angry", True, None])
    assert "Analyze a recording first" in message


def test_a_long_recording_is_deleted_once_analyzed(app, sample_clips):
    tab = Browser(app.url)
    recording = np.concatenate([np.concatenate([load_audio(c), np.zeros(16000, np.float32)]) for c in sample_clips[:2]])
    upload = tab.upload("meeting.wav", wav_bytes(recording))
    summary, _, rows = tab.call("timeline", [upload, "mel-cnn", False])
    assert "2 speech segment(s)" in summary and len(rows["data"]) == 2
    assert app.audio_files() == []


def test_live_chunks_are_deleted_as_read_and_skipped_ones_within_seconds(app, angry_clip):
    """The Live tab's protocol: each chunk is uploaded, then named to the running stream event."""
    tab = Browser(app.url)
    audio = load_audio(angry_clip)
    step = 1600  # 0.1 s, what the browser sends
    chunks = [tab.upload("audio.wav", wav_bytes(audio[i : i + step])) for i in range(0, audio.size, step)]
    event_id = tab.join("live", [chunks[0], "mel-cnn"])
    done = {}
    listener = threading.Thread(target=lambda: done.setdefault("messages", tab.messages(event_id)))
    listener.start()
    for chunk in chunks[1:]:  # at the browser's pace; a chunk that arrives while another waits is skipped
        tab.http.post(tab.api + f"stream/{event_id}", json=tab.body("live", [chunk, "mel-cnn"]))
        time.sleep(0.1)
    time.sleep(1)
    tab.http.post(tab.api + f"stream/{event_id}/close")
    listener.join(timeout=60)
    statuses = [m["output"]["data"][1] for m in done["messages"] if m.get("output", {}).get("data")]
    assert any("Hearing" in status for status in statuses), statuses
    assert not any("Skipped" in status for status in statuses), statuses  # no chunk deleted before it was read
    late = tab.upload("audio.wav", wav_bytes(audio[:step]))  # sent after the stream ended: never read
    tab.http.post(tab.api + f"stream/{event_id}", json=tab.body("live", [late, "mel-cnn"]))
    assert Path(late["path"]).exists()
    time.sleep(SKIPPED_CHUNK_MAX_AGE + 2 * SWEEP_SECONDS)
    assert app.audio_files() == [] and not Path(late["path"]).exists()


def test_a_refused_recording_is_one_log_line_with_the_title_and_no_traceback(app):
    from gradio_client import Client, handle_file

    fake = app.log.parent / "photo.wav"
    fake.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(2000))
    with pytest.raises(Exception, match=r"Cannot analyze this audio\. 'photo\.wav' could not be decoded") as error:
        Client(app.url, verbose=False).predict(handle_file(str(fake)), "mel-cnn", "angry", api_name="/predict")
    assert "Traceback" not in str(error.value)
    time.sleep(0.5)
    log = app.log.read_text()
    lines = [line for line in log.splitlines() if "photo.wav" in line]
    assert lines == [lines[0]] and lines[0].startswith("INFO app: Cannot analyze this audio.")
    assert "Traceback" not in log
    assert app.audio_files() == []


def test_a_refused_long_recording_or_live_chunk_is_one_log_line_too(app):
    tab = Browser(app.url)
    notes = tab.upload("minutes.wav", b"These are the minutes of the meeting, not audio.\n" * 40)
    with pytest.raises(RuntimeError, match=r"Cannot analyze this audio\. 'minutes\.wav' could not be decoded"):
        tab.call("timeline", [notes, "mel-cnn", False])
    chunk = tab.upload("chunk.wav", b"\x89PNG\r\n\x1a\n" + bytes(500))
    label, status = tab.call("live_chunk", [chunk, "mel-cnn"])
    assert not label and status.startswith("Skipped a chunk: 'chunk.wav' could not be decoded")
    again = tab.upload("chunk.wav", b"\x89PNG\r\n\x1a\n" + bytes(500))
    assert tab.call("live_chunk", [again, "mel-cnn"])[1] == status  # the same refusal again: logged once
    time.sleep(0.5)
    log = app.log.read_text()
    assert [line for line in log.splitlines() if "minutes.wav" in line] == [
        "INFO app: Cannot analyze this audio. 'minutes.wav' could not be decoded as audio (not a recognised audio "
        "or video format). Supported formats: WAV, FLAC, MP3, OGG, M4A/AAC, WebM/Opus, MP4, MOV, MKV, AMR, AIFF, WMA."
    ]
    assert len([line for line in log.splitlines() if "chunk.wav" in line]) == 1
    assert "Traceback" not in log and app.audio_files() == []


def test_an_agent_calls_the_prediction_tool_and_nothing_of_its_audio_is_kept(app):
    """Through MCP, as an agent would: the audio as base64 data (Gradio saves it, then uploads a copy)."""
    import asyncio
    import base64

    pytest.importorskip("mcp", reason="the MCP server needs gradio[mcp]")
    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client

    clip = wav_bytes(load_audio(EXAMPLES_DIR / "sad_actor10.flac"))  # not the bundled file: one of the agent's
    noise = wav_bytes(np.random.default_rng(0).normal(0, 0.01, 32000).astype(np.float32))

    async def talk():
        async with streamablehttp_client(f"{app.url}gradio_api/mcp/") as (read, write, _):
            async with ClientSession(read, write) as session:
                await session.initialize()
                tools = {tool.name for tool in (await session.list_tools()).tools}
                audio = "data:audio/wav;base64," + base64.b64encode(clip).decode()
                heard = await session.call_tool("predict", {"audio": audio, "model": "mel-cnn", "target": "sad"})
                noisy = "data:audio/wav;base64," + base64.b64encode(noise).decode()
                refused = await session.call_tool("predict", {"audio": noisy, "model": "mel-cnn"})
                donated = await session.call_tool("feedback", {"true_label": "sad", "consent": True})
                return tools, heard, refused, donated

    tools, heard, refused, donated = asyncio.run(talk())
    assert {"predict", "long_recording", "feedback"} <= tools
    text = " ".join(getattr(c, "text", "") for c in heard.content)
    assert not heard.isError and "model heard" in text and "sad" in text, text
    assert refused.isError and "Cannot analyze this audio" in " ".join(getattr(c, "text", "") for c in refused.content)
    assert "Analyze a recording first" in " ".join(getattr(c, "text", "") for c in donated.content)  # nothing kept
    assert app.audio_files() == []


def test_the_examples_cache_holds_no_audio_and_stopping_deletes_the_folder(app):
    cached = [p for p in app.examples_cache.rglob("*") if p.is_file()]
    assert cached and all(p.suffix == ".csv" for p in cached), cached  # results only: no audio, no images
    copies = [p for p in app.temp.rglob("*") if p.is_file()]
    assert sorted(p.name for p in copies) == sorted(EXAMPLE_SOURCES), copies  # Gradio's copies, to serve them
    assert app.stop() is not None
    assert list(app.temp.iterdir()) == []  # the app's own folder went with it


@pytest.mark.browser
@pytest.mark.skipif(not Path(shutil.which("chromium") or "/usr/bin/chromium").exists(), reason="no chromium")
def test_live_tab_in_a_browser_leaves_no_chunks(tmp_path_factory, angry_clip):
    """A real browser streaming a (fake) microphone: the chunks it sends, read or skipped, do not stay."""
    import soxr
    from playwright.sync_api import expect, sync_playwright

    folder = tmp_path_factory.mktemp("live")
    speech = load_audio(angry_clip)
    microphone = folder / "microphone.wav"  # Chromium plays this file as the microphone, in a loop
    sf.write(microphone, soxr.resample(np.concatenate([speech, np.zeros(8000, np.float32)]), 16000, 48000), 48000)
    server = App(folder)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=shutil.which("chromium") or "/usr/bin/chromium",
                args=[
                    "--no-sandbox",
                    "--disable-gpu",
                    "--use-fake-ui-for-media-stream",
                    "--use-fake-device-for-media-stream",
                    f"--use-file-for-fake-audio-capture={microphone}",
                ],
            )
            page = browser.new_context(permissions=["microphone"]).new_page()
            page.goto(server.url)
            page.get_by_role("tab", name="Live").click()
            page.get_by_role("button", name="Record", exact=False).last.click()
            expect(page.get_by_text("Hearing", exact=False)).to_be_visible(timeout=30_000)
            time.sleep(5)
            page.get_by_role("button", name="Stop", exact=False).last.click()
            stopped = time.time()
            time.sleep(SKIPPED_CHUNK_MAX_AGE + 2 * SWEEP_SECONDS)
            # Read or skipped, every chunk is gone; at most the one still uploading at the stop is left, which
            # the page never sends on (so no one can tell it from an upload waiting for Analyze): it goes with
            # the files never analyzed (see the privacy text and test_sweep_deletes_what_was_never_analyzed).
            left = server.audio_files()
            assert len(left) <= 1, left
            assert all(p.name == "audio.wav" and p.stat().st_ctime > stopped - 2 for p in left), left
            browser.close()
    finally:
        server.stop()
