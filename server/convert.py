"""Every conversion between core values and protobuf messages."""

from __future__ import annotations

from collections.abc import Iterable

from qroute.types import Decision, Hit, LabelScore, Prediction
from qroute.v1 import router_pb2 as pb

__all__ = ["to_pb_prediction"]

_DECISION = {
    Decision.KNN: pb.DECISION_PATH_KNN,
    Decision.ZERO_SHOT: pb.DECISION_PATH_ZERO_SHOT,
    Decision.NO_MATCH: pb.DECISION_PATH_NO_MATCH,
}


def _scores(scores: Iterable[LabelScore]) -> list[pb.LabelScore]:
    return [pb.LabelScore(label=s.label, score=s.score) for s in scores]


def _neighbour(hit: Hit) -> pb.Neighbour:
    return pb.Neighbour(
        text=hit.text, label=hit.label, similarity=hit.similarity, row_id=hit.row_id
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
    )
