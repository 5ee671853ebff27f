"""Upload a trained model (weights, config and model card) to the Hugging Face Hub.

    python -m train.push --repo-id USER/NAME                    # the default whisper-cnn (ensemble.json)
    python -m train.push --repo-id USER/NAME --model mel-cnn    # any bundled model or model folder
    python -m train.push --repo-id USER/NAME --dry-run          # write the folder, upload nothing

Authentication is huggingface_hub's: ``HF_TOKEN`` or ``hf auth login``. An ensemble is its
``ensemble.json``: its members are bundled model names, so it loads wherever ser_models is installed.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from huggingface_hub import HfApi

from ser_models.inference import DEFAULT_MODEL, ENSEMBLE_NAME, WEIGHTS_DIR, EnsembleRecognizer
from ser_models.models import CONFIG_NAME, WEIGHTS_NAME, EmotionModel, ModelLoadError
from train.reports import ROOT

MODEL_CARD = ROOT / "model_card.md"


def stage(model_dir: Path, destination: Path) -> list[Path]:
    """Copy exactly what is uploaded into ``destination``: weights, config (or an ensemble's
    ensemble.json), model card as README.md."""
    ensemble = (model_dir / ENSEMBLE_NAME).is_file()
    # Refuse to publish a model that does not load.
    EnsembleRecognizer.from_folder(model_dir) if ensemble else EmotionModel.from_pretrained(model_dir)
    if destination.exists():
        shutil.rmtree(destination)
    destination.mkdir(parents=True)
    for name in (ENSEMBLE_NAME,) if ensemble else (CONFIG_NAME, WEIGHTS_NAME):
        shutil.copy2(model_dir / name, destination / name)
    shutil.copy2(MODEL_CARD, destination / "README.md")
    return sorted(destination.iterdir())


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
    try:
        files = stage(model_dir, args.output)
    except (ModelLoadError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"staged {len(files)} files in {args.output}:")
    for path in files:
        print(f"  {path.name}  ({path.stat().st_size:,} bytes)")
    if args.dry_run:
        print(f"dry run: nothing uploaded to {args.repo_id}")
        return 0
    api = api or HfApi()
    try:
        api.create_repo(args.repo_id, repo_type="model", private=args.private, exist_ok=True)
        commit = api.upload_folder(
            repo_id=args.repo_id,
            folder_path=args.output,
            repo_type="model",
            commit_message=f"Upload {model_dir.name} weights, config and model card",
        )
    except Exception as error:  # network, auth and permission errors all end the same way
        print(f"error: upload to {args.repo_id} failed: {error}", file=sys.stderr)
        return 1
    print(f"uploaded to {getattr(commit, 'commit_url', args.repo_id)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
