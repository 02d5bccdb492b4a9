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


def test_latency_percentiles_are_not_read_one_rank_high() -> None:
    # Two requests of 1 ms and 3 ms: the median is 2 ms, not the slower one.
    result = metrics(["a", "a"], ["a", "a"], ["KNN", "KNN"], latencies_s=[0.001, 0.003])
    assert result.latency_ms["p50"] == pytest.approx(2.0)
    assert result.latency_ms["p99"] == pytest.approx(2.98)


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
    table = lines[lines.index(next(x for x in lines if x.startswith("label"))) :]
    # Where "precision"'s column ends, in terminal columns, on every line.
    ends = {display_width(line[: line.index(" 1.0000") + 7]) for line in table[1:]}
    assert len(ends) == 1, table
    assert display_width(table[0][: table[0].index("precision") + 9]) in ends


@pytest.fixture
def fresh_font_look(monkeypatch: pytest.MonkeyPatch) -> None:
    from qroute.evaluation import plots

    monkeypatch.setattr(plots, "_found", [])
    monkeypatch.setattr(plots, "_warned", [])


def test_a_cjk_font_file_unknown_to_the_font_cache_is_found_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_font_look: None
) -> None:
    """fonts-nanum installed after matplotlib built its cache: the file is added at run
    time. (A copy of matplotlib's own DejaVu font stands in for NanumGothic.ttf.)"""
    import matplotlib
    from matplotlib import font_manager

    from qroute.evaluation import plots

    font = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSansMono.ttf"
    nanum = tmp_path / "NanumGothic.ttf"
    nanum.write_bytes(font.read_bytes())
    monkeypatch.setattr(
        font_manager.fontManager,
        "ttflist",
        [f for f in font_manager.fontManager.ttflist if f.name not in plots._KNOWN],
    )
    monkeypatch.setattr(font_manager, "findSystemFonts", lambda: [str(font), str(nanum)])
    assert plots.cjk_font() == "DejaVu Sans Mono"
    assert str(nanum) in {f.fname for f in font_manager.fontManager.ttflist}


def test_without_a_cjk_font_one_warning_names_the_package(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    fresh_font_look: None,
) -> None:
    from qroute.evaluation import plots

    monkeypatch.setattr(plots, "_found", [None])
    result = metrics(["금융", "영화"], ["금융", None], ["KNN", "NO_MATCH"])
    plot_confusion(result, tmp_path / "a.png")
    plot_confusion(result, tmp_path / "b.png")
    warned = [r for r in caplog.records if "fonts-nanum" in r.getMessage()]
    assert len(warned) == 1
    # ASCII labels need no CJK font: no warning for them.
    caplog.clear()
    monkeypatch.setattr(plots, "_warned", [])
    plot_curve([0.1, 0.9], {"accuracy": [0.9, 0.5]}, tmp_path / "c.png", xlabel="t")
    assert not caplog.records


def test_every_plot_has_a_title_and_axis_labels_and_the_matrix_counts_and_a_colour_bar(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from qroute.evaluation import plots

    drawn: list[object] = []
    save = plots._save
    monkeypatch.setattr(
        plots, "_save", lambda figure, path: (drawn.append(figure), save(figure, path))
    )
    result = metrics(["금융", "금융", "영화"], ["금융", "영화", None], ["KNN", "KNN", "NO_MATCH"])
    plot_confusion(result, tmp_path / "confusion.png")
    plot_curve([0.1, 0.9], {"accuracy": [0.9, 0.5]}, tmp_path / "c.png", xlabel="threshold")
    confusion, curve = drawn
    matrix, bar = confusion.axes  # type: ignore[attr-defined]
    for axes in (matrix, curve.axes[0]):  # type: ignore[attr-defined]
        assert axes.get_title() and axes.get_xlabel() and axes.get_ylabel()
    assert bar.get_ylabel() == "rows"
    assert sorted(t.get_text() for t in matrix.texts) == ["1", "1", "1"]  # the non-zero cells
    assert {t.get_rotation() for t in matrix.get_xticklabels()} == {45.0}
