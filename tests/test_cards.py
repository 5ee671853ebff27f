"""The model card's sections are rendered from the reports' JSON, figures as they were measured."""

import json

from ser_models.registry import MODELS
from train import cards

STAT = {"mean": 0.5, "std": 0.05}


def write(folder, name, report):
    (folder / name).write_text(json.dumps(report))


def test_sections_are_empty_without_reports(tmp_path):
    for section in (cards.calibration_section, cards.session_section, cards.noise_section, cards.speed_section):
        assert section(tmp_path) == ""


def test_calibration_session_and_noise_sections_show_the_measured_figures(tmp_path):
    fold = {
        "fold": "fold0",
        "temperature": 1.7,
        "before": {"ece": 0.123, "nll": 1.5},
        "after": {"ece": 0.045, "nll": 1.2},
    }
    write(
        tmp_path,
        "calibration_mel-cnn.json",
        {
            "command": "python -m train.calibration --folds X",
            "bins": 15,
            "cross_validated": {
                "folds": [fold],
                "ece_before": {"mean": 0.123, "std": 0.01},
                "ece_after": {"mean": 0.045, "std": 0.01},
                "nll_before": {"mean": 1.5, "std": 0.1},
                "nll_after": {"mean": 1.2, "std": 0.1},
            },
            "applied": {
                "validation_actors": [3, 8],
                "temperature": 1.65,
                "validation_ece_before": 0.1,
                "validation_ece_after": 0.09,
            },
        },
    )
    text = cards.calibration_section(tmp_path)
    assert "0.123 ± 0.010" in text and "0.045 ± 0.010" in text and "1.65" in text and "train.calibration" in text
    assert "keeps temperature 1" not in text

    accuracy = {
        k: STAT for k in ("single", "k=5", "k=10", "k=20", "k=all", "online", "skewed_single", "skewed_adapted")
    }
    write(
        tmp_path,
        "session_mel-cnn.json",
        {"command": "c", "prior_weight": 5.0, "orders": 20, "accuracy": accuracy, "folds": [{}] * 3},
    )
    assert cards.session_section(tmp_path).count("50.0% ± 5.0%") == 8

    cell = {"raw": {"accuracy": STAT, "macro_f1": STAT}, "denoised": {"accuracy": STAT, "macro_f1": STAT}}
    summary = {"clean": cell, "white 5 dB": cell}
    run = {"noise_augmentation": 0.0, "summary": summary, "summary_on_common_folds": summary, "folds": {}}
    write(
        tmp_path,
        "noise_mel-cnn.json",
        {"command": "c", "common_folds": ["fold0"], "runs": {"a": run, "b": {**run, "noise_augmentation": 0.5}}},
    )
    noise = cards.noise_section(tmp_path)
    assert "| white 5 dB |" in noise and "noise-augmented training, noise reduction" in noise


def eval_files(folder):
    """{model: {task_id: EvalResultEntry}} of every `<folder>/<model>/ravdess.yaml`, parsed as the Hub does."""
    import yaml
    from huggingface_hub import parse_eval_result_entries

    parsed = {}
    for path in sorted(folder.glob(f"*/{cards.EVAL_RESULTS_FILE}")):
        data = yaml.safe_load(path.read_text())
        assert isinstance(data, list) and all({"dataset", "value"} <= set(item) for item in data)
        entries = parse_eval_result_entries(data)
        tasks = [e.task_id for e in entries]
        assert len(tasks) == len(set(tasks)), f"{path}: a task twice"
        parsed[path.parent.name] = {e.task_id: e for e in entries}
    return parsed


def test_eval_results_are_the_hub_format_and_the_reports_figures(tmp_path):
    import yaml
    from huggingface_hub import eval_result_entries_to_yaml
    from huggingface_hub.constants import EVAL_RESULTS_FOLDER

    from train import push

    assert cards.EVAL_RESULTS_DIR.name == push.HUB_EVAL_RESULTS == EVAL_RESULTS_FOLDER
    assert push.EVAL_RESULTS_DIR == cards.EVAL_RESULTS_DIR
    cv, _ = cards.load_reports()
    written = cards.write_eval_results(cv, tmp_path)
    results = eval_files(tmp_path)
    assert {p.parent.name for p in written} == set(results) == set(MODELS)  # the bundled models, which are pushed
    for path in written:  # what huggingface_hub itself would write for these entries
        entries = list(results[path.parent.name].values())
        assert yaml.safe_load(path.read_text()) == eval_result_entries_to_yaml(entries)

    def report(name):
        return json.loads((cards.REPORTS_DIR / name).read_text())

    expected = {}  # model -> {task: (value, report command)}, read here straight from reports/
    for name, model in (("robustness_whisper-layers.json", "whisper-layers"),):
        r = report(name)
        result = r["clean"]
        for key in ("accuracy", "macro_f1", "uar"):
            expected.setdefault(model, {})[f"speaker_independent_{key}"] = (result[key]["mean"], r["command"])
    for path in sorted(cards.REPORTS_DIR.glob("cv_*.json")):
        r = report(path.name)
        model = cards.served_name(path.stem.removeprefix("cv_"))
        for protocol, result in r["protocols"].items():
            for key in ("accuracy", "macro_f1", "uar"):
                if key in result:
                    task = f"{protocol.replace('-', '_')}_{key}"
                    expected.setdefault(model, {})[task] = (result[key]["mean"], r["command"])
    for path in sorted(cards.REPORTS_DIR.glob("robustness_*.json")):
        r = report(path.name)
        assert r["protocol"] == "speaker-independent"
        served = cards.served_name(r["model"])
        for condition, cell in r["grid"].items():
            task = "speaker_independent_accuracy_" + cards._condition_task(condition)
            expected.setdefault(served, {})[task] = (cell["mean"], r["command"])
        expected[served]["speaker_independent_accuracy_grid_mean"] = (r["grid_mean"], r["command"])

    expected = {model: tasks for model, tasks in expected.items() if model in MODELS}
    assert set(results) == set(expected)
    for model, tasks in expected.items():
        assert set(results[model]) == set(tasks), model
        for task, (value, command) in tasks.items():
            entry = results[model][task]
            assert entry.value == value and entry.dataset_id == cards.RAVDESS_DATASET_ID, (model, task)
            assert f"`{command.strip()}`" in entry.notes, (model, task)
            # the split is in the task id and said in the notes; speaker-dependent is never unlabelled
            dependent = task.startswith("speaker_dependent_")
            assert dependent or task.startswith("speaker_independent_")
            assert ("SPEAKER-DEPENDENT" in entry.notes) == dependent
            assert ("speaker-independent" in entry.notes) != dependent
    assert "speaker_independent_accuracy_mp3_32_kbit_s" in results["whisper-layers"]
    assert "speaker_independent_accuracy_quiet_-30_db" in results["whisper-layers"]


