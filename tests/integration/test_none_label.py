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


async def _with_head(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> tuple[Settings, EmbeddedStore, Classifier]:
    """A lexical router whose index has a head fitted with ROWS' none class."""
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
    return settings, store, Classifier(settings, None, None, store)


async def test_the_none_label_is_learnt_by_the_head_and_never_answered(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings, store, classifier = await _with_head(make_settings, tmp_path)
    try:
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


async def test_allowed_labels_keep_the_heads_none_label(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """allowed_labels restrict what may be answered; the none label is never answered, so
    the head keeps it: a query the head gives to it stays NO_MATCH when the request lists
    allowed labels, and listing every label changes nothing."""
    _, store, classifier = await _with_head(make_settings, tmp_path)
    try:
        await classifier.refresh_index()
        every = ("날씨", "환율")
        plain = await classifier.classify([Query(q) for q in QUERIES])
        listed = await classifier.classify([Query(q, allowed_labels=every) for q in QUERIES])
        assert plain[0].decision == Decision.NO_MATCH and "none label" in plain[0].reason
        assert [(p.decision, p.label, p.confidence, p.reason) for p in listed] == [
            (p.decision, p.label, p.confidence, p.reason) for p in plain
        ]
        # A real restriction still may not turn the none label into an answer.
        (song,) = await classifier.classify([Query(QUERIES[0], allowed_labels=("환율",))])
        assert song.decision == Decision.NO_MATCH and song.label is None
        assert all(s.label != "oos" for s in song.top_labels)
    finally:
        await store.close()
