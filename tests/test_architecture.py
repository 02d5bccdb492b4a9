"""Dependency rules (pyproject's [tool.importlinter]) and the public surface."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import qroute

ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_hold() -> None:
    lint = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_exported_members() -> None:
    assert sorted(qroute.__all__) == [
        "Classifier",
        "Decision",
        "Example",
        "Hit",
        "LabelScore",
        "Prediction",
        "Settings",
        "load_settings",
    ]
