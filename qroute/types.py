"""Domain values shared by the core and both apps."""

from __future__ import annotations

import contextlib
import time
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = [
    "Decision",
    "Example",
    "FallbackReason",
    "Group",
    "Hit",
    "IndexInfo",
    "LabelScore",
    "Observe",
    "Prediction",
    "Query",
    "RequestLimits",
    "SparseVector",
    "Stage",
    "StageTime",
    "Thresholds",
    "display_width",
    "is_blank",
    "pad",
    "timed",
]


def is_blank(text: str) -> bool:
    """True when ``text`` has nothing to classify or index: only whitespace and Unicode
    category C (control, format, surrogate, private-use, unassigned) characters, such as
    NUL or a zero-width space. The one emptiness rule of queries and table rows."""
    return all(ch.isspace() or unicodedata.category(ch).startswith("C") for ch in text)


def display_width(text: str) -> int:
    """Terminal columns ``text`` takes: Hangul, CJK and other wide characters two,
    combining marks none, the rest one."""
    return sum(
        0
        if unicodedata.combining(ch)
        else 2
        if unicodedata.east_asian_width(ch) in ("W", "F")
        else 1
        for ch in text
    )


def pad(text: str, width: int, align: str = "<") -> str:
    """``text`` padded with spaces to ``width`` display columns (``align`` "<" or ">"),
    so that columns of Korean labels line up where ``str.format`` counts characters."""
    fill = " " * max(0, width - display_width(text))
    return fill + text if align == ">" else text + fill


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
    # Names this answer in feedback (SubmitFeedback) and in the review queue; set per
    # response by the router app (FeedbackLoop.observe, a fresh id each time: never
    # cached), empty elsewhere.
    request_id: str = ""


@dataclass(frozen=True, slots=True)
class RequestLimits:
    """What one request may carry; more is an InvalidQuery naming the setting."""

    max_text_chars: int
    max_batch_texts: int
    max_allowed_labels: int


@dataclass(frozen=True, slots=True)
class IndexInfo:
    """What a classifier serves: the index version and its labels, how it is searched
    (``encoder_fingerprint``: what the similarities come from), the configuration and
    the encoder its thresholds were tuned with ("" if never tuned), and the limits."""

    index_version: str
    labels: tuple[str, ...]
    rows: int
    retrieval_mode: str
    encoder_fingerprint: str
    config_version: str
    tuned_encoder: str
    uses_head: bool
    limits: RequestLimits


class Stage(StrEnum):
    """The timed stages of serving a batch (``queue_wait`` is per text)."""

    QUEUE_WAIT = "queue_wait"
    EMBED = "embed"
    SEARCH = "search"
    HEAD = "head"
    ZERO_SHOT = "zero_shot"


@dataclass(frozen=True, slots=True)
class StageTime:
    """One stage's duration. ``start_ns`` is wall-clock (``time.time_ns``) so a tracer
    can place a span; ``seconds`` is measured on the monotonic clock."""

    stage: Stage
    start_ns: int
    seconds: float

    @property
    def end_ns(self) -> int:
        return self.start_ns + int(self.seconds * 1e9)


# The core's timing hook: the apps turn each StageTime into metrics and trace spans,
# so the core needs neither prometheus nor opentelemetry.
Observe = Callable[[StageTime], None]


@contextlib.contextmanager
def timed(observe: Observe | None, stage: Stage) -> Iterator[None]:
    """Report how long the block took to ``observe`` (nothing when it is None, or when
    the block raised: a failed stage is not a latency sample)."""
    if observe is None:
        yield
        return
    start_ns, started = time.time_ns(), time.perf_counter()
    yield
    observe(StageTime(stage, start_ns, time.perf_counter() - started))
