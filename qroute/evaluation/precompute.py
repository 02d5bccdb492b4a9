"""The one encoding and search pass that threshold tuning replays (``qroute tune``).

For each labelled query: its label groups at the largest k swept (optionally leaving its
own row out), the zero-shot score of every label the classifier may send its scorer (those
of the groups; every label with ``zero_shot.candidates: all`` or where no group votes; the
head's best ones), and the index's linear head's probabilities where the router uses one.
``qroute.evaluation.tune`` sweeps the decision parameters over these numbers without
searching again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from qroute.config import ZeroShotSettings
from qroute.errors import NotIndexed
from qroute.routing.classifier import Classifier
from qroute.routing.published import IndexState
from qroute.routing.retrieval import Embedded
from qroute.routing.zeroshot import ZeroShotItem
from qroute.types import Example, Group, LabelScore

__all__ = ["Precomputed", "precompute"]


@dataclass
class Precomputed:
    truth: list[str]
    groups: list[list[Group]]
    zero_shot: list[dict[str, float]]  # per query: label -> zero-shot score (empty when off)
    method: str  # the zero-shot method that produced them, "" when off
    # Per query, the index's linear head's probabilities where the router uses one.
    head: list[list[LabelScore] | None] = field(default_factory=list)
    # Rows searched with the index's stored vector instead of encoding them again.
    reused: int = 0

    def extend(self, other: Precomputed) -> None:
        """Append another pass's queries (e.g. out-of-scope rows searched without
        leave-one-out) so one sweep sees both."""
        self.truth += other.truth
        self.groups += other.groups
        self.zero_shot += other.zero_shot
        self.head += other.head
        self.reused += other.reused

    def subset(self, rows: Sequence[int]) -> Precomputed:
        """These queries only (a cross-validation fold)."""
        return Precomputed(
            [self.truth[i] for i in rows],
            [self.groups[i] for i in rows],
            [self.zero_shot[i] for i in rows],
            self.method,
            [self.head[i] for i in rows] if self.head else [],
        )

    def label_ids(self) -> dict[str, int]:
        """Every label the sweep may meet, numbered in name order."""
        labels = {g.label for gs in self.groups for g in gs} | set(self.truth)
        labels |= {s.label for scores in self.head if scores for s in scores}
        return {label: i for i, label in enumerate(sorted(labels))}


async def _stored(
    classifier: Classifier, index: IndexState, chunk: Sequence[Example]
) -> Embedded | None:
    """The rows' own stored dense vectors (their n-gram vectors recomputed: cheap), or
    None where the mode has no dense vector or a row is not in the index as it is."""
    retriever = classifier.retriever
    if retriever.encoder is None:
        return None
    found = await classifier.store.vectors(index.version, [e.row_id for e in chunk])
    if any(e.row_id not in found for e in chunk):
        return None
    dense = np.asarray([found[e.row_id] for e in chunk], dtype=np.float32)
    return retriever.with_lexical([e.text for e in chunk], dense, index.lexicon)


def _zero_shot_labels(
    groups: Sequence[Group],
    head: Sequence[LabelScore] | None,
    labels: Sequence[str],
    settings: ZeroShotSettings,
    none_label: str | None,
    k_min: int,
) -> tuple[str, ...]:
    """Every label the classifier (``zero_shot_candidates``) may hand this query's
    zero-shot scorer at any k from ``k_min`` to the groups' own count, so that the replay
    finds the score of each candidate it picks."""
    every = tuple(label for label in labels if label != none_label)
    if settings.candidates == "all":
        return every
    voted = [g.label for g in groups if g.label != none_label]
    if head is None:
        # The vote has no label score at all where the k_min nearest groups are the none
        # label's (or there are none): the classifier then scores every label.
        if not any(g.label != none_label for g in groups[:k_min]):
            return every
        return tuple(voted)
    # With the head the candidates are the best of its (blended) scores, which rank a
    # label outside the groups by its probability alone: only the top_n such labels, best
    # first, can be among them, whatever the k and router.vote_weight.
    seen = set(voted)
    outside = [s.label for s in head if s.label != none_label and s.label not in seen]
    return tuple(voted + outside[: settings.top_n])


async def precompute(
    classifier: Classifier,
    examples: Sequence[Example],
    *,
    k_max: int,
    k_min: int = 1,
    leave_one_out: bool = False,
    batch: int = 64,
    progress: bool = True,
) -> Precomputed:
    """Groups at ``k_max`` and zero-shot scores for every example: of each label the
    classifier may score for it at any k from ``k_min`` (the smallest the sweep tries)
    to ``k_max``. With ``leave_one_out`` each example's own row is removed from its
    neighbours (tuning on the indexed table itself), and each is searched with its own
    stored vector rather than encoded again."""
    index = classifier.index or await classifier.refresh_index()
    if index is None:
        raise NotIndexed("no index has been published yet: run `qroute index TABLE`")
    router = classifier.settings.router
    extra = 1 if leave_one_out else 0
    scorer = classifier.zero_shot
    groups_all: list[list[Group]] = []
    scores_all: list[dict[str, float]] = []
    heads_all: list[list[LabelScore] | None] = []
    reused = 0
    none_label = classifier.settings.table.none_label
    with tqdm(total=len(examples), unit="row", desc="precomputing", disable=not progress) as bar:
        for start in range(0, len(examples), batch):
            chunk = examples[start : start + batch]
            stored = await _stored(classifier, index, chunk) if leave_one_out else None
            reused += len(chunk) if stored is not None else 0
            index, embedded, found = await classifier.neighbours(
                [e.text for e in chunk],
                [None] * len(chunk),
                groups=k_max + extra,
                group_size=router.group_size + extra,
                embedded=stored,
            )
            heads_all.extend(await classifier.head_scores(index, embedded, [()] * len(chunk)))
            dense = embedded.dense if embedded.dense is not None else [None] * len(chunk)
            for example, groups in zip(chunk, found, strict=True):
                kept = []
                for group in groups:
                    hits = tuple(
                        h for h in group.hits if not (leave_one_out and h.row_id == example.row_id)
                    )
                    if hits:
                        kept.append(Group(group.label, hits[: router.group_size]))
                kept.sort(key=lambda g: g.hits[0].similarity, reverse=True)
                groups_all.append(kept[:k_max])
            if scorer is not None:
                items = [
                    ZeroShotItem(
                        e.text,
                        v,
                        _zero_shot_labels(
                            gs, h, index.labels, classifier.settings.zero_shot, none_label, k_min
                        ),
                    )
                    for e, v, gs, h in zip(
                        chunk,
                        dense,
                        groups_all[-len(chunk) :],
                        heads_all[-len(chunk) :],
                        strict=True,
                    )
                ]
                scored = await asyncio.to_thread(scorer.score, items, classifier.settings.zero_shot)
                scores_all.extend({s.label: s.score for s in ranked} for ranked in scored)
            else:
                scores_all.extend({} for _ in chunk)
            bar.update(len(chunk))
    method = scorer.method(classifier.settings.zero_shot) if scorer is not None else ""
    return Precomputed(
        [e.label for e in examples], groups_all, scores_all, method, heads_all, reused
    )
