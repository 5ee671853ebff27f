"""Fair sharing of the server: what one client may hold (requests, live streams, long jobs, disk), what the
server takes at once, and that a flood of one kind of work never starves a fresh client's /predict.

The unit tests drive the bounds (Lane, LiveStreams, UploadQuota) directly; the server tests start app.py and
flood it over loopback, each client named by its own X-Forwarded-For (uvicorn believes it from loopback, as
from a proxy on the same host).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from ser_models.demo import (
    LIVE_BURST_SECONDS,
    LIVE_UPDATE_SECONDS,
    BusyError,
    ClientGoneError,
    Lane,
    LiveState,
    LiveStreams,
    UploadFolder,
    UploadQuota,
    UploadQuotaMiddleware,
    client_address,
    live_step,
)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
MB = 2**20


# ---------------------------------------------------------------------------------------------------------------
# Lanes


def test_a_lane_runs_its_workers_queues_the_rest_in_order_and_refuses_past_its_bounds():
    lane = Lane("analyses", workers=2, waiting=2, per_client=2, typical_seconds=3.0, poll=0.01)
    order = []

    async def job(client: str, name: str, release: asyncio.Event):
        async with lane.slot(client):
            order.append(name)
            await release.wait()

    async def main():
        release = asyncio.Event()
        tasks = [asyncio.create_task(job(f"c{i}", f"job{i}", release)) for i in range(4)]
        await asyncio.sleep(0.05)
        assert order == ["job0", "job1"] and lane.running == 2 and lane.waiting_now == 2
        with pytest.raises(BusyError, match=r"try again in \d+ s: 2 analyses are under way and 2 waiting") as busy:
            lane.admit("c9")
        assert busy.value.retry_after == 5  # 3 s a job, two workers, two ahead: 4.5 s
        release.set()
        await asyncio.gather(*tasks)
        assert order == ["job0", "job1", "job2", "job3"] and lane.running == 0 and lane.waiting_now == 0

    asyncio.run(main())


def test_one_client_gets_at_most_its_share_of_a_lane():
    lane = Lane("long-recording analyses", workers=1, waiting=3, per_client=1, typical_seconds=30.0, poll=0.01)

    async def main():
        release = asyncio.Event()

        async def job(client):
            async with lane.slot(client):
                await release.wait()

        first = asyncio.create_task(job("flooder"))
        await asyncio.sleep(0.02)
        with pytest.raises(BusyError, match="try again in 30 s: this client already has 1 long-recording analyses"):
            async with lane.slot("flooder"):
                pass
        other = asyncio.create_task(job("someone else"))  # another client still gets in line
        await asyncio.sleep(0.02)
        assert lane.waiting_now == 1
        release.set()
        await asyncio.gather(first, other)

    asyncio.run(main())


def test_a_client_that_goes_away_while_waiting_leaves_the_line():
    lane = Lane("analyses", workers=1, waiting=4, per_client=4, typical_seconds=1.0, poll=0.01)
    gone = threading.Event()

    async def main():
        release = asyncio.Event()

        async def hold():
            async with lane.slot("a"):
                await release.wait()

        holder = asyncio.create_task(hold())
        await asyncio.sleep(0.02)

        async def wait():
            async with lane.slot("b", gone.is_set):
                raise AssertionError("a client that went away must not run")

        waiter = asyncio.create_task(wait())
        await asyncio.sleep(0.03)
        assert lane.waiting_now == 1
        gone.set()
        with pytest.raises(ClientGoneError):
            await waiter
        assert lane.waiting_now == 0 and lane.running == 1
        release.set()
        await holder
        assert lane.running == 0
        async with lane.slot("b"):  # its share was given back
            assert lane.running == 1

    asyncio.run(main())


def test_the_client_is_the_address_uvicorn_resolved_and_agents_are_one_client():
    class Request:
        def __init__(self, host, headers=None):
            self.client = type("Client", (), {"host": host})()
            self.headers = headers or {}

    assert client_address(Request("203.0.113.7")) == "203.0.113.7"
    # uvicorn replaced the peer by X-Forwarded-For already where it trusts the proxy; the header itself is not read
    assert client_address(Request("127.0.0.1", {"x-forwarded-for": "10.9.9.9"})) == "127.0.0.1"
    assert client_address(Request("127.0.0.1", {"x-gradio-user": "mcp", "x-forwarded-for": "1.2.3.4"})) == "mcp"
    assert client_address(None) == "unknown"


def test_on_a_space_the_proxys_forwarded_address_is_believed():
    from ser_models.demo import SPACE_PROXIES, forwarded_allow_ips

    assert forwarded_allow_ips({"SPACE_ID": "user/ser-demo"}) == SPACE_PROXIES
    assert forwarded_allow_ips({"SPACE_ID": "user/ser-demo", "FORWARDED_ALLOW_IPS": "10.1.2.3"}) is None
    assert forwarded_allow_ips({}) is None  # uvicorn's default: a proxy on this host (loopback) only


# ---------------------------------------------------------------------------------------------------------------
# Live streams


def test_live_streams_are_bounded_per_client_and_in_all_and_end_when_idle():
    streams = LiveStreams(max_streams=3, per_client=2, max_idle=5.0, max_seconds=120.0)
    streams.enter("e1", "flooder", "s1", now=0.0)
    streams.enter("e2", "flooder", "s2", now=0.0)
    with pytest.raises(BusyError, match="this client already has 2 live streams open"):
        streams.enter("e3", "flooder", "s3", now=0.1)
    streams.leave("e1", now=0.2)
    streams.enter("e4", "someone", "s4", now=0.3)
    streams.leave("e4", now=0.4)
    with pytest.raises(BusyError, match=r"try again in \d+ s: 3 live streams are open") as busy:
        streams.enter("e5", "third", "s5", now=1.0)
    assert busy.value.retry_after <= 5  # e1 sent nothing since 0.2 s: it ends at 5.2 s
    assert streams.due(now=4.0) == []
    streams.touch("e4", now=4.0)  # its next chunk arrived
    # e2 is analyzing (entered, not left): never idle; e1 idle since 0.2 s; e4 touched at 4 s
    assert streams.due(now=5.5) == ["e1"]
    streams.leave("e2", now=6.0)
    assert sorted(streams.due(now=11.5)) == ["e2", "e4"] and len(streams) == 0
    streams.enter("e6", "third", "s6", now=12.0)
    assert streams.due(now=200.0) == ["e6"]  # at most max_seconds, however busy
    streams.enter("e7", "third", "s7", now=300.0)
    assert streams.close_session("s7") == 1 and len(streams) == 0


def test_a_stream_flooding_chunks_costs_no_decoding_and_holds_four_seconds(angry_clip):
    from ser_models import load_audio
    from ser_models.demo import load_recognizers

    recognizer = load_recognizers({})["mel-cnn"]
    clip = (16000, (load_audio(angry_clip)[: 4 * 16000] * 32767).astype(np.int16))
    state, read, discarded = LiveState(opened=0.0), 0, 0

    def chunk():
        nonlocal read
        read += 1
        return clip

    def discard():
        nonlocal discarded
        discarded += 1

    predictions = 0
    for index in range(100):  # 100 chunks of 4 s within a second of wall time: 400 s of "audio"
        before = state.probabilities
        state = live_step(recognizer, state, chunk, now=index / 100, discard=discard)
        predictions += state.probabilities is not before
    heard = state.heard_seconds
    assert read == 2 and discarded == 98 and heard <= 1 + LIVE_BURST_SECONDS + 4  # real time plus the burst
    assert predictions <= heard / LIVE_UPDATE_SECONDS + 1
    assert state.buffer.size == 4 * 16000 and "more audio arrived than real time" in state.status
    later = live_step(recognizer, state, chunk, now=60.0, discard=discard)  # real time caught up: read again
    assert read == 3 and "Skipped" not in later.status


def test_a_chunk_longer_than_the_live_limit_is_skipped_with_a_reason(tmp_path):
    import soundfile as sf

    from ser_models.demo import load_recognizers, read_chunk

    uploads = UploadFolder(tmp_path)
    long_chunk = tmp_path / "x" / "audio.wav"
    long_chunk.parent.mkdir()
    sf.write(long_chunk, np.zeros(16000 * 30, np.float32), 16000)
    state = live_step(load_recognizers({})["mel-cnn"], None, lambda: read_chunk(uploads, str(long_chunk)))
    assert state.status.startswith("Skipped a chunk:") and "the limit is 5 s" in state.status
    assert not long_chunk.exists()


# ---------------------------------------------------------------------------------------------------------------
# Disk


def fill(folder: Path, name: str, megabytes: float) -> Path:
    path = folder / secrets.token_hex(8) / name
    path.parent.mkdir(parents=True)
    path.write_bytes(bytes(int(megabytes * MB)))
    return path


def test_uploads_are_bounded_per_client_and_in_all(tmp_path):
    uploads = UploadFolder(tmp_path)
    quota = UploadQuota(uploads, max_bytes=50 * MB, per_client=20 * MB)
    assert quota.reserve("a", 15 * MB) is None
    first = fill(tmp_path, "a.wav", 15)
    quota.release("a", 15 * MB, [str(first)])
    status, message = quota.reserve("a", 10 * MB)
    assert status == 429 and "15 MB of this client's files" in message and "try again in" in message
    assert quota.reserve("b", 10 * MB) is None  # another client has room
    assert quota.reserve("c", 20 * MB) is None  # reserved, still uploading: counted
    status, message = quota.reserve("d", 10 * MB)
    assert status == 507 and "45 MB, at most 50 MB" in message
    quota.release("b", 10 * MB)
    quota.release("c", 20 * MB)
    uploads.delete(first)  # analyzed: its room comes back
    assert quota.reserve("a", 19 * MB) is None


def test_the_quota_from_the_environment_ignores_nonsense():
    uploads = UploadFolder("/tmp")
    quota = UploadQuota.from_environment(uploads, {"SER_UPLOAD_MAX_MB": "300", "SER_UPLOAD_MAX_MB_PER_CLIENT": "nan"})
    assert quota.max_bytes == 300 * MB and quota.per_client == 100 * MB


def test_the_upload_middleware_refuses_before_anything_is_written(tmp_path):
    quota = UploadQuota(UploadFolder(tmp_path), max_bytes=10 * MB, per_client=5 * MB)
    reached = []

    async def app(scope, receive, send):
        reached.append(scope["path"])
        while (await receive()).get("more_body"):
            pass
        path = fill(tmp_path, "ok.wav", 1)
        body = json.dumps([str(path)]).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    middleware = UploadQuotaMiddleware(app, quota)

    def post(size: int | None, client: str = "1.2.3.4") -> tuple[int, str]:
        headers = [] if size is None else [(b"content-length", str(size).encode())]
        scope = {"type": "http", "method": "POST", "path": "/gradio_api/upload", "headers": headers}
        scope["client"] = (client, 5000)
        chunks = [b"x" * 1000, b"x" * 1000]
        answer = {}

        async def receive():
            body = chunks.pop(0) if chunks else b""
            return {"type": "http.request", "body": body, "more_body": bool(chunks)}

        async def send(message):
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
            else:
                answer["body"] = message.get("body", b"").decode()

        asyncio.run(middleware(scope, receive, send))
        return answer["status"], answer["body"]

    assert post(2 * MB)[0] == 200 and reached == ["/gradio_api/upload"]
    status, message = post(int(4.5 * MB))
    assert status == 429 and "Too many uploads waiting" in message and len(reached) == 1
    assert post(None)[0] == 411
    assert post(4 * MB, client="5.6.7.8")[0] == 200


# ---------------------------------------------------------------------------------------------------------------
# The running app


@pytest.fixture(scope="module")
def app(tmp_path_factory, ravdess_dir):
    from reliability import App

    server = App(tmp_path_factory.mktemp("fairness"), env={"SER_UPLOAD_MAX_MB": "300"})
    yield server
    server.stop()


def log_lines(app, text: str) -> list[str]:
    return [line for line in app.log.read_text(errors="replace").splitlines() if text in line]


@pytest.mark.slow
def test_a_flood_of_live_streams_and_long_recordings_never_starves_a_fresh_clients_predict(app):
    """One client opens 72 live streams in about half a second every 5 s (never reading them) and sends
    10-minute recordings to /timeline back to back, for a minute; a fresh client's /predict of a 4 s clip,
    once a second, succeeds within 5 s every time."""
    from reliability import flood

    report = flood(app.url, seconds=60.0, live_burst=72, live_every=5.0, timeline_threads=2, app=app)
    assert report["probes"] >= 30 and report["probes_failed"] == [], report
    assert report["probe_latency_s"]["max"] <= 5.0, report
    assert report["flood"]["live: bursts"] >= 5 and report["flood"].get("timeline: joined", 0) >= 20, report
    assert report["server_peak_mb"] < 1536, report
    assert not log_lines(app, "Traceback")


@pytest.mark.slow
def test_an_idle_stream_frees_its_slot_within_seconds(app, angry_clip):
    from reliability import RawClient, speech, wav_bytes

    client = RawClient(app.url, "192.0.2.10")
    chunk = wav_bytes(speech(1.0))
    for _ in range(2):  # two streams from one client: its share
        assert client.join("live", [client.upload("audio.wav", chunk)[1], "mel-cnn"])[0] == 200
    listener = RawClient(app.url, "192.0.2.10")
    session = secrets.token_hex(8)
    assert listener.join("live", [client.upload("audio.wav", chunk)[1], "mel-cnn"], session)[0] == 200
    messages = completed(listener, session)
    assert not messages["success"] and "Server busy. Try again in" in messages["output"]["error"]
    assert "this client already has 2 live streams open" in messages["output"]["error"]
    time.sleep(8)  # they sent nothing for 5 s: ended, slots free
    session = secrets.token_hex(8)
    assert listener.join("live", [client.upload("audio.wav", chunk)[1], "mel-cnn"], session)[0] == 200
    first = next_message(listener, session, "process_streaming", "process_completed")
    assert first["msg"] == "process_streaming", first


def completed(client, session: str, timeout: float = 60) -> dict:
    return next_message(client, session, "process_completed", timeout=timeout)


def next_message(client, session: str, *kinds: str, timeout: float = 60) -> dict:
    with client.http.stream("GET", "gradio_api/queue/data", params={"session_hash": session}, timeout=timeout) as r:
        for line in r.iter_lines():
            if line.startswith("data:"):
                message = json.loads(line[5:])
                if message.get("msg") in kinds:
                    return message
    raise AssertionError(f"no {kinds} message")


@pytest.mark.slow
def test_live_chunk_streams_through_gradio_client_within_the_same_bounds(app, angry_clip, tmp_path):
    import soundfile as sf
    from gradio_client import Client, handle_file

    from ser_models import load_audio

    audio = load_audio(angry_clip)
    client = Client(app.url, verbose=False, headers={"X-Forwarded-For": "192.0.2.20"})
    heard = []
    for index, start in enumerate(range(0, audio.size, 8000)):
        path = tmp_path / f"piece{index}.wav"
        sf.write(path, audio[start : start + 8000], 16000)
        label, status = client.predict(handle_file(str(path)), "mel-cnn", api_name="/live_chunk")
        heard.append(status)
        time.sleep(0.3)
    assert any(status.startswith("Hearing") for status in heard), heard
    assert label["label"] and len(label["confidences"]) == 8
    long_piece = tmp_path / "long.wav"
    sf.write(long_piece, np.zeros(16000 * 8, np.float32), 16000)
    _, status = client.predict(handle_file(str(long_piece)), "mel-cnn", api_name="/live_chunk")
    assert status.startswith("Skipped a chunk:") and "the limit is 5 s" in status
    assert len(log_lines(app, "the limit is 5 s")) == 1  # one log line for the refusal, no traceback


@pytest.mark.slow
def test_a_long_recording_whose_client_goes_away_stops(app):
    from reliability import RawClient, ten_minute_wav

    client = RawClient(app.url, "192.0.2.30")
    session = secrets.token_hex(8)
    recording = client.upload("meeting.wav", ten_minute_wav())[1]
    stopped_before = len(log_lines(app, "its analysis was stopped"))
    assert client.join("timeline", [recording, "whisper-layers", False], session)[0] == 200
    next_message(client, session, "progress", timeout=120)  # under way
    started = time.monotonic()
    client.http.close()  # the page is closed: its event stream ends
    while time.monotonic() - started < 30 and len(log_lines(app, "its analysis was stopped")) == stopped_before:
        time.sleep(0.5)
    assert len(log_lines(app, "its analysis was stopped")) == stopped_before + 1
    assert time.monotonic() - started < 30  # a 10-minute recording takes about 25 s of CPU: it did not finish


@pytest.mark.slow
def test_a_flood_of_uploads_cannot_fill_the_disk(app):
    from reliability import upload_flood

    one = upload_flood(app.url, files=50, megabytes=19, addresses=["203.0.113.50"], app=app)
    assert one["statuses"] == {200: 5, 429: 45}, one
    assert one["upload_folder_mb_max"] <= 100 + 1 and "Too many uploads waiting" in one["messages"][429]
    many = upload_flood(app.url, files=30, megabytes=19, addresses=[f"198.18.1.{i}" for i in range(30)], app=app)
    assert many["statuses"].get(507, 0) >= 14 and many["upload_folder_mb_max"] <= 300 + 1, many
    assert "The server holds too many uploads right now" in many["messages"][507]
    assert not log_lines(app, "Traceback")


@pytest.mark.slow
def test_a_client_flooding_one_stream_with_chunks_costs_no_memory_and_starves_nobody(app, tmp_path):
    from gradio_client import Client, handle_file
    from reliability import RawClient, speech, wav_bytes

    flooder = RawClient(app.url, "203.0.113.60")
    session = secrets.token_hex(8)
    chunk = wav_bytes(speech(4.0))
    status, text = flooder.join("live", [flooder.upload("audio.wav", chunk)[1], "mel-cnn"], session)
    event_id = json.loads(text)["event_id"]
    dependency = next(d for d in flooder.config["dependencies"] if d.get("api_name") == "live")
    before, on_disk = app.resident_mb(), app.upload_bytes()
    sent, stop = [0], threading.Event()

    def flood():
        while not stop.is_set():
            try:
                body = {
                    "data": [flooder.upload("audio.wav", chunk)[1], "mel-cnn"],
                    "fn_index": dependency["id"],
                    "trigger_id": dependency["targets"][0][0],
                    "session_hash": session,
                    "event_data": None,
                }
                flooder.post(f"gradio_api/stream/{event_id}", json=body)
            except httpx.TransportError:  # the server may drop a flooding connection: that is its defence
                continue
            sent[0] += 1

    thread = threading.Thread(target=flood)
    thread.start()
    probe = tmp_path / "probe.wav"
    probe.write_bytes(chunk)
    fresh = Client(app.url, verbose=False, headers={"X-Forwarded-For": "198.51.100.60"})
    latencies = []
    try:
        for _ in range(15):
            began = time.perf_counter()
            fresh.predict(handle_file(str(probe)), "mel-cnn", "angry", api_name="/predict")
            latencies.append(time.perf_counter() - began)
            time.sleep(0.5)
    finally:
        stop.set()
        thread.join(timeout=60)
    time.sleep(20)  # the chunks the stream skipped go within 10 s, the stream itself 5 s after the last chunk
    assert sent[0] >= 100, sent  # 4 s of audio each: hundreds of seconds sent in a few
    assert max(latencies) <= 5.0, latencies
    assert app.resident_mb() - before < 100, (before, app.resident_mb())
    assert app.upload_bytes() - on_disk < 1 * MB  # every chunk it sent is gone
    assert len(log_lines(app, "more audio arrived than real time")) == 1  # logged once for the stream
