"""Hub upload, without the network: the dry run's folder and the calls made to huggingface_hub."""

import shutil
from pathlib import Path

import yaml
from huggingface_hub import parse_eval_result_entries
from huggingface_hub.constants import EVAL_RESULTS_FOLDER

from ser_models.configs import CONFIG_NAME, ONNX_NAME, WEIGHTS_NAME
from ser_models.models import EmotionModel
from ser_models.registry import MODELS, WEIGHTS_DIR
from train import push

EVAL = f"{EVAL_RESULTS_FOLDER}/ravdess.yaml"


def staged(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


class RecordingApi:
    def __init__(self):
        self.calls = []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def create_commit(self, **kwargs):
        self.calls.append(("create_commit", sorted(op.path_in_repo for op in kwargs["operations"]), kwargs))


def test_dry_run_stages_exactly_what_would_be_uploaded(tmp_path, capsys):
    argv = ["--repo-id", "me/ser-cnn", "--model", "mel-cnn", "--dry-run", "--output", str(tmp_path / "stage")]
    assert push.main(argv) == 0
    assert staged(tmp_path / "stage") == sorted([EVAL, "README.md", CONFIG_NAME, ONNX_NAME, WEIGHTS_NAME])
    assert (tmp_path / "stage" / "README.md").read_text() == push.MODEL_CARD.read_text()
    assert EmotionModel.from_pretrained(tmp_path / "stage").model_type == "mel-cnn"
    assert "nothing uploaded" in capsys.readouterr().out


def test_the_default_model_is_staged_with_its_config_and_weights(tmp_path):
    from ser_models import DEFAULT_MODEL, EmotionRecognizer

    assert push.main(["--repo-id", "me/ser", "--dry-run", "--output", str(tmp_path / "stage")]) == 0
    assert staged(tmp_path / "stage") == sorted([EVAL, "README.md", CONFIG_NAME, ONNX_NAME, WEIGHTS_NAME])
    recognizer = EmotionRecognizer.from_pretrained(tmp_path / "stage")
    bundled = EmotionRecognizer.from_pretrained(DEFAULT_MODEL)
    assert recognizer.config == bundled.config and recognizer.backend == "onnx"


def test_an_ensemble_is_staged_as_its_ensemble_json(tmp_path):
    import json

    from ser_models import EmotionRecognizer
    from ser_models.scorers import ENSEMBLE_NAME, EnsembleScorer

    folder, stage = tmp_path / "ensemble", tmp_path / "stage"
    folder.mkdir()
    (folder / ENSEMBLE_NAME).write_text(json.dumps({"members": {"mel-cnn": 0.6, "mfcc-mlp": 0.4}}))
    assert push.main(["--repo-id", "me/ser", "--model", str(folder), "--dry-run", "--output", str(stage)]) == 0
    assert staged(stage) == sorted(["README.md", ENSEMBLE_NAME])
    scorer = EmotionRecognizer.from_pretrained(stage).scorer
    assert isinstance(scorer, EnsembleScorer) and set(scorer.members) == {"mel-cnn", "mfcc-mlp"}


def test_a_model_without_its_export_is_pushed_with_one(tmp_path):
    from ser_models import EmotionRecognizer
    from ser_models.models import MelCNN, MelCNNConfig

    MelCNN(MelCNNConfig(hidden=16)).save_pretrained(tmp_path / "new")
    stage = tmp_path / "stage"
    assert push.main(["--repo-id", "me/x", "--model", str(tmp_path / "new"), "--dry-run", "--output", str(stage)]) == 0
    assert ONNX_NAME in staged(stage)
    assert EmotionRecognizer.from_pretrained(stage).scorer.network.metadata  # the stamped export, served as is


def test_upload_calls_huggingface_hub(tmp_path):
    api = RecordingApi()
    status = push.main(["--repo-id", "me/ser-mlp", "--model", "mfcc-mlp", "--output", str(tmp_path / "s")], api=api)
    assert status == 0
    assert api.calls[0][:2] == ("create_repo", "me/ser-mlp")
    assert len(api.calls) == 2  # weights, config, card and evaluation results in one commit
    name, files, kwargs = api.calls[1]
    assert name == "create_commit" and files == sorted([EVAL, "README.md", CONFIG_NAME, ONNX_NAME, WEIGHTS_NAME])
    assert kwargs["repo_id"] == "me/ser-mlp" and kwargs["repo_type"] == "model"
    uploaded = {op.path_in_repo: Path(op.path_or_fileobj).read_bytes() for op in kwargs["operations"]}
    assert uploaded[EVAL] == (push.EVAL_RESULTS_DIR / "mfcc-mlp" / "ravdess.yaml").read_bytes()
    assert uploaded["README.md"] == push.MODEL_CARD.read_bytes()


def test_a_bundled_model_is_staged_with_its_own_evaluation_results(tmp_path):
    for model in MODELS:
        stage = tmp_path / model
        assert push.main(["--repo-id", "me/x", "--model", model, "--dry-run", "--output", str(stage)]) == 0
        text = (stage / EVAL).read_text()
        assert text == (push.EVAL_RESULTS_DIR / model / "ravdess.yaml").read_text()
        entries = parse_eval_result_entries(yaml.safe_load(text))
        assert {e.task_id for e in entries} >= {"speaker_independent_accuracy", "speaker_independent_macro_f1"}


def test_a_model_folder_from_elsewhere_gets_no_evaluation_results(tmp_path, capsys):
    shutil.copytree(WEIGHTS_DIR / "mel-cnn", tmp_path / "mel-cnn")  # the name of a bundled model, not its figures
    argv = ["--repo-id", "me/x", "--model", str(tmp_path / "mel-cnn"), "--dry-run", "--output", str(tmp_path / "s")]
    assert push.main(argv) == 0
    assert staged(tmp_path / "s") == sorted(["README.md", CONFIG_NAME, ONNX_NAME, WEIGHTS_NAME])
    assert "no evaluation results staged" in capsys.readouterr().out


def test_upload_failure_is_reported(tmp_path, capsys):
    class FailingApi(RecordingApi):
        def create_repo(self, repo_id, **kwargs):
            raise ConnectionError("offline")

    assert push.main(["--repo-id", "me/x", "--output", str(tmp_path / "s")], api=FailingApi()) == 1
    assert "upload to me/x failed: offline" in capsys.readouterr().err


def test_a_model_that_does_not_load_is_not_published(tmp_path, capsys):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / CONFIG_NAME).write_text("{}")
    assert push.main(["--repo-id", "me/x", "--model", str(tmp_path / "broken"), "--dry-run"]) == 2
    assert "error:" in capsys.readouterr().err
