"""table.none_label: out-of-scope rows teach the head a none class, never an answer."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from qroute_indexer import run_index

from qroute.config import Settings
from qroute.routing.classifier import Classifier
from qroute.store.embedded import EmbeddedStore
from qroute.types import Decision, Query
from tests.integration.test_indexer import _table

ROWS = [
    *[(f"내일 {p} 날씨 알려 줘", "날씨") for p in ("서울", "부산", "제주", "대구")],
    *[(f"{p} 환율 얼마야", "환율") for p in ("달러", "엔화", "유로", "위안")],
    *[(f"{p} 노래 불러 줘", "oos") for p in ("신나는", "슬픈", "조용한", "아무")],
]
QUERIES = ["슬픈 노래 불러 줘", "조용한 노래 하나", "내일 서울 날씨", "달러 환율", "노래 좀"]


async def test_the_none_label_is_learnt_by_the_head_and_never_answered(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(
        retrieval={"mode": "lexical"},
        encoder={"model": "/nowhere"},
        zero_shot={"method": "off"},
        router={"k": 3, "similarity_threshold": 0.0, "use_head": True},
        index={"head": True, "canary_per_label": 0},
        table={"none_label": "oos"},
    )
    await run_index(settings, _table(tmp_path / "t.csv", ROWS), progress=False)
    store = EmbeddedStore(settings.store.location, settings.store.collection)
    try:
        classifier = Classifier(settings, None, None, store)
        index = await classifier.refresh_index()
        assert index is not None and index.head is not None and "oos" in index.head.labels
        predictions = await classifier.classify([Query(q) for q in QUERIES])
        assert all(p.label != "oos" for p in predictions)
        assert all(s.label != "oos" for p in predictions for s in p.top_labels)
        song = predictions[0]
        assert song.decision == Decision.NO_MATCH and "none label" in song.reason
        assert [p.label for p in predictions[2:4]] == ["날씨", "환율"]
        # Without the head, the vote alone: the none label's rows never vote.
        vote = classifier.reconfigure(
            settings.model_copy(
                update={"router": settings.router.model_copy(update={"use_head": False})}
            )
        )
        for p in await vote.classify([Query(q) for q in QUERIES]):
            assert p.label != "oos" and all(s.label != "oos" for s in p.knn_scores)
    finally:
        await store.close()
