"""A model folder named by --model, SER_*_MODEL or a Hub repo is untrusted input: every bad value in it
ends as a ModelLoadError before anything is allocated, never another exception, NaN answers or gigabytes."""

import json
import math
import resource
import shutil
import sys
import warnings
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from ser_models import EmotionRecognizer, ModelLoadError
from ser_models.audio import UnreadableAudioError
from ser_models.configs import CONFIG_NAME, WEIGHTS_NAME, load_config
from ser_models.labels import EMOTIONS
from ser_models.models import EmotionModel
from ser_models.registry import WEIGHTS_DIR
from ser_models.scorers import ENSEMBLE_NAME, EnsembleScorer

NAN, INF = math.nan, math.inf
MAX_EXTRA_MEMORY = 300 * 2**20  # a refused model costs far less; the configs below asked for 4 to 60 GB


def model_copy(tmp_path: Path, name: str, **changes) -> Path:
    """A copy of a bundled model folder with ``changes`` made to its config.json."""
    folder = tmp_path / name
    shutil.copytree(WEIGHTS_DIR / name, folder)
    config = json.loads((folder / CONFIG_NAME).read_text())
    (folder / CONFIG_NAME).write_text(json.dumps({**config, **changes}))
    return folder


def peak_memory() -> int:
    """This process's peak resident memory in bytes (ru_maxrss is KiB on Linux, bytes on macOS)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def assert_refused_cheaply(load, match: str) -> None:
    before = peak_memory()
    with pytest.raises(ModelLoadError, match=match):
        load()
    assert peak_memory() - before < MAX_EXTRA_MEMORY


@pytest.mark.parametrize(
    ("name", "changes", "message"),
    [
        ("mel-cnn", {"hidden": 1_000_000}, "hidden must be 0 to 4096"),  # was 4.3 GB
        ("mel-cnn", {"hidden": True}, "hidden must be int"),
        ("mel-cnn", {"hidden": 12.5}, "hidden must be int"),
        ("mel-cnn", {"channels": [1024] * 7}, "channels must have 1 to 6 entries"),
        ("mel-cnn", {"channels": []}, "channels must have 1 to 6 entries"),
        ("mel-cnn", {"channels": [32, 64, 128, 100_000]}, "channels must be 1 to 1024"),
        ("mel-cnn", {"channels": [32, 64, 128, "256"]}, "channels must be a list of int"),
        ("mel-cnn", {"channels": [32, 64, 128, False]}, "channels must be a list of int"),
        ("mel-cnn", {"channels": 256}, "channels must be a list of int"),
        ("mel-cnn", {"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
        ("mel-cnn", {"dropout": NAN}, "dropout must be"),
        ("mel-cnn", {"top_db": NAN}, "top_db must be"),  # was an IndexError at predict time
        ("mel-cnn", {"top_db": INF}, "top_db must be"),
        ("mel-cnn", {"top_db": 0}, "top_db must be"),
        ("mel-cnn", {"temperature": 0}, "temperature must be"),
        ("mel-cnn", {"temperature": -1}, "temperature must be"),
        ("mel-cnn", {"temperature": NAN}, "temperature must be"),
        ("mel-cnn", {"temperature": 1e308}, "temperature must be"),
        ("mel-cnn", {"temperature": True}, "temperature must be float"),
        ("mel-cnn", {"normalization": "none"}, "normalization must be one of"),
        ("mel-cnn", {"pooling": "max"}, "pooling must be one of"),
        ("mel-cnn", {"labels": list(reversed(EMOTIONS))}, "labels must be the 8 RAVDESS emotions"),
        ("mfcc-mlp", {"members": 100_000}, "members must be 1 to 32"),  # was 12 GB
        ("mfcc-mlp", {"members": 0}, "members must be 1 to 32"),
        ("mfcc-mlp", {"hidden": [100_000, 128]}, "hidden must be 0 to 4096"),
        ("mfcc-mlp", {"hidden": [16] * 9}, "hidden must have 0 to 8 entries"),
        ("mfcc-mlp", {"input_noise": NAN}, "input_noise must be"),
        ("whisper-layers", {"n_features": 1e9}, "n_features must be int"),
        ("whisper-layers", {"n_features": 10**9}, "n_features must be 1 to 65536"),  # was 32 GB
        ("whisper-layers", {"pad_seconds": 1e6}, "pad_seconds must be"),  # was 59.6 GiB at predict time
        ("whisper-layers", {"pad_seconds": -1}, "pad_seconds must be"),
        ("whisper-layers", {"compute_type": "float16"}, "compute_type must be one of"),
        ("whisper-layers", {"layers": [0, 99]}, "layers must be 0 to 31"),
        ("whisper-layers", {"layers": list(range(32)) + [0]}, "layers must have 0 to 32 entries"),
        ("whisper-layers", {"hidden": -1}, "hidden must be 0 to 4096"),
        ("whisper-layers", {"confidence_threshold": 1.5}, "confidence_threshold must be"),
        ("whisper-layers", {"confidence_threshold": NAN}, "confidence_threshold must be"),
        ("whisper-layers", {"encoder": "x" * 5000}, "encoder must be"),  # was OSError: file name too long
        ("whisper-layers", {"encoder": ""}, "encoder must be"),
    ],
)
def test_hostile_config_values_are_refused_before_anything_is_allocated(tmp_path, name, changes, message):
    folder = model_copy(tmp_path, name, **changes)
    assert_refused_cheaply(lambda: EmotionModel.from_pretrained(folder), message)


def test_a_nan_top_db_is_refused_when_the_recognizer_loads(tmp_path):
    folder = model_copy(tmp_path, "mel-cnn", top_db=NAN)
    assert_refused_cheaply(lambda: EmotionRecognizer.from_pretrained(folder, backend="torch"), "top_db")


@pytest.mark.parametrize(
    ("name", "changes", "message"),
    [
        ("mel-cnn", {"hidden": 4096}, r"head.2.weight is \[128, 1024\], the config implies \[4096, 1024\]"),
        ("mel-cnn", {"channels": [1024] * 6}, "missing blocks.20.weight"),
        ("mfcc-mlp", {"members": 32}, "missing members.10.0.bias"),
        ("mfcc-mlp", {"members": 1}, "unexpected members.1"),
    ],
)
def test_a_config_unlike_its_weights_is_refused_from_the_header_alone(tmp_path, name, changes, message):
    folder = model_copy(tmp_path, name, **changes)
    assert_refused_cheaply(
        lambda: EmotionModel.from_pretrained(folder), f"weights do not match the config: .*{message}"
    )


def test_weights_holding_nan_are_refused(tmp_path):
    folder = model_copy(tmp_path, "mel-cnn")
    state = load_file(folder / WEIGHTS_NAME)
    state["head.2.weight"][0, 0] = NAN
    save_file(state, folder / WEIGHTS_NAME)
    with pytest.raises(ModelLoadError, match="NaN or infinite"):
        EmotionModel.from_pretrained(folder)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"[1, 2]", "must be a JSON object"),
        (b"\xff\xfe\x00garbage", "cannot read the model config"),
        (b"[" * 100_000 + b"]" * 100_000, "cannot read the model config"),  # RecursionError in json
    ],
)
def test_a_config_that_is_not_an_object_is_refused(tmp_path, content, message):
    folder = model_copy(tmp_path, "mel-cnn")
    (folder / CONFIG_NAME).write_bytes(content)
    with pytest.raises(ModelLoadError, match=message):
        EmotionModel.from_pretrained(folder)


# Ensembles ----------------------------------------------------------------------------------------


def ensemble(tmp_path: Path, spec, name: str = "ensemble") -> Path:
    folder = tmp_path / name
    folder.mkdir(exist_ok=True)
    (folder / ENSEMBLE_NAME).write_text(spec if isinstance(spec, str) else json.dumps(spec))
    return folder


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ({".": 1}, "'.' is not a bundled model"),  # was a RecursionError
        ({"..": 1}, "is not a bundled model"),
        ({"../ensemble": 1}, "is not a bundled model"),  # itself again: was OSError, file name too long
        ({"../mfcc-mlp": 1}, "is not a bundled model"),  # a model beside the ensemble, outside its folder
        ({"": 1}, "is not a bundled model"),
        ({"a/../..": 1}, "is not a bundled model"),
        ({"missing-folder": 1}, "is not a bundled model"),
        ({"mel-cnn": NAN}, "weight of 'mel-cnn' must be a number in"),
        ({"mel-cnn": 0}, "weight of 'mel-cnn' must be a number in"),
        ({"mel-cnn": -1}, "weight of 'mel-cnn' must be a number in"),
        ({"mel-cnn": 1e308}, "weight of 'mel-cnn' must be a number in"),
        ({"mel-cnn": True}, "weight of 'mel-cnn' must be a number in"),
        ({"mel-cnn": "heavy"}, "weight of 'mel-cnn' must be a number in"),
        ({f"m{i}": 1 for i in range(100_000)}, "an ensemble has 1 to 8 members, not 100000"),
        ({}, "an ensemble has 1 to 8 members, not 0"),
    ],
)
def test_hostile_ensemble_members_are_refused(tmp_path, members, message):
    model_copy(tmp_path, "mfcc-mlp")
    folder = ensemble(tmp_path, {"members": members})
    assert_refused_cheaply(lambda: EmotionRecognizer.from_pretrained(folder), message)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"temperature": 0}, "temperature must be a number"),
        ({"temperature": -1}, "temperature must be a number"),
        ({"temperature": NAN}, "temperature must be a number"),
        ({"temperature": 1e308}, "temperature must be a number"),
        ({"temperature": "1"}, "temperature must be a number"),
        ({"confidence_threshold": 2}, "confidence_threshold must be a number"),
        ({"confidence_threshold": NAN}, "confidence_threshold must be a number"),
        ({"temprature": 1.0}, r"unknown ensemble keys \['temprature'\]"),
    ],
)
def test_hostile_ensemble_settings_are_refused(tmp_path, extra, message):
    folder = ensemble(tmp_path, {"members": {"mel-cnn": 1.0}, **extra})
    assert_refused_cheaply(lambda: EmotionRecognizer.from_pretrained(folder), message)


@pytest.mark.parametrize("spec", ["[]", '{"members": []}', "[" * 100_000])
def test_an_ensemble_file_of_the_wrong_shape_is_refused(tmp_path, spec):
    with pytest.raises(ModelLoadError, match="not a valid ensemble"):
        EmotionRecognizer.from_pretrained(ensemble(tmp_path, spec))


def test_members_outside_the_ensemble_folder_are_refused(tmp_path, monkeypatch):
    outside = model_copy(tmp_path, "mfcc-mlp")
    folder = ensemble(tmp_path, {"members": {str(outside): 1}})
    with pytest.raises(ModelLoadError, match="is not a bundled model"):
        EmotionRecognizer.from_pretrained(folder)
    (folder / "link").symlink_to(outside, target_is_directory=True)  # a sub-folder that leads outside
    ensemble(tmp_path, {"members": {"link": 1}})
    with pytest.raises(ModelLoadError, match="'link' is not a bundled model"):
        EmotionRecognizer.from_pretrained(folder)
    # A Hub id that is also a folder under the working directory would load that folder.
    monkeypatch.chdir(tmp_path)
    shutil.copytree(outside, tmp_path / "user" / "model")
    ensemble(tmp_path, {"members": {"user/model": 1}})
    with pytest.raises(ModelLoadError, match="'user/model' is not a bundled model"):
        EmotionRecognizer.from_pretrained(folder)


def test_a_member_that_is_itself_an_ensemble_is_refused(tmp_path, monkeypatch):
    folder = ensemble(tmp_path, {"members": {"inner": 1}})
    ensemble(folder, {"members": {"mel-cnn": 1}}, name="inner")
    with pytest.raises(ModelLoadError, match="'inner' is itself an ensemble"):
        EmotionRecognizer.from_pretrained(folder)
    monkeypatch.setattr("huggingface_hub.snapshot_download", lambda repo_id, allow_patterns: str(folder / "inner"))
    ensemble(tmp_path, {"members": {"someone/inner": 1}})
    with pytest.raises(ModelLoadError, match="'someone/inner' is itself an ensemble"):
        EmotionRecognizer.from_pretrained(folder)


def test_bundled_sub_folder_and_hub_members_still_load(tmp_path, monkeypatch):
    hub = model_copy(tmp_path / "hub", "mfcc-mlp")
    monkeypatch.setattr("huggingface_hub.snapshot_download", lambda repo_id, allow_patterns: str(hub))
    folder = ensemble(tmp_path, {"members": {"mel-cnn": 0.5, "mlp": 0.3, "someone/mlp": 0.2}, "temperature": 1.2})
    shutil.copytree(WEIGHTS_DIR / "mfcc-mlp", folder / "mlp")
    recognizer = EmotionRecognizer.from_pretrained(folder, backend="torch")
    assert isinstance(recognizer.scorer, EnsembleScorer)
    assert set(recognizer.scorer.members) == {"mel-cnn", "mlp", "someone/mlp"} and recognizer.temperature == 1.2
    assert recognizer.predict_batch([]) == []


def test_an_ensemble_built_in_code_is_checked_too():
    member = EmotionRecognizer.from_pretrained("mfcc-mlp").scorer
    for weight, temperature in [(NAN, 1.0), (0.0, 1.0), (1.0, 0.0), (1.0, -1.0), (1.0, NAN)]:
        with pytest.raises(ModelLoadError, match="must be in"):
            EnsembleScorer({"mlp": member}, {"mlp": weight}, temperature=temperature)


# ONNX exports -------------------------------------------------------------------------------------


@pytest.fixture
def onnx():
    pytest.importorskip("onnxruntime")
    return pytest.importorskip("onnx")


def stamped(onnx, graph, folder: Path) -> None:
    """Write ``graph`` as the folder's model.onnx, stamped as if exported from the weights beside it."""
    from ser_models import runtime

    del graph.metadata_props[:]
    stamp = {"model_type": "mel-cnn", runtime.WEIGHTS_HASH_KEY: runtime.weights_sha256(folder)}
    onnx.helper.set_model_props(graph, stamp)
    onnx.save_model(graph, folder / runtime.ONNX_NAME)


