"""Hub upload, without the network: the dry run's folder and the calls made to huggingface_hub."""

from ser_models.models import CONFIG_NAME, WEIGHTS_NAME, EmotionModel
from train import push


class RecordingApi:
    def __init__(self):
        self.calls = []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", sorted(p.name for p in kwargs["folder_path"].iterdir()), kwargs))


def test_dry_run_stages_exactly_what_would_be_uploaded(tmp_path, capsys):
    argv = ["--repo-id", "me/ser-cnn", "--model", "mel-cnn", "--dry-run", "--output", str(tmp_path / "stage")]
    assert push.main(argv) == 0
    staged = sorted(p.name for p in (tmp_path / "stage").iterdir())
    assert staged == ["README.md", CONFIG_NAME, WEIGHTS_NAME]
    assert (tmp_path / "stage" / "README.md").read_text() == push.MODEL_CARD.read_text()
    assert EmotionModel.from_pretrained(tmp_path / "stage").model_type == "mel-cnn"
    assert "nothing uploaded" in capsys.readouterr().out


def test_the_default_model_is_staged_with_its_config_and_weights(tmp_path):
    from ser_models import DEFAULT_MODEL, EmotionRecognizer

    assert push.main(["--repo-id", "me/ser", "--dry-run", "--output", str(tmp_path / "stage")]) == 0
    assert sorted(p.name for p in (tmp_path / "stage").iterdir()) == ["README.md", CONFIG_NAME, WEIGHTS_NAME]
    staged = EmotionRecognizer.from_pretrained(tmp_path / "stage")
    bundled = EmotionRecognizer.from_pretrained(DEFAULT_MODEL)
    assert staged.model.config == bundled.model.config


def test_the_ensemble_is_staged_as_its_ensemble_json(tmp_path):
    from ser_models import EmotionRecognizer
    from ser_models.inference import ENSEMBLE_NAME, EnsembleRecognizer

    stage = tmp_path / "stage"
    assert push.main(["--repo-id", "me/ser", "--model", "whisper-cnn", "--dry-run", "--output", str(stage)]) == 0
    assert sorted(p.name for p in stage.iterdir()) == ["README.md", ENSEMBLE_NAME]
    staged = EmotionRecognizer.from_pretrained(stage)
    assert isinstance(staged, EnsembleRecognizer) and set(staged.members) == {"mel-cnn", "whisper-base"}


def test_upload_calls_huggingface_hub(tmp_path):
    api = RecordingApi()
    status = push.main(["--repo-id", "me/ser-mlp", "--model", "mfcc-mlp", "--output", str(tmp_path / "s")], api=api)
    assert status == 0
    assert api.calls[0][:2] == ("create_repo", "me/ser-mlp")
    name, files, kwargs = api.calls[1]
    assert name == "upload_folder" and files == ["README.md", CONFIG_NAME, WEIGHTS_NAME]
    assert kwargs["repo_id"] == "me/ser-mlp" and kwargs["repo_type"] == "model"


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
