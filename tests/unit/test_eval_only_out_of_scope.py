"""``qroute eval`` on rows that are all out of scope (measuring how many the router
refuses) writes its report and pictures: the confusion matrix has no in-scope row to
draw, which is a picture that says so, not a matplotlib traceback."""

from __future__ import annotations

from pathlib import Path

from qroute.evaluation.metrics import metrics
from qroute.evaluation.plots import plot_confusion


def test_a_confusion_matrix_without_in_scope_rows_is_still_drawn(tmp_path: Path) -> None:
    result = metrics(["oos", "oos"], [None, "a"], ["NO_MATCH", "KNN"], oos_label="oos")
    assert result.confusion == [] and result.oos_recall == 0.5
    path = plot_confusion(result, tmp_path / "confusion.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
