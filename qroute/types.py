"""Domain values shared by the core and both apps."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = [
    "Decision",
    "Example",
    "FallbackReason",
    "Group",
    "Hit",
    "LabelScore",
    "Prediction",
    "Query",
    "SparseVector",
    "Thresholds",
    "is_blank",
]


def is_blank(text: str) -> bool:
    """True when ``text`` has nothing to classify or index: only whitespace and Unicode
    category C (control, format, surrogate, private-use, unassigned) characters, such as
    NUL or a zero-width space. The one emptiness rule of queries and table rows."""
    return all(ch.isspace() or unicodedata.category(ch).startswith("C") for ch in text)


@dataclass(frozen=True, slots=True)
class Example:
    """One labelled row of the table. ``row_id`` is stable across runs: it is
    derived from the normalised text and the label (see ``qroute.table.row_id``)."""

    text: str
    label: str
    row_id: str
    source: str
    line: int
    # Other columns of the row (e.g. source, lang), kept in the point's payload.
    extra: dict[str, str | int | float | bool] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SparseVector:
    """Indices (ascending, distinct) and their values."""

    indices: tuple[int, ...]
    values: tuple[float, ...]

    def as_dict(self) -> dict[int, float]:
        return dict(zip(self.indices, self.values, strict=True))


@dataclass(frozen=True, slots=True)
class Hit:
    """A labelled example returned by the search. ``similarity`` is what thresholds and
    the vote use: the dense or lexical cosine, or in hybrid mode their blend, whose parts
    are kept in ``dense_similarity`` and ``lexical_similarity``."""

    row_id: str
    text: str
    label: str
    similarity: float
    dense_similarity: float | None = None
    lexical_similarity: float | None = None


@dataclass(frozen=True, slots=True)
class Group:
    """One label's best examples for a query, most similar first."""

    label: str
    hits: tuple[Hit, ...]


@dataclass(frozen=True, slots=True)
class LabelScore:
    label: str
    score: float


class Decision(StrEnum):
    KNN = "KNN"
    ZERO_SHOT = "ZERO_SHOT"
    NO_MATCH = "NO_MATCH"


class FallbackReason(StrEnum):
    """Why the kNN answer was left for the zero-shot scorer."""

    LOW_SIMILARITY = "LOW_SIMILARITY"
    AMBIGUOUS = "AMBIGUOUS"
    FEW_AGREEING = "FEW_AGREEING"


@dataclass(frozen=True, slots=True)
class Query:
    """One text to classify. ``allowed_labels`` (empty: all) restricts the answer;
    ``top_labels`` is how many ranked labels the prediction carries."""

    text: str
    allowed_labels: tuple[str, ...] = ()
    top_labels: int = 1


@dataclass(frozen=True, slots=True)
class Thresholds:
    """The thresholds that applied to one query, after per-label overrides."""

    similarity: float
    margin: float
    min_agreeing: int
    zero_shot: float


@dataclass(frozen=True, slots=True)
class Prediction:
    """The answer for one text and why. ``label`` is None for ``NO_MATCH``."""

    label: str | None
    confidence: float
    decision: Decision
    reason: str
    index_version: str
    config_version: str
    thresholds: Thresholds
    neighbours: tuple[Hit, ...] = ()
    knn_scores: tuple[LabelScore, ...] = ()
    zero_shot_scores: tuple[LabelScore, ...] = field(default=())
    fallback_reasons: tuple[FallbackReason, ...] = ()
    top_labels: tuple[LabelScore, ...] = ()
    zero_shot_method: str = ""
    # Names this answer in feedback (SubmitFeedback) and in the review queue; set by the
    # router once the answer is computed, empty elsewhere.
    request_id: str = ""
