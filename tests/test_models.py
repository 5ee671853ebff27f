import json

import numpy as np
import pytest
import torch

from ser_models import MODELS, EmotionRecognizer, ModelLoadError
from ser_models.configs import ONNX_NAME
from ser_models.models import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    EmotionModel,
    MelCNN,
    MelCNNConfig,
    MelCRNN,
    MfccMLP,
    reversed_within,
)


@pytest.mark.parametrize("model_class", [MelCNN, MelCRNN, MfccMLP])
def test_save_and_load_round_trip_gives_identical_outputs(tmp_path, model_class):
    torch.manual_seed(0)
    model = model_class().eval()
    if isinstance(model, MfccMLP):
        model.fit_scaler(torch.randn(32, 80) * 3 + 1)
    model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]
    loaded = EmotionModel.from_pretrained(tmp_path)
    assert type(loaded) is model_class
    audio = torch.randn(3, 64000) * 0.1
    lengths = torch.tensor([64000, 30000, 9000])
    with torch.inference_mode():
        expected = model(model.featurize(audio, lengths))
        actual = loaded(loaded.featurize(audio, lengths))
    assert torch.equal(expected, actual)


def _saved(tmp_path, **changes):
    MelCNN().save_pretrained(tmp_path)
    config = json.loads((tmp_path / CONFIG_NAME).read_text())
    config.update(changes)
    (tmp_path / CONFIG_NAME).write_text(json.dumps(config))
    return tmp_path


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"surprise": 1}, "unknown config keys"),
        ({"labels": ["happy", "sad"]}, "labels must be the 8 RAVDESS emotions"),
        ({"model_type": "resnet"}, "unknown model_type"),
        ({"channels": [8, 16, 32, 64]}, "weights do not match"),
        ({"features": {"sample_rate": 8000}}, "trained with features"),
        ({"dropout": "high"}, "dropout must be float"),
        ({"temperature": -1.0}, "temperature"),
    ],
)
def test_bad_configs_are_refused_before_use(tmp_path, changes, message):
    with pytest.raises(ModelLoadError, match=message):
        EmotionModel.from_pretrained(_saved(tmp_path, **changes))


def test_missing_or_corrupt_files_are_clear_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="neither a model folder nor a Hub repo id"):
        EmotionModel.from_pretrained(tmp_path / "nowhere" / "deep")
    _saved(tmp_path)
    (tmp_path / WEIGHTS_NAME).write_bytes(b"not safetensors")
    with pytest.raises(ModelLoadError, match="cannot read the weights"):
        EmotionModel.from_pretrained(tmp_path)


def test_unreachable_hub_repo_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="could not download 'nobody/no-such-model'"):
        EmotionModel.from_pretrained("nobody/no-such-model")


def test_hub_repo_id_loads_through_the_hub_cache(tmp_path, monkeypatch, angry_clip):
    """A repo id goes through huggingface_hub.snapshot_download; here it resolves to a local folder."""
    model_dir = tmp_path / "snapshot"
    MelCNN(MelCNNConfig(hidden=32)).save_pretrained(model_dir)
    calls = []

    def fake_snapshot_download(repo_id, allow_patterns):
        calls.append((repo_id, allow_patterns))
        return str(model_dir)

    monkeypatch.setattr("huggingface_hub.snapshot_download", fake_snapshot_download)
    recognizer = EmotionRecognizer.from_pretrained("someone/ser-cnn")
    assert calls == [("someone/ser-cnn", [CONFIG_NAME, WEIGHTS_NAME, ONNX_NAME, "ensemble.json", "*.md"])]
    assert recognizer.config.hidden == 32
    assert np.isclose(sum(recognizer.predict_file(angry_clip).values()), 1)


def test_hub_ensemble_repo_loads_its_bundled_members(tmp_path, monkeypatch):
    import json

    from ser_models.scorers import ENSEMBLE_NAME, EnsembleScorer

    (tmp_path / ENSEMBLE_NAME).write_text(json.dumps({"members": {"mel-cnn": 0.5, "mfcc-mlp": 0.5}}))
    monkeypatch.setattr("huggingface_hub.snapshot_download", lambda repo_id, allow_patterns: str(tmp_path))
    scorer = EmotionRecognizer.from_pretrained("someone/ser-ensemble").scorer
    assert isinstance(scorer, EnsembleScorer) and set(scorer.members) == {"mel-cnn", "mfcc-mlp"}


def test_no_pickle_in_bundled_weights():
    from ser_models.registry import WEIGHTS_DIR
    from ser_models.whisper import ENCODER_ONNX_PATH

    folders = sorted(p for p in WEIGHTS_DIR.iterdir() if p.is_dir() and p != ENCODER_ONNX_PATH.parent)
    assert [f.name for f in folders] == sorted(MODELS)
    assert [p.name for p in ENCODER_ONNX_PATH.parent.iterdir()] == [ENCODER_ONNX_PATH.name]  # protobuf
    for folder in folders:
        # model.onnx: the onnxruntime export served by default (protobuf, no pickle either).
        assert sorted(p.name for p in folder.iterdir()) == [CONFIG_NAME, "model.onnx", WEIGHTS_NAME]


def test_reversed_within_reverses_only_the_speech_steps():
    sequence = torch.arange(2 * 5, dtype=torch.float32).reshape(2, 5, 1)
    reversed_ = reversed_within(sequence, torch.tensor([3, 5]))
    assert reversed_[:, :, 0].tolist() == [[2, 1, 0, 3, 4], [9, 8, 7, 6, 5]]
    assert torch.equal(reversed_within(reversed_, torch.tensor([3, 5])), sequence)


def test_crnn_speech_states_do_not_depend_on_the_padding_that_follows():
    torch.manual_seed(0)
    model = MelCRNN().eval()
    frames = torch.randn(2, 12, model.config.rnn_hidden)
    valid = torch.tensor([7, 12])
    padded = torch.cat([frames, torch.randn(2, 13, model.config.rnn_hidden)], dim=1)  # serving's longer tail
    with torch.inference_mode():
        short, long = model.recurrent_states(frames, valid), model.recurrent_states(padded, valid)
    for b, n in enumerate(valid.tolist()):
        assert torch.allclose(short[b, :n], long[b, :n], atol=1e-6)


def test_without_torch_a_folder_without_its_export_is_refused_with_the_fix(tmp_path, monkeypatch):
    from ser_models import runtime

    MelCNN(MelCNNConfig(hidden=16)).save_pretrained(tmp_path)
    monkeypatch.setattr(runtime, "torch_available", lambda: False)
    with pytest.raises(runtime.BackendError, match="has no model.onnx made from its weights.*export-onnx"):
        EmotionRecognizer.from_pretrained(tmp_path)
    with pytest.raises(runtime.BackendError, match="the torch backend needs PyTorch"):
        EmotionRecognizer.from_pretrained("mel-cnn", backend="torch")
    assert EmotionRecognizer.from_pretrained("mel-cnn").backend == "onnx"  # a bundled model ships its export
