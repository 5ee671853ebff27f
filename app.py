"""Speech emotion recognition demo: read a RAVDESS sentence in an emotion, see what the model hears.

Run with ``python app.py`` or ``gradio app.py`` (reload mode); on a Hugging Face Space it is the app file.
Set SER_CNN_MODEL, SER_MLP_MODEL, SER_WHISPER_MODEL or SER_ENSEMBLE_MODEL to a Hub repo id or a folder
to serve other weights.
"""

from __future__ import annotations

import logging
import os

import gradio as gr

from ser_models import EMOTIONS, MODEL_DESCRIPTIONS, STATEMENTS, AudioError
from ser_models.demo import (
    LIVE_UPDATE_SECONDS,
    TIPS,
    ImageFolder,
    LiveState,
    analyze,
    analyze_long,
    default_model,
    describe_timeline,
    last_reading,
    live_step,
    load_recognizers,
    open_feedback_store,
    spectrogram_image,
    submit_feedback,
    timeline_figure,
    timeline_table,
)
from ser_models.session import SpeakerSession

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

RECOGNIZERS = load_recognizers()  # once, at start-up
DEFAULT_MODEL = default_model(RECOGNIZERS)
FEEDBACK = open_feedback_store()
IMAGES = ImageFolder()
MODEL_CHOICES = [(f"{name}: {MODEL_DESCRIPTIONS[name]}", name) for name in RECOGNIZERS]
CSS = """
#sentence, #sentence p { font-size: 2rem; line-height: 1.3; font-weight: 600; text-align: center; }
#verdict, #verdict p { font-size: 1.15rem; }
"""


def sentence_markdown(sentence: str) -> str:
    return f"“{sentence}”"


def recognizer_for(model: str):
    if model not in RECOGNIZERS:
        raise gr.Error(f"unknown model {model!r}; choose one of {', '.join(RECOGNIZERS)}")
    return RECOGNIZERS[model]


def user_error(error: AudioError) -> gr.Error:
    return gr.Error(str(error)[:1].upper() + str(error)[1:], title="Cannot analyse this audio")


def checkbox(value, label: str) -> bool:
    """A checkbox value as sent: through the API "false" or 0 must not read as ticked (or unticked)."""
    if not isinstance(value, bool):
        raise gr.Error(f"{label} must be the boolean true or false, not {value!r:.40}", title="Invalid input")
    return value


def predict(
    audio: str | None,
    model: str,
    target: str | None,
    my_voice: bool = False,
    denoise: bool = False,
    voices: dict[str, SpeakerSession] | None = None,
):
    """Analyse one recording: all eight probabilities, the verdict, the spectrogram and details."""
    recognizer = recognizer_for(model)
    my_voice, denoise = checkbox(my_voice, "My voice"), checkbox(denoise, "Reduce background noise")
    voices = voices or {}
    session = voices.setdefault(model, SpeakerSession()) if my_voice else None  # one per model: outputs differ
    refusal = None
    try:
        reading = analyze(recognizer, audio, target or None, session=session, denoise=denoise)
    except AudioError as error:
        refusal = user_error(error)
    if refusal is not None:  # raised outside the handler: chained to the AudioError, it would keep the audio alive
        raise refusal
    return (
        reading.analysis.probabilities,
        reading.verdict,
        IMAGES.save(spectrogram_image(reading.analysis.speech.audio)),
        reading.details,
        last_reading(audio, model, reading),
        voices,
    )


def feedback(
    last: dict | None, true_label: str | None, consent: bool, sentence: str | None, request: gr.Request | None = None
) -> str:
    """Store which emotion was meant, with the clip, only if the consent box is ticked (exactly True)."""
    session = request.session_hash if request is not None else None  # one record per clip, a few an hour
    return submit_feedback(FEEDBACK, last, true_label, consent, sentence, session=session)


def long_recording(
    audio: str | None,
    model: str,
    one_speaker: bool = False,
    progress=gr.Progress(),  # noqa: B008 (Gradio injects it)
):
    """The emotion timeline of a long recording: summary, plot and one row per window."""
    recognizer = recognizer_for(model)
    one_speaker = checkbox(one_speaker, "One speaker")
    refusal = None
    try:
        result = analyze_long(recognizer, audio, progress=lambda f, m: progress(f, desc=m), one_speaker=one_speaker)
    except AudioError as error:
        refusal = user_error(error)
    if refusal is not None:  # raised outside the handler, as in predict
        raise refusal
    return describe_timeline(result), timeline_figure(result), timeline_table(result)


def live(chunk, model: str, state: LiveState | None):
    """One streamed microphone chunk in, the latest probabilities out."""
    state = live_step(RECOGNIZERS.get(model, RECOGNIZERS[DEFAULT_MODEL]), state, chunk)
    return state.probabilities, state.status, state


