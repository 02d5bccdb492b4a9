"""Embedding zero-shot scores are cosines, in [-1, 1]: a response's confidence stays in
[0, 1] whatever the cosine, and ``router.min_confidence: 0`` (off) refuses nothing."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from qroute_indexer import run_index

from qroute.config import Settings
from qroute.routing.classifier import Classifier
from qroute.store.embedded import EmbeddedStore
from qroute.types import Decision, Prediction, Query
from tests.integration.test_indexer import _table

# Two rows, the query far from both, and label descriptions the query points away from:
# the best description's cosine is -0.1.
VECTORS = {
    "맑은 하늘": [1.0, 0.0, 0.0],
    "주식 시세": [0.0, 1.0, 0.0],
    "모르는 말": [0.0, 0.0, 1.0],
    "날씨 설명": [0.6, 0.0, -0.8],
    "금융 설명": [0.0, float(np.sqrt(0.99)), -0.1],
}
ROWS = [("맑은 하늘", "날씨"), ("주식 시세", "금융")]


class FixedEncoder:
    """An Encoder test double that maps each known text to a fixed unit vector."""

    dimension = 3
    fingerprint = "fixed|dim=3"

    def encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        return np.array([VECTORS[t] for t in texts], dtype=np.float32)


async def _classify(
    make_settings: Callable[..., Settings], tmp_path: Path, zero_shot: dict[str, Any]
) -> Prediction:
    settings = make_settings(
        zero_shot={
            "method": "embedding",
            "candidates": "all",
            "label_descriptions": {"날씨": "날씨 설명", "금융": "금융 설명"},
            **zero_shot,
        },
        router={"k": 2, "similarity_threshold": 0.9},
        index={"canary_per_label": 0},
    )
    encoder = FixedEncoder()
    await run_index(settings, _table(tmp_path / "t.csv", ROWS), encoder=encoder, progress=False)
    store = EmbeddedStore(settings.store.location, settings.store.collection)
    try:
        (prediction,) = await Classifier(settings, encoder, None, store).classify(
            [Query("모르는 말")]
        )
    finally:
        await store.close()
    assert prediction.zero_shot_scores[0].score == pytest.approx(-0.1, abs=1e-3)
    return prediction


async def test_no_match_below_a_negative_cosine_has_a_confidence_in_0_1(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    prediction = await _classify(make_settings, tmp_path, {"threshold": 0.0})
    assert prediction.decision == Decision.NO_MATCH
    assert 0.0 <= prediction.confidence <= 1.0


async def test_a_negative_threshold_answers_with_min_confidence_off(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    # -0.1 reaches the threshold -0.5; min_confidence is 0 (off): the answer stands.
    prediction = await _classify(make_settings, tmp_path, {"threshold": -0.5})
    assert prediction.decision == Decision.ZERO_SHOT, prediction.reason
    assert prediction.label == "금융"
    assert 0.0 <= prediction.confidence <= 1.0
    assert "min_confidence" not in prediction.reason
