"""The router's kNN vote replayed on encoded rows, with no thresholds and no store: how
well an encoder separates the labels (the encoder fine-tune's dev measure, benchmarks)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

from qroute.types import Example

__all__ = ["DEFAULT_K", "knn_accuracy"]

# The router's default neighbourhood.
DEFAULT_K = 5


def knn_accuracy(
    encode: Callable[[Sequence[str]], npt.NDArray[np.float32]],
    reference: Sequence[Example],
    queries: Sequence[Example],
    k: int = DEFAULT_K,
) -> float:
    """Share of ``queries`` whose ``k`` nearest ``reference`` rows (cosine, L2-normalised
    vectors from ``encode``) vote for their label, each neighbour weighted by its
    similarity: the router's kNN stage with no thresholds."""
    if not queries:
        return float("nan")
    labels = sorted({e.label for e in reference})
    ids = {label: i for i, label in enumerate(labels)}
    reference_ids = np.array([ids[e.label] for e in reference])
    matrix = encode([e.text for e in reference])
    right = 0
    for start in range(0, len(queries), 512):
        chunk = queries[start : start + 512]
        similarity = encode([e.text for e in chunk]) @ matrix.T
        k_here = min(k, similarity.shape[1])
        nearest = np.argpartition(-similarity, k_here - 1, axis=1)[:, :k_here]
        votes = np.zeros((len(chunk), len(labels)))
        rows = np.arange(len(chunk))[:, None]
        np.add.at(votes, (rows, reference_ids[nearest]), similarity[rows, nearest])
        predicted = votes.argmax(axis=1)
        right += sum(int(ids.get(e.label, -1) == p) for e, p in zip(chunk, predicted, strict=True))
    return right / len(queries)
