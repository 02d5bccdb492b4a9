"""Domain values shared by the core and both apps."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

__all__ = ["Decision", "Example", "Hit", "LabelScore", "Prediction"]


@dataclass(frozen=True, slots=True)
class Example:
    """One labelled row of the table. ``row_id`` is stable across runs: it is
    derived from the normalised text and the label (see ``qroute.table.row_id``)."""

    text: str
    label: str
    row_id: str
    source: str
    line: int


@dataclass(frozen=True, slots=True)
class Hit:
    """A labelled example returned by the vector search; ``similarity`` is cosine."""

    row_id: str
    text: str
    label: str
    similarity: float


@dataclass(frozen=True, slots=True)
class LabelScore:
    label: str
    score: float


class Decision(StrEnum):
    KNN = "KNN"
    ZERO_SHOT = "ZERO_SHOT"
    NO_MATCH = "NO_MATCH"


@dataclass(frozen=True, slots=True)
class Prediction:
    """The answer for one text and why. ``label`` is None for ``NO_MATCH``."""

    label: str | None
    confidence: float
    decision: Decision
    reason: str
    index_version: str
    neighbours: tuple[Hit, ...] = ()
    knn_scores: tuple[LabelScore, ...] = ()
    zero_shot_scores: tuple[LabelScore, ...] = field(default=())
