"""Measure the router on labelled data: the classifier's own decision path, in process.

``metrics`` is pure (hand-checkable); ``evaluate`` runs a Classifier over examples in
batches; ``plot_confusion`` and ``plot_curve`` write PNGs (matplotlib, imported lazily).
"""

from __future__ import annotations

import json
import statistics
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from qroute.routing.classifier import Classifier
from qroute.types import Example, Prediction, Query

__all__ = [
    "EvalResult",
    "LabelMetrics",
    "ZeroShotAlone",
    "evaluate",
    "metrics",
    "plot_confusion",
    "plot_curve",
    "zero_shot_alone",
]


@dataclass(frozen=True, slots=True)
class LabelMetrics:
    precision: float
    recall: float
    f1: float
    support: int


@dataclass
class EvalResult:
    n: int
    accuracy: float  # out-of-scope rows count as right when answered NO_MATCH
    in_scope_accuracy: float
    macro_f1: float  # over the in-scope labels of the data
    coverage: float  # share of rows answered with a label
    oos_precision: float | None
    oos_recall: float | None
    per_label: dict[str, LabelMetrics]
    per_path: dict[str, dict[str, float]]  # path -> share, accuracy
    confusion_labels: list[str]
    confusion: list[list[int]]  # rows: truth, columns: prediction ("(none)" last)
    latency_ms: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, indent=2)

    def render(self) -> str:
        lines = [
            f"rows {self.n}   accuracy {self.accuracy:.4f}   in-scope accuracy "
            f"{self.in_scope_accuracy:.4f}   macro-F1 {self.macro_f1:.4f}   "
            f"coverage {self.coverage:.4f}",
        ]
        if self.oos_recall is not None:
            precision = self.oos_precision or 0.0
            lines.append(f"out-of-scope: precision {precision:.4f}   recall {self.oos_recall:.4f}")
        for path, row in sorted(self.per_path.items()):
            lines.append(f"  {path:<10} share {row['share']:.4f}   accuracy {row['accuracy']:.4f}")
        if self.latency_ms:
            lines.append(
                "latency ms per text (batched): "
                + "   ".join(f"{k} {v:.2f}" for k, v in self.latency_ms.items())
            )
        lines.append(f"{'label':<24} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>8}")
        for label, m in sorted(self.per_label.items()):
            lines.append(
                f"{label:<24} {m.precision:>9.4f} {m.recall:>9.4f} {m.f1:>9.4f} {m.support:>8}"
            )
        return "\n".join(lines)


NONE = "(none)"


def metrics(
    truth: Sequence[str],
    predicted: Sequence[str | None],
    paths: Sequence[str],
    *,
    oos_label: str | None = None,
    latencies_s: Sequence[float] = (),
) -> EvalResult:
    """Scores of ``predicted`` against ``truth`` (None = NO_MATCH). Rows whose truth is
    ``oos_label`` are out of scope: right when not answered."""
    n = len(truth)
    if n == 0:
        raise ValueError("no rows to evaluate")

    def right(t: str, p: str | None) -> bool:
        return p is None if t == oos_label else p == t

    correct = [right(t, p) for t, p in zip(truth, predicted, strict=True)]
    in_scope = [i for i, t in enumerate(truth) if t != oos_label]
    labels = sorted({truth[i] for i in in_scope})
    per_label = {}
    for label in labels:
        tp = sum(1 for t, p in zip(truth, predicted, strict=True) if t == label and p == label)
        fp = sum(1 for t, p in zip(truth, predicted, strict=True) if t != label and p == label)
        fn = sum(1 for t, p in zip(truth, predicted, strict=True) if t == label and p != label)
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_label[label] = LabelMetrics(precision, recall, f1, tp + fn)
    oos_precision = oos_recall = None
    if oos_label is not None and any(t == oos_label for t in truth):
        oos_rows = [i for i, t in enumerate(truth) if t == oos_label]
        unanswered = [i for i, p in enumerate(predicted) if p is None]
        oos_recall = sum(1 for i in oos_rows if predicted[i] is None) / len(oos_rows)
        oos_precision = (
            sum(1 for i in unanswered if truth[i] == oos_label) / len(unanswered)
            if unanswered
            else 0.0
        )
    per_path = {}
    for path, count in Counter(paths).items():
        rows = [i for i, p in enumerate(paths) if p == path]
        per_path[path] = {"share": count / n, "accuracy": sum(correct[i] for i in rows) / count}
    columns = [*labels, *(sorted({p for p in predicted if p is not None} - set(labels))), NONE]
    index = {label: i for i, label in enumerate(columns)}
    confusion = [[0] * len(columns) for _ in labels]
    for t, p in zip(truth, predicted, strict=True):
        if t != oos_label:
            confusion[labels.index(t)][index[p if p is not None else NONE]] += 1
    latency = {}
    if latencies_s:
        ordered = sorted(latencies_s)
        for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
            latency[name] = ordered[min(int(q * len(ordered)), len(ordered) - 1)] * 1000
    return EvalResult(
        n=n,
        accuracy=sum(correct) / n,
        in_scope_accuracy=sum(correct[i] for i in in_scope) / len(in_scope) if in_scope else 0.0,
        macro_f1=statistics.fmean(m.f1 for m in per_label.values()) if per_label else 0.0,
        coverage=sum(1 for p in predicted if p is not None) / n,
        oos_precision=oos_precision,
        oos_recall=oos_recall,
        per_label=per_label,
        per_path=per_path,
        confusion_labels=columns,
        confusion=confusion,
        latency_ms=latency,
    )


