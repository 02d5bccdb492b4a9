"""The evaluation's pictures as PNGs: the confusion matrix and a swept parameter's curves.

matplotlib (the ``eval`` extra) is imported inside the functions that draw. Korean labels
need a CJK font: one installed after matplotlib built its font cache (``apt-get install
fonts-nanum``) is found on disk and added at run time, no cache to delete.
"""

from __future__ import annotations

import contextlib
import logging
import re
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from qroute.evaluation.metrics import EvalResult

__all__ = ["cjk_font", "plot_confusion", "plot_curve", "plot_reliability"]

log = logging.getLogger(__name__)

# Families matplotlib may know already, best first.
_KNOWN = ("NanumGothic", "Noto Sans CJK KR", "Noto Sans KR", "UnDotum", "Malgun Gothic")
# Font files to look for on disk when the font cache knows none of them.
_FILES = re.compile(r"nanum|notosanscjk|notoserifcjk|notosanskr|undotum|malgun", re.IGNORECASE)
_HANGUL = re.compile(r"[\u1100-\u11ff\u3130-\u318f\uac00-\ud7af]")
_INSTALL = (
    "no CJK font found, so Hangul in the plots renders as empty boxes: install one "
    "(Debian/Ubuntu: apt-get install fonts-nanum, or fonts-noto-cjk)"
)

# The confusion matrix's tick labels are drawn up to this many columns, its counts up to
# _COUNTED; past _TICKED the figure stops growing, since it grew 0.45 inch per label and a
# table of a few hundred labels asked for gigabytes of pixels (1,500: killed).
_TICKED, _COUNTED = 40, 30

_found: list[str | None] = []  # the one look per process: [family or None]
_warned: list[bool] = []


def cjk_font() -> str | None:
    """The family name of a CJK font matplotlib can use, or None. Looks in matplotlib's
    font cache, then for Nanum / Noto CJK font files on disk, which it adds."""
    if _found:
        return _found[0]
    from matplotlib import font_manager

    manager = font_manager.fontManager
    installed = {font.name for font in manager.ttflist}
    family = next((name for name in _KNOWN if name in installed), None)
    if family is None:
        added = []
        for path in sorted(font_manager.findSystemFonts()):
            if not _FILES.search(Path(path).name):
                continue
            try:
                manager.addfont(path)
                added.append(font_manager.FontProperties(fname=path).get_name())
            except (OSError, RuntimeError, ValueError):  # a broken font file: the next one
                continue
        family = next((name for name in _KNOWN if name in added), added[0] if added else None)
    _found.append(family)
    return family


def _pyplot(texts: Iterable[str]) -> tuple[Any, AbstractContextManager[Any]]:
    """pyplot with a CJK font when there is one, and the context to draw in: without one,
    where ``texts`` hold Hangul, one warning says what to install, and matplotlib's own
    warning per missing glyph is left out (the plot is still right, its labels boxes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    family = cjk_font()
    if family is not None:
        plt.rcParams["font.family"] = [family, "DejaVu Sans"]
        return plt, nullcontext()
    if not any(_HANGUL.search(text) for text in texts):
        return plt, nullcontext()
    if not _warned:
        log.warning(_INSTALL)
        _warned.append(True)
    return plt, _without_glyph_warnings()


@contextlib.contextmanager
def _without_glyph_warnings() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        yield


def _save(figure: Any, path: str | Path) -> None:
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def plot_confusion(result: EvalResult, path: str | Path) -> Path:
    """The confusion matrix (rows: truth; columns: prediction, ``(none)`` for NO_MATCH)
    as a PNG: counts in the cells, a colour bar, the accuracy in the title."""
    columns = result.confusion_labels
    rows = columns[: len(result.confusion)]
    plt, drawing = _pyplot(columns)
    with drawing:
        width = max(5.0, 0.45 * min(len(columns), _TICKED) + 3)
        height = max(4.0, 0.45 * min(len(rows), _TICKED) + 2.5)
        figure, axes = plt.subplots(figsize=(width, height))
        if not result.confusion:
            # Every row out of scope (a refusal test set): no true label to draw a row
            # for; imshow would refuse the empty matrix.
            axes.text(0.5, 0.5, "no in-scope rows", ha="center", va="center")
            axes.set_axis_off()
            axes.set_title(f"Confusion matrix: {result.n} rows, all out of scope")
            _save(figure, path)
            plt.close(figure)
            return Path(path)
        image = axes.imshow(result.confusion, cmap="Blues", aspect="auto")
        figure.colorbar(image, ax=axes, label="rows")
        if len(columns) <= _TICKED:
            # Labels as written: matplotlib would read the text between two "$" as
            # mathtext, and fail on a label such as "$_$".
            axes.set_xticks(range(len(columns)), columns, rotation=45, ha="right", parse_math=False)
            axes.set_yticks(range(len(rows)), rows, parse_math=False)
        if len(columns) <= _COUNTED:
            peak = max((max(row) for row in result.confusion if row), default=0)
            for i, row in enumerate(result.confusion):
                for j, count in enumerate(row):
                    if count:
                        colour = "white" if count > peak / 2 else "black"
                        axes.text(j, i, str(count), ha="center", va="center", color=colour)
        axes.set_xlabel("predicted label")
        axes.set_ylabel("true label")
        axes.set_title(
            f"Confusion matrix: {result.n} rows, accuracy {result.accuracy:.3f}, "
            f"macro-F1 {result.macro_f1:.3f}"
        )
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
    title: str | None = None,
    ylabel: str = "share of rows",
) -> Path:
    """Several metrics against one swept parameter, as a PNG."""
    plt, drawing = _pyplot([*series, xlabel, title or ""])
    with drawing:
        figure, axes = plt.subplots(figsize=(7, 4.5))
        for name, values in series.items():
            axes.plot(list(x), list(values), label=name)
        if mark is not None:
            axes.axvline(mark, color="grey", linestyle="--", label=f"chosen {mark:.3f}")
        axes.set_xlabel(xlabel)
        axes.set_ylabel(ylabel)
        axes.set_title(title or f"Metrics against {xlabel}")
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
    plt, drawing = _pyplot([])
    with drawing:
        figure, axes = plt.subplots(figsize=(5, 5))
        axes.plot([0, 1], [0, 1], color="grey", linestyle="--", label="calibrated")
        if bins:
            confidence, accuracy, _ = zip(*bins, strict=True)
            axes.plot(confidence, accuracy, marker="o", label="answers")
            for x, y, n in bins:
                axes.annotate(
                    str(n), (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7
                )
        axes.set_xlim(0, 1)
        axes.set_ylim(0, 1.01)
        axes.set_xlabel("confidence")
        axes.set_ylabel("accuracy")
        axes.set_title(f"Reliability (ECE {ece:.3f})")
        axes.grid(alpha=0.3)
        axes.legend()
        _save(figure, path)
        plt.close(figure)
    return Path(path)
