"""A head fitted on a hybrid index (dense and lexical features) and a router that computes
only one kind (a dense or lexical router serving that index): the head's probabilities
would be computed from half its features, so the router lets the vote decide instead."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from qroute_indexer import run_index

from qroute.config import Settings
from qroute.routing.classifier import Classifier
from qroute.store.embedded import EmbeddedStore
from qroute.testing import BagOfWordsEncoder
from qroute.types import Query
from tests.integration.test_indexer import _table

ROWS = [(f"커튼 w{i}", "쇼핑") for i in range(10)] + [(f"습도 w{i}", "날씨") for i in range(10)]
QUERIES = ["커튼 습도습도습도", "커튼 습도습도", "습도 커튼커튼커튼", "커튼 x3"]


@pytest.mark.parametrize("mode", ["dense", "lexical"])
async def test_a_router_lacking_a_heads_features_lets_the_vote_decide(
    make_settings: Callable[..., Settings], tmp_path: Path, mode: str
) -> None:
    sections = {
        "zero_shot": {"method": "off"},
        "router": {"k": 5, "label_score": "max", "similarity_threshold": -1.0},
        "index": {"head": True, "canary_per_label": 0},
    }
    encoder = BagOfWordsEncoder()
    hybrid = make_settings(retrieval={"mode": "hybrid"}, **sections)
    await run_index(hybrid, _table(tmp_path / "t.csv", ROWS), encoder=encoder, progress=False)
    settings = make_settings(retrieval={"mode": mode}, **sections)
    store = EmbeddedStore(settings.store.location, settings.store.collection)
    try:
        classifier = Classifier(settings, None if mode == "lexical" else encoder, None, store)
        index = await classifier.refresh_index()
        assert index is not None and index.head is not None
        assert not classifier.index_info().uses_head
        with_head = await classifier.classify([Query(q) for q in QUERIES])
        no_head = classifier.reconfigure(
            settings.model_copy(
                update={"router": settings.router.model_copy(update={"use_head": False})}
            )
        )
        vote = await no_head.classify([Query(q) for q in QUERIES])
        assert [(p.label, p.confidence, p.reason) for p in with_head] == [
            (p.label, p.confidence, p.reason) for p in vote
        ]
    finally:
        await store.close()


async def test_a_hybrid_router_still_uses_the_hybrid_head(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(
        retrieval={"mode": "hybrid"},
        zero_shot={"method": "off"},
        router={"k": 5, "label_score": "max", "similarity_threshold": -1.0},
        index={"head": True, "canary_per_label": 0},
    )
    encoder = BagOfWordsEncoder()
    await run_index(settings, _table(tmp_path / "t.csv", ROWS), encoder=encoder, progress=False)
    store = EmbeddedStore(settings.store.location, settings.store.collection)
    try:
        classifier = Classifier(settings, encoder, None, store)
        await classifier.refresh_index()
        assert classifier.index_info().uses_head
        (prediction,) = await classifier.classify([Query(QUERIES[0])])
        assert prediction.reason.startswith("head: head p=")
    finally:
        await store.close()
