"""router.calibration refuses a knot whose score is not a finite number, naming the
setting: a NaN or infinite score passes every "increasing" comparison and turns the
interpolated confidence into NaN (or a flat line) for the answers it covers."""

from __future__ import annotations

from pathlib import Path

import pytest

from qroute.config import load_settings
from qroute.errors import ConfigError


@pytest.mark.parametrize("score", [".nan", ".inf", "-.inf"])
def test_a_calibration_score_must_be_finite(tmp_path: Path, score: str) -> None:
    path = tmp_path / "qroute.yaml"
    knots = f"[[{score}, 0.5], [0.5, 0.6]]" if score != ".inf" else f"[[0.1, 0.5], [{score}, 0.6]]"
    path.write_text(f"router:\n  calibration:\n    knn: {knots}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"router\.calibration.*calibration\.knn.*finite"):
        load_settings(path)
