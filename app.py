"""Speech emotion recognition demo: read a RAVDESS sentence in an emotion, see what the model hears.

Run with ``python app.py`` or ``gradio app.py`` (reload mode); on a Hugging Face Space it is the app file.
Set SER_CNN_MODEL / SER_MLP_MODEL to a Hub repo id or a folder to serve other weights.
"""

from __future__ import annotations

import logging
import os

import gradio as gr

from ser_models import DEFAULT_MODEL, EMOTIONS, MODEL_DESCRIPTIONS, STATEMENTS, AudioError
from ser_models.demo import (
    TIPS,
    ImageFolder,
    analyze,
    last_reading,
    load_recognizers,
    open_feedback_store,
    spectrogram_image,
    submit_feedback,
)

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

RECOGNIZERS = load_recognizers()  # once, at start-up
FEEDBACK = open_feedback_store()
IMAGES = ImageFolder()
MODEL_CHOICES = [(f"{name}: {MODEL_DESCRIPTIONS[name]}", name) for name in RECOGNIZERS]
CSS = """
#sentence, #sentence p { font-size: 2rem; line-height: 1.3; font-weight: 600; text-align: center; }
#verdict, #verdict p { font-size: 1.15rem; }
"""


def sentence_markdown(sentence: str) -> str:
    return f"“{sentence}”"


def predict(audio: str | None, model: str, target: str | None):
    """Analyse one recording: all eight probabilities, the verdict, the spectrogram and details."""
    if model not in RECOGNIZERS:
        raise gr.Error(f"unknown model {model!r}; choose one of {', '.join(RECOGNIZERS)}")
    try:
        reading = analyze(RECOGNIZERS[model], audio, target or None)
    except AudioError as error:
        raise gr.Error(str(error)[:1].upper() + str(error)[1:], title="Cannot analyse this audio") from None
    return (
        reading.analysis.probabilities,
        reading.verdict,
        IMAGES.save(spectrogram_image(reading.analysis.speech.audio)),
        reading.details,
        last_reading(audio, model, reading),
    )


def feedback(last: dict | None, true_label: str | None, consent: bool, sentence: str | None) -> str:
    """Store which emotion was meant, with the clip, only if the consent box is ticked."""
    return submit_feedback(FEEDBACK, last, true_label, consent, sentence)


# Gradio keeps uploads in its cache; clear them after two hours so that clips are not kept around.
with gr.Blocks(title="Speech Emotion Recognition (RAVDESS)", delete_cache=(3600, 7200)) as demo:
    last = gr.State(None)  # the analysis the feedback refers to, per browser session
    gr.Markdown(
        "# 🎭 Speech emotion recognition\n"
        "Act one of eight emotions while reading a sentence from the RAVDESS corpus, and see which emotion "
        "a model trained on 20 RAVDESS actors hears. Audio is analysed on the server and not stored, "
        "unless you choose to donate it below."
    )
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

    sentence.change(sentence_markdown, sentence, sentence_display, api_name=False)
    target.change(lambda emotion: emotion, target, true_label, api_name=False)
    analyze_button.click(
        predict, [audio, model, target], [probabilities, verdict, spectrogram, details, last], api_name="predict"
    )
    send.click(feedback, [last, true_label, consent, sentence], feedback_status, api_name="feedback")
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