# Gradio keeps uploads in its cache; clear them after two hours so that clips are not kept around.
with gr.Blocks(title="Speech Emotion Recognition (RAVDESS)", delete_cache=(3600, 7200)) as demo:
    last = gr.State(None)  # the analysis the feedback refers to, per browser session
    voices = gr.State(None)  # "my voice" sessions, one per model, per browser session
    gr.Markdown(
        "# 🎭 Speech emotion recognition\n"
        "Act one of eight emotions while reading a sentence from the RAVDESS corpus, and see which emotion "
        "a model trained on 20 RAVDESS actors hears. Audio is analysed on the server and not stored, "
        "unless you choose to donate it below."
    )
    with gr.Tab("Act a sentence"):
        with gr.Row(equal_height=False):
            with gr.Column(scale=1):
                sentence = gr.Dropdown(list(STATEMENTS), value=STATEMENTS[0], label="Step A — the sentence to read")
                sentence_display = gr.Markdown(sentence_markdown(STATEMENTS[0]), elem_id="sentence")
                target = gr.Dropdown(list(EMOTIONS), value="happy", label="Step B — the emotion to act")
                model = gr.Radio(MODEL_CHOICES, value=DEFAULT_MODEL, label="Step C — the model")
            with gr.Column(scale=1):
                audio = gr.Audio(
                    sources=["microphone", "upload"], type="filepath", label="Record or upload (WAV, FLAC, OGG, MP3)"
                )
                with gr.Row():
                    my_voice = gr.Checkbox(
                        value=False,
                        label="My voice: adapt to my takes",
                        info="After a few takes of different emotions, corrects the pull of your voice "
                        "(kept in this tab only).",
                    )
                    denoise = gr.Checkbox(value=False, label="Reduce background noise")
                analyze_button = gr.Button("Analyze", variant="primary", size="lg")
                with gr.Accordion("How to get a good reading", open=False):
                    gr.Markdown(TIPS)
        with gr.Row(equal_height=False):
            with gr.Column(scale=1):
                probabilities = gr.Label(num_top_classes=len(EMOTIONS), label="What the model heard")
            with gr.Column(scale=1):
                verdict = gr.Markdown(elem_id="verdict")
                spectrogram = gr.Image(label="Log-mel spectrogram of the speech the model analysed", interactive=False)
                details = gr.Markdown()
        with gr.Accordion("Was the model right? Help it improve", open=False):
            with gr.Row():
                true_label = gr.Dropdown(list(EMOTIONS), value="happy", label="The emotion you meant")
                consent = gr.Checkbox(
                    value=False,
                    label="I donate this recording and my label to train future models. "
                    "They may be published in a public Hub dataset.",
                )
                send = gr.Button("Send feedback")
            feedback_status = gr.Markdown()
    with gr.Tab("Long recording"):
        gr.Markdown(
            "Upload a recording of up to an hour (20 MB): speech is found with a voice-activity detector, "
            "cut into 4 s windows, and each window gets its own probabilities."
        )
        with gr.Row():
            long_audio = gr.Audio(sources=["upload"], type="filepath", label="Recording")
            with gr.Column():
                long_model = gr.Radio(MODEL_CHOICES, value=DEFAULT_MODEL, label="Model")
                long_one_speaker = gr.Checkbox(
                    value=False,
                    label="One speaker: adapt to this voice",
                    info="For one person's monologue; leave off for conversations.",
                )
                timeline_button = gr.Button("Analyze timeline", variant="primary")
        timeline_summary = gr.Markdown()
        timeline_plot = gr.Plot(label="Emotion timeline")
        timeline_rows = gr.Dataframe(
            headers=["start (s)", "end (s)", "label", "p(label)", *EMOTIONS], label="Windows", interactive=False
        )
    with gr.Tab("Live"):
        gr.Markdown(
            "Speak into the microphone: the last 4 s are classified about twice a second. "
            "Nothing is stored; a stream stops after two minutes."
        )
        live_state = gr.State(None)
        with gr.Row():
            live_audio = gr.Audio(sources=["microphone"], streaming=True, type="numpy", label="Microphone")
            with gr.Column():
                live_model = gr.Radio(MODEL_CHOICES, value=DEFAULT_MODEL, label="Model")
                live_status = gr.Markdown("Press record to start.")
        live_label = gr.Label(num_top_classes=len(EMOTIONS), label="Last 4 s")

    sentence.change(sentence_markdown, sentence, sentence_display, api_name=False)
    target.change(lambda emotion: emotion, target, true_label, api_name=False)
    analyze_button.click(
        predict,
        [audio, model, target, my_voice, denoise, voices],
        [probabilities, verdict, spectrogram, details, last, voices],
        api_name="predict",
    )
    send.click(feedback, [last, true_label, consent, sentence], feedback_status, api_name="feedback")
    timeline_button.click(
        long_recording,
        [long_audio, long_model, long_one_speaker],
        [timeline_summary, timeline_plot, timeline_rows],
        api_name="timeline",
    )
    live_audio.stream(
        live,
        [live_audio, live_model, live_state],
        [live_label, live_status, live_state],
        stream_every=LIVE_UPDATE_SECONDS,
        time_limit=120,
        concurrency_limit=8,
        api_name="live",
    )
    live_audio.start_recording(lambda: None, None, live_state, api_name=False)  # a new take starts afresh
    gr.Markdown(
        "Accuracy on speakers the models never heard is in `model_card.md`. Training data: RAVDESS "
        "(Livingstone & Russo, 2018), CC BY-NC-SA 4.0, so the models are for non-commercial use only."
    )

demo.queue(default_concurrency_limit=4, max_size=64)

if __name__ == "__main__":
    demo.launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        css=CSS,
        max_file_size="20mb",
    )
