"""Speech emotion recognition demo: read a RAVDESS sentence in an emotion, see what the model hears.

Run with ``python app.py``; on a Hugging Face Space it is the app file. It is also an MCP server
(``/gradio_api/mcp/``): agents can call the emotion prediction and the timeline as tools. Set
SER_WHISPER_LAYERS_MODEL, SER_CNN_MODEL or SER_MLP_MODEL to a Hub repo id or a folder to serve other weights.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import os
import signal
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import NoReturn

from ser_models.demo import forwarded_allow_ips, private_temp_dir, skip_gradio_stub_writing

# Everything Gradio writes for this process (uploads, streamed microphone chunks) goes to a folder of its
# own, swept while the app runs and deleted at exit. Gradio's modules read the variable when imported.
TEMP_DIR = private_temp_dir()
os.environ["GRADIO_TEMP_DIR"] = str(TEMP_DIR)
# Which proxies' X-Forwarded-For uvicorn believes (the per-client bounds key on the client's address): on a
# Space, its proxy's private addresses; elsewhere loopback unless FORWARDED_ALLOW_IPS says otherwise.
if (trusted := forwarded_allow_ips()) is not None:
    os.environ["FORWARDED_ALLOW_IPS"] = trusted
# Gradio keeps a record of every event for its monitoring page (10,000 by default) and summarizes them all
# again after each event, in pandas: a thousand cost a tenth of the time and memory.
os.environ.setdefault("GRADIO_ANALYTICS_MAX_EVENTS", "1000")
skip_gradio_stub_writing()  # a second of start-up spent on type stubs for editors

import anyio  # noqa: E402
import gradio as gr  # noqa: E402
import pandas as pd  # noqa: E402  (installed with Gradio: gr.LinePlot draws a DataFrame)
from gradio.context import LocalContext  # noqa: E402
from starlette.middleware import Middleware  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from ser_models import EMOTIONS, STATEMENTS, AudioError  # noqa: E402
from ser_models.demo import (  # noqa: E402
    APP_TIMELINE_MAX_SECONDS,
    CARDS,
    EXAMPLES_ATTRIBUTION,
    LIVE_CHUNK_MAX_SECONDS,
    LIVE_IDLE_SECONDS,
    LIVE_MAX_SECONDS,
    LIVE_UPDATE_SECONDS,
    LIVE_WATCH_SECONDS,
    LONG_PER_CLIENT,
    LONG_WAITING,
    LONG_WORKERS,
    PRIVACY,
    ROOT,
    SHORT_PER_CLIENT,
    SHORT_WAITING,
    SHORT_WORKERS,
    TAKE_MAX_AGE,
    TIPS,
    VOICES_MAX_AGE,
    BusyError,
    ClientGoneError,
    Lane,
    LiveStreams,
    SessionMemory,
    StreamChunkMiddleware,
    StreamedChunks,
    UploadFolder,
    UploadQuota,
    UploadQuotaMiddleware,
    analyze,
    analyze_long,
    card_url,
    client_address,
    default_model,
    describe_timeline,
    examples,
    examples_cache_folder,
    examples_known_playable,
    forget_missing,
    last_reading,
    live_step,
    load_recognizers,
    low_priority_threads,
    models_markdown,
    open_feedback_store,
    prune_examples_cache,
    read_chunk,
    run_in,
    start_janitor,
    submit_feedback,
    take_recording,
    timeline_table,
)
from ser_models.denoise import available as noise_reduction_available  # noqa: E402
from ser_models.plots import timeline_points  # noqa: E402
from ser_models.session import SpeakerSession  # noqa: E402

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
log = logging.getLogger("app")

SOURCES: dict[str, str] = {}
RECOGNIZERS = load_recognizers(sources=SOURCES)  # once, at start-up
DEFAULT_MODEL = default_model(RECOGNIZERS)
FEEDBACK = open_feedback_store()
UPLOADS = UploadFolder(TEMP_DIR)
QUOTA = UploadQuota.from_environment(UPLOADS)  # what uploads may hold on disk, in all and per client
TAKES = SessionMemory(TAKE_MAX_AGE)  # each browser session's last analyzed take, for another model or feedback
VOICES = SessionMemory(VOICES_MAX_AGE)  # each browser session's "my voice" adaptation: probabilities, no audio
CHUNKS = StreamedChunks(UPLOADS)  # the Live tab's chunks, those the server skips included
# Fair sharing: short analyses, long recordings and live streams each have their own bounds (per client and
# in all), so that a flood of one kind never starves the others; past a bound a request is told when to retry.
SHORT = Lane("analyses", SHORT_WORKERS, SHORT_WAITING, SHORT_PER_CLIENT, typical_seconds=0.3)
LONG = Lane("long-recording analyses", LONG_WORKERS, LONG_WAITING, LONG_PER_CLIENT, typical_seconds=30.0)
STREAMS = LiveStreams()  # the live streams open, each with its last 4 s (in memory only)
LONG_THREADS = low_priority_threads(LONG_WORKERS)  # long jobs yield the CPU to short ones
start_janitor(UPLOADS, [TAKES, VOICES], CHUNKS, also=[lambda: forget_missing(demo.upload_file_set)])
MODEL_CHOICES = [(f"{name} (default)" if name == DEFAULT_MODEL else name, name) for name in RECOGNIZERS]
EXAMPLES = examples()
# The examples' results are computed at start-up, by the weights being served, into a folder named after them;
# of the folders earlier weights or code left beside it, the few most recent stay.
EXAMPLES_CACHE = examples_cache_folder(DEFAULT_MODEL, SOURCES)
os.environ["GRADIO_EXAMPLES_CACHE"] = str(EXAMPLES_CACHE)
prune_examples_cache(EXAMPLES_CACHE)
CSS = """
#sentence, #sentence p { font-size: 2rem; line-height: 1.3; font-weight: 600; text-align: center; }
#verdict, #verdict p { font-size: 1.15rem; }
"""
CANNOT_ANALYZE = "Cannot analyze this audio"
BUSY = "Server busy"
NR, MY_VOICE = "Reduce background noise", "My voice"


def sentence_markdown(sentence: str) -> str:
    return f"“{sentence}”"


def refuse(message: str, title: str = CANNOT_ANALYZE) -> NoReturn:
    """Tell the user what is wrong and end the event, with one log line and no traceback.

    The title leads the message, because Gradio 6.31's page shows no notice's title: it groups notices by
    level under the level's name ("Error"), and for errors it even looks for the title in a field
    (``_title``) its client never fills in. API and MCP clients get the title as well.
    """
    message = f"{title}. {message[:1].upper()}{message[1:]}"
    log.info("%s", message)
    raise gr.Error(message, title=title, print_exception=False)


def recognizer_for(model: str):
    if model not in RECOGNIZERS:
        refuse(f"unknown model {model!r:.40}; choose one of {', '.join(RECOGNIZERS)}", "Invalid input")
    return RECOGNIZERS[model]


def checkbox(value, label: str) -> bool:
    """A checkbox value as sent: through the API "false" or 0 must not read as ticked (or unticked)."""
    if not isinstance(value, bool):
        refuse(f"{label} must be the boolean true or false, not {value!r:.40}", "Invalid input")
    return value


def session_of(request: gr.Request | None) -> str | None:
    """The browser session (one tab) the memory keys on; None for MCP calls, which all arrive through
    one Gradio client: nothing is kept for them, so that no agent reaches another's take."""
    if request is None or request.headers.get("x-gradio-user") == "mcp":
        return None
    return request.session_hash


