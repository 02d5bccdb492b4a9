"""The routing sections: retrieval, the zero-shot fallback, the decision rule, tuned
values and micro-batching."""

from __future__ import annotations

import itertools
import math
from typing import Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from qroute.config.section import Section


class RetrievalSettings(Section):
    """Which similarity finds the neighbours. ``mode`` is restart-only (it decides which
    models load and which vectors the indexer writes); the rest is hot-reloadable."""

    # dense: the sentence encoder; lexical: character n-grams, no model at all;
    # hybrid: both, fused.
    mode: Literal["dense", "lexical", "hybrid"] = "dense"
    # hybrid: how candidates are ranked. blend: by the hybrid similarity below; rrf:
    # Qdrant's reciprocal rank fusion of the two candidate lists. Either way thresholds
    # and the vote use the hybrid similarity, never a fused rank score.
    fusion: Literal["blend", "rrf"] = "blend"
    # hybrid similarity = dense_weight * dense cosine + (1 - dense_weight) * lexical cosine.
    # 0.8: chosen by cross-validation on ParaKQC, never on the evaluation rows (see
    # bench/RESULTS.md, retrieval modes); a lexical cosine spreads wider than a dense one.
    dense_weight: float = Field(0.8, ge=0.0, le=1.0)
    # hybrid: examples fetched from each side before fusing.
    candidates: int = Field(32, ge=1, le=4096)


class ZeroShotSettings(Section):
    """How the router decides when the neighbours are not enough (hot-reloadable)."""

    # nli: NLI entailment of a hypothesis per label; embedding: similarity of the
    # query to each label's description under the same encoder; off: never.
    method: Literal["nli", "embedding", "off"] = "nli"
    # independent: entailment vs contradiction per label, so it can say "none of
    # these"; single: softmax of entailment logits across labels, always picks one.
    mode: Literal["independent", "single"] = "independent"
    template: str = "이 문장은 {label}에 관한 것입니다."
    # A bare label name is often a poor hypothesis: {label} is filled with the
    # description where one is given (금융: "주식, 환율, 금리 같은 금융").
    label_descriptions: dict[str, str] = Field(default_factory=dict)
    # Score needed for a ZERO_SHOT answer, else NO_MATCH: entailment probability
    # (nli, independent mode) or cosine similarity (embedding).
    threshold: float = Field(0.5, ge=-1.0, le=1.0)
    # Which labels are scored: the best `top_n` of the kNN vote, or every label.
    candidates: Literal["vote", "all"] = "vote"
    top_n: int = Field(5, ge=1, le=1000)

    @field_validator("template")
    @classmethod
    def _has_label_slot(cls, value: str) -> str:
        try:
            rendered = value.format(label="\0")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"template must only use the {{label}} placeholder: {exc!r}") from exc
        if "\0" not in rendered:
            raise ValueError("template must contain the {label} placeholder")
        return value

    def hypothesis(self, label: str) -> str:
        return self.template.format(label=self.label_descriptions.get(label, label))