def assert_exported_again(folder: Path, message: str) -> None:
    from ser_models import runtime

    with pytest.warns(UserWarning, match=message):
        assert runtime.shipped_network(folder, load_config(folder)) is None
    with pytest.warns(UserWarning, match=message):
        recognizer = EmotionRecognizer.from_pretrained(folder, backend="onnx")
    # Exported in memory from the weights (torch is installed here): the export carries no stamp.
    assert recognizer.scorer.network.metadata[runtime.WEIGHTS_HASH_KEY] == ""


def test_bundled_exports_are_still_served(onnx):
    from ser_models import runtime

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in ("mel-cnn", "mfcc-mlp", "whisper-layers"):
            assert runtime.shipped_network(WEIGHTS_DIR / name, load_config(WEIGHTS_DIR / name)) is not None


def test_a_swapped_graph_with_the_right_stamp_is_not_trusted(tmp_path, onnx):
    folder = model_copy(tmp_path, "mel-cnn")
    stamped(onnx, onnx.load(WEIGHTS_DIR / "mfcc-mlp" / "model.onnx"), folder)
    assert_exported_again(folder, "does not map this model's inputs to 8 logits")


# A graph with the right stamp, the right shapes and other weights is served: serving runs the export,
# which is checked against the weights when it is written (export.save_onnx) and, for the bundled
# models, by tests/test_onnx.py. A folder's author controls both files either way.


def test_an_export_with_external_data_is_not_used(tmp_path, onnx):
    from ser_models import runtime

    folder = model_copy(tmp_path, "mfcc-mlp")
    graph = onnx.load(folder / runtime.ONNX_NAME)
    onnx.save_model(graph, folder / runtime.ONNX_NAME, save_as_external_data=True, location="data", size_threshold=0)
    assert (folder / "data").is_file()
    assert_exported_again(folder, "refers to external data")


def test_a_corrupt_export_is_not_used(tmp_path, onnx):
    folder = model_copy(tmp_path, "mel-cnn")
    (folder / "model.onnx").write_bytes(b"\x08\x07not a graph")
    assert_exported_again(folder, "is not a valid ONNX model")


# Inputs -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def recognizer():
    return EmotionRecognizer.from_pretrained("mfcc-mlp")


def test_an_empty_batch_gives_no_predictions(recognizer):
    assert recognizer.predict_batch([]) == []


@pytest.mark.parametrize("path", [None, 3, ["clip.wav"]])
def test_predict_file_without_a_path_is_an_audio_error(recognizer, path):
    with pytest.raises(UnreadableAudioError, match="expected the path of an audio file"):
        recognizer.predict_file(path)
