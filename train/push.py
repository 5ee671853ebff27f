"""Upload a trained model (weights, config, model card and evaluation results) to the Hugging Face Hub.

    python -m train.push --repo-id USER/NAME                    # the default model (whisper-layers)
    python -m train.push --repo-id USER/NAME --model mel-cnn    # any bundled model or model folder
    python -m train.push --repo-id USER/NAME --dry-run          # write the folder, upload nothing

Authentication is huggingface_hub's: ``HF_TOKEN`` or ``hf auth login``. An ensemble is its
``ensemble.json``: its members are bundled model names, so it loads wherever ser_models is installed.
A bundled model's evaluation results (``.eval_results/<model>/ravdess.yaml``, written by ``python -m
train.cards`` from reports/) go up as the Hub's ``.eval_results/ravdess.yaml``, in the same commit as the
weights and card; a model folder from elsewhere has none, since those figures are not its own.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from huggingface_hub import CommitOperationAdd, HfApi

from ser_models.configs import CONFIG_NAME, ONNX_NAME, WEIGHTS_NAME, ModelLoadError, load_config
from ser_models.export import save_onnx
from ser_models.models import EmotionModel
from ser_models.registry import DEFAULT_MODEL, WEIGHTS_DIR
from ser_models.runtime import shipped_network
from ser_models.scorers import ENSEMBLE_NAME, EnsembleScorer
from train.reports import ROOT

MODEL_CARD = ROOT / "model_card.md"
EVAL_RESULTS_DIR = ROOT / ".eval_results"  # train.cards.EVAL_RESULTS_DIR: one folder of *.yaml per bundled model
HUB_EVAL_RESULTS = ".eval_results"  # huggingface_hub.constants.EVAL_RESULTS_FOLDER


def eval_results_for(model_dir: Path) -> Path | None:
    """The folder of evaluation results written for a bundled model, None for any other model folder."""
    if model_dir.resolve().parent != WEIGHTS_DIR.resolve():
        return None
    folder = EVAL_RESULTS_DIR / model_dir.name
    return folder if folder.is_dir() else None


def stage(model_dir: Path, destination: Path, eval_results: Path | None = None) -> list[Path]:
    """Copy exactly what is uploaded into ``destination``: weights, config and the ONNX export that
    serving runs without torch (or an ensemble's ensemble.json), model card as README.md, and
    ``eval_results``'s YAML files into .eval_results/."""
    ensemble = (model_dir / ENSEMBLE_NAME).is_file()
    # Refuse to publish a model that does not load.
    EnsembleScorer.from_folder(model_dir) if ensemble else EmotionModel.from_pretrained(model_dir)
    if destination.exists():
        shutil.rmtree(destination)
    destination.mkdir(parents=True)
    for name in (ENSEMBLE_NAME,) if ensemble else (CONFIG_NAME, WEIGHTS_NAME):
        shutil.copy2(model_dir / name, destination / name)
    if not ensemble:
        if shipped_network(model_dir, load_config(model_dir)) is not None:
            shutil.copy2(model_dir / ONNX_NAME, destination / ONNX_NAME)
        else:  # none, or made from other weights: export the weights being pushed
            save_onnx(destination)
    shutil.copy2(MODEL_CARD, destination / "README.md")
    if eval_results is not None:
        (destination / HUB_EVAL_RESULTS).mkdir()
        for path in sorted(eval_results.glob("*.yaml")):
            shutil.copy2(path, destination / HUB_EVAL_RESULTS / path.name)
    return sorted(path for path in destination.rglob("*") if path.is_file())


def main(argv: list[str] | None = None, api: HfApi | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m train.push", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repo-id", required=True, help="Hub model repo, USER/NAME")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="bundled model name or a model folder")
    parser.add_argument("--output", type=Path, default=ROOT / "build" / "hub", help="staging folder")
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--dry-run", action="store_true", help="stage the folder and stop")
    args = parser.parse_args(argv)

    model_dir = WEIGHTS_DIR / args.model if (WEIGHTS_DIR / args.model).is_dir() else Path(args.model)
    eval_results = eval_results_for(model_dir)
    try:
        files = stage(model_dir, args.output, eval_results)
    except (ModelLoadError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"staged {len(files)} files in {args.output}:")
    for path in files:
        print(f"  {path.relative_to(args.output).as_posix()}  ({path.stat().st_size:,} bytes)")
    if eval_results is None:
        print(f"no evaluation results staged: none written for {model_dir} in {EVAL_RESULTS_DIR}")
    if args.dry_run:
        print(f"dry run: nothing uploaded to {args.repo_id}")
        return 0
    api = api or HfApi()
    try:
        api.create_repo(args.repo_id, repo_type="model", private=args.private, exist_ok=True)
        # One explicit commit: upload_folder may split a slow upload into several commits.
        commit = api.create_commit(
            repo_id=args.repo_id,
            repo_type="model",
            operations=[
                CommitOperationAdd(path_in_repo=path.relative_to(args.output).as_posix(), path_or_fileobj=str(path))
                for path in files
            ],
            commit_message=f"Upload {model_dir.name} weights, config"
            + (", model card and evaluation results" if eval_results is not None else " and model card"),
        )
    except Exception as error:  # network, auth and permission errors all end the same way
        print(f"error: upload to {args.repo_id} failed: {error}", file=sys.stderr)
        return 1
    print(f"uploaded to {getattr(commit, 'commit_url', args.repo_id)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
