"""What the router answers, as frozen dataclasses (converted from the qroute.v1 messages)."""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar

from qroute_client.v1 import router_pb2 as pb

__all__ = [
    "Classification",
    "DecisionPath",
    "FallbackReason",
    "IndexInfo",
    "LabelScore",
    "Neighbour",
    "RequestLimits",
    "RetrievalMode",
    "Thresholds",
    "ZeroShotMethod",
]


class DecisionPath(enum.StrEnum):
    """How the label was decided (``DECISION_PATH_*`` without the prefix)."""

    UNSPECIFIED = "UNSPECIFIED"
    KNN = "KNN"
    ZERO_SHOT = "ZERO_SHOT"
    NO_MATCH = "NO_MATCH"


class FallbackReason(enum.StrEnum):
    """Why the kNN answer was not taken (``FALLBACK_REASON_*`` without the prefix)."""

    UNSPECIFIED = "UNSPECIFIED"
    LOW_SIMILARITY = "LOW_SIMILARITY"
    AMBIGUOUS = "AMBIGUOUS"
    FEW_AGREEING = "FEW_AGREEING"


class ZeroShotMethod(enum.StrEnum):
    """The zero-shot scorer that ran (``ZERO_SHOT_METHOD_*`` without the prefix);
    UNSPECIFIED when none ran."""

    UNSPECIFIED = "UNSPECIFIED"
    NLI = "NLI"
    NLI_SINGLE = "NLI_SINGLE"
    EMBEDDING = "EMBEDDING"


class RetrievalMode(enum.StrEnum):
    """How the index is searched (``RETRIEVAL_MODE_*`` without the prefix)."""

    UNSPECIFIED = "UNSPECIFIED"
    DENSE = "DENSE"
    LEXICAL = "LEXICAL"
    HYBRID = "HYBRID"


_Enum = TypeVar("_Enum", DecisionPath, FallbackReason, ZeroShotMethod, RetrievalMode)


def _enum(kind: type[_Enum], wrapper: object, value: int, prefix: str) -> _Enum:
    # A newer router may send a value this client does not know (proto3 enums are
    # open): it reads as UNSPECIFIED rather than failing the call.
    try:
        name = str(wrapper.Name(value))  # type: ignore[attr-defined]
        return kind(name.removeprefix(prefix))
    except ValueError:
        return kind("UNSPECIFIED")


def _f32(value: float) -> float:
    """The shortest decimal that is the same float32: 0.91, not 0.9100000262260437."""
    for digits in range(6, 10):
        short = float(f"{value:.{digits}g}")
        if struct.unpack("f", struct.pack("f", short))[0] == value:
            return short
    return value


@dataclass(frozen=True)
class Neighbour:
    """One labelled example the search found."""

    text: str
    label: str
    similarity: float
    row_id: str
    # Hybrid mode only: the two similarities the blend is made of.
    dense_similarity: float | None = None
    lexical_similarity: float | None = None

    @classmethod
    def from_pb(cls, message: pb.Neighbour) -> Neighbour:
        return cls(
            text=message.text,
            label=message.label,
            similarity=_f32(message.similarity),
            row_id=message.row_id,
            dense_similarity=(
                _f32(message.dense_similarity) if message.HasField("dense_similarity") else None
            ),
            lexical_similarity=(
                _f32(message.lexical_similarity) if message.HasField("lexical_similarity") else None
            ),
        )


@dataclass(frozen=True)
class LabelScore:
    label: str
    score: float

    @classmethod
    def from_pb(cls, message: pb.LabelScore) -> LabelScore:
        return cls(label=message.label, score=_f32(message.score))


def _scores(messages: Iterable[pb.LabelScore]) -> tuple[LabelScore, ...]:
    return tuple(LabelScore.from_pb(m) for m in messages)