def current_event():
    """The Gradio event being processed (None outside the queue): ``alive`` turns false once its client is gone."""
    event_id = LocalContext.event_id.get(None)
    queue = getattr(demo, "_queue", None)
    return queue.event_ids_to_events.get(event_id) if event_id and queue is not None else None


def client_gone(event) -> Callable[[], bool]:
    """True once the client of ``event`` has gone away (Gradio notices when its event stream closes)."""
    return lambda: event is not None and not event.alive


def from_mcp(request: gr.Request | None) -> bool:
    """An agent's call: Gradio's MCP server saved its audio as a file, then uploaded a copy (see UploadFolder)."""
    return request is not None and request.headers.get("x-gradio-user") == "mcp"


def discard(path: str | None, request: gr.Request | None = None) -> None:
    """Delete an upload that will not be analyzed (refused, or its client gone)."""
    if isinstance(path, str):
        UPLOADS.done(path, twins=from_mcp(request))


async def in_lane(lane: Lane, work: Callable, audio: str | None, request: gr.Request | None, executor=None):
    """``work()`` in a worker thread (of ``executor`` if given) once ``lane`` has room for this client; refused at
    once past its bounds ("Server busy. Try again in N s: ..."), and dropped if the client goes away meanwhile."""
    event = current_event()
    refusal = None
    try:
        async with lane.slot(client_address(request), client_gone(event)):
            if inspect.iscoroutinefunction(work):  # work that awaits its own threads
                return await work()
            if executor is not None:
                return await run_in(executor, work)
            return await anyio.to_thread.run_sync(work)
    except BusyError as error:
        refusal = str(error)
    except ClientGoneError:
        discard(audio, request)
        gone()
    discard(audio, request)
    refuse(refusal, BUSY)


