from __future__ import annotations

from pathlib import Path

import pytest

from qroute.evaluation.metrics import metrics
from qroute.evaluation.plots import plot_confusion, plot_curve


def test_metrics_match_hand_computed_values() -> None:
    truth = ["a", "a", "a", "b", "b", "oos", "oos", "oos"]
    predicted = ["a", "a", "b", "b", None, None, "a", None]
    paths = ["KNN", "KNN", "KNN", "ZERO_SHOT", "NO_MATCH", "NO_MATCH", "KNN", "NO_MATCH"]
    result = metrics(truth, predicted, paths, oos_label="oos", latencies_s=[0.001] * 8)

    assert result.accuracy == pytest.approx(5 / 8)  # a, a, b, and two of three oos
    assert result.in_scope_accuracy == pytest.approx(3 / 5)
    assert result.coverage == pytest.approx(5 / 8)
    assert result.oos_recall == pytest.approx(2 / 3)
    assert result.oos_precision == pytest.approx(2 / 3)  # unanswered: b-row, oos, oos
    # a: tp 2, fp 1 (an oos row), fn 1 -> p 2/3, r 2/3; b: tp 1, fp 1, fn 1 -> p 1/2, r 1/2
    assert result.per_label["a"].precision == pytest.approx(2 / 3)
    assert result.per_label["a"].recall == pytest.approx(2 / 3)
    assert result.per_label["b"].f1 == pytest.approx(0.5)
    assert result.macro_f1 == pytest.approx((2 / 3 + 0.5) / 2)
    assert result.per_path["KNN"] == pytest.approx({"share": 4 / 8, "accuracy": 2 / 4})
    assert result.per_path["NO_MATCH"] == pytest.approx({"share": 3 / 8, "accuracy": 2 / 3})
    assert result.confusion_labels == ["a", "b", "(none)"]
    assert result.confusion == [[2, 1, 0], [0, 1, 1]]
    assert result.latency_ms["p50"] == pytest.approx(1.0)
    assert "in-scope accuracy 0.6000" in result.render()


def test_plots_are_valid_pngs(tmp_path: Path) -> None:
    from PIL import Image

    result = metrics(["금융", "영화"], ["금융", None], ["KNN", "NO_MATCH"])
    paths = [
        plot_confusion(result, tmp_path / "confusion.png"),
        plot_curve([0.1, 0.5, 0.9], {"accuracy": [0.9, 0.8, 0.5]}, tmp_path / "c.png", xlabel="t"),
    ]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(path) as image:
            image.verify()
            assert image.size[0] > 100


def test_the_per_label_table_lines_up_korean_labels_by_display_width() -> None:
    from qroute.types import display_width

    labels = ["금융", "영화 리뷰", "weather", "스포츠"]
    result = metrics(labels, labels, ["KNN"] * 4)
    lines = result.render().splitlines()
    table = lines[lines.index(next(l for l in lines if l.startswith("label"))) :]
    # Where "precision"'s column ends, in terminal columns, on every line.
    ends = {display_width(line[: line.index(" 1.0000") + 7]) for line in table[1:]}
    assert len(ends) == 1, table
    assert display_width(table[0][: table[0].index("precision") + 9]) in ends
