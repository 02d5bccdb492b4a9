"""Scores of a router's answers against labelled rows: pure functions of the labels, no
model and no I/O, so each figure can be checked by hand."""

from __future__ import annotations

import json
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from qroute.hub import optional_import
from qroute.types import display_width, pad

__all__ = ["NONE", "EvalResult", "LabelMetrics", "metrics"]


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
        width = max([24, *(display_width(label) for label in self.per_label)])
        lines.append(
            f"{pad('label', width)} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>8}"
        )
        for label, m in sorted(self.per_label.items()):
            lines.append(
                f"{pad(label, width)} {m.precision:>9.4f} {m.recall:>9.4f} {m.f1:>9.4f} "
                f"{m.support:>8}"
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
    sk = optional_import("sklearn.metrics", "eval", "the per-label scores of qroute eval")
    # NO_MATCH as its own class name: a row answered with nothing is a miss of its label.
    answered = [p if p is not None else NONE for p in predicted]
    per_label = {}
    if labels:
        precision, recall, f1, support = sk.precision_recall_fscore_support(
            list(truth), answered, labels=labels, zero_division=0
        )
        per_label = {
            label: LabelMetrics(float(p), float(r), float(f), int(s))
            for label, p, r, f, s in zip(labels, precision, recall, f1, support, strict=True)
        }
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
    confusion: list[list[int]] = []
    if in_scope:
        matrix = sk.confusion_matrix(
            [truth[i] for i in in_scope], [answered[i] for i in in_scope], labels=columns
        )
        # Rows: the in-scope truth labels (the columns' first ones); no row is ever a
        # predicted-only label or (none).
        confusion = [[int(v) for v in row] for row in matrix[: len(labels)]]
    latency = {}
    if latencies_s:
        import numpy as np

        # numpy's (linear) percentiles: a median of an even count is the mean of the
        # middle two, not the upper one.
        points = np.percentile(np.asarray(latencies_s) * 1000, [50, 90, 99])
        latency = {name: float(v) for name, v in zip(("p50", "p90", "p99"), points, strict=True)}
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