def gone() -> NoReturn:
    log.info("A client went away before its analysis: nothing was analyzed")
    raise gr.Error("The client went away; nothing was analyzed.", print_exception=False)


def checked_inputs(audio: str | None, request: gr.Request | None, check: Callable[[], object]) -> None:
    """Run ``check`` (which refuses invalid arguments); a refused request's upload is deleted at once."""
    try:
        check()
    except gr.Error:
        discard(audio, request)
        raise


async def predict(
    audio: str | None,
    model: str,
    target: str | None,
    my_voice: bool = False,
    denoise: bool = False,
    request: gr.Request = None,
):
    """Which of the eight RAVDESS emotions a recording of speech expresses.

    The recording is deleted from the server once analyzed. Speech without a voice, too short (under
    0.3 s) or too long (over 60 s) is refused with a message saying why.

    Args:
        audio: The recording, one spoken sentence, ideally 2-4 s (WAV, FLAC, MP3, OGG, M4A and more).
        model: Which model listens: "whisper-layers" (default, most accurate), "mel-cnn" or "mfcc-mlp".
        target: The emotion the speaker meant to act, or empty; used only to say whether the model agrees.
        my_voice: True to adapt to the earlier takes of this session (default False).
        denoise: True to reduce background noise before the analysis (default False).

    Returns:
        The eight emotions' probabilities, summing to 1, the most probable as the label
        The verdict in words: the emotion heard, or "uncertain" and why
        The log-mel spectrogram of the speech analyzed, time (s) by frequency (kHz): an HTML <img> of an inline PNG
        Details: how much speech was analyzed, and any warnings about the recording
    """
    checked_inputs(audio, request, lambda: (recognizer_for(model), checkbox(my_voice, MY_VOICE), checkbox(denoise, NR)))
    work = partial(analyze_take, audio, model, target, my_voice, denoise, request)
    return await in_lane(SHORT, work, audio, request)


def analyze_take(audio: str | None, model: str, target: str | None, my_voice: bool, denoise: bool, request):
    recognizer = recognizer_for(model)
    my_voice, denoise = checkbox(my_voice, MY_VOICE), checkbox(denoise, NR)
    session = session_of(request)
    speaker = None
    if my_voice:  # one per model and browser session: the models' outputs differ
        voices = VOICES.get(session) or {}
        speaker = voices.setdefault(model, SpeakerSession())
        VOICES.put(session, voices)
    refusal = None
    try:
        take = take_recording(UPLOADS, TAKES, session, audio, twins=from_mcp(request))
        reading = analyze(recognizer, take.samples, target or None, session=speaker, denoise=denoise)
    except AudioError as error:
        refusal = str(error)
    if refusal is not None:  # raised outside the handler: chained to the AudioError, it would keep the audio alive
        refuse(refusal)
    TAKES.put(session, replace(take, reading=last_reading(take.key, model, reading, example=take.example)))
    return reading.analysis.probabilities, reading.verdict, reading.spectrogram(), reading.details


def example(audio: str, target: str, model: str):
    """The analysis of a bundled example clip, as cached at start-up."""
    reading = analyze(RECOGNIZERS[model], audio, target)
    return reading.analysis.probabilities, reading.verdict, reading.spectrogram(), reading.details


