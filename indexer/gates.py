"""Checks a new index version must pass before the published pointer moves to it."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path

import numpy as np

from qroute.config import Settings
from qroute.encoder import Encoder
from qroute.store import VectorStore
from qroute.table import read_table
from qroute.types import Example

__all__ = ["Canaries", "check_gates"]


class Canaries:
    """The first ``per_label`` rows of each label and the vectors written for them,
    collected while the table streams by (so the gate costs no encoder call)."""

    def __init__(self, per_label: int) -> None:
        self._per_label = per_label
        self.rows: dict[str, list[tuple[Example, list[float]]]] = defaultdict(list)

    def offer(self, chunk: list[Example], vectors: np.ndarray) -> None:
        for example, vector in zip(chunk, vectors, strict=True):
            kept = self.rows[example.label]
            if len(kept) < self._per_label:
                kept.append((example, vector.tolist()))


async def _accuracy(
    store: VectorStore, version: str, vectors: list[list[float]], labels: list[str]
) -> float:
    found = await store.search_groups(
        version, vectors, groups=1, group_size=1, labels=[None] * len(vectors)
    )
    right = sum(
        1
        for groups, label in zip(found, labels, strict=True)
        if groups and groups[0].label == label
    )
    return right / len(labels) if labels else 1.0


async def check_gates(
    store: VectorStore,
    version: str,
    encoder: Encoder,
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

    pairs = [pair for kept in canaries.rows.values() for pair in kept]
    if pairs:
        samples = [example for example, _ in pairs]
        vectors = [vector for _, vector in pairs]
        found = await store.search_groups(
            version, vectors, groups=1, group_size=1, labels=[None] * len(samples)
        )
        wrong = []
        for example, groups in zip(samples, found, strict=True):
            got = groups[0].label if groups else "nothing"
            if got != example.label:
                wrong.append(
                    f"{example.source}:{example.line} {example.text!r} ({example.label}) -> {got}"
                )
        if wrong:
            failures.append(
                f"canaries: {len(wrong)} of {len(samples)} rows did not find their own label: "
                + "; ".join(wrong[:5])
            )

    if holdout is not None:
        held = read_table(holdout, settings.table)
        vectors = (await asyncio.to_thread(encoder.encode, [e.text for e in held])).tolist()
        truth = [e.label for e in held]
        new = await _accuracy(store, version, vectors, truth)
        if live is not None:
            old = await _accuracy(store, live, vectors, truth)
            if new < old - settings.index.holdout_tolerance:
                failures.append(
                    f"holdout: accuracy {new:.4f} on {holdout} is below the live version's "
                    f"{old:.4f} by more than {settings.index.holdout_tolerance}"
                )
    return failures
