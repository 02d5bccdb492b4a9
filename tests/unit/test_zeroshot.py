from __future__ import annotations

import numpy as np
import pytest

from qroute.config import NLISettings, ZeroShotSettings
from qroute.errors import ModelLoadError
from qroute.routing.zeroshot import NLIZeroShot, ZeroShotItem, entailment_index
from qroute.testing import TinyModels


def test_entailment_index_comes_from_the_models_own_label2id() -> None:
    assert entailment_index({"contradiction": 0, "ENTAILMENT": 2, "neutral": 1}, "m") == 2


def test_a_model_without_an_entailment_class_is_refused_at_load(tiny_models: TinyModels) -> None:
    with pytest.raises(ModelLoadError, match="no entailment class") as info:
        NLIZeroShot(NLISettings(model=str(tiny_models.nli_unlabelled)))
    assert "LABEL_0" in str(info.value)


def test_scores_every_candidate_of_every_query_in_order(tiny_models: TinyModels) -> None:
    scorer = NLIZeroShot(NLISettings(model=str(tiny_models.nli)))
    vector = np.zeros(4, dtype=np.float32)
    items = [
        ZeroShotItem("코스닥 지수 알려줘", vector, ("금융", "영화", "날씨")),
        ZeroShotItem("비 와?", vector, ("날씨",)),
        ZeroShotItem("무엇", vector, ()),
    ]
    results = scorer.score(items, ZeroShotSettings())
    assert [sorted(s.label for s in r) for r in results] == [["금융", "날씨", "영화"], ["날씨"], []]
    for ranked in results:
        assert [s.score for s in ranked] == sorted((s.score for s in ranked), reverse=True)
        assert all(0.0 <= s.score <= 1.0 for s in ranked)