def feedback(true_label: str | None, consent: bool, sentence: str | None, request: gr.Request = None) -> str:
    """Donate the last recording analyzed in this session and the emotion that was meant, for future models.

    Nothing is stored unless consent is exactly True (the person's own ticked consent box), and only
    after an analysis in the same browser session (never through MCP).

    Args:
        true_label: The emotion that was meant (one of the eight).
        consent: True only if the person agrees that the recording and label may be published.
        sentence: The sentence that was read, or empty.

    Returns:
        What happened: stored (with the record's id) or not, and why.
    """
    session = session_of(request)  # one record per clip, a few an hour
    take = TAKES.get(session)
    last = take.reading if take is not None else None
    return submit_feedback(FEEDBACK, last, true_label, consent, sentence, session=session, take=take)


async def long_recording(
    audio: str | None,
    model: str,
    one_speaker: bool = False,
    progress=gr.Progress(),  # noqa: B008 (Gradio injects it)
    request: gr.Request = None,
):
    """The emotion timeline of a long recording: every 4 s window of speech gets the eight probabilities.

    Speech is found by a voice-activity detector (Silero VAD). The recording is deleted once analyzed. Long
    recordings are analyzed one at a time: when the server is busy, the message says when to try again.

    Args:
        audio: The recording, up to an hour (20 MB; WAV, FLAC, MP3, OGG, M4A and more).
        model: Which model listens: "whisper-layers" (default, most accurate), "mel-cnn" or "mfcc-mlp".
        one_speaker: True to adapt to the voice of a single speaker's monologue (default False).

    Returns:
        A summary: seconds analyzed, speech segments, windows, and the emotion over the whole recording
        Each emotion's probability at the centre of every window: rows of time (s), probability, emotion
        A table, one row per window: start (s), end (s), label, its probability, all eight probabilities
    """
    checked_inputs(audio, request, lambda: (recognizer_for(model), checkbox(one_speaker, "One speaker")))
    recognizer = RECOGNIZERS[model]
    client_left = client_gone(current_event())

    def report(fraction: float, message: str) -> None:
        if client_left():  # checked between batches of windows: a timeline nobody waits for stops within seconds
            raise ClientGoneError("the client went away")
        progress(fraction, desc=message)

    work = partial(analyze_recording, recognizer, audio, one_speaker, report, from_mcp(request))
    return await in_lane(LONG, work, audio, request, executor=LONG_THREADS)


def analyze_recording(recognizer, audio: str | None, one_speaker: bool, report: Callable, mcp: bool = False):
    refusal = None
    try:
        samples = UPLOADS.read(audio, max_seconds=APP_TIMELINE_MAX_SECONDS, twins=mcp)
        result = analyze_long(recognizer, samples, progress=report, one_speaker=one_speaker)
    except AudioError as error:
        refusal = str(error)
    except ClientGoneError:
        log.info("A long recording's client went away: its analysis was stopped")
        raise gr.Error("The client went away; the analysis was stopped.", print_exception=False) from None
    if refusal is not None:  # raised outside the handler, as in predict
        refuse(refusal)
    return describe_timeline(result), pd.DataFrame(timeline_points(result)), timeline_table(result)


async def live_step_in(key: str, client: str, session: str | None, chunk: str | None, model: str, request):
    """One chunk of the live stream ``key``: opened by its first chunk within the bounds (LiveStreams), analyzed
    in a worker thread; a refusal is logged once per stream and kind."""
    try:
        stream = STREAMS.enter(key, client, session)
    except BusyError as error:
        discard(chunk, request)
        refuse(str(error), BUSY)
    watch_streams()
    recognizer = RECOGNIZERS.get(model, RECOGNIZERS[DEFAULT_MODEL])

    def step():
        with stream.lock:
            read = partial(read_chunk, UPLOADS, chunk)
            return live_step(recognizer, stream.state, read, None, partial(discard, chunk))

    try:
        state = await anyio.to_thread.run_sync(step)
    finally:
        STREAMS.leave(key)
    if state.status.startswith("Skipped") and state.status != state.logged:
        log.info("Live: %s", state.status)
        state.logged = state.status
    return state.probabilities, state.status


async def live(chunk: str | None, model: str, request: gr.Request = None):
    """One streamed microphone chunk in (deleted once read), the probabilities of the last 4 s out."""
    session = session_of(request)
    key = LocalContext.event_id.get(None) or f"session:{session}"  # the stream's Gradio event
    return await live_step_in(key, client_address(request), session, chunk, model, request)


