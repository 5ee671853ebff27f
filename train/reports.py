"""Where the experiments' outputs go and how they are written: one place for every script in train/."""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REPORTS_DIR = ROOT / "reports"  # figures and JSON the cards are built from (committed)
RUNS_DIR = ROOT / "runs"  # caches and saved fold models (not committed)


def command_line(module: str, argv: Sequence[str] | None) -> str:
    """The command that reproduces this run, as written into its report."""
    return _python_command(["-m", module], argv)


def script_command(script: str, argv: Sequence[str] | None = None) -> str:
    """``command_line`` for a script run by path, such as the benchmarks: ``python bench/speed.py ...``."""
    return _python_command([script], argv)


def _python_command(target: list[str], argv: Sequence[str] | None) -> str:
    return shlex.join(["python", *target, *(argv if argv is not None else sys.argv[1:])])


def write_report(report: dict, path: Path) -> Path:
    """``report`` as indented JSON at ``path`` (folders made as needed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}", file=sys.stderr)
    return path
