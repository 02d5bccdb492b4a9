"""Every conversion between core values and protobuf messages."""

from __future__ import annotations

from collections.abc import Iterable

from qroute.routing.review import Feedback
from qroute.types import (
    Decision,
    FallbackReason,
    Hit,
    IndexInfo,
    LabelScore,
    Prediction,
    Query,
)
from qroute.v1 import router_pb2 as pb

__all__ = ["from_pb_feedback", "from_pb_query", "to_pb_index_info", "to_pb_prediction"]

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


# Prediction.zero_shot_method (the scorer's name) -> the enum; "" when none ran.
_ZERO_SHOT = {
    "": pb.ZERO_SHOT_METHOD_UNSPECIFIED,
    "nli-independent": pb.ZERO_SHOT_METHOD_NLI,
    "nli-single": pb.ZERO_SHOT_METHOD_NLI_SINGLE,
    "embedding": pb.ZERO_SHOT_METHOD_EMBEDDING,
}

_RETRIEVAL = {
    "dense": pb.RETRIEVAL_MODE_DENSE,
    "lexical": pb.RETRIEVAL_MODE_LEXICAL,
    "hybrid": pb.RETRIEVAL_MODE_HYBRID,
}


def from_pb_query(request: pb.ClassifyRequest) -> Query:
    return Query(
        text=request.text,
        allowed_labels=tuple(dict.fromkeys(request.allowed_labels)),
        top_labels=request.top_labels,
    )


def _scores(scores: Iterable[LabelScore]) -> list[pb.LabelScore]:
    return [pb.LabelScore(label=s.label, score=s.score) for s in scores]


def _neighbour(hit: Hit, with_text: bool) -> pb.Neighbour:
    return pb.Neighbour(
        # router.return_texts false: the table's texts stay inside the router; the row
        # id still says which example matched, to whoever may read the table.
        text=hit.text if with_text else "",
        label=hit.label,
        similarity=hit.similarity,
        row_id=hit.row_id,
        dense_similarity=hit.dense_similarity,
        lexical_similarity=hit.lexical_similarity,
    )


def to_pb_prediction(prediction: Prediction, *, with_texts: bool) -> pb.ClassifyResponse:
    """The response for ``prediction``; ``with_texts`` (``router.return_texts``): whether
    the neighbours carry their example texts."""
    return pb.ClassifyResponse(
        label=prediction.label or "",
        confidence=prediction.confidence,
        path=_DECISION[prediction.decision],
        reason=prediction.reason,
        neighbours=[_neighbour(h, with_texts) for h in prediction.neighbours],
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
        # The deprecated string stays filled for clients that read it.
        zero_shot_method=prediction.zero_shot_method,
        zero_shot_method_kind=_ZERO_SHOT[prediction.zero_shot_method],
        request_id=prediction.request_id,
    )


def to_pb_index_info(info: IndexInfo) -> pb.GetIndexInfoResponse:
    return pb.GetIndexInfoResponse(
        index_version=info.index_version,
        labels=info.labels,
        retrieval_mode=_RETRIEVAL[info.retrieval_mode],
        encoder_fingerprint=info.encoder_fingerprint,
        rows=info.rows,
        label_count=len(info.labels),
        config_version=info.config_version,
        tuned_encoder_fingerprint=info.tuned_encoder,
        limits=pb.RequestLimits(
            max_text_chars=info.limits.max_text_chars,
            max_batch_texts=info.limits.max_batch_texts,
            max_allowed_labels=info.limits.max_allowed_labels,
        ),
        uses_head=info.uses_head,
    )


def from_pb_feedback(request: pb.SubmitFeedbackRequest) -> Feedback:
    return Feedback(
        text=request.text,
        request_id=request.request_id,
        correct_label=request.correct_label,
        none_of_these=request.none_of_these,
        source=request.source,
    )