async def live_chunk(chunk: str | None, model: str, request: gr.Request = None):
    """One piece of a live recording, for clients that cannot stream: its probabilities over the last 4 s.

    Send the recording as it is made, a piece (at most 5 s; the page sends 0.5 s) at a time, from one client
    session: this session's last 4 s are classified at most every 0.5 s of audio. Audio sent faster than
    real time is skipped; a session that sends nothing for 5 s starts afresh.

    Args:
        chunk: The next piece of the recording (WAV, FLAC, OGG and more), at most 5 s.
        model: Which model listens: "whisper-layers" (default), "mel-cnn" or "mfcc-mlp".

    Returns:
        The eight emotions' probabilities over the last 4 s (none until there is speech)
        What was heard, or why a piece was skipped
    """
    checked_inputs(chunk, request, lambda: recognizer_for(model))
    session = session_of(request)
    if session is None:
        discard(chunk, request)
        refuse("live_chunk keeps a session's last 4 s between calls: call it from a client session", "Invalid input")
    client = client_address(request)
    step = partial(live_step_in, f"chunks:{session}", client, session, chunk, model, request)
    return await in_lane(SHORT, step, chunk, request)


WATCH: list[asyncio.Task] = []  # the task that ends idle live streams, started by the first chunk


def watch_streams() -> None:
    if not WATCH or WATCH[0].done():
        WATCH[:] = [asyncio.get_running_loop().create_task(end_idle_streams())]


async def end_idle_streams() -> None:
    """Every LIVE_WATCH_SECONDS: end the live streams that sent nothing for LIVE_IDLE_SECONDS or ran
    LIVE_MAX_SECONDS, which frees their slots and drops their audio."""
    while True:
        await asyncio.sleep(LIVE_WATCH_SECONDS)
        try:
            for key in STREAMS.due():
                end_stream(key)
        except Exception:  # never let the watch die
            log.exception("ending idle live streams failed")


def end_stream(event_id: str) -> None:
    """End a streaming event as the page's stop does (POST /stream/<id>/close), from the server's side."""
    queue = getattr(demo, "_queue", None)
    event = queue.event_ids_to_events.get(event_id) if queue is not None else None
    if event is not None and event.streaming:
        event.run_time = math.inf
        event.closed = True
        event.signal.set()
        log.info(
            "Live: a stream that sent nothing for %.0f s (or ran %.0f s) was ended", LIVE_IDLE_SECONDS, LIVE_MAX_SECONDS
        )


def start_live(request: gr.Request = None) -> None:
    STREAMS.close_session(session_of(request))  # a new take starts afresh


def stop_live(request: gr.Request = None) -> str:
    STREAMS.close_session(session_of(request))  # nothing of the voice is kept once the microphone stops
    return "Stopped. Press record to start again."


def forget_take(request: gr.Request = None) -> None:
    """An example is shown: feedback is for the user's own takes, so the last one is dropped."""
    TAKES.pop(session_of(request))


def forget_session(request: gr.Request = None) -> None:
    """The tab was closed: drop what memory holds for it."""
    for memory in (TAKES, VOICES):
        memory.pop(session_of(request))
    STREAMS.close_session(session_of(request))