@dataclass(frozen=True)
class Thresholds:
    """The thresholds that applied to the request (after per-label overrides)."""

    similarity: float
    margin: float
    min_agreeing: int
    zero_shot: float

    @classmethod
    def from_pb(cls, message: pb.Thresholds) -> Thresholds:
        return cls(
            similarity=_f32(message.similarity),
            margin=_f32(message.margin),
            min_agreeing=message.min_agreeing,
            zero_shot=_f32(message.zero_shot),
        )


@dataclass(frozen=True)
class Classification:
    """One answer of the router; the fields mirror ``qroute.v1.ClassifyResponse``."""

    # Empty when path is NO_MATCH.
    label: str
    confidence: float
    path: DecisionPath
    reason: str
    neighbours: tuple[Neighbour, ...]
    knn_scores: tuple[LabelScore, ...]
    zero_shot_scores: tuple[LabelScore, ...]
    index_version: str
    fallback_reasons: tuple[FallbackReason, ...]
    thresholds: Thresholds
    config_version: str
    top_labels: tuple[LabelScore, ...]
    # The scorer's name ("nli-independent", ...): the deprecated string of the wire.
    zero_shot_method: str
    zero_shot_method_kind: ZeroShotMethod
    # Names this answer in feedback (the router's review queue); unique per response.
    request_id: str = ""

    @classmethod
    def from_pb(cls, message: pb.ClassifyResponse) -> Classification:
        return cls(
            label=message.label,
            confidence=_f32(message.confidence),
            path=_enum(DecisionPath, pb.DecisionPath, message.path, "DECISION_PATH_"),
            reason=message.reason,
            neighbours=tuple(Neighbour.from_pb(n) for n in message.neighbours),
            knn_scores=_scores(message.knn_scores),
            zero_shot_scores=_scores(message.zero_shot_scores),
            index_version=message.index_version,
            fallback_reasons=tuple(
                _enum(FallbackReason, pb.FallbackReason, r, "FALLBACK_REASON_")
                for r in message.fallback_reasons
            ),
            thresholds=Thresholds.from_pb(message.thresholds),
            config_version=message.config_version,
            top_labels=_scores(message.top_labels),
            zero_shot_method=message.zero_shot_method,
            zero_shot_method_kind=_enum(
                ZeroShotMethod,
                pb.ZeroShotMethod,
                message.zero_shot_method_kind,
                "ZERO_SHOT_METHOD_",
            ),
            request_id=message.request_id,
        )


@dataclass(frozen=True)
class RequestLimits:
    """What one request may carry; more is refused with InvalidArgument."""

    max_text_chars: int
    # Texts in one classify_batch.
    max_batch_texts: int
    max_allowed_labels: int


@dataclass(frozen=True)
class IndexInfo:
    """What the router serves; the fields mirror ``qroute.v1.GetIndexInfoResponse``."""

    index_version: str
    labels: tuple[str, ...]
    retrieval_mode: RetrievalMode
    encoder_fingerprint: str
    rows: int
    label_count: int
    config_version: str
    # Empty when the thresholds were never tuned (``qroute tune``).
    tuned_encoder_fingerprint: str
    limits: RequestLimits
    uses_head: bool

    @classmethod
    def from_pb(cls, message: pb.GetIndexInfoResponse) -> IndexInfo:
        return cls(
            index_version=message.index_version,
            labels=tuple(message.labels),
            retrieval_mode=_enum(
                RetrievalMode, pb.RetrievalMode, message.retrieval_mode, "RETRIEVAL_MODE_"
            ),
            encoder_fingerprint=message.encoder_fingerprint,
            rows=message.rows,
            label_count=message.label_count,
            config_version=message.config_version,
            tuned_encoder_fingerprint=message.tuned_encoder_fingerprint,
            limits=RequestLimits(
                max_text_chars=message.limits.max_text_chars,
                max_batch_texts=message.limits.max_batch_texts,
                max_allowed_labels=message.limits.max_allowed_labels,
            ),
            uses_head=message.uses_head,
        )
