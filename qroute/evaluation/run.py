"""Measure the router on labelled data: the classifier's own decision path, in process.

``evaluate`` runs a Classifier over examples in batches and scores its answers
(``qroute.evaluation.metrics``); ``zero_shot_alone`` sends every row to its zero-shot
scorer. The pictures are ``qroute.evaluation.plots``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from tqdm import tqdm

from qroute.evaluation.metrics import EvalResult, metrics
from qroute.evaluation.precompute import Precomputed, precompute
from qroute.routing.classifier import Classifier
from qroute.types import Decision, Example, Prediction, Query

__all__ = [
    "EvalResult",
    "Replayed",
    "ZeroShotAlone",
    "evaluate",
    "evaluate_once",
    "zero_shot_alone",
]


@dataclass(frozen=True)
class Replayed:
    """``evaluate_once``'s result: the figures, the pass they came from (for the
    threshold curve), and each answered row's confidence and whether it was right."""

    result: EvalResult
    pre: Precomputed
    confidence: list[float]
    right: list[bool]


async def evaluate_once(
    classifier: Classifier,
    examples: Sequence[Example],
    *,
    oos_label: str | None = None,
    latency_rows: int = 200,
    progress: bool = True,
) -> Replayed:
    """Score the classifier from one search pass: its decisions replayed from the
    precomputed neighbours (``qroute.evaluation.tune.decisions``, which decides as the
    classifier does; tests/integration/test_tune.py checks it), so the threshold curve
    needs no second pass. Latency is timed on the classifier's own path over the first
    ``latency_rows`` rows."""
    from qroute.evaluation.tune import decisions
    from qroute.routing.vote import answer_confidence

    settings = classifier.settings
    # One k only: the candidates at the configured k, not at every k a sweep would try.
    k = settings.router.k
    pre = await precompute(classifier, examples, k_max=k, k_min=k, progress=progress)
    a, ids, pred, used = decisions(
        pre, settings.router, settings.zero_shot, settings.table.none_label
    )
    names = {i: label for label, i in ids.items()}
    predicted = [None if int(p) == -1 else names[int(p)] for p in pred]
    paths = [
        (Decision.NO_MATCH if p is None else Decision.ZERO_SHOT if u else Decision.KNN).value
        for p, u in zip(predicted, used.tolist(), strict=True)
    ]
    latencies: list[float] = []
    sample = examples[:latency_rows]
    for start in range(0, len(sample), 32):
        chunk = sample[start : start + 32]
        began = time.perf_counter()
        await classifier.classify([Query(e.text) for e in chunk])
        latencies.extend([(time.perf_counter() - began) / len(chunk)] * len(chunk))
    result = metrics(
        [e.label for e in examples], predicted, paths, oos_label=oos_label, latencies_s=latencies
    )
    confidence = answer_confidence(a, used, settings.router.calibration)
    answered = [i for i, p in enumerate(predicted) if p is not None]
    return Replayed(
        result,
        pre,
        [float(confidence[i]) for i in answered],
        [predicted[i] == examples[i].label for i in answered],
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