with gr.Blocks(title="Speech Emotion Recognition (RAVDESS)") as demo:
    gr.Markdown(
        "# 🎭 Speech emotion recognition\n"
        "Act one of eight emotions while reading a sentence from the RAVDESS corpus, and see which emotion "
        "a model trained on 20 RAVDESS actors hears."
    )
    with gr.Tab("Act a sentence"):
        with gr.Row(equal_height=False):
            with gr.Column(scale=1):
                sentence = gr.Dropdown(list(STATEMENTS), value=STATEMENTS[0], label="Step A — the sentence to read")
                sentence_display = gr.Markdown(sentence_markdown(STATEMENTS[0]), elem_id="sentence")
                target = gr.Dropdown(list(EMOTIONS), value="happy", label="Step B — the emotion to act")
                model = gr.Radio(MODEL_CHOICES, value=DEFAULT_MODEL, label="Step C — the model")
                with gr.Accordion("About the models", open=False):
                    gr.Markdown(models_markdown(RECOGNIZERS, SOURCES))
            with gr.Column(scale=1):
                audio = gr.Audio(
                    sources=["upload", "microphone"],
                    type="filepath",
                    label="Step D — your recording: upload a file or record with the microphone",
                )
                gr.Markdown(
                    "**Upload** a file (WAV, FLAC, MP3, OGG, M4A and more) by dropping it on the box or clicking it, "
                    "or press the **microphone** button under the box and record."
                )
                with gr.Row():
                    my_voice = gr.Checkbox(
                        value=False,
                        label="My voice: adapt to my takes",
                        info="After a few takes of different emotions, corrects the pull of your voice "
                        "(kept in this tab only).",
                    )
                    denoise = gr.Checkbox(
                        value=False, label="Reduce background noise", visible=noise_reduction_available()
                    )
                analyze_button = gr.Button("Analyze", variant="primary", size="lg")
                with gr.Accordion("How to get a good reading", open=False):
                    gr.Markdown(TIPS)
        with gr.Row(equal_height=False):
            with gr.Column(scale=1):
                probabilities = gr.Label(num_top_classes=len(EMOTIONS), label="What the model heard")
                verdict = gr.Markdown(elem_id="verdict", label="Verdict")
            with gr.Column(scale=1):
                spectrogram = gr.HTML(label="Spectrogram of the speech the model analyzed")
                details = gr.Markdown(label="Details")
        with examples_known_playable():
            example_clips = gr.Examples(
                [[str(clip.path), clip.emotion, DEFAULT_MODEL] for clip in EXAMPLES],
                inputs=[audio, target, model],
                outputs=[probabilities, verdict, spectrogram, details],
                fn=example,
                cache_examples=True,
                cache_mode="eager",
                example_labels=[clip.label for clip in EXAMPLES],
                label="Or try an example: one RAVDESS actor per emotion (click one)",
                preload=False,
                api_name="example",
            )
        gr.Markdown(EXAMPLES_ATTRIBUTION)
        with gr.Accordion("Was the model right? Help it improve", open=False):
            with gr.Row():
                true_label = gr.Dropdown(list(EMOTIONS), value="happy", label="The emotion you meant")
                consent = gr.Checkbox(
                    value=False,
                    label="I donate this recording and my label to train future models. "
                    "They may be published in a public Hub dataset.",
                )
                send = gr.Button("Send feedback")
            feedback_status = gr.Markdown(label="Feedback status")
    with gr.Tab("Long recording"):
        gr.Markdown(
            f"Upload a recording of up to {APP_TIMELINE_MAX_SECONDS / 60:.0f} minutes (20 MB): speech is found with a "
            "voice-activity detector, cut into 4 s windows, and each window gets its own probabilities."
        )
        with gr.Row():
            long_audio = gr.Audio(sources=["upload"], type="filepath", label="Long recording")
            with gr.Column():
                long_model = gr.Radio(
                    MODEL_CHOICES, value=DEFAULT_MODEL, label="Model", info="What each one is: the first tab."
                )
                long_one_speaker = gr.Checkbox(
                    value=False,
                    label="One speaker: adapt to this voice",
                    info="For one person's monologue; leave off for conversations.",
                )
                timeline_button = gr.Button("Analyze timeline", variant="primary")
        timeline_summary = gr.Markdown(label="Summary")
        timeline_plot = gr.LinePlot(
            x="time (s)",
            y="probability",
            color="emotion",
            y_lim=[0, 1],
            label="Emotion timeline",
            caption="Each emotion's probability at the centre of every 4 s window of speech.",
        )
        timeline_rows = gr.Dataframe(
            headers=["start (s)", "end (s)", "label", "p(label)", *EMOTIONS], label="Windows", interactive=False
        )
    with gr.Tab("Live"):
        gr.Markdown(
            f"Speak into the microphone: the last 4 s are classified about every {LIVE_UPDATE_SECONDS:g} s. "
            "A stream stops after two minutes."
        )
        with gr.Row():
            live_audio = gr.Audio(sources=["microphone"], streaming=True, type="filepath", label="Microphone")
            with gr.Column():
                live_model = gr.Radio(
                    MODEL_CHOICES, value=DEFAULT_MODEL, label="Model", info="What each one is: the first tab."
                )
                live_status = gr.Markdown("Press record to start.", label="Live status")
        live_label = gr.Label(num_top_classes=len(EMOTIONS), label="Last 4 s")
        # /live_chunk, for API clients that cannot stream: one piece of audio per call (not on the page)
        chunk_audio = gr.Audio(type="filepath", visible=False, label=f"Chunk (at most {LIVE_CHUNK_MAX_SECONDS:g} s)")
        chunk_button = gr.Button(visible=False)
    gr.Markdown(PRIVACY)
    gr.Markdown(
        f"Accuracy on speakers the models never heard: the [model card]({card_url('model_card.md')}). "
        f"Training data: RAVDESS (Livingstone & Russo, 2018; [data card]({card_url('data_card.md')})), "
        "CC BY-NC-SA 4.0, so the models are for non-commercial use only."
    )

    sentence.change(sentence_markdown, sentence, sentence_display, api_visibility="private")
    target.change(lambda emotion: emotion, target, true_label, api_visibility="private")
    example_clips.dataset.click(forget_take, None, None, api_visibility="private")
    # Each kind of work has a queue lane of its own in Gradio, without Gradio's limit: the lanes' own bounds
    # (SHORT, LONG, STREAMS) decide at once what runs, what waits and what is refused as busy.
    analyze_button.click(
        predict,
        [audio, model, target, my_voice, denoise],
        [probabilities, verdict, spectrogram, details],
        api_name="predict",
        concurrency_id="short",
        concurrency_limit=None,
    )
    send.click(
        feedback,
        [true_label, consent, sentence],
        feedback_status,
        api_name="feedback",
        concurrency_id="feedback",
        concurrency_limit=2,
    )
    timeline_button.click(
        long_recording,
        [long_audio, long_model, long_one_speaker],
        [timeline_summary, timeline_plot, timeline_rows],
        api_name="timeline",
        concurrency_id="long",
        concurrency_limit=None,
    )
    live_audio.stream(
        live,
        [live_audio, live_model],
        [live_label, live_status],
        stream_every=LIVE_UPDATE_SECONDS,
        time_limit=int(LIVE_MAX_SECONDS),
        concurrency_id="live",
        concurrency_limit=None,
        api_name="live",
        api_visibility="undocumented",  # a browser's microphone stream: gradio_client cannot stream inputs
    )
    chunk_button.click(
        live_chunk,
        [chunk_audio, live_model],
        [live_label, live_status],
        api_name="live_chunk",
        concurrency_id="short",
        concurrency_limit=None,
        api_visibility="undocumented",  # for code (README); not an agent's tool: MCP calls keep no session
    )
    live_audio.start_recording(start_live, None, None, api_visibility="private")
    live_audio.stop_recording(stop_live, None, live_status, api_visibility="private")
    demo.unload(forget_session)