class RouterSettings(Section):
    """The kNN vote and when to leave it (hot-reloadable)."""

    # Labels fetched per query (Qdrant groups), each with its best `group_size` examples.
    k: int = Field(10, ge=1, le=1000)
    group_size: int = Field(3, ge=1, le=100)
    # A label's score from its best neighbours' similarities: "max", "mean" (of the
    # best group_size), or "max_mean" (their average).
    label_score: Literal["max", "mean", "max_mean"] = "max_mean"
    # Cosine similarity the winning label's best neighbour must reach; per-label overrides.
    similarity_threshold: float = Field(0.8, ge=-1.0, le=1.0)
    label_thresholds: dict[str, float] = Field(default_factory=dict)
    # Leave kNN when the first and second label scores are closer than this.
    min_margin: float = Field(0.0, ge=0.0, le=2.0)
    # Leave kNN when fewer of the winner's neighbours reach its similarity threshold.
    min_agreeing: int = Field(1, ge=1, le=100)
    # Softmax temperature turning label scores into the KNN confidence.
    vote_temperature: float = Field(0.05, gt=0.0, le=10.0)
    # Let the index's linear head (``index.head``) pick the label, where it has one;
    # the neighbours still gate and explain the answer. False: the vote always picks.
    use_head: bool = True
    # With the head: its label scores become (1 - vote_weight) * its probability +
    # vote_weight * the vote's share (at vote_temperature), so that neighbours which agree
    # can outvote a head that is unsure. 0: the head alone. `qroute tune` chooses it.
    vote_weight: float = Field(0.0, ge=0.0, le=1.0)
    max_text_chars: int = Field(1000, ge=1)
    # Texts one ClassifyBatch may carry; more is INVALID_ARGUMENT (never queued). The
    # batcher's queue (batching.max_queue) caps it too: a larger batch could never fit.
    max_batch_texts: int = Field(256, ge=1)
    # Labels one request's allowed_labels may list; more is INVALID_ARGUMENT.
    max_allowed_labels: int = Field(1000, ge=1)
    # Predictions kept for repeated queries (same normalised text, allowed_labels and
    # top_labels), per router process; emptied by a config reload or a newly published
    # index version. 0: off.
    cache_size: int = Field(2048, ge=0)
    # Send each neighbour's example text in responses. False: row ids, labels and
    # similarities only, for a table that callers must not read back.
    return_texts: bool = True
    # Calibration written by ``qroute tune``: per decision path ("knn": the vote share,
    # "head": the head's probability, "zero_shot": the zero-shot score), (score,
    # probability of being right) knots, interpolated piecewise-linearly. A response's
    # confidence is that probability where its path has knots.
    calibration: dict[Literal["knn", "head", "zero_shot"], list[tuple[float, float]]] = Field(
        default_factory=dict
    )
    # Answer only when the (calibrated) confidence reaches this: below it the kNN answer
    # goes to the fallback, a zero-shot answer becomes NO_MATCH. 0: off.
    min_confidence: float = Field(0.0, ge=0.0, le=1.0)

    @field_validator("calibration")
    @classmethod
    def _monotone_knots(
        cls, value: dict[str, list[tuple[float, float]]]
    ) -> dict[str, list[tuple[float, float]]]:
        for path, knots in value.items():
            xs = [x for x, _ in knots]
            ys = [y for _, y in knots]
            # NaN passes every comparison below, and interpolating through it (or an
            # infinite end) makes the confidence NaN or flat.
            if not all(math.isfinite(x) for x in xs):
                raise ValueError(f"calibration.{path}: scores must be finite numbers")
            if any(b <= a for a, b in itertools.pairwise(xs)):
                raise ValueError(f"calibration.{path}: scores must increase strictly")
            if any(b < a for a, b in itertools.pairwise(ys)) or not all(
                0.0 <= y <= 1.0 for y in ys
            ):
                raise ValueError(
                    f"calibration.{path}: probabilities must be in [0, 1] and never decrease"
                )
        return value

    @field_validator("label_thresholds")
    @classmethod
    def _thresholds_in_range(cls, value: dict[str, float]) -> dict[str, float]:
        for label, threshold in value.items():
            if not -1.0 <= threshold <= 1.0:
                raise ValueError(f"{label}: {threshold} is not a cosine similarity in [-1, 1]")
        return value

    @model_validator(mode="after")
    def _agreeing_fits_group(self) -> RouterSettings:
        if self.min_agreeing > self.group_size:
            raise ValueError(
                f"min_agreeing ({self.min_agreeing}) cannot exceed group_size ({self.group_size}): "
                "only a label's best group_size neighbours are fetched"
            )
        return self

    def threshold_for(self, label: str) -> float:
        return self.label_thresholds.get(label, self.similarity_threshold)


class TunedSettings(Section):
    """Written by ``qroute tune``: what the thresholds were tuned on and what they reached.
    The router warns at start when its encoder is not the one they were tuned with."""

    encoder: str = ""
    index_version: str = ""
    objective: str = ""
    data: str = ""
    at: str = ""
    # Point estimates: with cross-validation, pooled over the held-out folds.
    figures: dict[str, float | None] = Field(default_factory=dict)
    # The expected range of each figure on unseen data: figure -> [low, high] (95%
    # Wilson score interval of the pooled held-out figure).
    ranges: dict[str, tuple[float, float]] = Field(default_factory=dict)
    folds: int = 0


class BatchingSettings(Section):
    """Concurrent Classify calls are gathered into one model call (restart-only)."""

    max_batch_size: int = Field(32, ge=1, le=4096)
    # Waiting for more requests only helps when they arrive while the models are idle;
    # under load the next batch forms while the current one runs. 0 adds no latency.
    max_wait_ms: float = Field(0.0, ge=0.0, le=1000.0)
    # Requests waiting beyond this are refused (RESOURCE_EXHAUSTED) rather than queued.
    max_queue: int = Field(1024, ge=1)
