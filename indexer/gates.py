"""Checks a new index version must pass before the published pointer moves to it."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qroute.config import Settings
from qroute.config.data import TableSettings
from qroute.embedding.lexical import Lexicon
from qroute.errors import EncoderMismatch, TableError
from qroute.routing.classifier import Classifier
from qroute.routing.published import load_version
from qroute.routing.retrieval import Embedded, Retriever
from qroute.store import VectorStore
from qroute.table import normalise, read_table
from qroute.types import Example, Hit, Query, SparseVector

__all__ = ["Canaries", "Holdout", "check_gates", "read_holdout"]

log = logging.getLogger(__name__)

# Two labels' identical vectors score the same up to float rounding.
_TIE = 1e-5


class Canaries:
    """The first ``per_label`` rows of each label and the vectors written for them,
    collected while the table streams by (so the gate costs no encoder call)."""

    def __init__(self, per_label: int) -> None:
        self._per_label = per_label
        self.rows: dict[str, list[tuple[Example, list[float] | None, SparseVector | None]]] = (
            defaultdict(list)
        )

    def offer(self, chunk: list[Example], embedded: Embedded) -> None:
        for row, example in enumerate(chunk):
            kept = self.rows[example.label]
            if len(kept) < self._per_label:
                dense = embedded.dense[row].tolist() if embedded.dense is not None else None
                sparse = embedded.sparse[row] if embedded.sparse is not None else None
                kept.append((example, dense, sparse))

    def embedded(self) -> tuple[list[Example], Embedded]:
        rows = [row for kept in self.rows.values() for row in kept]
        dense = None
        if rows and rows[0][1] is not None:
            dense = np.asarray([d for _, d, _ in rows], dtype=np.float32)
        sparse = [s for _, _, s in rows if s is not None] if rows and rows[0][2] else None
        return [example for example, _, _ in rows], Embedded(dense, sparse)


@dataclass(frozen=True)
class Holdout:
    """The ``--holdout`` file and its accepted rows."""

    path: Path
    rows: tuple[Example, ...]


def read_holdout(path: str | Path, settings: TableSettings) -> Holdout:
    """The ``--holdout`` file, read before anything is written (a bad file would
    otherwise surface only after the whole table was encoded). Its label counts say
    nothing about the index: ``table.min_examples`` would skip or fail a small held-out
    label, so rare labels are kept here."""
    try:
        rows = read_table(path, settings.model_copy(update={"on_rare_label": "warn"}))
        return Holdout(Path(path), tuple(rows))
    except TableError as error:
        raise TableError(
            [f"--holdout (the holdout gate): {problem}" for problem in error.problems]
        ) from error


async def _nearest(
    store: VectorStore,
    version: str,
    retriever: Retriever,
    settings: Settings,
    embedded: Embedded,
    labels: Sequence[Sequence[str] | None] | None = None,
) -> list[Hit | None]:
    """Each query's nearest example (None: nothing found), found the way the router
    finds it; ``labels``: each query's allowed labels (None: any)."""
    found = await retriever.search_groups(
        store,
        version,
        embedded,
        settings.retrieval,
        groups=1,
        group_size=1,
        labels=labels if labels is not None else [None] * len(embedded),
    )
    return [groups[0].hits[0] if groups and groups[0].hits else None for groups in found]


async def _vote_accuracy(
    store: VectorStore, version: str, retriever: Retriever, settings: Settings, holdout: Holdout
) -> float:
    """The share of held-out rows ``version`` answers right by the router's vote (with
    its linear head where the router uses it), before thresholds send a query to the
    fallback, which is the same for both versions. A row of the table's none label is
    right when the head picks that label. Raises EncoderMismatch where this run's
    retriever cannot search ``version``."""
    state = await load_version(store, retriever, version)
    with ThreadPoolExecutor(1, thread_name_prefix="qroute-gate") as model_thread:
        classifier = Classifier(
            settings, retriever.encoder, None, store, index=state, executor=model_thread
        )
        _, _, votes = await classifier.votes([Query(e.text) for e in holdout.rows])
    none = settings.table.none_label
    answers = [
        none if vote.none else vote.scores[0].label if vote.scores else None for vote in votes
    ]
    right = sum(1 for a, e in zip(answers, holdout.rows, strict=True) if a == e.label)
    return right / len(holdout.rows) if holdout.rows else 1.0


