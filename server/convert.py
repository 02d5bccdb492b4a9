"""Every conversion between core values and protobuf messages."""

from __future__ import annotations

from collections.abc import Iterable

from qroute.routing.review import Feedback
from qroute.types import Decision, FallbackReason, Hit, LabelScore, Prediction, Query
from qroute.v1 import router_pb2 as pb

__all__ = ["from_pb_feedback", "from_pb_query", "to_pb_prediction"]

_DECISION = {
    Decision.KNN: pb.DECISION_PATH_KNN,
    Decision.ZERO_SHOT: pb.DECISION_PATH_ZERO_SHOT,
    Decision.NO_MATCH: pb.DECISION_PATH_NO_MATCH,
}

_REASON = {
    FallbackReason.LOW_SIMILARITY: pb.FALLBACK_REASON_LOW_SIMILARITY,
    FallbackReason.AMBIGUOUS: pb.FALLBACK_REASON_AMBIGUOUS,
    FallbackReason.FEW_AGREEING: pb.FALLBACK_REASON_FEW_AGREEING,
}


def from_pb_query(request: pb.ClassifyRequest) -> Query:
    return Query(
        text=request.text,
        allowed_labels=tuple(dict.fromkeys(request.allowed_labels)),
        top_labels=request.top_labels,
    )


def _scores(scores: Iterable[LabelScore]) -> list[pb.LabelScore]:
    return [pb.LabelScore(label=s.label, score=s.score) for s in scores]


def _neighbour(hit: Hit) -> pb.Neighbour:
    return pb.Neighbour(
        text=hit.text,
        label=hit.label,
        similarity=hit.similarity,
        row_id=hit.row_id,
        dense_similarity=hit.dense_similarity,
        lexical_similarity=hit.lexical_similarity,
    )


def to_pb_prediction(prediction: Prediction) -> pb.ClassifyResponse:
    return pb.ClassifyResponse(
        label=prediction.label or "",
        confidence=prediction.confidence,
        path=_DECISION[prediction.decision],
        reason=prediction.reason,
        neighbours=[_neighbour(h) for h in prediction.neighbours],
        knn_scores=_scores(prediction.knn_scores),
        zero_shot_scores=_scores(prediction.zero_shot_scores),
        index_version=prediction.index_version,
        fallback_reasons=[_REASON[r] for r in prediction.fallback_reasons],
        thresholds=pb.Thresholds(
            similarity=prediction.thresholds.similarity,
            margin=prediction.thresholds.margin,
            min_agreeing=prediction.thresholds.min_agreeing,
            zero_shot=prediction.thresholds.zero_shot,
        ),
        config_version=prediction.config_version,
        top_labels=_scores(prediction.top_labels),
        zero_shot_method=prediction.zero_shot_method,
        request_id=prediction.request_id,
    )


def from_pb_feedback(request: pb.SubmitFeedbackRequest) -> Feedback:
    return Feedback(
        text=request.text,
        request_id=request.request_id,
        correct_label=request.correct_label,
        none_of_these=request.none_of_these,
        source=request.source,
    )