# Requests run in threads of their own beside onnxruntime's pools: OpenBLAS's threads would only fight them for
# the cores (under load a spectrogram's 0.1 ms matrix product took milliseconds), so numpy's BLAS runs single.
threadpool_limits(limits=1, user_api="blas")

# Gradio's own queue: 96 workers (launch's max_threads) and at most 64 events waiting for one. Every event goes
# to its lane at once (none has a Gradio limit), and the lanes' bounds keep the total well under the workers.
demo.queue(default_concurrency_limit=4, max_size=64)


def _stop(signum, frame) -> NoReturn:
    raise KeyboardInterrupt  # Gradio then closes the server, and the temporary folder is deleted at exit


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _stop)
    # Gradio caches eager examples once the server already answers: built first, no click can race it.
    asyncio.run(example_clips.cache())
    demo.launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        css=CSS,
        max_file_size="20mb",
        mcp_server=True,
        run_history=False,  # the page keeps no history of runs, in the browser or elsewhere
        allowed_paths=[str(ROOT / name) for name in CARDS],
        max_threads=96,  # the queue's workers: every lane's bounds together (about 60) and room for refusals
        app_kwargs={
            "middleware": [
                Middleware(UploadQuotaMiddleware, quota=QUOTA),
                Middleware(StreamChunkMiddleware, chunks=CHUNKS, streams=STREAMS),
            ]
        },
    )