def model_index_metrics(text):
    """{served model: {task id: value}} of a model-index, in the eval results' task ids."""
    import yaml

    tasks = {"accuracy": "accuracy", "f1": "macro_f1", "recall": "uar"}
    metrics = {}
    for model in yaml.safe_load(text)["model-index"]:
        name = model["name"].removeprefix("ser-")
        for result in model["results"]:
            for metric in result["metrics"]:
                assert "(speaker-independent)" in metric["name"]
                served = cards.SERVED_AS.get(name, name)
                metrics.setdefault(served, {})[f"speaker_independent_{tasks[metric['type']]}"] = metric["value"]
    return metrics


def test_model_index_and_eval_results_agree(tmp_path):
    cv, _ = cards.load_reports()
    cards.write_eval_results(cv, tmp_path)
    fresh = eval_files(tmp_path)
    headline = {"speaker_independent_accuracy", "speaker_independent_macro_f1", "speaker_independent_uar"}
    # every model-index figure is an eval result (to its 4 decimals), and every headline eval result is in it
    indexed = {m: metrics for m, metrics in model_index_metrics(cards.model_index(cv)).items() if m in MODELS}
    assert indexed == {
        model: {task: round(entry.value, 4) for task, entry in entries.items() if task in headline}
        for model, entries in fresh.items()
        if headline & set(entries)
    }

    # and the committed files, written together with the model card's model-index: as train.cards writes them now
    committed = eval_files(cards.EVAL_RESULTS_DIR)
    assert set(committed) == set(fresh)
    for model in fresh:
        name = f"{model}/{cards.EVAL_RESULTS_FILE}"
        assert (cards.EVAL_RESULTS_DIR / name).read_text() == (tmp_path / name).read_text(), name
    card = (cards.ROOT / "model_card.md").read_text().split("---\n")[1]
    for model, metrics in model_index_metrics(card).items():
        for task, value in metrics.items() if model in MODELS else ():
            assert round(committed[model][task].value, 4) == value, (model, task)


def test_eval_results_of_models_without_reports_are_removed(tmp_path):
    stale = tmp_path / "gone" / cards.EVAL_RESULTS_FILE
    stale.parent.mkdir()
    stale.write_text("- {dataset: {id: ravdess, task_id: x}, value: 1}\n")
    write(tmp_path, "robustness_mfcc-mlp.json", {"model": "mfcc-mlp", "command": "c", "grid": {"clean": {}}})
    assert cards.write_eval_results({}, tmp_path / "out", reports=tmp_path) == []  # a grid without its split: none
    cards.write_eval_results({}, tmp_path, reports=tmp_path)
    assert not stale.exists()


def test_the_unseen_conditions_and_the_penalty_choice_show_their_figures(tmp_path):
    grid = {"clean": {"mean": 0.621, "std": 0.05}, "white 10 dB": {"mean": 0.532, "std": 0.06}}
    unseen = {"clipped +12 dB": {"mean": 0.583, "std": 0.04}, "packet loss 10%": {"mean": 0.417, "std": 0.03}}
    write(tmp_path, "robustness_mfcc-mlp.json", {"model": "mfcc-mlp", "command": "c1", "grid": grid})
    command = "python -m train.robustness folds --name mel-cnn"
    report = {"model": "mel-cnn", "command": command, "grid": grid, "unseen": unseen}
    write(tmp_path, "robustness_mel-cnn.json", report)
    section = cards.robustness_section(tmp_path)
    table = section[section.index("Outside the grid") :]
    assert "| clipped +12 dB | 58.3% ± 4.0% |" in table and "| packet loss 10% | 41.7% ± 3.0% |" in table
    assert "`mfcc-mlp`" not in table.split("\n\n")[1]  # only the models measured under them are columns
    assert f"`{command}`" in table

    penalties = [
        {"l2": 1.0, "clean": 0.785, "degraded": 0.729, "out_of_corpus": {"tess": 0.425}, "criterion": 0.646},
        {"l2": 10.0, "clean": 0.742, "degraded": 0.667, "out_of_corpus": {"tess": 0.409}, "criterion": 0.606},
    ]
    text = cards._penalty_selection({"penalty_selection": penalties, "out_of_corpus": {"tess": {"l2": 1.0}}})
    assert "| 1 | 78.5% | 72.9% | 42.5% | 64.6% |" in text and "| 10 | 74.2% | 66.7% | 40.9% | 60.6% |" in text
    assert "without that corpus's own column" in text and "tess 1." in text
