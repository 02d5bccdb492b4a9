"""A linear label head, fitted by the indexer over one version's own vectors.

The kNN vote weighs every dimension and every character n-gram alike; a multinomial
logistic regression over the same features learns which of them tell the labels apart
("커튼" for shopping, "습도" for weather). What that gains on real data is in
bench/RESULTS.md. The head only picks the label: the neighbours still
gate the answer (thresholds, fallback) and explain it.

Features are what the retriever embeds: the unit dense vector, and in lexical and hybrid
modes TF-IDF vectors of the terms (log-scaled counts times the version's IDF), one per kind
of term (character n-grams, morphemes), each scaled to unit length, side by side: the
standard TF-IDF of text classifiers, where each kind of term gets its own say however many
terms it has. Only terms the version's rows contain get a weight; a query's other terms
are dropped before scaling.

A head written before the blocks (no ``morph_from`` in its metadata) keeps the features it
was fitted on: one block, values scaled by the square root of each term's IDF.

The head travels in the version's metadata, so it always matches the rows it was fitted
on: a re-index fits a new one, a rollback brings the old one back.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from qroute.embedding.lexical import Lexicon
from qroute.hub import optional_import
from qroute.types import LabelScore, SparseVector

__all__ = ["HeadData", "LinearHead"]

Matrix = npt.NDArray[np.float32]


def _pack(array: Matrix) -> str:
    # float16 halves the metadata; the logits move by far less than any margin.
    return base64.b64encode(array.astype("<f2").tobytes()).decode("ascii")


def _unpack(text: str, shape: tuple[int, ...]) -> Matrix:
    data = np.frombuffer(base64.b64decode(text), dtype="<f2")
    return data.astype(np.float32).reshape(shape)


def _lexical_features(
    sparse: Sequence[SparseVector],
    lexicon: Lexicon,
    terms: dict[int, int],
    morph_from: int | None,
    *,
    grow: bool,
) -> Any:
    """The terms' TF-IDF blocks as a CSR matrix over ``terms``' columns (the module's
    docstring; ``morph_from`` None: the legacy single block). With ``grow`` (fitting)
    unseen terms get new columns; otherwise (scoring) they are dropped."""
    from scipy.sparse import csr_matrix

    power = 0.5 if morph_from is None else 1.0
    rows, columns, values = [], [], []
    for row, vector in enumerate(sparse):
        kept: list[tuple[int, int, float]] = []  # (column, block, weight)
        squares = [0.0, 0.0]
        for term, value in zip(vector.indices, vector.values, strict=True):
            column = terms.setdefault(term, len(terms)) if grow else terms.get(term)
            if column is not None:
                block = int(morph_from is not None and term >= morph_from)
                weight = value * lexicon.idf(term) ** power
                kept.append((column, block, weight))
                squares[block] += weight * weight
        # Each block scaled to unit length (the sparse value's own norm cancels); a
        # legacy head's values stay as they were fitted.
        scale = [1.0 / math.sqrt(s) if s and morph_from is not None else 1.0 for s in squares]
        for column, block, weight in kept:
            rows.append(row)
            columns.append(column)
            values.append(weight * scale[block])
    return csr_matrix((values, (rows, columns)), shape=(len(sparse), len(terms)))


@dataclass(frozen=True)
class LinearHead:
    """Logits = dense @ W_dense.T + lexical @ W_terms.T + bias, one row per label."""

    labels: tuple[str, ...]
    bias: Matrix
    dense: Matrix | None
    terms: dict[int, int]
    lexical: Matrix | None
    # The first morpheme term (LexicalEncoder.morph_from); None: a legacy head's features.
    morph_from: int | None = None

    def lacks(self, *, dense: bool, lexical: bool) -> str:
        """The features the head was fitted on that a router computing only ``dense``
        and/or ``lexical`` ones cannot give it ("": none). A hybrid index's head, served
        by a dense or lexical router, would otherwise score half its logits."""
        missing = []
        if self.dense is not None and not dense:
            missing.append("dense")
        if self.lexical is not None and not lexical:
            missing.append("lexical")
        return " and ".join(missing)

    def scores(
        self,
        dense: Matrix | None,
        sparse: Sequence[SparseVector] | None,
        lexicon: Lexicon | None,
    ) -> list[list[LabelScore]]:
        """Each query's label probabilities, best first."""
        count = len(dense) if dense is not None else len(sparse or ())
        logits = np.tile(self.bias, (count, 1))
        if self.dense is not None and dense is not None:
            logits += dense @ self.dense.T
        if self.lexical is not None and sparse is not None and lexicon is not None:
            features = _lexical_features(sparse, lexicon, self.terms, self.morph_from, grow=False)
            logits += np.asarray(features @ self.lexical.T)
        logits -= logits.max(axis=1, keepdims=True)
        probabilities = np.exp(logits)
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        ranked = []
        for row in probabilities:
            order = np.argsort(-row)
            ranked.append([LabelScore(self.labels[i], float(row[i])) for i in order])
        return ranked

    def to_metadata(self) -> dict[str, Any]:
        return {
            "labels": list(self.labels),
            "bias": _pack(self.bias),
            "dense": None if self.dense is None else _pack(self.dense),
            "dimension": 0 if self.dense is None else int(self.dense.shape[1]),
            "terms": sorted(self.terms, key=lambda t: self.terms[t]),
            "lexical": None if self.lexical is None else _pack(self.lexical),
            "morph_from": self.morph_from,
        }

    @classmethod
    def from_metadata(cls, data: Mapping[str, Any]) -> LinearHead:
        labels = tuple(data["labels"])
        terms: list[int] = data["terms"]
        return cls(
            labels=labels,
            bias=_unpack(data["bias"], (len(labels),)),
            dense=None
            if data["dense"] is None
            else _unpack(data["dense"], (len(labels), int(data["dimension"]))),
            terms={term: column for column, term in enumerate(terms)},
            lexical=None
            if data["lexical"] is None
            else _unpack(data["lexical"], (len(labels), len(terms))),
            morph_from=data.get("morph_from"),
        )


