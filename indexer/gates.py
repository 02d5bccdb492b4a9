"""Checks a new index version must pass before the published pointer moves to it."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path

import numpy as np

from qroute.config import Settings
from qroute.embedding.lexical import Lexicon
from qroute.errors import EncoderMismatch
from qroute.routing.retrieval import Embedded, Retriever
from qroute.store import VectorStore
from qroute.store.metadata import IndexMetadata
from qroute.table import read_table
from qroute.types import Example, SparseVector

__all__ = ["Canaries", "check_gates"]


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


async def _nearest_labels(
    store: VectorStore,
    version: str,
    retriever: Retriever,
    settings: Settings,
    embedded: Embedded,
) -> list[str]:
    """Each query's nearest label, found the way the router finds it."""
    found = await retriever.search_groups(
        store,
        version,
        embedded,
        settings.retrieval,
        groups=1,
        group_size=1,
        labels=[None] * len(embedded),
    )
    return [groups[0].label if groups else "nothing" for groups in found]


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
    holdout: str | Path | None = None,
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
        got = await _nearest_labels(store, version, retriever, settings, embedded)
        wrong = [
            f"{example.source}:{example.line} {example.text!r} ({example.label}) -> {label}"
            for example, label in zip(samples, got, strict=True)
            if label != example.label
        ]
        if wrong:
            failures.append(
                f"canaries: {len(wrong)} of {len(samples)} rows did not find their own label: "
                + "; ".join(wrong[:5])
            )

    if holdout is not None:
        held = read_table(holdout, settings.table)
        texts, truth = [e.text for e in held], [e.label for e in held]

        async def accuracy(name: str, lex: Lexicon | None) -> float:
            queries = await asyncio.to_thread(retriever.embed, texts, lex)
            got = await _nearest_labels(store, name, retriever, settings, queries)
            right = sum(1 for g, t in zip(got, truth, strict=True) if g == t)
            return right / len(truth) if truth else 1.0

        new = await accuracy(version, lexicon)
        old = None
        if live is not None:
            try:
                # Only a live version this retriever can search is a fair comparison.
                live_lexicon = retriever.check(
                    live, IndexMetadata.from_json(await store.metadata(live), live)
                )
            except EncoderMismatch:
                live_lexicon, live = None, None
            if live is not None:
                old = await accuracy(live, live_lexicon)
        if old is not None and new < old - settings.index.holdout_tolerance:
            failures.append(
                f"holdout: accuracy {new:.4f} on {holdout} is below the live version's "
                f"{old:.4f} by more than {settings.index.holdout_tolerance}"
            )
    return failures
