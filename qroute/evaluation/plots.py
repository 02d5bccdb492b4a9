"""The evaluation's pictures as PNGs: the confusion matrix and a swept parameter's curves.

matplotlib (the ``eval`` extra) is imported inside the functions that draw.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from qroute.evaluation.metrics import EvalResult

__all__ = ["plot_confusion", "plot_curve", "plot_reliability"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import font_manager

    # Korean labels need a CJK font; use one when the machine has it.
    installed = {font.name for font in font_manager.fontManager.ttflist}
    for name in ("NanumGothic", "Noto Sans CJK KR", "Noto Sans KR", "UnDotum", "Malgun Gothic"):
        if name in installed:
            plt.rcParams["font.family"] = name
            break
    return plt


def _save(figure: Any, path: str | Path) -> None:
    import warnings

    with warnings.catch_warnings():
        # Without a CJK font, Hangul labels render as boxes: the plot is still right.
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        figure.tight_layout()
        figure.savefig(path, dpi=100)


def plot_confusion(result: EvalResult, path: str | Path) -> Path:
    """The confusion matrix (rows: truth; columns: prediction) as a PNG."""
    plt = _pyplot()
    rows = result.confusion_labels[: len(result.confusion)]
    size = max(4.0, 0.3 * len(result.confusion_labels) + 2)
    figure, axes = plt.subplots(figsize=(size, size * len(rows) / len(result.confusion_labels) + 1))
    axes.imshow(result.confusion, cmap="Blues", aspect="auto")
    if len(result.confusion_labels) <= 40:
        axes.set_xticks(range(len(result.confusion_labels)), result.confusion_labels, rotation=90)
        axes.set_yticks(range(len(rows)), rows)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(f"confusion (accuracy {result.accuracy:.3f})")
    _save(figure, path)
    plt.close(figure)
    return Path(path)


def plot_curve(
    x: Sequence[float],
    series: Mapping[str, Sequence[float]],
    path: str | Path,
    *,
    xlabel: str,
    mark: float | None = None,
) -> Path:
    """Several metrics against one swept parameter, as a PNG."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for name, values in series.items():
        axes.plot(list(x), list(values), label=name)
    if mark is not None:
        axes.axvline(mark, color="grey", linestyle="--", label=f"chosen {mark:.3f}")
    axes.set_xlabel(xlabel)
    axes.set_ylim(0, 1.01)
    axes.grid(alpha=0.3)
    axes.legend()
    _save(figure, path)
    plt.close(figure)
    return Path(path)


def plot_reliability(
    bins: Sequence[tuple[float, float, int]], ece: float, path: str | Path
) -> Path:
    """The reliability diagram: per confidence bin (mean confidence, accuracy, rows),
    accuracy against confidence beside the diagonal of perfect calibration, as a PNG."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(5, 5))
    axes.plot([0, 1], [0, 1], color="grey", linestyle="--", label="calibrated")
    if bins:
        confidence, accuracy, _ = zip(*bins, strict=True)
        axes.plot(confidence, accuracy, marker="o", label="answers")
        for x, y, n in bins:
            axes.annotate(str(n), (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7)
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.01)
    axes.set_xlabel("confidence")
    axes.set_ylabel("accuracy")
    axes.set_title(f"reliability (ECE {ece:.3f})")
    axes.grid(alpha=0.3)
    axes.legend()
    _save(figure, path)
    plt.close(figure)
    return Path(path)