def _take(embedded: Embedded, rows: list[int]) -> Embedded:
    """The given rows of ``embedded``."""

    def pick(vectors: list[SparseVector] | None) -> list[SparseVector] | None:
        return None if vectors is None else [vectors[row] for row in rows]

    dense = embedded.dense[rows] if embedded.dense is not None else None
    return Embedded(dense, pick(embedded.sparse), pick(embedded.searched))


def _same_text(a: str, b: str) -> bool:
    """Equal up to case and whitespace: what character n-grams (lower-cased) cannot
    tell apart, and what table.on_conflicting_labels compares (less the case)."""
    return normalise(a).casefold() == normalise(b).casefold()


async def _lost_canaries(
    store: VectorStore,
    version: str,
    retriever: Retriever,
    settings: Settings,
    samples: list[Example],
    embedded: Embedded,
) -> list[str]:
    """The canaries that did not find their own label, in words. One that found a row
    of another label with its own text (up to case: valid at the default policies, or
    the same text kept by ``table.on_conflicting_labels: warn``), while its own label
    scores as high, is found: the table is ambiguous there, the index is not broken,
    and which of the tied labels comes first is arbitrary."""
    best = await _nearest(store, version, retriever, settings, embedded)
    lost = [row for row, hit in enumerate(best) if hit is None or hit.label != samples[row].label]
    if not lost:
        return []
    own = await _nearest(
        store,
        version,
        retriever,
        settings,
        _take(embedded, lost),
        labels=[[samples[row].label] for row in lost],
    )
    wrong = []
    for row, mine in zip(lost, own, strict=True):
        example, hit = samples[row], best[row]
        if (
            hit is not None
            and mine is not None
            and _same_text(hit.text, example.text)
            and mine.similarity >= hit.similarity - _TIE
        ):
            log.warning(
                "canaries: %s:%s %r (%s) ties with label %r's row %r: the router cannot "
                "tell them apart",
                example.source,
                example.line,
                example.text,
                example.label,
                hit.label,
                hit.text,
            )
            continue
        found = hit.label if hit is not None else "nothing"
        wrong.append(
            f"{example.source}:{example.line} {example.text!r} ({example.label}) -> {found}"
        )
    return wrong


async def check_gates(
    store: VectorStore,
    version: str,
    retriever: Retriever,
    lexicon: Lexicon | None,
    settings: Settings,
    rows: int,
    labels: tuple[str, ...],
    canaries: Canaries,
    *,
    holdout: Holdout | None = None,
    live: str | None = None,
) -> list[str]:
    """Every failed gate, in words; empty when ``version`` may be published."""
    failures = []
    points = await store.count(version)
    if points != rows:
        failures.append(f"count: {points} points in the index, {rows} distinct rows accepted")
    missing = [label for label in labels if await store.count(version, label) == 0]
    if missing:
        failures.append(f"labels: no points for {missing}")

    samples, embedded = canaries.embedded()
    if samples:
        wrong = await _lost_canaries(store, version, retriever, settings, samples, embedded)
        if wrong:
            failures.append(
                f"canaries: {len(wrong)} of {len(samples)} rows did not find their own label: "
                + "; ".join(wrong[:5])
                + " (the first index.canary_per_label rows of each label must find it)"
            )

    if holdout is not None:
        new = await _vote_accuracy(store, version, retriever, settings, holdout)
        old = None
        if live is not None:
            try:
                # Only a live version this retriever can search is a fair comparison.
                old = await _vote_accuracy(store, live, retriever, settings, holdout)
            except EncoderMismatch:
                live = None
        if old is None:
            # Nothing to compare with: say so, rather than pass the gate in silence.
            log.warning(
                "holdout: accuracy %.4f on %s; no live version this run can search to "
                "compare it with, so the holdout gate is not applied",
                new,
                holdout.path,
            )
        elif new < old - settings.index.holdout_tolerance:
            failures.append(
                f"holdout: accuracy {new:.4f} on {holdout.path} is below the live version's "
                f"{old:.4f} ({live}) by more than index.holdout_tolerance "
                f"({settings.index.holdout_tolerance})"
            )
        else:
            log.info("holdout: accuracy %.4f on %s (live %s: %.4f)", new, holdout.path, live, old)
    return failures