class HeadData:
    """The rows of a version as the indexer writes them, gathered to fit its head."""

    def __init__(self) -> None:
        self._seen: set[str] = set()
        self._labels: list[str] = []
        self._dense: list[Matrix] = []
        self._sparse: list[SparseVector] = []

    def offer(
        self,
        row_ids: Sequence[str],
        labels: Sequence[str],
        dense: Matrix | None,
        sparse: Sequence[SparseVector] | None,
    ) -> None:
        for row, (row_id, label) in enumerate(zip(row_ids, labels, strict=True)):
            if row_id in self._seen:
                continue
            self._seen.add(row_id)
            self._labels.append(label)
            if dense is not None:
                self._dense.append(dense[row])
            if sparse is not None:
                self._sparse.append(sparse[row])

    def fit(self, lexicon: Lexicon | None, c: float, *, morph_from: int) -> LinearHead:
        """Multinomial logistic regression (scikit-learn, L2 penalty ``1/c``);
        ``morph_from`` is the lexical settings' first morpheme term (``morph_from``)."""
        from scipy.sparse import csr_matrix, hstack

        linear_model = optional_import(
            "sklearn.linear_model", "index", "index.head (the linear head)"
        )
        if len(set(self._labels)) < 2:
            raise ValueError("a head needs at least two labels")
        blocks: list[Any] = []
        dimension = 0
        if self._dense:
            dense = np.stack(self._dense).astype(np.float32)
            dimension = dense.shape[1]
            blocks.append(csr_matrix(dense))
        terms: dict[int, int] = {}
        if self._sparse and lexicon is not None:
            blocks.append(_lexical_features(self._sparse, lexicon, terms, morph_from, grow=True))
        features = hstack(blocks).tocsr()
        model = linear_model.LogisticRegression(C=c, max_iter=3000).fit(features, self._labels)
        classes = tuple(str(label) for label in model.classes_)
        weights = model.coef_.astype(np.float32)
        bias = model.intercept_.astype(np.float32)
        if len(classes) == 2:
            # scikit-learn keeps one row for two classes: the second's logit against the first.
            weights = np.vstack([-weights / 2, weights / 2])
            bias = np.array([-bias[0] / 2, bias[0] / 2], dtype=np.float32)
        return LinearHead(
            labels=classes,
            bias=bias,
            dense=weights[:, :dimension] if dimension else None,
            terms=terms,
            lexical=weights[:, dimension:] if terms else None,
            morph_from=morph_from,
        )