async def evaluate(
    classifier: Classifier,
    examples: Sequence[Example],
    *,
    oos_label: str | None = None,
    batch: int = 32,
    progress: bool = True,
) -> tuple[EvalResult, list[Prediction]]:
    """Run the classifier's own decision path over ``examples`` and score it."""
    predictions: list[Prediction] = []
    latencies: list[float] = []
    with tqdm(total=len(examples), unit="row", desc="evaluating", disable=not progress) as bar:
        for start in range(0, len(examples), batch):
            chunk = examples[start : start + batch]
            began = time.perf_counter()
            predictions.extend(await classifier.classify([Query(e.text) for e in chunk]))
            latencies.extend([(time.perf_counter() - began) / len(chunk)] * len(chunk))
            bar.update(len(chunk))
    result = metrics(
        [e.label for e in examples],
        [p.label for p in predictions],
        [p.decision.value for p in predictions],
        oos_label=oos_label,
        latencies_s=latencies,
    )
    return result, predictions


@dataclass(frozen=True, slots=True)
class ZeroShotAlone:
    """The zero-shot scorer on every in-scope row, as if the kNN vote had left each one."""

    n: int
    method: str
    picked: float  # share whose best-scored candidate is the true label
    answered: float  # share answered ZERO_SHOT with the true label (the threshold applied)
    candidate_recall: float  # share whose true label was among the candidates at all

    def render(self, name: str = "") -> str:
        return (
            f"zero-shot alone{f' ({name})' if name else ''}: {self.method} on {self.n} in-scope "
            f"rows   picked right {self.picked:.4f}   answered right {self.answered:.4f}   "
            f"true label among candidates {self.candidate_recall:.4f}"
        )


async def zero_shot_alone(
    classifier: Classifier,
    examples: Sequence[Example],
    *,
    oos_label: str | None = None,
    batch: int = 32,
    progress: bool = True,
) -> ZeroShotAlone:
    """Send every in-scope row to the classifier's zero-shot scorer through its own
    decision path (same candidates, template and threshold), whatever its neighbours."""
    settings = classifier.settings
    # No example reaches a similarity of 1 and a margin of 2 together (the bounds of
    # both settings), so every row falls back.
    router = settings.router.model_copy(
        update={"similarity_threshold": 1.0, "label_thresholds": {}, "min_margin": 2.0}
    )
    forced = classifier.reconfigure(settings.model_copy(update={"router": router}))
    rows = [e for e in examples if e.label != oos_label]
    if not rows:
        raise ValueError("no in-scope rows to score")
    picked = answered = among = 0
    method = ""
    with tqdm(total=len(rows), unit="row", desc="zero-shot alone", disable=not progress) as bar:
        for start in range(0, len(rows), batch):
            chunk = rows[start : start + batch]
            for example, prediction in zip(
                chunk, await forced.classify([Query(e.text) for e in chunk]), strict=True
            ):
                scores = prediction.zero_shot_scores
                method = prediction.zero_shot_method or method
                picked += bool(scores) and scores[0].label == example.label
                answered += prediction.label == example.label
                among += any(s.label == example.label for s in scores)
            bar.update(len(chunk))
    n = len(rows)
    return ZeroShotAlone(n, method or "off", picked / n, answered / n, among / n)


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
